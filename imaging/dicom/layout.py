"""Response identifiers written straight from database rows, with a pydicom Dataset only where
the bytes cannot be written here.

A C-FIND that answers tens of matches asks for the same keys of every one: `Layout` works out
once per query each key's tag, VR, where its value comes from in a row and the bytes around
it, and `Layout.written(row, implicit)` then writes a match's identifier in Implicit or
Explicit VR Little Endian with no Dataset or DataElement made (PS3.5 7.1, 7.5: elements in
tag order, each value padded to an even length, a space for text and a NUL for UIDs; a
sequence and its one item of defined length). The bytes are those pydicom's write_dataset
writes for `Layout.dataset(row)`, the same values as DataElements (which is what goes out
on any other transfer syntax, or when a value does not fit): tests/imaging/test_dicom_layout.py
compares them.

Values are text already in their DICOM form (a date as YYYYMMDD, "" when empty), written in
the Specific Character Set the layout answers in (ISO_IR 192, UTF-8, the only one here: any
name, Chinese included, fits it, and it needs no code extensions). pydicom's normalisation of
the values it converts is applied as it applies it: a UID loses the spaces around it, a person
name its trailing empty component groups ("Wang^Fang=" is written "Wang^Fang"), each value of
a multi-valued string apart.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

Row = Sequence[Any]
Value = Callable[[Row], str]  # the row -> the element's value as DICOM text ("" when empty)

CHARSET = "ISO_IR 192"
_CODEC = "utf-8"
_CHARSET_TAG = 0x00080005
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # explicit VR: 2 reserved bytes, 4-byte length
_TEXT = frozenset({"PN", "LO", "SH", "ST", "LT", "UC", "UT"})  # in the character set
_ASCII = frozenset({"AE", "CS", "DA", "TM", "DT", "AS"})  # pydicom's default encoding
_VALUED = _TEXT | _ASCII | {"UI"}  # VRs a value may be given for; any other is returned empty
_KNOWN = _VALUED | _LONG | {"AT", "DS", "FD", "FL", "IS", "SL", "SS", "UL", "US"}


class _NotWritable(ValueError):
    """A key this module does not lay out (an ambiguous VR, a value for a binary VR, a group
    length): the query's answers are built as Datasets and written by pydicom instead."""


@dataclass(frozen=True)
class Field:
    """One key of the answer: its tag and VR, and its value (None: returned empty; for an SQ,
    `item` holds the fields of its one item, else the sequence is returned empty)."""

    tag: int
    vr: str
    value: Value | None = None
    item: tuple[Field, ...] | None = None


def _normalised(vr: str) -> Callable[[str], str]:
    """The value as pydicom keeps it once converted (DataElement._convert_value)."""
    if vr == "UI":
        return lambda v: "\\".join(part.strip() for part in v.split("\\"))
    if vr == "PN":
        return lambda v: "\\".join(part.rstrip("=") for part in v.split("\\"))
    return lambda v: v


# A field ready to write: kind, its bytes (constant) or (tag head implicit, tag head explicit,
# explicit length format, value, codec, pad, normalise) or a sequence's (heads, fields).
_Element = tuple[Any, ...]
_CONST, _VALUE, _ITEM_SEQ = 0, 1, 2


class Layout:
    """The answer to one query: `fields` at the top level (Specific Character Set added)."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = tuple(sorted((Field(_CHARSET_TAG, "CS"), *fields), key=lambda f: f.tag))
        try:
            self._implicit: list[_Element] | None = self._prepare(self.fields, implicit=True)
            self._explicit: list[_Element] | None = self._prepare(self.fields, implicit=False)
        except _NotWritable:
            self._implicit = self._explicit = None  # every answer goes through dataset()

    # --- writing ---------------------------------------------------------------------------

    def written(self, row: Row, implicit: bool) -> bytes | None:
        """The identifier of `row` in Implicit (or Explicit) VR Little Endian, or None when a
        value does not fit (not in pydicom's default character set, too long for its length
        field): the caller then writes `dataset(row)` with pydicom."""
        elements = self._implicit if implicit else self._explicit
        if elements is None:
            return None
        try:
            return self._write(elements, row)
        except (UnicodeEncodeError, struct.error):
            return None

    def _write(self, elements: list[_Element], row: Row) -> bytes:
        out = []
        for element in elements:
            kind = element[0]
            if kind == _CONST:
                out.append(element[1])
            elif kind == _VALUE:
                _, head, length, value, codec, pad, normalise = element
                text = value(row)
                encoded = normalise(text).encode(codec) if text else b""
                if len(encoded) & 1:
                    encoded += pad
                out.append(head + struct.pack(length, len(encoded)) + encoded)
            else:
                _, head, length, fields = element
                body = self._write(fields, row)
                item = _ITEM + struct.pack("<L", len(body)) + body
                out.append(head + struct.pack(length, len(item)) + item)
        return b"".join(out)

    def _prepare(self, fields: Sequence[Field], implicit: bool) -> list[_Element]:
        prepared: list[_Element] = []
        for field in fields:
            element = self._element(field, implicit)
            if element[0] == _CONST and prepared and prepared[-1][0] == _CONST:
                prepared[-1] = (_CONST, prepared[-1][1] + element[1])  # one run of constant bytes
            else:
                prepared.append(element)
        return prepared

    def _element(self, field: Field, implicit: bool) -> _Element:
        tag, vr = field.tag, field.vr
        group, number = tag >> 16, tag & 0xFFFF
        if vr not in _KNOWN or (field.value is not None and vr not in _VALUED):
            raise _NotWritable(f"({group:04X},{number:04X}) {vr}")
        if group < 8 or number == 0 or group & 1:  # command, file meta, group length, private
            raise _NotWritable(f"({group:04X},{number:04X})")
        if implicit:
            head, length = struct.pack("<HH", group, number), "<L"
        elif vr in _LONG:
            head, length = struct.pack("<HH2sH", group, number, vr.encode("ascii"), 0), "<L"
        else:
            head, length = struct.pack("<HH2s", group, number, vr.encode("ascii")), "<H"
        if tag == _CHARSET_TAG:
            value = CHARSET.encode("ascii")
            value += b" " * (len(value) & 1)
            return (_CONST, head + struct.pack(length, len(value)) + value)
        if vr == "SQ" and field.item is not None:
            return (_ITEM_SEQ, head, length, self._prepare(sorted(field.item, key=lambda f: f.tag), implicit))
        if field.value is None:
            return (_CONST, head + struct.pack(length, 0))
        codec = _CODEC if vr in _TEXT else default_encoding
        pad = b"\x00" if vr == "UI" else b" "
        return (_VALUE, head, length, field.value, codec, pad, _normalised(vr))

    # --- the same answer as a pydicom Dataset ----------------------------------------------

    def dataset(self, row: Row) -> Dataset:
        """The identifier as DataElements (the values were checked when they were stored:
        pydicom's check of each against its VR is skipped), for pydicom to write."""
        return _filled(self.fields, row)


def _filled(fields: Sequence[Field], row: Row) -> Dataset:
    ds = Dataset()
    for field in fields:
        tag, vr = field.tag, field.vr
        value: Any
        if tag == _CHARSET_TAG:
            value = CHARSET
        elif vr == "SQ":
            value = DicomSequence([_filled(field.item, row)] if field.item is not None else [])
        else:
            value = (field.value(row) if field.value is not None else None) or None
        ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    return ds


@dataclass(frozen=True, slots=True)
class RowIdentifier:
    """A C-FIND match to answer: a row and the layout of its identifier. What a service
    yields in place of a Dataset; imaging.dicom.accel.find writes it, and without the
    accelerated path the handler hands pynetdicom `dataset()`."""

    layout: Layout
    row: Row

    def written(self, implicit: bool) -> bytes | None:
        return self.layout.written(self.row, implicit)

    def dataset(self) -> Dataset:
        return self.layout.dataset(self.row)


__all__ = ["CHARSET", "Field", "Layout", "RowIdentifier"]
