"""Malformed, truncated and mutated files fed to ingest: refused cleanly, or stored whole.

Whatever the bytes, ingest either returns a result whose stored file is exactly what was
sent (with at most a preamble/file meta put in front), or raises IngestError with a
reason; it never crashes otherwise and never leaves rows or files behind when it refuses.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging import storage
from imaging.ingest import STATUSES, IngestError, IngestResult, ingest_bytes
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import index_counts, stored_files

_SEED = make_ct_series(1, 8, 8)[0]
VALID = part10_bytes(_SEED)
_BODY_START = VALID.index(b"\x08\x00\x05\x00")


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "bare", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "bare":
        data = data[_BODY_START:]
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    position = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        for offset in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[offset] ^= draw(st.integers(1, 255))
    elif kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        data[position : position + len(chunk)] = chunk
    elif kind == "insert":
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del data[position : position + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.mark.django_db
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_files())
def test_malformed_files_are_refused_or_stored_whole(data: bytes, clinic, actor, dicom_dir) -> None:  # type: ignore[no-untyped-def]
    rows_before, files_before = index_counts(), len(stored_files(dicom_dir))
    try:
        result = ingest_bytes(data, institution=clinic, actor=actor, via="fuzz")
    except IngestError as exc:
        assert exc.code in STATUSES and exc.reason
        assert index_counts() == rows_before
        assert len(stored_files(dicom_dir)) == files_before
        return
    assert isinstance(result, IngestResult)
    if result.created:
        stored = storage.local_path(result.instance).read_bytes()
        assert stored.endswith(data) and len(stored) == result.instance.size_bytes
        assert len(stored_files(dicom_dir)) == files_before + 1
    else:
        assert len(stored_files(dicom_dir)) == files_before
