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
    monkeypatch.setattr(tasks, "_batcher", tasks._Batcher(send=lambda ids: calls.append(list(ids))))
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

    monkeypatch.setattr(tasks, "_batcher", tasks._Batcher(send=away))
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
