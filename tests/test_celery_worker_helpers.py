"""The real-worker tests' broker helpers (tests/celery_worker.py): a broker that accepts
connections but never answers is found out within the timeout, and fails the tests that need
it when the run named it; a test's queues do not outlive it on the shared broker."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kombu import Connection, Producer

from alliance import queues
from tests import celery_worker


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word, as a hung broker does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("scheme", ["amqp://guest:guest@127.0.0.1:{}//", "redis://127.0.0.1:{}/0"])
def test_a_broker_that_accepts_and_never_answers_is_reported_within_the_timeout(scheme: str, silent_port: int) -> None:
    started = time.monotonic()
    problem = celery_worker.broker_answers(scheme.format(silent_port), timeout=1)
    assert "imed out" in problem or "Timeout" in problem, problem
    assert time.monotonic() - started < 30


def test_a_named_broker_that_does_not_answer_fails_the_test_and_an_unnamed_one_skips_it(
    monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    monkeypatch.setattr(celery_worker, "BROKER", f"redis://127.0.0.1:{silent_port}/0")
    monkeypatch.setattr(celery_worker, "ANSWER_S", 1)
    monkeypatch.setattr(celery_worker, "NAMED", True)
    with pytest.raises(pytest.fail.Exception, match="does not answer"):
        celery_worker.new_prefix("silent")
    monkeypatch.setattr(celery_worker, "NAMED", False)
    with pytest.raises(pytest.skip.Exception, match="no broker"):
        celery_worker.new_prefix("silent")
    assert celery_worker._taken == []  # nothing to delete: no prefix was given out


def test_the_queues_of_a_prefix_are_gone_from_the_broker_when_the_test_ends() -> None:
    prefix = celery_worker.new_prefix("tidy")  # fails, or skips without a named broker, as the others do
    url = celery_worker.BROKER
    app = celery_worker.sender(prefix)
    with Connection(url, connect_timeout=10) as conn:
        producer = Producer(conn.channel())
        for queue in app.conf.task_queues:  # as the worker declares them, and a message left in one
            producer.publish("left behind", exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
    assert _exists(url, prefix + "render")

    celery_worker.remove_taken_queues()  # what tests/conftest.py does after every test

    assert celery_worker._taken == []
    assert [kind for kind in queues.KINDS if _exists(url, prefix + kind)] == []


def _exists(url: str, queue: str) -> bool:
    with Connection(url, connect_timeout=10) as conn:
        try:
            conn.channel().queue_declare(queue, passive=True)
        except conn.channel_errors:
            return False
    return True
