"""DICOM JSON (PS3.18 F.2) of a stored instance's header, rendering what it can.

Stored files are what senders made: an element with an unknown VR, a DS or IS value
that is not a number, or a sequence nested thousands deep is stored as received. Each
element is rendered on its own; one that cannot be (its value does not decode, or its
sequences nest deeper than MAX_DEPTH) is left out with a warning, so that one bad element
costs neither the instance its metadata nor the study its /metadata.

Sequence depth is measured on the encoded value before pydicom decodes it: pydicom's
reader recurses once per level, and a deep enough value exhausts the interpreter's stack
(and orjson writes at most 254 levels of nesting).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024  # bytes: larger binary values are sent as BulkDataURI (PS3.18 F.2.6)
PIXEL_DATA = "7FE00010"
MAX_DEPTH = 32  # sequences within sequences; as deep as ingest's structure walk follows them

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VR elements of these VRs have a 4-byte length after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class TooDeep(ValueError):
    """A sequence nests deeper than MAX_DEPTH."""


def dataset_json(ds: Dataset, instance_url: str, *, has_pixels: bool) -> dict[str, Any]:
    """PS3.18 F.2 DICOM JSON of a dataset read without its pixel data; bulk values by URI."""
    skipped: list[str] = []
    out = _elements(ds, instance_url, 0, skipped)
    if has_pixels:
        vr = "OB" if _compressed(ds) or _int(ds, "BitsAllocated", 16) <= 8 else "OW"
        out[PIXEL_DATA] = {"vr": vr, "BulkDataURI": f"{instance_url}/bulk/{PIXEL_DATA}"}
    if skipped:
        log.warning("metadata of %s leaves out elements it cannot render: %s", instance_url, "; ".join(skipped[:20]))
    return out


def dumps(document: dict[str, Any]) -> bytes:
    """The document as JSON; an element orjson cannot write is left out with a warning."""
    try:
        return orjson.dumps(document, default=_plain)
    except TypeError:
        kept = {tag: element for tag, element in document.items() if _dumpable(element)}
        log.warning("metadata leaves out elements it cannot write: %s", ", ".join(sorted(set(document) - set(kept))))
        return orjson.dumps(kept, default=_plain)


def _plain(value: Any) -> Any:
    """pydicom's number and text subclasses (DSfloat, IS, PersonName) as plain JSON values."""
    for kind in (float, int, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumpable(element: Any) -> bool:
    try:
        orjson.dumps(element, default=_plain)
    except TypeError:
        return False
    return True


def _elements(ds: Dataset, url: str, depth: int, skipped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        try:
            out[f"{tag:08X}"] = _element(ds, tag, url, depth, skipped)
        except Exception as exc:  # noqa: BLE001 - pydicom's converters raise many kinds; all mean "cannot render"
            skipped.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {type(exc).__name__}: {str(exc)[:80]}")
    return out


def _element(ds: Dataset, tag: int, url: str, depth: int, skipped: list[str]) -> dict[str, Any]:
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and _is_sequence(raw) and _nests_deeper(raw, MAX_DEPTH - depth):
        raise TooDeep(f"sequences nested more than {MAX_DEPTH} deep")
    element = ds[tag]
    if element.VR == "SQ":
        if depth >= MAX_DEPTH:
            raise TooDeep(f"sequences nested more than {MAX_DEPTH} deep")
        items = [_elements(item, url, depth + 1, skipped) for item in element.value]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if depth == 0 and element.VR in BULK_VRS and not element.is_empty and len(element.value) > BULK_THRESHOLD:
        return {"vr": element.VR, "BulkDataURI": f"{url}/bulk/{tag:08X}"}
    return element.to_json_dict(None, BULK_THRESHOLD)


def _is_sequence(raw: RawDataElement) -> bool:
    if raw.VR == "SQ":
        return True
    if raw.VR not in (None, "UN"):
        return False
    try:
        return bool(dictionary_VR(raw.tag) == "SQ") or raw.length == _UNDEFINED
    except KeyError:  # a private or unknown tag: a sequence only if of undefined length
        return raw.length == _UNDEFINED


def _nests_deeper(raw: RawDataElement, limit: int) -> bool:
    value = raw.value
    if not isinstance(value, bytes | bytearray):
        return False
    return nests_deeper(bytes(value), implicit=raw.is_implicit_VR, little=raw.is_little_endian, limit=limit)


def nests_deeper(value: bytes, *, implicit: bool, little: bool, limit: int) -> bool:
    """Whether a sequence's encoded value (PS3.5 7.5) holds sequences more than `limit` deep,
    counting itself; walked with a stack, not recursion. A value that is not well formed
    answers False: pydicom's reader then says what is wrong with it."""
    endian = "<" if little else ">"
    stack: list[tuple[bool, int | None, bool]] = [(True, len(value), implicit)]  # (sequence?, end, implicit)
    pos = 0
    while stack:
        is_sequence, end, implicit_here = stack[-1]
        if end is not None and pos >= end:
            stack.pop()
            continue
        if pos + 8 > len(value):
            return False
        group, number = struct.unpack_from(f"{endian}HH", value, pos)
        tag = group << 16 | number
        if is_sequence:
            length = struct.unpack_from(f"{endian}L", value, pos + 4)[0]
            pos += 8
            if tag == _SEQUENCE_END:
                stack.pop()
            elif tag == _ITEM:
                stack.append((False, None if length == _UNDEFINED else pos + length, implicit_here))
            else:
                return False
            continue
        if tag == _ITEM_END:
            pos += 8
            stack.pop()
            continue
        header = _element_header(value, pos, endian, implicit_here)
        if header is None:
            return False
        vr, length, pos = header
        if _opens_sequence(tag, vr, length, implicit_here):
            if sum(1 for frame in stack if frame[0]) >= limit:
                return True
            stack.append((True, None if length == _UNDEFINED else pos + length, implicit_here or vr == b"UN"))
        elif length == _UNDEFINED:
            return False
        else:
            pos += length
    return False


def _element_header(value: bytes, pos: int, endian: str, implicit: bool) -> tuple[bytes | None, int, int] | None:
    """(VR or None, value length, where the value starts)."""
    if implicit:
        return None, struct.unpack_from(f"{endian}L", value, pos + 4)[0], pos + 8
    vr = value[pos + 4 : pos + 6]
    if not (b"AA" <= vr <= b"ZZ"):
        return None
    if vr in _LONG_VRS:
        if pos + 12 > len(value):
            return None
        return vr, struct.unpack_from(f"{endian}L", value, pos + 8)[0], pos + 12
    return vr, struct.unpack_from(f"{endian}H", value, pos + 6)[0], pos + 8


def _opens_sequence(tag: int, vr: bytes | None, length: int, implicit: bool) -> bool:
    if vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED):
        return True
    if not implicit:
        return False
    try:
        return bool(dictionary_VR(tag) == "SQ") or length == _UNDEFINED
    except KeyError:
        return length == _UNDEFINED


def _compressed(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return bool(syntax is not None and syntax.is_compressed)


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        return int(ds.get(keyword, default))
    except Exception:  # noqa: BLE001 - an undecodable value is as good as none here
        return default
