"""multipart/related (RFC 2387) as PS3.18 uses it, read and written as streams.

The reader splits a request body into parts without holding more than one read buffer
in memory: each part's body goes straight to a file in a spool folder. The writer yields
a response body part by part, reading each part's payload from a file-like in chunks.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CRLF = b"\r\n"
READ_SIZE = 1 << 20
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/related; the message says where."""


class TooLarge(MultipartError):
    """The body, a part, or the number of parts is over its limit (HTTP 413)."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass
class Part:
    """One body part spooled to disk: its headers (lower-case names) and where it is."""

    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class _Reader:
    stream: Readable
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False
    total: int = 0
    limit: int | None = None

    def fill(self) -> bool:
        """Read one more chunk; False at end of stream."""
        if self.eof:
            return False
        chunk = self.stream.read(READ_SIZE)
        if not chunk:
            self.eof = True
            return False
        self.total += len(chunk)
        if self.limit is not None and self.total > self.limit:
            raise TooLarge(f"The request body is larger than the limit of {self.limit} bytes.")
        self.buffer += chunk
        return True

    def find(self, needle: bytes, start: int = 0) -> int:
        return self.buffer.find(needle, start)


def boundary_of(content_type_params: dict[str, str]) -> bytes:
    boundary = content_type_params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise MultipartError("The Content-Type has no usable boundary parameter (RFC 2046: 1 to 70 characters).")
    return boundary.encode("ascii", "replace")


def read_parts(
    stream: Readable,
    boundary: bytes,
    spool_dir: Path,
    *,
    max_part_bytes: int,
    max_body_bytes: int | None = None,
    max_parts: int | None = None,
    on_part: Callable[[Part], None] | None = None,
) -> list[Part]:
    """Split the body into parts spooled under spool_dir; MultipartError if it is malformed,
    TooLarge as soon as a limit is passed (the rest is not read). `on_part` is called with
    each part once it is spooled whole (work on it may start while the rest arrives).

    The whole body is read before anything is returned, so a truncated or malformed body
    is refused as a whole rather than half-processed.
    """
    reader = _Reader(stream, limit=max_body_bytes)
    reader.buffer += CRLF  # so that a delimiter at the very start is found like any other
    delimiter = CRLF + b"--" + boundary
    _skip_preamble(reader, delimiter)
    parts: list[Part] = []
    while _after_delimiter(reader, delimiter):
        if max_parts is not None and len(parts) >= max_parts:
            raise TooLarge(f"The body has more than the limit of {max_parts} parts.")
        headers = _read_headers(reader)
        path = spool_dir / f"part-{len(parts):05d}"
        size = _read_body(reader, delimiter, path, max_part_bytes)
        parts.append(Part(headers=headers, path=path, size=size))
        if on_part is not None:
            on_part(parts[-1])
    if not parts:
        raise MultipartError("The multipart body has no parts.")
    return parts


def _skip_preamble(reader: _Reader, delimiter: bytes) -> None:
    while (at := reader.find(delimiter)) < 0:
        keep = len(delimiter) - 1
        if len(reader.buffer) > keep:
            del reader.buffer[: len(reader.buffer) - keep]
        if not reader.fill():
            raise MultipartError("The body does not contain the boundary given in the Content-Type.")
    del reader.buffer[: at + len(delimiter)]


def _after_delimiter(reader: _Reader, delimiter: bytes) -> bool:
    """After a delimiter: True if a part follows, False at the close delimiter."""
    while len(reader.buffer) < 2 and reader.fill():
        pass
    if reader.buffer[:2] == b"--":
        return False
    while (eol := reader.find(CRLF)) < 0:
        if len(reader.buffer) > MAX_HEADER_BYTES or not reader.fill():
            raise MultipartError("A boundary line is not ended by CRLF.")
    if reader.buffer[:eol].strip(b" \t"):
        raise MultipartError("A boundary line has unexpected characters after the boundary.")
    del reader.buffer[: eol + 2]
    return True


def _read_headers(reader: _Reader) -> dict[str, str]:
    while (end := _header_end(reader.buffer)) < 0:
        if len(reader.buffer) > MAX_HEADER_BYTES:
            raise MultipartError(f"A part's headers are longer than {MAX_HEADER_BYTES} bytes.")
        if not reader.fill():
            raise MultipartError("The body ends inside a part's headers.")
    raw = bytes(reader.buffer[:end])
    del reader.buffer[: end + (2 if raw == b"" else 4)]
    headers: dict[str, str] = {}
    for line in raw.split(CRLF) if raw else []:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise MultipartError(f"A part has a malformed header line: {line[:60]!r}.")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def _header_end(buffer: bytearray) -> int:
    """Index where the header block ends (a part may have no headers: a bare CRLF)."""
    if buffer[:2] == CRLF:
        return 0
    return buffer.find(CRLF + CRLF)


def _read_body(reader: _Reader, delimiter: bytes, path: Path, max_part_bytes: int) -> int:
    size = 0
    keep = len(delimiter) - 1
    with open(path, "wb") as out:
        while (at := reader.find(delimiter)) < 0:
            if len(reader.buffer) > keep:
                size += _spill(reader.buffer, len(reader.buffer) - keep, out)
                _check_size(size, max_part_bytes)
            if not reader.fill():
                raise MultipartError("The body ends inside a part: the closing boundary is missing.")
        size += _spill(reader.buffer, at, out)
        _check_size(size, max_part_bytes)
    del reader.buffer[: len(delimiter)]
    return size


def _spill(buffer: bytearray, count: int, out: BinaryIO) -> int:
    out.write(memoryview(buffer)[:count])
    del buffer[:count]
    return count


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise TooLarge(f"A part is larger than the limit of {limit} bytes.")


# --- writing ------------------------------------------------------------------------------


def new_boundary() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class OutPart:
    """A part to send: its Content-Type and payload (bytes, or a callable that opens a file).

    `size` is the opened file's length when known, so that the body's length is too.
    """

    content_type: str
    opener: Callable[[], BinaryIO] | None = None
    data: bytes | None = None
    size: int | None = None
    label: Any = None  # what the part is of (an instance), for on_error


def _head(part: OutPart, boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {part.content_type}\r\n\r\n".encode("ascii")


def _close(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def body_length(parts: Sequence[OutPart], boundary: str) -> int | None:
    """The exact length of write_parts' output, or None when a part's size is unknown."""
    total = len(_close(boundary))
    for part in parts:
        size = len(part.data) if part.data is not None else part.size
        if size is None:
            return None
        total += len(_head(part, boundary)) + size + len(CRLF)
    return total


def write_parts(
    parts: Iterable[OutPart],
    boundary: str,
    chunk_size: int = READ_SIZE,
    on_error: Callable[[OutPart, Exception], None] | None = None,
) -> Iterator[bytes]:
    """The body of a multipart/related response, yielded in chunks of at most chunk_size.

    A part's payload is opened before its first byte is written; with `on_error`, a part
    that cannot be opened is left out (and on_error told) instead of breaking the body off.
    """
    for part in parts:
        if part.opener is None:
            yield _head(part, boundary)
            yield part.data or b""
            yield CRLF
            continue
        try:
            handle = part.opener()
        except Exception as exc:
            if on_error is None:
                raise
            on_error(part, exc)
            continue
        yield _head(part, boundary)
        yield from _file_chunks(handle, chunk_size)
        yield CRLF
    yield _close(boundary)


def _file_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk
