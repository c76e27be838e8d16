"""A web request spares the health check of a connection the request before used well a
moment ago (alliance.db_fresh.FreshConnectionMiddleware), and only then."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, connections
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from alliance.db_fresh import FreshConnectionMiddleware
from tests.imaging.test_handoff import _round_trips

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the check is spared on PostgreSQL only"),
]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The health checks' round trips (is_usable), counted as the DICOM server's tests count them."""
    return _round_trips(monkeypatch)


def _query(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return HttpResponse(str(cursor.fetchone()[0]))


def _failing(request: HttpRequest) -> HttpResponse:
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    return HttpResponse("failed")


def _nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no database")


def _request(view: Any = _query) -> str:
    """One request as a WSGI server runs it: Django's checks at its start and end
    (close_old_connections on request_started and request_finished) around the middleware."""
    close_old_connections()
    try:
        return FreshConnectionMiddleware(view)(RequestFactory().get("/")).content.decode()
    finally:
        close_old_connections()


def test_it_is_installed_outside_every_middleware_that_may_use_the_database() -> None:
    position = settings.MIDDLEWARE.index("alliance.db_fresh.FreshConnectionMiddleware")
    assert position < settings.MIDDLEWARE.index("alliance.middleware.DatabaseUnavailableMiddleware")
    assert position < settings.MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware")


def test_the_request_after_one_that_used_the_connection_well_sends_no_check(checks: list[int]) -> None:
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.ensure_connection()
    first = _request()
    assert checks == [1]  # a kept connection, checked before its first use
    assert _request() == first  # the same connection, spared
    assert checks == [1]


def test_a_spared_request_does_not_renew_the_mark(checks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    connection.ensure_connection()
    _request()
    mark = connection.alliance_used_well  # type: ignore[attr-defined]
    _request()
    _request(_nothing)
    assert connection.alliance_used_well is mark  # type: ignore[attr-defined]
    monkeypatch.setattr("alliance.db_fresh.FRESH_SECONDS", 0.0)  # the second is over
    _request()
    assert checks == [1, 1]
    assert connection.alliance_used_well is not mark  # type: ignore[attr-defined]


def test_a_request_that_left_an_error_marks_nothing(checks: list[int]) -> None:
    connection.ensure_connection()
    _request(_failing)
    assert getattr(connection, "alliance_used_well", (None,))[0] is not connection.connection
    _request()
    assert len(checks) >= 2  # Django's own check of the failed connection, then the next use's


def test_a_connection_opened_since_the_mark_is_checked(checks: list[int]) -> None:
    connection.ensure_connection()
    first = _request()
    connection.close()
    connection.ensure_connection()  # a new backend, kept from before this request
    second = _request()
    assert second != first
    assert checks == [1, 1]


def _terminate(pid: str) -> None:
    """The backend ended by the server, as a restart ends every session."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [int(pid)])
    finally:
        other.close()


def test_a_connection_the_server_ended_within_the_second_is_checked_and_replaced(checks: list[int]) -> None:
    """A restart can take less than FRESH_SECONDS: the ended session's socket has the server's
    notice to read (or is hung up), so it is checked however fresh, and replaced."""
    connection.ensure_connection()
    first = _request()
    assert _request() == first and checks == [1]  # spared
    _terminate(first)
    until_readable = 50
    while until_readable and not _readable():
        until_readable -= 1
        time.sleep(0.01)
    second = _request()  # no error
    assert second != first
    assert len(checks) == 2


def _readable() -> bool:
    import select

    poller = select.poll()
    poller.register(connection.connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def test_a_broken_connection_is_replaced_once_the_second_is_over(
    checks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    connection.ensure_connection()
    first = _request()
    _terminate(first)
    monkeypatch.setattr("alliance.db_fresh.FRESH_SECONDS", 0.0)
    assert _request() != first  # checked, found broken, replaced: no error
