"""Celery on RabbitMQ: the queues are quorum queues, a task crosses them to a real worker, and
a retry's countdown is carried by the broker (Celery's native delayed delivery, which quorum
queues need: they hold no per-message timers of their own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests import celery_worker

RABBITMQ = os.environ.get("ALLIANCE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
TASK = "imaging.tasks.remove_stale_temp_files"


def _queue_types(prefix: str) -> dict[str, str]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rows = (line.split("\t") for line in out.splitlines() if line.startswith(prefix))
    return {name: kind.strip() for name, kind in rows}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_worker_on_rabbitmq_takes_tasks_from_quorum_queues_and_honours_countdowns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if problem := celery_worker.broker_answers(RABBITMQ):
        pytest.fail(f"RabbitMQ at {RABBITMQ} does not answer (.ci/run starts it): {problem}")
    monkeypatch.setattr(celery_worker, "BROKER", RABBITMQ)
    prefix = celery_worker.new_prefix("rabbit")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = celery_worker.start_worker(prefix, out, tmp_path / "worker")
    try:
        app = celery_worker.sender(prefix)
        started = celery_worker.wait_for(lambda: "ready." in log.read_text(errors="replace"), timeout=120)
        assert started, log.read_text(errors="replace")[-3000:]
        app.send_task(TASK)
        ran = celery_worker.wait_for(lambda: celery_worker.succeeded(log, TASK) == 1, timeout=60)
        assert ran, log.read_text(errors="replace")[-3000:]
        sent_at = time.monotonic()
        app.send_task(TASK, countdown=4)
        ran = celery_worker.wait_for(lambda: celery_worker.succeeded(log, TASK) == 2, timeout=90)
        assert ran, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() - sent_at >= 3.5  # held by the broker, not run at once
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    if shutil.which("rabbitmqctl"):
        types = _queue_types(prefix)
        assert types.get(prefix + "housekeeping") == "quorum", types
        assert types.get(prefix + "render") == "quorum", types


def test_queues_on_rabbitmq_are_declared_quorum_and_elsewhere_plain() -> None:
    from alliance import queues

    rabbit: Any = queues.declare("p-", quorum=queues.is_rabbitmq(RABBITMQ))
    redis: Any = queues.declare("p-", quorum=queues.is_rabbitmq("redis://127.0.0.1:6379/0"))
    assert {q.queue_arguments["x-queue-type"] for q in rabbit} == {"quorum"}
    assert all(not q.queue_arguments for q in redis)
    assert {q.exchange.type for q in rabbit} == {"topic"}
