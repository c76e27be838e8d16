"""Request bodies read with a time limit, for every view (a WSGI wrapper, under gunicorn).

gunicorn's workers read a request body with blocking reads and no limit of time: a client
that declares a body and stops sending holds a worker thread until it gives up. Here the
connection's socket has a timeout while the application runs (not while the answer is
sent: a slow line may take longer than that to receive a study). When a read times out,
the answer is 408 whatever else the application made of the error, and the socket is shut
for reading so that gunicorn does not wait for the rest of the body either. nginx in front
(deploy/nginx/alliance.conf) buffers bodies, which makes this rare.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
TIMED_OUT = b"The request body stopped arriving before it was complete; send the request again.\n"


class _WatchedInput:
    """wsgi.input, noting whether a read timed out."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.timed_out = False

    def read(self, *args: Any) -> bytes:
        return self._watch(self.stream.read, *args)

    def readline(self, *args: Any) -> bytes:
        return self._watch(self.stream.readline, *args)

    def readlines(self, *args: Any) -> list[bytes]:
        return self._watch(self.stream.readlines, *args)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _watch(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except TimeoutError:
            self.timed_out = True
            raise


class BodyTimeout:
    """Wraps the WSGI application: each wait for request body bytes lasts at most `seconds`."""

    def __init__(self, app: WsgiApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock: socket.socket | None = environ.get("gunicorn.socket")
        if sock is None or not _has_body(environ):
            return self.app(environ, start_response)
        watched = environ["wsgi.input"] = _WatchedInput(environ["wsgi.input"])
        started: list[tuple[Any, ...]] = []

        def defer(*args: Any) -> Callable[[bytes], None]:  # Django starts its answer before returning it
            started.append(args)
            return _no_write

        previous = sock.gettimeout()
        sock.settimeout(self.seconds)
        try:
            body = self.app(environ, defer)
        finally:
            sock.settimeout(previous)
        if not watched.timed_out or _answered_408(started):  # STOW-RS answers its own, in JSON
            start_response(*started[0])
            return body
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        if hasattr(body, "close"):
            body.close()
        start_response("408 Request Timeout", [("Content-Type", "text/plain; charset=utf-8")])
        return [TIMED_OUT]


def _answered_408(started: list[tuple[Any, ...]]) -> bool:
    return bool(started) and str(started[0][0]).startswith("408")


def _no_write(data: bytes) -> None:
    raise RuntimeError("this application does not use the WSGI write() callable")


def _has_body(environ: dict[str, Any]) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False
