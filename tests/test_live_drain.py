"""The live server's drain (tests/live_drain.py): a test's database is flushed only after
the server has served what a closed browser left behind."""

from __future__ import annotations

import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler

from django.core.servers.basehttp import ThreadedWSGIServer

from tests.live_drain import QUIET_S, InFlight


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _server(app):  # type: ignore[no-untyped-def]
    httpd = ThreadedWSGIServer(("127.0.0.1", 0), _Quiet)
    httpd.set_app(app)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd


def _send_and_hang_up(httpd) -> None:  # type: ignore[no-untyped-def]
    """A request sent whole, then the connection closed without reading the answer: what a
    browser page closing in the middle of its fetches leaves."""
    with socket.create_connection(httpd.server_address) as sock:
        sock.sendall(b"GET /frames/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def test_waits_until_a_request_left_by_a_closed_client_has_been_served() -> None:
    started, finished = threading.Event(), threading.Event()

    def slow(environ, start_response):  # type: ignore[no-untyped-def]
        started.set()
        time.sleep(0.5)
        finished.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"frame"]

    httpd = _server(slow)
    try:
        counter = InFlight(httpd)
        _send_and_hang_up(httpd)
        assert started.wait(5)
        assert counter.wait_idle(10) is True
        assert finished.is_set(), "the wait ended while the request was still being served"
        assert counter.count == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_reports_a_server_still_busy_when_the_time_is_up() -> None:
    release = threading.Event()

    def stuck(environ, start_response):  # type: ignore[no-untyped-def]
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    httpd = _server(stuck)
    try:
        counter = InFlight(httpd)
        _send_and_hang_up(httpd)
        deadline = time.monotonic() + 5
        while counter.count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counter.wait_idle(0.3) is False
        assert counter.count == 1
        release.set()
        assert counter.wait_idle(10) is True
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


def test_an_idle_server_is_idle_after_the_quiet_period() -> None:
    httpd = _server(lambda environ, start_response: [])
    try:
        counter = InFlight(httpd)
        began = time.monotonic()
        assert counter.wait_idle(5) is True
        assert time.monotonic() - began >= QUIET_S * 0.9
    finally:
        httpd.shutdown()
        httpd.server_close()
