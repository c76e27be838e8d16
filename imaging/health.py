"""`/healthz` and `/metrics`: what a load balancer and a monitoring system ask of a node.

/healthz checks the three parts every node needs (the database, the broker, the image store)
and answers 200 when all answer, 503 naming the ones that did not. The reasons are logged,
not shown: the page is open to the probe without a session.

/metrics is in Prometheus's text format: request latency (alliance.ops), instances indexed
(the ingest rate is its rate()), the broker's queue depths, failed tasks by task, and this
node's DIMSE spool (instances acknowledged and not yet indexed; files refused after their
answer, which need an administrator). It is open to loopback and, with METRICS_TOKEN set,
to a scraper sending `Authorization: Bearer <token>`. Nothing in it names a patient.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from alliance.celery import app as celery_app
from alliance.models import TaskFailure
from imaging import spool
from imaging.models import Instance
from imaging.storage import dicom_storage

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "::1"})
PROBE_TIMEOUT_SECONDS = 3.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)


def check_storage() -> None:
    """Write, read back and delete a small object under health/ (a real round trip to S3)."""
    storage = dicom_storage()
    key = f"health/{uuid.uuid4().hex}"
    payload = b"alliance health probe"
    name = storage.save(key, ContentFile(payload))
    try:
        with storage.open(name, "rb") as handle:
            if handle.read() != payload:
                raise OSError("the store gave back other bytes than were written")
    finally:
        storage.delete(name)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
}


def run_checks() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception:
            log.exception("health check %s failed", name)
            ok = False
        else:
            ok = True
        results[name] = {"ok": ok, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return results


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    healthy = all(r["ok"] for r in results.values())
    return JsonResponse({"status": "ok" if healthy else "failing", "checks": results}, status=200 if healthy else 503)


def queue_names() -> list[str]:
    """Every queue the workers consume (settings.CELERY_TASK_QUEUES), else Celery's default."""
    queues = getattr(settings, "CELERY_TASK_QUEUES", None) or ()
    return [q.name for q in queues] or [celery_app.conf.task_default_queue]


def queue_depths() -> dict[str, int]:
    depths: dict[str, int] = {}
    with celery_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)
        channel = conn.default_channel
        for name in queue_names():
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except Exception:  # not declared yet: no worker has started on it, nothing waits
                depths[name] = 0
                channel = conn.channel()
    return depths


def _spool_entries() -> tuple[int, int]:
    pending = sum(1 for folder in _folders(spool.root()) for entry in os.scandir(folder) if entry.name.endswith(".dcm"))
    refused_root = spool.refused_dir()
    refused = sum(1 for _ in os.scandir(refused_root)) if refused_root.is_dir() else 0
    return pending, refused


def _folders(root: Any) -> Iterator[str]:
    if not os.path.isdir(root):
        return
    for entry in os.scandir(root):
        if entry.is_dir():
            yield entry.path


class AllianceCollector(Collector):
    """Read at scrape time from the database, the broker and this node's data folder."""

    def describe(self) -> list[Any]:
        return []  # no reading at registration (the default registry would collect() to learn names)

    def collect(self) -> Iterator[Any]:
        indexed = Instance.objects.aggregate(high=Max("id"))["high"] or 0
        yield CounterMetricFamily(
            "alliance_instances_indexed",
            "Instances indexed since the archive began (the index's id sequence; its rate() is the ingest rate).",
            value=indexed,
        )
        failures = CounterMetricFamily(
            "alliance_task_failures", "Celery tasks that failed after their retries.", labels=["task"]
        )
        for row in TaskFailure.objects.values("task").annotate(n=Count("id")).order_by("task"):
            failures.add_metric([row["task"]], row["n"])
        yield failures
        depth = GaugeMetricFamily("alliance_queue_depth", "Messages waiting in each broker queue.", labels=["queue"])
        try:
            for name, count in queue_depths().items():
                depth.add_metric([name], count)
        except Exception:
            log.exception("metrics: the broker did not answer")
        yield depth
        pending, refused = _spool_entries()
        yield GaugeMetricFamily(
            "alliance_spool_pending", "This node's DIMSE instances acknowledged and not yet indexed.", value=pending
        )
        yield GaugeMetricFamily(
            "alliance_spool_refused",
            "Files refused by the index after their success answer (see DATA_DIR/refused).",
            value=refused,
        )


_ALLIANCE = AllianceCollector()
REGISTRY.register(_ALLIANCE)


def _registry() -> CollectorRegistry:
    """With PROMETHEUS_MULTIPROC_DIR (gunicorn with several workers) the histograms are summed
    over every worker's files; else this process's registry."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_ALLIANCE)
    return registry


def may_scrape(request: HttpRequest) -> bool:
    """Loopback, or the configured bearer token (compared in constant time)."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
        return True
    return request.META.get("REMOTE_ADDR", "") in LOOPBACK and "HTTP_X_FORWARDED_FOR" not in request.META


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        return HttpResponse(status=404)
    return HttpResponse(generate_latest(_registry()), content_type="text/plain; version=0.0.4; charset=utf-8")
