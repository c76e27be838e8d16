"""The streaming multipart/related reader and writer (RFC 2046 as PS3.18 uses it)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imaging.dicomweb import multipart
from imaging.dicomweb.multipart import MultipartError, OutPart, read_parts, write_parts


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read, as a slow chunked upload does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(self.step, size if size > 0 else self.step)]
        self.pos += len(chunk)
        return chunk


def body(parts: list[bytes], boundary: str = "XyZ", preamble: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
    return out + f"\r\n--{boundary}--".encode()


def test_parts_come_back_byte_for_byte_whatever_the_read_size(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(multipart, "READ_SIZE", 7)
    payloads = [b"a" * 100 + b"\r\n--XyZ-not-a-boundary-line"[:5], b"", bytes(range(256)) * 40]
    for step in (1, 3, 64, 10_000):
        spool = tmp_path / str(step)
        spool.mkdir()
        parts = read_parts(Trickle(body(payloads), step), b"XyZ", spool, max_part_bytes=1 << 20)
        assert [p.path.read_bytes() for p in parts] == payloads
        assert all(p.content_type == "application/dicom" for p in parts)


def test_a_body_that_starts_with_the_boundary_and_has_a_preamble_both_parse(tmp_path: Path) -> None:
    no_leading_crlf = b"--b\r\n\r\nfirst\r\n--b\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--b--\r\n"
    parts = read_parts(io.BytesIO(no_leading_crlf), b"b", tmp_path, max_part_bytes=100)
    assert [p.path.read_bytes() for p in parts] == [b"first", b"second"]
    assert parts[0].headers == {}
    with_preamble = body([b"x"], boundary="b", preamble=b"ignored preamble")
    assert read_parts(io.BytesIO(with_preamble), b"b", tmp_path, max_part_bytes=100)[0].path.read_bytes() == b"x"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "does not contain the boundary"),
        (b"--b\r\n\r\ntruncated", "closing boundary is missing"),
        (b"--b\r\nContent-Type application/dicom\r\n\r\nx\r\n--b--", "malformed header"),
        (b"--b--\r\n", "no parts"),
        (b"--b\r\nContent-Type: application/dicom", "ends inside a part's headers"),
        (b"--bGARBAGE\r\n\r\nx\r\n--b--", "unexpected characters"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason):
        read_parts(io.BytesIO(data), b"b", tmp_path, max_part_bytes=100)


def test_a_part_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MultipartError, match="larger than the limit"):
        read_parts(io.BytesIO(body([b"x" * 5000], boundary="b")), b"b", tmp_path, max_part_bytes=1000)


def test_boundary_must_be_given_and_short() -> None:
    with pytest.raises(MultipartError):
        multipart.boundary_of({})
    with pytest.raises(MultipartError):
        multipart.boundary_of({"boundary": "x" * 71})
    assert multipart.boundary_of({"boundary": "abc"}) == b"abc"


def test_written_parts_read_back_the_same(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    out = [
        OutPart("application/dicom", opener=source.open("rb").__enter__),
        OutPart("application/dicom", data=b"small"),
    ]
    stream = b"".join(write_parts(out, "bnd", chunk_size=1000))
    assert stream.startswith(b"--bnd\r\nContent-Type: application/dicom\r\n\r\n")
    assert stream.endswith(b"\r\n--bnd--\r\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    parts = read_parts(io.BytesIO(stream), b"bnd", spool, max_part_bytes=1 << 20)
    assert [p.path.read_bytes() for p in parts] == [source.read_bytes(), b"small"]


def test_writer_yields_bounded_chunks(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"z" * 10_000)
    chunks = list(write_parts([OutPart("application/dicom", opener=lambda: source.open("rb"))], "b", chunk_size=1024))
    assert max(len(c) for c in chunks) <= 1024


def test_body_length_is_exact_when_every_size_is_known(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"q" * 3000)
    parts = [
        OutPart("application/dicom", opener=lambda: source.open("rb"), size=3000),
        OutPart("application/octet-stream", data=b"abc"),
    ]
    assert multipart.body_length(parts, "bb") == len(b"".join(write_parts(parts, "bb")))
    assert multipart.body_length([OutPart("application/dicom", opener=lambda: source.open("rb"))], "bb") is None


def test_limits_raise_too_large_before_the_rest_is_read(tmp_path: Path) -> None:
    data = body([b"x"] * 5, boundary="b")
    stream = io.BytesIO(data)
    with pytest.raises(multipart.TooLarge, match="more than the limit of 3 parts"):
        read_parts(stream, b"b", tmp_path, max_part_bytes=100, max_parts=3)
    with pytest.raises(multipart.TooLarge, match="request body is larger"):
        read_parts(io.BytesIO(data), b"b", tmp_path, max_part_bytes=100, max_body_bytes=10)
