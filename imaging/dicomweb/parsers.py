"""The one request media type DICOMweb reads: multipart/related; type="application/dicom" (STOW-RS).

The body is read from the raw WSGI input when it is chunked: Django sees no
Content-Length then and would hand the view an empty body (dicomweb-client sends every
body over 1 MB chunked). Parts are spooled to disk as they arrive, never held whole.

A body is read with limits, so that one client cannot hold a worker or fill the disk:
a declared Content-Length over the cap is refused before anything is read (413), a
chunked body as soon as it passes the cap, and under gunicorn each read waits at most
REQUEST_BODY_TIMEOUT_SECONDS for the next bytes (408). A body abandoned half-read has
its socket shut for reading, so that the server does not wait for the rest either.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser

from imaging.dicomweb import media
from imaging.dicomweb.multipart import MultipartError, Part, Readable, TooLarge, boundary_of, read_parts


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "payload_too_large"


class RequestTimeout(exceptions.APIException):
    status_code = 408
    default_code = "request_timeout"


def body_stream(request: HttpRequest) -> Readable:
    """The request body as a stream, including a chunked one (Transfer-Encoding: chunked).

    A WSGI server that accepts chunked bodies (gunicorn) de-chunks wsgi.input and leaves
    CONTENT_LENGTH unset; Django's own stream would then end at once.
    """
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return request.META["wsgi.input"]
    return request


def declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class RequestBody:
    """The body as a Readable whose failures are DICOMweb answers: a read that waits too
    long is RequestTimeout; one the server or the client broke off (bad chunked framing,
    a dropped connection) is MultipartError, a bad request."""

    def __init__(self, request: HttpRequest) -> None:
        self.stream = body_stream(request)
        self.socket: socket.socket | None = request.META.get("gunicorn.socket")
        self.ended = False

    def read(self, size: int = -1, /) -> bytes:
        try:
            chunk = self.stream.read(size)
        except Exception as exc:  # gunicorn's chunk parser, the socket and Django raise many kinds
            if _timed_out(exc):
                raise RequestTimeout("The request body stopped arriving; send it again.") from None
            raise MultipartError(f"The request body could not be read ({type(exc).__name__}).") from None
        self.ended = not chunk
        return chunk

    @contextlib.contextmanager
    def reading(self, timeout: float) -> Iterator[RequestBody]:
        """Reads wait at most `timeout` seconds each; a body left half-read is abandoned."""
        previous = self.socket.gettimeout() if self.socket is not None else None
        if self.socket is not None:
            self.socket.settimeout(timeout)
        try:
            yield self
        except BaseException:
            if not self.ended:
                self.abandon()
            raise
        finally:
            if self.socket is not None:
                self.socket.settimeout(previous)  # sending the answer may take longer than a read

    def abandon(self) -> None:
        """Stop reading this connection: the server then neither waits for nor reads the rest
        of the body (gunicorn would drain it before the next request on a kept-alive one)."""
        if self.socket is None:
            return
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RD)


def _timed_out(exc: BaseException) -> bool:
    """TimeoutError itself, or Django's UnreadablePostError made from one."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)


class MultipartRelatedDicomParser(BaseParser):
    """multipart/related; type="application/dicom" -> the parts, spooled to files."""

    media_type = media.MULTIPART_RELATED

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> list[Part]:
        content_type = media.parse_media_range(media_type or "")
        if content_type.type != media.MULTIPART_RELATED or content_type.part_type not in ("", media.DICOM):
            raise UnsupportedMediaType(
                media_type or "",
                detail='STOW-RS accepts multipart/related; type="application/dicom" only.',
            )
        context = parser_context or {}
        spool_dir: Path = context["spool_dir"]
        try:
            return read_parts(
                stream,
                boundary_of(content_type.params),
                spool_dir,
                max_part_bytes=context["max_part_bytes"],
                max_body_bytes=context.get("max_body_bytes"),
                max_parts=context.get("max_parts"),
                on_part=context.get("on_part"),
            )
        except TooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except MultipartError as exc:
            raise ParseError(f"Malformed multipart/related body: {exc}") from None
