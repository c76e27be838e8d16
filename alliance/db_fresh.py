"""The health check Django sends before a kept connection's first use, spared when that
connection was used without error a moment ago.

With CONN_HEALTH_CHECKS, Django sends a round trip (`SELECT 1`) before a kept connection's
first use in each request, and the DICOM server before each association's (imaging/handoff.py).
A connection used without error less than FRESH_SECONDS ago, with nothing come in on its
socket since, is used as it is instead. A database restart can take less than a second, but a
server that ends a session sends a notice and closes the socket, which makes it readable: such
a connection is checked however fresh (one poll, no round trip). A connection that breaks
after that look fails its first statement all the same, as any connection can between a check
and its use. The moment is kept with the connection it was said of, so a connection opened
since is checked as any.
PostgreSQL only: an SQLite connection is a file opened.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse

FRESH_SECONDS = 1.0


def used_well(wrapper: BaseDatabaseWrapper) -> None:
    """Its connection was used without error just now (given back, a batch committed, a
    request served): spare_if_fresh spares it the health check for FRESH_SECONDS."""
    wrapper.alliance_used_well = (wrapper.connection, time.monotonic())  # type: ignore[attr-defined]


def spare_if_fresh(wrapper: BaseDatabaseWrapper) -> bool:
    """No health check before the next use when the connection was used_well less than
    FRESH_SECONDS ago and nothing has come in on it since; whether it was spared."""
    used, at = getattr(wrapper, "alliance_used_well", (None, 0.0))
    if (
        wrapper.connection is not None
        and used is wrapper.connection
        and time.monotonic() - at < FRESH_SECONDS
        and _nothing_came_in(wrapper.connection)
    ):
        wrapper.health_check_done = True  # type: ignore[attr-defined]
        return True
    return False


def _nothing_came_in(session: Any) -> bool:
    """Whether an idle session's socket has nothing to read, looked at without waiting (one
    system call, no round trip). A server that ends the session (a restart, a terminated
    backend) sends its FATAL notice and closes the socket; either makes it readable, or
    hung up, and the round trip is then sent. Anything else that comes in unasked (a
    parameter's new value after a reload) only costs that round trip too."""
    try:
        fd = session.fileno()
    except Exception:  # noqa: BLE001 - closed or not a socket: let the check decide
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def check_unless_fresh(wrapper: BaseDatabaseWrapper) -> None:
    """As Django checks a kept connection before a request (close_if_unusable_or_obsolete:
    replaced when past its age or left failed, and with CONN_HEALTH_CHECKS a round trip before
    its first use), without the round trip when spare_if_fresh spares it."""
    wrapper.close_if_unusable_or_obsolete()
    spare_if_fresh(wrapper)


class FreshConnectionMiddleware:
    """The web side. Django has just checked each kept connection's age and errors at the
    request's start (close_old_connections); a PostgreSQL connection that a request used well
    less than FRESH_SECONDS ago is spared the round trip before its first use in this one.

    A request that used a connection it was not spared for (its health check done, by the
    round trip or by connecting) and left no error on it marks it used well at its end. One
    that was spared does not renew the mark (its check was skipped, and it may not have used
    the connection at all), so a connection in steady use is still checked once a second.
    Outermost but for the headers' and timing middleware, so every database use of the
    request is inside it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        spared = [w for w in connections.all(initialized_only=True) if w.vendor == "postgresql" and spare_if_fresh(w)]
        response = self.get_response(request)
        for wrapper in connections.all(initialized_only=True):
            if (
                wrapper.vendor == "postgresql"
                and wrapper not in spared
                and wrapper.connection is not None
                and wrapper.health_check_done  # type: ignore[attr-defined]
                and not wrapper.errors_occurred
                and not wrapper.in_atomic_block
            ):
                used_well(wrapper)
        return response
