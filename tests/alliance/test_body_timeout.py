"""The WSGI wrapper that reads request bodies with a time limit (alliance/body_timeout.py)."""

from __future__ import annotations

import io
import socket
from typing import Any

from alliance.body_timeout import BodyTimeout


class Socket:
    """What the wrapper uses of gunicorn's client socket."""

    def __init__(self) -> None:
        self.timeout: float | None = None
        self.timeouts: list[float | None] = []
        self.shut: list[int] = []

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.timeout = value
        self.timeouts.append(value)

    def shutdown(self, how: int) -> None:
        self.shut.append(how)


class Stalls(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("timed out")


def reading_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Like Django: a read error becomes an answer of its own (here a 400)."""
    try:
        body = environ["wsgi.input"].read(100)
    except OSError:
        start_response("400 Bad Request", [("Content-Type", "text/html")])
        return [b"<html>bad</html>"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def call(app: BodyTimeout, environ: dict[str, Any]) -> tuple[str, bytes]:
    started: list[str] = []
    body = b"".join(app(environ, lambda status, headers: started.append(status)))
    return started[0], body


def test_a_stalled_body_is_408_and_the_socket_stops_reading() -> None:
    sock = Socket()
    environ = {"gunicorn.socket": sock, "CONTENT_LENGTH": "1000", "wsgi.input": Stalls()}
    status, body = call(BodyTimeout(reading_app, 7), environ)
    assert status.startswith("408") and b"stopped arriving" in body
    assert sock.timeouts == [7, None], "the timeout is lifted before the answer is sent"
    assert sock.shut == [socket.SHUT_RD]


def test_a_body_that_arrives_is_untouched() -> None:
    sock = Socket()
    environ = {"gunicorn.socket": sock, "CONTENT_LENGTH": "5", "wsgi.input": io.BytesIO(b"hello")}
    assert call(BodyTimeout(reading_app, 7), environ) == ("200 OK", b"hello")
    assert sock.shut == []


def test_requests_without_a_body_or_outside_gunicorn_are_passed_through() -> None:
    sock = Socket()
    no_body = {"gunicorn.socket": sock, "wsgi.input": Stalls()}
    assert call(BodyTimeout(reading_app, 7), no_body)[0].startswith("400")
    assert sock.timeouts == []
    no_socket = {"CONTENT_LENGTH": "1000", "wsgi.input": Stalls()}
    assert call(BodyTimeout(reading_app, 7), no_socket)[0].startswith("400")


def test_an_application_that_answers_408_itself_keeps_its_answer() -> None:
    def own_408(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read(100)
        except TimeoutError:
            start_response("408 Request Timeout", [("Content-Type", "application/json")])
            return [b'{"error": {"code": "request_timeout"}}']
        raise AssertionError("the read should have timed out")

    environ = {"gunicorn.socket": Socket(), "CONTENT_LENGTH": "1000", "wsgi.input": Stalls()}
    assert call(BodyTimeout(own_408, 7), environ) == ("408 Request Timeout", b'{"error": {"code": "request_timeout"}}')
