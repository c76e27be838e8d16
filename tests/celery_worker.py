"""A real Celery worker for integration tests, on the broker CONSULTS_TEST_BROKER_URL names
(Redis or RabbitMQ), isolated from every other test run on the same broker by a queue prefix
of its own (alliance/queues.py): it consumes only its own queues, and so does what it sends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from django.db import connection
from kombu import Connection

from alliance import queues

BROKER = os.environ.get("CONSULTS_TEST_BROKER_URL", "redis://127.0.0.1:6379/8")


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def broker_up() -> bool:
    try:
        with Connection(BROKER, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception:
        return False
    return True


def new_prefix(kind: str) -> str:
    return f"test-{kind}-{uuid.uuid4().hex[:8]}-"


def start_worker(prefix: str, log: Any, data_dir: Path, *extra_args: str, **env: str) -> subprocess.Popen[bytes]:
    """A solo worker on every queue of `prefix`, against the test database."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_QUEUE_PREFIX": prefix,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DATA_DIR": str(data_dir),
        "LANGUAGE_CODE": "en",
        **env,
    }
    celery = Path(sys.executable).parent / "celery"
    args = [str(celery), "-A", "alliance", "worker", "--pool=solo", "-l", "INFO"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{prefix}@%h", *extra_args]
    return subprocess.Popen(args, env=environment, stdout=log, stderr=subprocess.STDOUT)


def sender(prefix: str) -> Celery:
    """A Celery app that publishes to `prefix`'s queues as the worker declared them."""
    app = Celery(broker=BROKER, set_as_current=False)  # else shared tasks would resolve to it from now on
    app.conf.task_queues = queues.declare(prefix, quorum=queues.is_rabbitmq(BROKER))
    app.conf.task_default_queue = prefix + "celery"
    app.conf.task_routes = queues.routes(prefix)
    return app


def succeeded(log: Path, task: str) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if f"{task}[" in line and "succeeded" in line)


def wait_for(check: Callable[[], Any], timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False
