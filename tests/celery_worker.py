"""A real Celery worker for integration tests, on the broker CONSULTS_TEST_BROKER_URL names
(Redis or RabbitMQ), isolated from every other test run on the same broker by a queue prefix
of its own (alliance/queues.py): it consumes only its own queues, and so does what it sends.

The broker is shared with other runs on the machine, so a test leaves nothing on it: the
queues and exchanges of every prefix a test took are deleted when it ends (tests/conftest.py).
Named explicitly (CI does), a broker that does not answer fails the tests that need it at
once, with what the broker's own tools say; only without it do they skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connection
from kombu import Connection

from alliance import queues

BROKER = os.environ.get("CONSULTS_TEST_BROKER_URL", "redis://127.0.0.1:6379/8")
NAMED = "CONSULTS_TEST_BROKER_URL" in os.environ
ANSWER_S = 15  # a broker that takes longer to declare and delete one queue is not answering
_taken: list[tuple[str, str]] = []  # (prefix, broker) taken by the running test


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _connection(url: str, timeout: float) -> Connection:
    """A connection whose every wait (connect, read, write) ends after `timeout` seconds."""
    options = {"read_timeout": timeout, "write_timeout": timeout, "socket_timeout": timeout}
    return Connection(url, connect_timeout=timeout, transport_options=options)


def broker_answers(url: str | None = None, timeout: float | None = None) -> str:
    """What went wrong, or "" when the broker at `url` connects and declares and deletes a
    queue of its own within `timeout` seconds. A broker that accepts connections but hangs
    (seen in CI: every declare timed out) fails here, not minutes later in a worker's log."""
    probe = f"test-probe-{uuid.uuid4().hex[:8]}"
    timeout = timeout or ANSWER_S
    try:
        with _connection(url or BROKER, timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            channel = conn.channel()
            channel.queue_declare(probe, auto_delete=True)
            channel.queue_delete(probe)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def require_broker() -> None:
    """Fail the test (skip it, when no broker was named) unless the broker answers now."""
    problem = broker_answers()
    if not problem:
        return
    if not NAMED:
        pytest.skip(f"no broker at {BROKER} ({problem}); CONSULTS_TEST_BROKER_URL names one")
    pytest.fail(f"the broker at {BROKER} (CONSULTS_TEST_BROKER_URL) does not answer: {problem}\n{_diagnosis()}")


def _diagnosis() -> str:
    """What RabbitMQ's own tool says of the machine's node, for the failure's message."""
    if not BROKER.startswith("amqp") or shutil.which("rabbitmqctl") is None:
        return ""
    try:
        done = subprocess.run(["rabbitmqctl", "status"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "rabbitmqctl status: no answer in 30 s"
    return f"rabbitmqctl status (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"


def new_prefix(kind: str) -> str:
    """A queue prefix of the test's own, after checking the broker answers; its queues and
    exchanges are deleted when the test ends (remove_taken_queues)."""
    require_broker()
    prefix = f"test-{kind}-{uuid.uuid4().hex[:8]}-"
    _taken.append((prefix, BROKER))
    return prefix


def delete_queues(prefix: str, url: str) -> None:
    """`prefix`'s queues and exchanges, gone from the broker at `url` (and the messages left
    in them)."""
    with _connection(url, ANSWER_S) as conn:  # a hung broker does not hang the teardown
        channel = conn.channel()
        for queue in queues.declare(prefix, quorum=queues.is_rabbitmq(url)):
            bound = queue(channel)
            bound.declare()  # as the worker did: Redis's channel deletes only the bindings it knows
            bound.delete()
            channel.exchange_delete(queue.exchange.name)


def remove_taken_queues() -> None:
    """At a test's end: what its prefixes left on the shared broker, deleted. A broker away
    then is left as it is; the test has failed or been told already."""
    while _taken:
        prefix, url = _taken.pop()
        try:
            delete_queues(prefix, url)
        except Exception as exc:
            print(f"could not delete the queues of {prefix} on {url}: {exc}")


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
