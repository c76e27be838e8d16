"""imaging/handoff.py: a DICOM server thread's database connection handed to the next thread.

Real threads and real PostgreSQL backends (hence transactional tests): which backend served
a thread is its pg_backend_pid().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections

from alliance.db_fresh import check_unless_fresh, used_well
from imaging.handoff import Handoff
from tests.processes import until

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(work: Callable[[], Any]) -> Any:
    """work() on a new thread (as pynetdicom starts one per association); its result."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # noqa: BLE001  # re-raised on the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1


def _serve(handoff: Handoff, before: Callable[[], None] = lambda: None) -> int:
    """What a server thread does: take, use the database, give back; its backend."""

    def work() -> int:
        handoff.take()
        pid = _backend()
        before()
        handoff.give_back()
        return pid

    return _in_thread(work)


def test_the_next_thread_takes_the_connection_the_last_one_gave_back() -> None:
    handoff = Handoff()
    first = _serve(handoff)
    assert handoff.waiting() == 1
    assert _serve(handoff) == first
    assert _serve(handoff) == first
    handoff.close()
    assert handoff.waiting() == 0
    assert not _alive(first)


def test_without_one_given_back_a_thread_connects_as_before() -> None:
    handoff = Handoff()
    seen = _in_thread(lambda: (handoff.take(), _backend())[1])
    assert seen != _backend()  # its own backend, not the main thread's
    assert handoff.waiting() == 0


def test_a_connection_opened_at_start_serves_the_first_thread() -> None:
    handoff = Handoff()
    handoff.open_one()
    assert handoff.waiting() == 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        before = {row[0] for row in cursor.fetchall()}
    assert _serve(handoff) in before  # no new backend for it
    handoff.close()


def test_a_connection_whose_transaction_failed_is_closed_not_handed_on() -> None:
    handoff = Handoff()

    def fail() -> None:
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    broken = _serve(handoff, before=fail)
    assert handoff.waiting() == 0
    assert not _alive(broken)
    assert _serve(handoff) != broken


def test_a_connection_past_its_age_is_closed_not_handed_on() -> None:
    handoff = Handoff()

    def age() -> None:
        connection.close_at = time.monotonic() - 1  # as CONN_MAX_AGE leaves it once passed

    old = _serve(handoff, before=age)
    assert handoff.waiting() == 0
    assert not _alive(old)


def test_no_more_than_keep_wait() -> None:
    handoff = Handoff(keep=1)
    release = threading.Event()
    started = threading.Barrier(3)
    pids: list[int] = []

    def work() -> None:
        handoff.take()
        pids.append(_backend())
        started.wait()
        release.wait()
        handoff.give_back()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait()
    release.set()
    for thread in threads:
        thread.join()
    assert handoff.waiting() == 1
    assert sorted(_alive(pid) for pid in pids) == [False, True]
    handoff.close()
    assert not any(_alive(pid) for pid in pids)


def test_the_main_threads_connection_is_never_handed_on() -> None:
    handoff = Handoff()
    mine = _backend()
    handoff.give_back()
    assert handoff.waiting() == 0
    assert _backend() != mine  # closed: the next statement connected again


def _round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The health checks' round trips (is_usable), counted."""
    checks: list[int] = []
    wrapper_class = type(connections["default"])
    is_usable = wrapper_class.is_usable

    def counted(self: Any) -> bool:
        checks.append(1)
        return is_usable(self)

    monkeypatch.setattr(wrapper_class, "is_usable", counted)
    return checks


def test_a_connection_given_back_a_moment_ago_is_not_sent_a_health_check(monkeypatch: pytest.MonkeyPatch) -> None:
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    handoff = Handoff()
    first = _serve(handoff)
    checks = _round_trips(monkeypatch)
    assert _serve(handoff) == first
    assert checks == []
    handoff.close()


def test_a_connection_that_waited_longer_is_checked_and_replaced_when_it_broke(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("alliance.db_fresh.FRESH_SECONDS", 0.0)
    handoff = Handoff()
    first = _serve(handoff)
    checks = _round_trips(monkeypatch)
    assert _serve(handoff) == first  # checked, and usable
    assert checks == [1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    assert until(lambda: not _alive(first))
    replaced = _serve(handoff)  # the check finds it broken: a new backend, no error
    assert replaced != first
    assert checks == [1, 1]
    handoff.close()


def test_only_the_connection_used_a_moment_ago_is_spared_the_health_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """used_well is said of a connection: one opened since (the wrapper closed and connected
    again) is checked as any other, however soon after."""
    wrapper = connections["default"]
    wrapper.ensure_connection()
    checks = _round_trips(monkeypatch)

    def used() -> None:
        check_unless_fresh(wrapper)
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")

    used_well(wrapper)
    used()
    assert checks == []
    used_well(wrapper)
    wrapper.close()
    wrapper.ensure_connection()
    used()
    assert checks == [1]
