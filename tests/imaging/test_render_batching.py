"""Ingest's render requests reach Celery in batches (imaging.tasks.schedule_render)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from imaging import tasks


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[list[int]]:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    calls: list[list[int]] = []
    monkeypatch.setattr(tasks, "_batcher", tasks._Batcher(send=lambda ids: calls.append(list(ids)), ready=lambda: None))
    return calls


def test_ids_scheduled_together_go_as_one_task(sent: list[list[int]]) -> None:
    for pk in (11, 12, 13):
        tasks.schedule_render(pk)
    assert sent == []  # nothing yet: the batch is still filling
    tasks._batcher.flush()
    assert sent == [[11, 12, 13]]
    tasks._batcher.flush()
    assert sent == [[11, 12, 13]], "a flush with nothing pending sends nothing"


def test_a_run_of_ids_joins_the_batch_as_single_ones_do(sent: list[list[int]]) -> None:
    tasks.schedule_render(31)
    tasks.schedule_renders([32, 33])
    tasks._batcher.flush()
    assert sent == [[31, 32, 33]]


def test_the_batcher_thread_sends_them_without_being_asked(sent: list[list[int]]) -> None:
    tasks.schedule_render(21)
    tasks.schedule_render(22)
    thread = tasks._batcher.thread
    assert thread is not None and thread.daemon
    for _ in range(100):
        if sent:
            break
        thread.join(timeout=tasks.BATCH_SECONDS / 10)
    assert sent == [[21, 22]]


def test_a_large_batch_is_split(sent: list[list[int]]) -> None:
    for pk in range(tasks.MAX_BATCH + 5):
        tasks._batcher.pending.append(pk)
    tasks._batcher.flush()
    assert [len(ids) for ids in sent] == [tasks.MAX_BATCH, 5]


def test_a_broker_that_is_away_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False

    def away(ids: list[int]) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks, "_batcher", tasks._Batcher(send=away, ready=lambda: None))
    tasks._batcher.pending.extend([1, 2])
    with caplog.at_level(logging.ERROR, logger="imaging.tasks"):
        tasks._batcher.flush()
    assert "could not queue the rendering of 2 instances" in caplog.text
    assert tasks._batcher.pending == []


def test_eager_mode_renders_at_once(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    calls: list[list[int]] = []
    monkeypatch.setattr(tasks.render_instances, "delay", lambda ids: calls.append(list(ids)))
    tasks.schedule_render(5)
    assert calls == [[5]]


def test_batches_go_to_the_project_app_from_any_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared task resolves its Celery app per thread; the batcher names the project's app."""
    from alliance.celery import app

    seen: list[tuple[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args: seen.append((name, args)))
    thread = threading.Thread(target=tasks._send_batch, args=([7, 8],))
    thread.start()
    thread.join()
    assert seen == [("imaging.tasks.render_instances", [[7, 8]])]


def _sent_by_thread(calls: list[Any]) -> None:
    for _ in range(100):
        if any(isinstance(call, list) for call in calls):
            return
        threading.Event().wait(tasks.BATCH_SECONDS / 10)


def test_warm_up_readies_the_sending_thread_before_the_first_request(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """dicom_server warms the batcher up when it starts serving: the thread that will send is
    started and made ready (Celery's per-thread backend, the transport) before any store."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    calls: list[Any] = []
    ready = threading.Event()

    def get_ready() -> None:
        calls.append(("ready", threading.current_thread().name))
        ready.set()

    batcher = tasks._Batcher(send=lambda ids: calls.append(list(ids)), ready=get_ready)
    monkeypatch.setattr(tasks, "_batcher", batcher)
    tasks.warm_up()
    assert ready.wait(5)
    assert calls == [("ready", "render-batcher")]
    thread = batcher.thread
    tasks.schedule_renders([41, 42])
    assert batcher.thread is thread  # the same thread sends
    _sent_by_thread(calls)
    assert calls == [("ready", "render-batcher"), [41, 42]]


def test_a_broker_away_at_warm_up_does_not_stop_the_batcher(
    monkeypatch: pytest.MonkeyPatch, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    calls: list[Any] = []

    def away() -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks, "_batcher", tasks._Batcher(send=lambda ids: calls.append(list(ids)), ready=away))
    with caplog.at_level(logging.INFO, logger="imaging.tasks"):
        tasks.warm_up()
        tasks.schedule_render(51)
        _sent_by_thread(calls)
    assert calls == [[51]]
    assert "could not connect to the broker ahead of the first render request" in caplog.text


def test_the_sending_thread_is_made_ready_with_the_project_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """_ready_to_send makes the backend and a producer's connection of the project's app."""
    from alliance.celery import app

    seen: list[str] = []

    class Producer:
        class connection:  # noqa: N801
            @property
            def default_channel(self) -> None:
                seen.append("channel")

        connection = connection()  # type: ignore[assignment]

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            seen.append("released")

    class AMQP:
        @property
        def send_task_message(self) -> None:
            seen.append("sender")

    monkeypatch.setattr(type(app), "backend", property(lambda self: seen.append("backend")))
    fake = AMQP()
    monkeypatch.setattr(type(app), "amqp", property(lambda self: fake))
    monkeypatch.setattr(app, "producer_or_acquire", lambda: Producer())
    tasks._ready_to_send()
    assert seen == ["backend", "sender", "channel", "released"]
