"""The live server's connections, counted so that a test's database is flushed only once
the server has finished with every request the browser sent.

A browser page closed at the end of a test can leave requests behind: the viewer, for one,
is still fetching frames when the test's last assertion passes. The live server serves them
on threads of its own; one of them reading the database while the flush truncates its tables
can deadlock the flush, and the next test then finds the last one's rows."""

from __future__ import annotations

import threading
import time
from typing import Any

QUIET_S = 0.2


class InFlight:
    """Counts the connections a ThreadedWSGIServer has accepted and not yet closed: counted
    up on the serving thread before the connection's thread starts, down once that thread has
    closed the connection and its database connections."""

    def __init__(self, httpd: Any) -> None:
        self.count = 0
        self._changed = threading.Condition()
        accept, serve = httpd.process_request, httpd.process_request_thread

        def process_request(request: Any, client_address: Any) -> None:
            with self._changed:
                self.count += 1
            try:
                accept(request, client_address)
            except BaseException:
                self._done()
                raise

        def process_request_thread(request: Any, client_address: Any) -> None:
            try:
                serve(request, client_address)
            finally:
                self._done()

        httpd.process_request = process_request
        httpd.process_request_thread = process_request_thread

    def _done(self) -> None:
        with self._changed:
            self.count -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no connection has been open for QUIET_S (a request the browser sent
        before it closed may still wait in the listen queue); False if `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                while self.count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._changed.wait(left)
                if not self._changed.wait_for(lambda: self.count > 0, QUIET_S):
                    return True


def in_flight(live_server: Any) -> InFlight:
    """The session's live server's counter, installed on first use."""
    httpd = live_server.thread.httpd
    counter = getattr(httpd, "alliance_in_flight", None)
    if counter is None:
        counter = httpd.alliance_in_flight = InFlight(httpd)
    return counter
