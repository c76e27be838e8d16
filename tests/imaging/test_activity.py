"""Rendering waits while its node takes in images (imaging.activity, imaging.tasks.render_instances)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from imaging import activity, tasks
from tests.imaging.dicomgen import make_ct_series, part10_bytes


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a process that has never marked (the throttle is per process)."""
    monkeypatch.setattr(activity, "_last_mark", -activity.MARK_EVERY)


def _age_mark(seconds: float) -> None:
    then = time.time() - seconds
    os.utime(activity.mark_path(), (then, then))


def test_a_node_never_marked_is_not_busy() -> None:
    assert not activity.mark_path().exists()
    assert activity.busy_for() == 0.0
    assert activity.wait_for_lull(5.0) == 0.0


def test_ingest_marks_the_node_busy_under_data_dir(settings: Any) -> None:
    activity.mark_ingest()
    assert activity.mark_path() == Path(settings.DATA_DIR) / "run" / "ingesting"
    assert activity.mark_path().exists()
    assert 0 < activity.busy_for() <= activity.QUIET_AFTER


def test_the_mark_is_touched_at_most_every_half_second(monkeypatch: pytest.MonkeyPatch) -> None:
    activity.mark_ingest()
    _age_mark(10)
    activity.mark_ingest()  # within MARK_EVERY of the last touch: no system call
    assert activity.busy_for() == 0.0
    monkeypatch.setattr(activity, "_last_mark", time.monotonic() - activity.MARK_EVERY)
    activity.mark_ingest()
    assert activity.busy_for() > 0


def test_the_node_is_quiet_once_the_mark_is_older_than_quiet_after() -> None:
    activity.mark_ingest()
    _age_mark(activity.QUIET_AFTER + 0.1)
    assert activity.busy_for() == 0.0


def test_a_mark_from_the_future_is_no_reason_to_wait() -> None:
    """The clock set back after a mark: the mark looks younger than zero."""
    activity.mark_ingest()
    _age_mark(-3600)
    assert activity.busy_for() == 0.0


def test_a_mark_that_cannot_be_written_is_only_no_wait(settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.DATA_DIR = blocker  # DATA_DIR/run cannot be made under a file
    activity.mark_ingest()
    assert activity.busy_for() == 0.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_waiting_stops_at_the_limit_under_a_steady_stream() -> None:
    clock = _Clock()

    def sleep_while_ingest_goes_on(seconds: float) -> None:
        clock.sleep(seconds)
        _age_mark(0)  # another instance arrived meanwhile

    activity.mark_ingest()
    waited = activity.wait_for_lull(2.0, sleep=sleep_while_ingest_goes_on, clock=clock)
    assert waited == pytest.approx(2.0)
    assert len(clock.sleeps) >= 2 / activity.POLL_SECONDS
    assert max(clock.sleeps) <= activity.POLL_SECONDS


def test_waiting_ends_with_the_lull() -> None:
    clock = _Clock()

    def sleep_until_the_store_ends(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:  # the last instance came before the third wake-up
            _age_mark(activity.QUIET_AFTER + 0.1)

    activity.mark_ingest()
    waited = activity.wait_for_lull(60.0, sleep=sleep_until_the_store_ends, clock=clock)
    assert len(clock.sleeps) == 3
    assert waited == pytest.approx(sum(clock.sleeps))


def test_every_ingest_marks_the_node(clinic: Any, actor: Any) -> None:
    from imaging.ingest import ingest_bytes

    assert activity.busy_for() == 0.0
    ingest_bytes(part10_bytes(make_ct_series(1, 32, 32)[0]), institution=clinic, actor=actor, via="test")
    assert activity.busy_for() > 0


def test_a_stow_request_marks_the_node(clinic: Any, actor: Any, tmp_path: Path) -> None:
    from imaging.ingest import ingest_paths

    path = tmp_path / "part.dcm"
    path.write_bytes(part10_bytes(make_ct_series(1, 32, 32)[0]))
    assert activity.busy_for() == 0.0
    [outcome] = ingest_paths([path], institution=clinic, actor=actor, via="stow")
    assert not isinstance(outcome, Exception) and outcome is not None
    assert activity.busy_for() > 0


def test_each_part_of_a_stow_body_marks_the_node_as_it_arrives(tmp_path: Path) -> None:
    """STOW-RS starts each part's sync and checksum as soon as the part is complete, while the
    rest of a long upload is still arriving (ingest.start_on): the upload is ingest too."""
    from imaging.ingest import start_on

    path = tmp_path / "part.dcm"
    path.write_bytes(part10_bytes(make_ct_series(1, 32, 32)[0]))
    assert activity.busy_for() == 0.0
    started = start_on(path)
    started.hashing.result(timeout=30)
    assert activity.busy_for() > 0


def test_indexing_what_the_spool_received_marks_the_node(clinic: Any, actor: Any, tmp_path: Path) -> None:
    """The spool answers a C-STORE before indexing it, and its indexer can run seconds behind
    the last instance received: rendering waits for the indexing too."""
    from imaging import ingest

    path = tmp_path / "spooled.dcm"
    path.write_bytes(part10_bytes(make_ct_series(1, 32, 32)[0]))
    assert activity.busy_for() == 0.0
    ingest.index_spooled(path, None, institution=clinic, actor=actor, via="dimse", source="10.0.0.5:4100")
    assert activity.busy_for() > 0


@pytest.fixture
def rendering(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[float]]:
    rendered: list[int] = []
    waits: list[float] = []
    monkeypatch.setattr(tasks, "complete_worklist_steps", lambda ids: None)
    monkeypatch.setattr(tasks, "render_instance", lambda pk: rendered.append(pk) or True)

    def wait(limit: float) -> float:
        waits.append(limit)
        return min(limit, 25.0)  # each wait takes 25 s of the task's budget

    monkeypatch.setattr(activity, "wait_for_lull", wait)
    return rendered, waits


def test_in_a_worker_each_instance_waits_within_one_budget_per_task(
    rendering: tuple[list[int], list[float]], settings: Any
) -> None:
    settings.RENDER_DEFER_SECONDS = 60
    rendered, waits = rendering
    tasks.render_instances.push_request(called_directly=False, is_eager=False)  # as a worker runs it
    try:
        assert tasks.render_instances.run([1, 2, 3, 4]) == 4
    finally:
        tasks.render_instances.pop_request()
    assert rendered == [1, 2, 3, 4]
    assert waits == [60.0, 35.0, 10.0]  # the budget spent, the last instance renders without waiting


def test_called_in_process_it_does_not_wait(rendering: tuple[list[int], list[float]], settings: Any) -> None:
    settings.RENDER_DEFER_SECONDS = 60
    rendered, waits = rendering
    assert tasks.render_instances([5, 6]) == 2  # called directly
    assert tasks.render_instances.apply(args=([7],)).result == 1  # eagerly
    assert rendered == [5, 6, 7]
    assert waits == []
