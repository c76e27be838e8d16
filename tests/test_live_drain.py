"""The live server's drain (tests/live_drain.py): a test's database is flushed only after
the server has served what a closed browser left behind."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler

from django.core.servers.basehttp import ThreadedWSGIServer

from tests.live_drain import QUIET_S, InFlight


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _server(app):  # type: ignore[no-untyped-def]
    """The live server's kind of server (a thread per connection), serving `app`."""
    httpd = ThreadedWSGIServer(("127.0.0.1", 0), _Quiet)
    httpd.set_app(app)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _slow(seconds: float, started: threading.Event, finished: threading.Event):  # type: ignore[no-untyped-def]
    """A WSGI app that takes `seconds` to answer, telling when it starts and when it is done."""

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        started.set()
        time.sleep(seconds)
        finished.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"frame"]

    return app


def _send_and_hang_up(httpd) -> None:  # type: ignore[no-untyped-def]
    """A request sent whole, then the connection closed without reading the answer: what a
    browser page closing in the middle of its fetches leaves."""
    with socket.create_connection(httpd.server_address) as sock:
        sock.sendall(b"GET /frames/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def test_waits_until_a_request_left_by_a_closed_client_has_been_served() -> None:
    started, finished = threading.Event(), threading.Event()
    with _server(_slow(0.5, started, finished)) as httpd:
        counter = InFlight(httpd)
        _send_and_hang_up(httpd)
        assert started.wait(5)
        assert counter.wait_idle(10) is True
        assert finished.is_set(), "the wait ended while the request was still being served"
        assert counter.count == 0


def test_reports_a_server_still_busy_when_the_time_is_up() -> None:
    release = threading.Event()

    def stuck(environ, start_response):  # type: ignore[no-untyped-def]
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    with _server(stuck) as httpd:
        counter = InFlight(httpd)
        try:
            _send_and_hang_up(httpd)
            deadline = time.monotonic() + 5
            while counter.count == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert counter.wait_idle(0.3) is False
            assert counter.count == 1
        finally:
            release.set()
        assert counter.wait_idle(10) is True


def test_a_connection_arriving_in_the_quiet_period_is_waited_for() -> None:
    """A request the browser sent just before it closed may reach the server only after the
    count first fell to zero: the wait sees it and waits for it too."""
    finished = threading.Event()
    with _server(_slow(0.3, threading.Event(), finished)) as httpd:
        counter = InFlight(httpd)
        waited: list[bool] = []
        waiter = threading.Thread(target=lambda: waited.append(counter.wait_idle(10)))
        waiter.start()
        time.sleep(QUIET_S / 4)
        _send_and_hang_up(httpd)
        waiter.join(15)
        assert waited == [True]
        assert finished.is_set(), "the wait ended before the late request was served"
