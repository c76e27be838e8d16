"""Transfer syntaxes for WADO-RS: send as stored, or transcode to Explicit VR Little Endian.

PS3.18 8.7.3.5: `transfer-syntax=*` asks for the stored syntax; no parameter means the
default, Explicit VR Little Endian. Transcoding handles one instance at a time in memory
(the stored syntax is streamed from storage without being parsed); a deflated one is
inflated into a temporary file first, never whole by pydicom in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from io import BytesIO
from typing import IO

from django.conf import settings
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.dicom import part10
from imaging.dicomweb import media
from imaging.storage import temp_dir


class Untranscodable(Exception):
    """The requested transfer syntax cannot be produced from what is stored (406)."""


def target_syntax(requested: str | None, stored: Iterable[str]) -> str | None:
    """The syntax to transcode to, or None to send every file as stored."""
    wanted = requested or media.DEFAULT_TRANSFER_SYNTAX
    stored = set(stored)
    if wanted == media.ANY_TRANSFER_SYNTAX or stored == {wanted}:
        return None
    if wanted != ExplicitVRLittleEndian:
        raise Untranscodable(
            f"Transfer syntax {wanted} is available only as stored ({', '.join(sorted(stored))}) "
            f"or as {ExplicitVRLittleEndian}; ask with transfer-syntax=* for the stored one."
        )
    for uid in stored:
        if UID(uid).is_compressed and not get_decoder(uid).is_available:
            raise Untranscodable(f"Instances stored as {uid} cannot be decompressed on this server.")
    return wanted


def to_explicit_little_endian(handle: IO[bytes]) -> bytes:
    """One instance re-encoded as Explicit VR Little Endian (decompressed if need be). A
    deflated one is inflated within the store's limits (part10.readable: InvalidFile beyond)."""
    limits = part10.InflateLimits.of(settings)
    with handle, part10.readable(handle, limits, temp_dir()) as source:
        ds = dcmread(source)
    if ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:
        return _encode(ds)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return _encode(ds)


def _encode(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def stored_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    """Frames exactly as stored: a slice of native pixel data, or a compressed frame's bytes."""
    pixels = ds.PixelData
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(pixels, number_of_frames=frame_count(ds)))
        return [frames[n - 1] for n in numbers]
    size = _native_frame_bytes(ds)
    return [pixels[(n - 1) * size : n * size] for n in numbers]


def decoded_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    """Frames as uncompressed little endian bytes (PS3.18 application/octet-stream)."""
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return stored_frames(ds, numbers)
    array = ds.pixel_array
    if frame_count(ds) == 1:
        return [array.tobytes() for _ in numbers]
    return [array[n - 1].tobytes() for n in numbers]


def _native_frame_bytes(ds: Dataset) -> int:
    samples = int(ds.get("SamplesPerPixel", 1))
    return int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8
