"""What the operators of a deployment watch: Celery task failures recorded as rows, and the
web request latency histogram (Prometheus). The page that serves them is imaging.health
(it also checks the image store, which this layer may not import)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.signals import task_failure
from django.http import HttpRequest, HttpResponse
from prometheus_client import Histogram

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    "alliance_request_duration_seconds",
    "Web requests by route and status class, from the view's start to the response's end.",
    ["route", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def record_task_failure(*, task: str, task_id: str, exception: BaseException) -> None:
    """One row per failed task (after its retries). A failure to record is logged, not raised:
    the worker's own failure handling goes on."""
    from alliance.models import TaskFailure

    first_line = (str(exception).splitlines() or [""])[0]
    text = f"{type(exception).__name__}: {first_line}"[:500]
    try:
        TaskFailure.objects.create(task=task[:200], task_id=task_id[:64], exception=text)
    except Exception:
        log.exception("could not record the failure of task %s %s", task, task_id)


@task_failure.connect
def _on_task_failure(sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_: Any) -> None:
    name = getattr(sender, "name", "") or str(sender)
    record_task_failure(task=name, task_id=task_id or "", exception=exception or Exception("unknown"))


class RequestLatencyMiddleware:
    """Times every request into REQUEST_SECONDS, labelled by the route's name (never the
    path: paths carry study UIDs) and the status class."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name if match is not None else "") or "unresolved"
        REQUEST_SECONDS.labels(route=route, status=f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response
