"""Reading and checking incoming DICOM files (PS3.10), without loading pixel data.

What is accepted:
- a PS3.10 file: 128-byte preamble, "DICM", File Meta Information, data set (stored as is);
- File Meta Information and data set without the preamble (some writers omit it): stored
  with a zero preamble and "DICM" put in front, every other byte unchanged;
- a bare data set (what a DIMSE peer sends, or an old ACR-NEMA-style export) in implicit
  VR little endian, explicit VR little endian or explicit VR big endian, starting with a
  group 0008 element: stored with a preamble and File Meta Information built from its
  own SOP Class and Instance UIDs put in front; the data set bytes are unchanged.

Anything else is "not DICOM". The data set is walked element by element (seeking over
values) so that a file cut short anywhere, pixel data included, is refused as truncated.

A deflated data set (PS3.5 A.5) is inflated chunk by chunk into a temporary file, within
InflateLimits, and walked there: pydicom's reader would inflate all of it in memory at once,
however large it says it is (a "deflate bomb": 1 MB that inflates to 1 GB). The readers of
stored files do the same through `readable`.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from pydicom import dcmread
from pydicom import uid as pydicom_uid
from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag

from imaging.dicom.datasets import (
    ATTRIBUTE_KEYWORDS,
    SUPPORTED_TRANSFER_SYNTAXES,
    Attributes,
    is_storage_sop_class,
    is_valid_uid,
    sop_class_name,
    transfer_syntax_name,
)

PREAMBLE = b"\x00" * 128 + b"DICM"
# PS3.5 7.1.2: explicit VR elements of these VRs have a 4-byte length after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 32
# Group 0008 (Identifying) is where a bare data set starts, in either byte order.
_BARE_STARTS = (b"\x08\x00", b"\x00\x08")
_REQUIRED_UIDS = (
    ("SOPClassUID", "SOP Class UID (0008,0016)"),
    ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
    ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
    ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
)


def gettext_noop(message: str) -> str:
    """Marks a reason for the translators (Django's catalog); this package stays Django-free."""
    return message


class InvalidFile(Exception):
    """The file cannot be stored; `code` names the kind of problem, `reason` says which.

    `template` % `params` is `reason`; the template is also a msgid, so the web pages can
    show the reason in the reader's language while logs and DIMSE stay in English.
    """

    def __init__(self, code: str, template: str, **params: object) -> None:
        self.code = code
        self.template = template
        self.params = params
        self.reason = template % params
        self.sop_uid = ""  # set when the file was readable enough to name its instance
        super().__init__(f"{code}: {self.reason}")


@dataclass(frozen=True)
class ParsedFile:
    dataset: Dataset | QuickHeader  # the header (pydicom's reader), or only what Attributes reads
    attributes: Attributes
    transfer_syntax_uid: str
    prefix: bytes  # what to put in front of the file's bytes to make a PS3.10 file

    @property
    def sop_uid(self) -> str:
        return self.attributes.sop_uid


# Below this many inflated bytes the ratio is not asked: a small image of one value (a blank
# secondary capture) deflates a thousandfold, and inflating a few megabytes harms no one.
RATIO_FREE_BYTES = 16 * 1024 * 1024
_INFLATE_CHUNK = 1024 * 1024  # inflated bytes at a time
_DEFLATED_CHUNK = 64 * 1024  # deflated bytes read at a time (zlib keeps what it has not used)


@dataclass(frozen=True)
class InflateLimits:
    """How far a deflated data set (PS3.5 A.5) may inflate: `max_bytes` in all, and past its
    first RATIO_FREE_BYTES at most `max_ratio` times its deflated size."""

    max_bytes: int
    max_ratio: int

    @classmethod
    def of(cls, settings: Any) -> InflateLimits:
        """The limits Django's settings set (DICOM_MAX_INFLATED_BYTES, DICOM_MAX_INFLATE_RATIO)."""
        return cls(settings.DICOM_MAX_INFLATED_BYTES, settings.DICOM_MAX_INFLATE_RATIO)

    def allowed(self, deflated_size: int | None) -> int:
        """The inflated bytes allowed for a deflated stream of that size (None: not known)."""
        if deflated_size is None:
            return self.max_bytes
        return min(self.max_bytes, max(RATIO_FREE_BYTES, self.max_ratio * deflated_size))


def read_file(
    path: Path,
    *,
    max_bytes: int,
    inflate: InflateLimits | None = None,
    expected_study_uid: str | None = None,
    expected_sop_uid: str | None = None,
) -> ParsedFile:
    """Parse and check one incoming file; raise InvalidFile naming what is wrong. A deflated
    data set may inflate as `inflate` allows (by default to `max_bytes`, a hundredfold),
    into a temporary file beside `path`.

    `expected_sop_uid`: the SOP Instance UID the sender named the instance by (a C-STORE's
    Affected SOP Instance UID), which the data set's must be."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidFile(
            "too-large",
            gettext_noop("the file is %(size)s bytes, more than the limit of %(limit)s bytes"),
            size=size,
            limit=max_bytes,
        )
    limits = inflate or InflateLimits(max_bytes, 100)
    with path.open("rb") as fp:
        layout = _layout(fp.read(132))
        quick = _read_part10_in_one_walk(fp, size) if layout == "part10" else None
        dataset: Dataset | QuickHeader
        meta = _meta_of_stream(fp) if quick is None and layout != "bare" else None
        if quick is not None:
            dataset, transfer_syntax = quick
        elif meta is not None and meta.transfer_syntax == pydicom_uid.DeflatedExplicitVRLittleEndian:
            with _inflated_copy(fp, meta, limits.allowed(size - meta.end), path.parent) as copy:
                dataset, transfer_syntax = _read_inflated(copy)
        else:
            fp.seek(0)
            full = dataset = _read_header(fp, layout)
            fp.seek(0)
            transfer_syntax = _transfer_syntax(full, layout)
            _check_structure(fp, size, layout, transfer_syntax)
    attributes = Attributes(dataset, partial=isinstance(dataset, QuickHeader))
    try:
        check_instance(attributes, transfer_syntax, expected_study_uid)
        check_identity(attributes, _media_storage_uids(dataset, layout), expected_sop_uid)
    except InvalidFile as exc:
        exc.sop_uid = attributes.sop_uid if is_valid_uid(attributes.sop_uid) else ""
        raise
    return ParsedFile(dataset, attributes, transfer_syntax, _prefix(layout, attributes, transfer_syntax))


def check_instance(attributes: Attributes, transfer_syntax: str, expected_study_uid: str | None = None) -> None:
    """The checks every stored instance passes: identifying UIDs, patient ID, SOP class, syntax."""
    for keyword, label in _REQUIRED_UIDS:
        value = attributes.text(keyword)
        if not value:
            raise InvalidFile("missing-attribute", gettext_noop("%(attribute)s is missing or empty"), attribute=label)
        if not is_valid_uid(value):
            raise InvalidFile(
                "invalid-attribute",
                gettext_noop("%(attribute)s %(value)s is not a valid UID"),
                attribute=label,
                value=repr(value[:80]),
            )
    if not attributes.patient_id:
        raise InvalidFile(
            "missing-attribute", gettext_noop("%(attribute)s is missing or empty"), attribute="Patient ID (0010,0020)"
        )
    if len(attributes.patient_id) > 64:
        raise InvalidFile("invalid-attribute", gettext_noop("Patient ID (0010,0020) is longer than 64 characters"))
    if not is_storage_sop_class(attributes.sop_class_uid):
        name = sop_class_name(attributes.sop_class_uid)
        raise InvalidFile(
            "unsupported-sop-class", gettext_noop("SOP Class %(name)s is not a storage SOP class we accept"), name=name
        )
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        name = transfer_syntax_name(transfer_syntax)
        raise InvalidFile(
            "unsupported-transfer-syntax", gettext_noop("transfer syntax %(name)s is not supported"), name=name
        )
    if expected_study_uid and attributes.study_uid != expected_study_uid:
        raise InvalidFile(
            "study-mismatch",
            gettext_noop("Study Instance UID %(uid)s is not the study %(expected)s it was sent to"),
            uid=attributes.study_uid,
            expected=expected_study_uid,
        )


def check_identity(attributes: Attributes, media_storage: tuple[str, str], expected_sop_uid: str | None) -> None:
    """The instance is the one it says it is everywhere: the sender's name for it
    (`expected_sop_uid`) and the File Meta Information's Media Storage SOP Class and Instance
    UIDs (PS3.10 7.1; `media_storage`, "" when absent) agree with the data set's SOP Class UID
    (0008,0016) and SOP Instance UID (0008,0018). Otherwise the sender would be told Success
    for a UID that retrieves nothing (PS3.4 B.2.3: refused as 0xA900). Each reason says what
    disagrees in its first 64 characters, all an Error Comment (LO) carries."""
    sop_uid = attributes.sop_uid
    if expected_sop_uid is not None and sop_uid != expected_sop_uid:
        raise InvalidFile(
            "uid-mismatch",
            gettext_noop("SOP Instance UID (0008,0018) is not the request's: %(uid)s vs %(expected)s"),
            uid=sop_uid,
            expected=expected_sop_uid,
        )
    meta_class, meta_instance = media_storage
    if meta_instance and meta_instance != sop_uid:
        raise InvalidFile(
            "uid-mismatch",
            gettext_noop("file meta's SOP Instance UID (0002,0003) is not the data set's: %(meta)s vs %(uid)s"),
            meta=meta_instance,
            uid=sop_uid,
        )
    if meta_class and meta_class != attributes.sop_class_uid:
        raise InvalidFile(
            "uid-mismatch",
            gettext_noop("file meta's SOP Class UID (0002,0002) is not the data set's: %(meta)s vs %(uid)s"),
            meta=meta_class,
            uid=attributes.sop_class_uid,
        )


def _media_storage_uids(dataset: Dataset | QuickHeader, layout: str) -> tuple[str, str]:
    """(Media Storage SOP Class UID, Media Storage SOP Instance UID) of the file meta, "" where absent."""
    if layout == "bare":
        return "", ""
    meta = getattr(dataset, "file_meta", None)
    if meta is None:
        return "", ""
    return _meta_text(meta.get("MediaStorageSOPClassUID")), _meta_text(meta.get("MediaStorageSOPInstanceUID"))


def _meta_text(value: Any) -> str:
    return str(value).rstrip("\x00 ") if value is not None else ""


def _layout(head: bytes) -> str:
    if len(head) == 132 and head[128:132] == b"DICM":
        return "part10"
    if head[:2] == b"\x02\x00" and len(head) >= 8:
        return "meta-without-preamble"
    if head[:2] in _BARE_STARTS and len(head) >= 8:
        return "bare"
    raise InvalidFile(
        "not-dicom", gettext_noop('no "DICM" prefix at byte 128 and no DICOM data set at the start of the file')
    )


def _read_header(fp: BinaryIO, layout: str) -> Dataset:
    try:
        return dcmread(fp, force=layout != "part10", stop_before_pixels=True, defer_size="256 KB")
    except zlib.error as exc:
        raise InvalidFile(
            "truncated", gettext_noop("the deflated data set cannot be inflated (%(error)s)"), error=str(exc)
        ) from None
    except (InvalidDicomError, EOFError) as exc:
        raise InvalidFile(
            "not-dicom", gettext_noop("the file cannot be parsed as DICOM (%(error)s)"), error=_first_line(exc)
        ) from None
    except Exception as exc:  # untrusted bytes: whatever the parser trips over, we cannot understand it
        detail = f"{type(exc).__name__}: {_first_line(exc)}"
        raise InvalidFile(
            "not-dicom", gettext_noop("the file cannot be parsed as DICOM (%(error)s)"), error=detail
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _transfer_syntax(dataset: Dataset, layout: str) -> str:
    if layout != "bare":
        meta = getattr(dataset, "file_meta", None)
        value = Attributes(meta).text("TransferSyntaxUID") if meta is not None else ""
        if not value:
            raise InvalidFile(
                "missing-attribute", gettext_noop("Transfer Syntax UID (0002,0010) is missing from the file meta")
            )
        return value
    implicit, little = dataset.original_encoding
    if little:
        return pydicom_uid.ImplicitVRLittleEndian if implicit else pydicom_uid.ExplicitVRLittleEndian
    if implicit:
        raise InvalidFile(
            "not-dicom", gettext_noop("a bare data set in implicit VR big endian is not a DICOM encoding")
        )
    return pydicom_uid.ExplicitVRBigEndian


def _prefix(layout: str, attributes: Attributes, transfer_syntax: str) -> bytes:
    if layout == "part10":
        return b""
    if layout == "meta-without-preamble":
        return PREAMBLE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom_uid.UID(attributes.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = pydicom_uid.UID(attributes.sop_uid)
    meta.TransferSyntaxUID = pydicom_uid.UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return PREAMBLE + buffer.getvalue()


# --- structure walk -------------------------------------------------------------------


class _Walker:
    """Steps over every element of a data set to prove that the file holds all of it
    (positions in a memory map of the file: no reads, no seeks). The top-level elements
    whose tags are in `wanted` are noted on the way: tag -> (VR or None, offset, length)."""

    def __init__(self, data: mmap.mmap | bytes, size: int, start: int, wanted: frozenset[int] = frozenset()) -> None:
        self.data = data
        self.size = size
        self.pos = start
        self.wanted = wanted
        self.found: dict[int, tuple[bytes | None, int, int]] = {}

    def _need(self, n: int) -> None:
        if self.pos + n > self.size:
            raise InvalidFile(
                "truncated", gettext_noop("the file ends inside an element header at byte %(offset)s"), offset=self.size
            )

    def tag_and_length(self, implicit: bool, endian: str) -> tuple[int, bytes | None, int]:
        self._need(8)
        pos = self.pos
        group, element = struct.unpack_from(f"{endian}HH", self.data, pos)
        tag = group << 16 | element
        vr = self.data[pos + 4 : pos + 6]
        self.pos = pos + 8
        if group == 0xFFFE or implicit or not (b"AA" <= vr <= b"ZZ"):
            return tag, None, struct.unpack_from(f"{endian}L", self.data, pos + 4)[0]
        if vr in _LONG_VRS:
            self._need(4)
            self.pos = pos + 12
            return tag, vr, struct.unpack_from(f"{endian}L", self.data, pos + 8)[0]
        return tag, vr, struct.unpack_from(f"{endian}H", self.data, pos + 6)[0]

    def skip(self, length: int, tag: int) -> None:
        end = self.pos + length
        if end > self.size:
            raise InvalidFile(
                "truncated",
                gettext_noop("element %(tag)s needs %(length)s bytes but the file ends %(missing)s bytes early"),
                tag=f"({tag >> 16:04X},{tag & 0xFFFF:04X})",
                length=length,
                missing=end - self.size,
            )
        self.pos = end

    def dataset(self, implicit: bool, endian: str, depth: int) -> None:
        """Walk elements to the item delimiter (nested) or to the end of the file (top level)."""
        if depth > _MAX_DEPTH:
            raise InvalidFile("not-dicom", gettext_noop("sequences nested more than %(depth)s deep"), depth=_MAX_DEPTH)
        while True:
            if depth == 0 and self.pos >= self.size:
                return
            tag, vr, length = self.tag_and_length(implicit, endian)
            if tag == _ITEM_END:
                return
            if tag in (_ITEM, _SEQUENCE_END):
                raise InvalidFile("not-dicom", gettext_noop("an item tag where a data element was expected"))
            if length != _UNDEFINED:
                if depth == 0 and tag in self.wanted:
                    self.found[tag] = (vr, self.pos, length)
                self.skip(length, tag)
            elif vr == b"UN":  # PS3.5 6.2.2: UN of undefined length holds implicit VR LE items
                self.items(True, "<", depth)
            else:
                self.items(implicit, endian, depth)

    def items(self, implicit: bool, endian: str, depth: int) -> None:
        """An undefined-length value: items (nested data sets or fragments) up to the delimiter."""
        while True:
            tag, _, length = self.tag_and_length(True, endian)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                raise InvalidFile("not-dicom", gettext_noop("an element %(tag)s where an item was expected"), tag=where)
            if length == _UNDEFINED:
                self.dataset(implicit, endian, depth + 1)
            else:
                self.skip(length, tag)  # a defined-length item or fragment: its length bounds it


def _check_structure(fp: BinaryIO, size: int, layout: str, transfer_syntax: str) -> None:
    with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = 0 if layout == "bare" else _file_meta(data, 132 if layout == "part10" else 0, size)[0]
        implicit = transfer_syntax == pydicom_uid.ImplicitVRLittleEndian
        little = transfer_syntax != pydicom_uid.ExplicitVRBigEndian
        endian = "<" if little else ">"
        _Walker(data, size, start).dataset(implicit, endian, 0)


# The quick read: a PS3.10 file (what pynetdicom writes for every C-STORE) in a transfer
# syntax the walker can step through is read in one walk, which also checks its structure;
# pydicom then decodes only the attributes the index needs (ATTRIBUTE_KEYWORDS), on use.
# Anything unusual goes the full way instead (pydicom's reader, then the walk), which also
# words the refusal of a bad file.
_KEYWORD_TAGS = {k: int(tag) for k in ATTRIBUTE_KEYWORDS if (tag := tag_for_keyword(k)) is not None}
_WANTED_TAGS = frozenset(_KEYWORD_TAGS.values())
_TRANSFER_SYNTAX_UID = 0x00020010
_MEDIA_STORAGE_TAGS = {0x00020002: "MediaStorageSOPClassUID", 0x00020003: "MediaStorageSOPInstanceUID"}
_CHARACTER_SET = 0x00080005


def _read_part10_in_one_walk(fp: BinaryIO, size: int) -> tuple[QuickHeader, str] | None:
    """The header (only ATTRIBUTE_KEYWORDS) and the transfer syntax, or None to go the full way."""
    try:
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start, transfer_syntax, media = _file_meta(data, 132, size)
            if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
                return None
            if transfer_syntax == pydicom_uid.DeflatedExplicitVRLittleEndian:
                return None
            implicit = transfer_syntax == pydicom_uid.ImplicitVRLittleEndian
            little = transfer_syntax != pydicom_uid.ExplicitVRBigEndian
            walker = _Walker(data, size, start, _WANTED_TAGS)
            walker.dataset(implicit, "<" if little else ">", 0)
            elements: dict[int, tuple[str | None, bytes]] = {}
            for tag, (vr, offset, length) in walker.found.items():
                if vr is None and not implicit:
                    return None  # no VR where one belongs: let pydicom's reader judge it
                elements[tag] = (vr.decode("ascii") if vr is not None else None, data[offset : offset + length])
    except (InvalidFile, OSError, ValueError, struct.error):
        return None
    encoding: str | list[str] = "iso8859"  # PS3.5 6.1.2.2: the default repertoire
    header = QuickHeader(elements, implicit, little, encoding, transfer_syntax, media)
    if _CHARACTER_SET in elements:
        try:
            header.encoding = convert_encodings(header.get("SpecificCharacterSet"))
        except Exception:  # as pydicom's reader would: a character set it cannot name is its problem
            return None
    return header, transfer_syntax


class _Found:
    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


# Values pydicom converted, by element and encoding: the instances of a series repeat their
# patient, study and series elements byte for byte, so most are converted once per series.
_converted: dict[tuple[Any, ...], Any] = {}
_CONVERTED_MAX = 4096


class QuickHeader:
    """The ATTRIBUTE_KEYWORDS elements of a received file as they are in it, read by Attributes
    in place of a pydicom Dataset (get, get_item, file_meta). Each value is converted by pydicom
    as Dataset.get converts it (the file's character set; the default one for Specific
    Character Set itself), and the conversion is remembered: the values are only read."""

    __slots__ = ("elements", "implicit", "little", "encoding", "file_meta")

    def __init__(
        self,
        elements: dict[int, tuple[str | None, bytes]],
        implicit: bool,
        little: bool,
        encoding: str | list[str],
        transfer_syntax: str,
        media_storage: dict[str, str],
    ) -> None:
        self.elements = elements
        self.implicit = implicit
        self.little = little
        self.encoding = encoding
        self.file_meta = {"TransferSyntaxUID": transfer_syntax, **media_storage}

    def get(self, keyword: str, default: Any = None) -> Any:
        tag = _KEYWORD_TAGS.get(keyword)
        found = self.elements.get(tag) if tag is not None else None
        if found is None:
            return default
        vr, value = found
        encoding = "iso8859" if tag == _CHARACTER_SET else self.encoding
        key = (tag, vr, value, self.implicit, self.little, encoding if isinstance(encoding, str) else tuple(encoding))
        try:
            return _converted[key]
        except KeyError:
            pass
        raw = RawDataElement(BaseTag(tag or 0), vr, len(value), value, 0, self.implicit, self.little)
        converted = convert_raw_data_element(raw, encoding=encoding).value
        if len(_converted) >= _CONVERTED_MAX:
            _converted.clear()
        _converted[key] = converted
        return converted

    def get_item(self, keyword: str) -> _Found | None:
        """The element's value as found in the file (bytes), as Dataset.get_item gives it
        before conversion; None when absent."""
        tag = _KEYWORD_TAGS.get(keyword)
        found = self.elements.get(tag) if tag is not None else None
        return _Found(found[1]) if found is not None else None


def _file_meta(data: mmap.mmap | bytes, start: int, size: int) -> tuple[int, str | None, dict[str, str]]:
    """Position just after the group 0002 elements (always explicit VR little endian,
    PS3.10 7.1), the Transfer Syntax UID among them ("" when absent, None when an element of
    undefined length makes the group untrustworthy), and the Media Storage SOP Class and
    Instance UIDs found (by keyword)."""
    walker = _Walker(data, size, start)
    transfer_syntax: str | None = ""
    media: dict[str, str] = {}
    while walker.pos + 8 <= size and struct.unpack_from("<H", data, walker.pos)[0] == 0x0002:
        tag, _, length = walker.tag_and_length(False, "<")
        if length == _UNDEFINED:
            transfer_syntax, length = None, 0
        elif tag == _TRANSFER_SYNTAX_UID and transfer_syntax is not None:
            transfer_syntax = _uid_at(data, walker.pos, length)
        elif tag in _MEDIA_STORAGE_TAGS:
            media[_MEDIA_STORAGE_TAGS[tag]] = _uid_at(data, walker.pos, length)
        walker.skip(length, tag)
    return walker.pos, transfer_syntax, media


def _uid_at(data: mmap.mmap | bytes, pos: int, length: int) -> str:
    return data[pos : pos + length].rstrip(b"\x00 ").decode("ascii", "replace")


# --- deflated data sets (PS3.5 A.5) ---------------------------------------------------
# pydicom's reader inflates a deflated data set whole, in memory, however large it turns out
# to be. Here it is inflated chunk by chunk into a temporary PS3.10 file in Explicit VR Little
# Endian (the data set's own encoding once inflated), within InflateLimits; pydicom and the
# walker then read that file as any other.

_META_PEEK = 64 * 1024
_MAX_META_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Meta:
    raw: bytes  # the group 0002 elements as in the file
    end: int  # where the data set starts
    transfer_syntax: str


def _meta_of_stream(source: BinaryIO) -> _Meta | None:
    """The File Meta Information of a PS3.10 file (with or without its preamble) read from the
    start of `source`, or None when it has none (a bare data set, or not DICOM)."""
    source.seek(0)
    head = source.read(_META_PEEK)
    try:
        layout = _layout(head[:132])
    except InvalidFile:
        return None
    if layout == "bare":
        return None
    start = 132 if layout == "part10" else 0
    at_end = len(head) < _META_PEEK
    while True:
        try:
            end, transfer_syntax, _ = _file_meta(head, start, len(head))
        except InvalidFile:
            if at_end:
                raise
        else:
            if end + 8 <= len(head) or at_end:  # the element after the group is in view: it ended
                break
        if len(head) >= _MAX_META_BYTES:
            raise InvalidFile(
                "not-dicom", gettext_noop("the File Meta Information is longer than %(limit)s bytes"), limit=len(head)
            )
        more = source.read(len(head))
        at_end = len(more) < len(head)
        head += more
    if transfer_syntax is None:
        # pydicom's reader might still find a syntax there, and inflate without a limit
        raise InvalidFile("not-dicom", gettext_noop("an element of the File Meta Information has an undefined length"))
    return _Meta(head[start:end], end, transfer_syntax)


@contextmanager
def _inflated_copy(source: BinaryIO, meta: _Meta, limit: int, scratch: Path | str | None) -> Iterator[BinaryIO]:
    """A temporary PS3.10 file: the file meta of `source` saying Explicit VR Little Endian, and
    its deflated data set inflated; InvalidFile ("too-large") past `limit` inflated bytes."""
    try:
        file_meta = FileMetaDataset(read_dataset(io.BytesIO(meta.raw), False, True))
        file_meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
        encoded = io.BytesIO()
        write_file_meta_info(encoded, file_meta, enforce_standard=False)  # type: ignore[arg-type]
    except Exception as exc:  # untrusted bytes: whatever pydicom trips over, we cannot understand it
        detail = f"{type(exc).__name__}: {_first_line(exc)}"
        raise InvalidFile(
            "not-dicom", gettext_noop("the file cannot be parsed as DICOM (%(error)s)"), error=detail
        ) from None
    # Named, so that a value pydicom defers reading fails once the file is gone, never reads another.
    with tempfile.NamedTemporaryFile(dir=scratch, prefix="inflated-", suffix=".dcm") as copy:
        copy.write(PREAMBLE)
        copy.write(encoded.getvalue())
        source.seek(meta.end)
        inflate(source, cast(BinaryIO, copy), limit)
        copy.flush()
        copy.seek(0)
        yield cast(BinaryIO, copy)


def inflate(source: BinaryIO, sink: BinaryIO, limit: int) -> int:
    """Inflate the raw deflate stream (RFC 1951) read from `source` into `sink`, a chunk at a
    time; the bytes written. InvalidFile: "too-large" past `limit`, "truncated" when the stream
    is broken or ends early. What follows its end (PS3.5 A.5's padding byte) is ignored."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or source.read(_DEFLATED_CHUNK)
        try:
            # max_length bounds each piece: a bomb never gets more than a chunk into memory
            out = inflater.decompress(data, _INFLATE_CHUNK) if data else inflater.flush()
        except zlib.error as exc:
            raise InvalidFile(
                "truncated", gettext_noop("the deflated data set cannot be inflated (%(error)s)"), error=str(exc)
            ) from None
        total += len(out)
        if total > limit:
            raise InvalidFile(
                "too-large",
                gettext_noop("the deflated data set inflates to more than %(limit)s bytes, the limit for this file"),
                limit=limit,
            )
        sink.write(out)
        if not data:
            break
    if not inflater.eof:
        raise InvalidFile("truncated", gettext_noop("the deflated data set ends before its deflate stream does"))
    return total


def _read_inflated(copy: BinaryIO) -> tuple[Dataset | QuickHeader, str]:
    """Read an _inflated_copy as any PS3.10 file; its header, under the deflated syntax it came in."""
    deflated = pydicom_uid.DeflatedExplicitVRLittleEndian
    size = os.fstat(copy.fileno()).st_size
    quick = _read_part10_in_one_walk(copy, size)
    if quick is not None:
        header = quick[0]
        header.file_meta["TransferSyntaxUID"] = deflated
        return header, deflated
    copy.seek(0)
    full = _read_header(copy, "part10")
    copy.seek(0)
    _check_structure(copy, size, "part10", pydicom_uid.ExplicitVRLittleEndian)
    full.file_meta.TransferSyntaxUID = pydicom_uid.UID(deflated)
    return full, deflated


@contextmanager
def readable(source: IO[bytes], limits: InflateLimits, scratch: Path | str | None = None) -> Iterator[BinaryIO]:
    """A stored PS3.10 file as pydicom may read it whole: `source` itself (rewound), or when its
    data set is deflated, an equivalent temporary file in Explicit VR Little Endian, inflated
    within `limits` (InvalidFile "too-large" beyond), in `scratch`."""
    stream = cast(BinaryIO, source)
    meta = _meta_of_stream(stream)
    if meta is None or meta.transfer_syntax != pydicom_uid.DeflatedExplicitVRLittleEndian:
        stream.seek(0)
        yield stream
        return
    with _inflated_copy(stream, meta, limits.allowed(_size_of(stream) - meta.end), scratch) as copy:
        yield copy


def _size_of(source: BinaryIO) -> int:
    try:
        return os.fstat(source.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        position = source.tell()
        size = source.seek(0, io.SEEK_END)
        source.seek(position)
        return size
