"""Typed accessors over pydicom datasets, and what the store accepts (protocol-free, no ORM).

Everything else reads attributes through `Attributes` instead of scattering keywords and
tag numbers: values are normalised once (stripped strings, parsed dates, ints), and a
malformed value reads as empty instead of raising, because a modality's bad Study Date
must not stop its images from being stored.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cached_property
from typing import Any

from pydicom import config as pydicom_config
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

# We keep files byte-for-byte and validate what we index ourselves; pydicom's own value
# validation on read would only turn other vendors' harmless quirks into warnings.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

# PS3.5 Annex A: the transfer syntaxes the store accepts. Native and deflated, every
# compressed image syntax that pydicom's plugins decode for thumbnails, and the video
# syntaxes (stored and served unchanged, not rendered).
NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        pydicom_uid.ImplicitVRLittleEndian,
        pydicom_uid.ExplicitVRLittleEndian,
        pydicom_uid.ExplicitVRBigEndian,  # retired, but still in archives and test sets
        pydicom_uid.DeflatedExplicitVRLittleEndian,
    }
)
COMPRESSED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        pydicom_uid.JPEGBaseline8Bit,
        pydicom_uid.JPEGExtended12Bit,
        pydicom_uid.JPEGLossless,
        pydicom_uid.JPEGLosslessSV1,
        pydicom_uid.JPEGLSLossless,
        pydicom_uid.JPEGLSNearLossless,
        pydicom_uid.JPEG2000Lossless,
        pydicom_uid.JPEG2000,
        pydicom_uid.HTJ2KLossless,
        pydicom_uid.HTJ2KLosslessRPCL,
        pydicom_uid.HTJ2K,
        pydicom_uid.RLELossless,
    }
)
VIDEO_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        pydicom_uid.MPEG2MPML,
        pydicom_uid.MPEG2MPHL,
        pydicom_uid.MPEG4HP41,
        pydicom_uid.MPEG4HP41BD,
        pydicom_uid.HEVCMP51,
    }
)
SUPPORTED_TRANSFER_SYNTAXES: frozenset[str] = (
    NATIVE_TRANSFER_SYNTAXES | COMPRESSED_TRANSFER_SYNTAXES | VIDEO_TRANSFER_SYNTAXES
)

# PS3.5 9.1: a UID is at most 64 characters of digit components separated by dots.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.match(value))


def is_storage_sop_class(uid: str) -> bool:
    """True for the Storage SOP Classes of PS3.4 Annex B (pynetdicom's registry)."""
    return uid_to_service_class(uid) is StorageServiceClass


def transfer_syntax_name(uid: str) -> str:
    name = pydicom_uid.UID(uid).name
    return name if name != uid else f"unknown ({uid})"


def sop_class_name(uid: str) -> str:
    name = pydicom_uid.UID(uid).name
    return name if name != uid else f"unknown ({uid})"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value)
    return str(value).replace("\x00", "").strip()


def _date(value: str) -> dt.date | None:
    """PS3.5 6.2 DA: YYYYMMDD (and the old YYYY.MM.DD)."""
    digits = value.replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _time(value: str) -> dt.time | None:
    """PS3.5 6.2 TM: HH[MM[SS[.FFFFFF]]] (and the old HH:MM:SS)."""
    main, _, fraction = value.replace(":", "").partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6):
        return None
    parts = [int(main[i : i + 2]) for i in range(0, len(main), 2)] + [0, 0]
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    try:
        return dt.time(parts[0], parts[1], min(parts[2], 59), micro)
    except ValueError:
        return None


_INT32 = range(-(2**31), 2**31)


def _int(value: Any) -> int | None:
    """IS, US, UL... as an int that fits the index's 32-bit columns, else None."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    if value is None or not str(value).strip():
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        try:
            number = int(float(str(value)))
        except (ValueError, OverflowError):
            return None
    return number if number in _INT32 else None


def _unsigned(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


# Every top-level attribute Attributes reads: part10 reads only these from a received file.
ATTRIBUTE_KEYWORDS = frozenset(
    {
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "BodyPartExamined",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
    }
)


class Attributes:
    """The attributes the index and the renderer need, read once and normalised (each
    value is computed on first use and kept: the data set must not change afterwards).

    `ds`: a pydicom Dataset, or what part10 reads from a received file (QuickHeader: get,
    get_item and file_meta as a Dataset has them). `partial`: it holds only
    ATTRIBUTE_KEYWORDS; asking for any other attribute is then a programming error, raised
    rather than read as absent."""

    def __init__(self, ds: Dataset | Any, *, partial: bool = False) -> None:
        self.ds = ds
        self.partial = partial
        self._texts: dict[str, str] = {}

    def _check(self, keyword: str) -> None:
        if self.partial and keyword not in ATTRIBUTE_KEYWORDS:
            raise LookupError(f"{keyword} is not among the attributes read from the file (ATTRIBUTE_KEYWORDS)")

    def text(self, keyword: str) -> str:
        self._check(keyword)
        if keyword not in self._texts:
            try:
                self._texts[keyword] = _text(self.ds.get(keyword))
            except Exception:  # a value pydicom cannot convert reads as empty
                self._texts[keyword] = ""
        return self._texts[keyword]

    def encoded(self, keyword: str) -> Any:
        """The element's value as found in the file (bytes) when it has not been decoded yet,
        else its decoded value; None when absent. Cheap: for comparing, not for showing."""
        self._check(keyword)
        try:
            element = self.ds.get_item(keyword)
        except Exception:  # as in text()
            return None
        if element is None:
            return None
        value = element.value
        return tuple(value) if isinstance(value, list | MultiValue) else value

    def integer(self, keyword: str) -> int | None:
        self._check(keyword)
        try:
            return _int(self.ds.get(keyword))
        except Exception:  # as above
            return None

    # PS3.3 C.12.1 SOP Common
    @cached_property
    def sop_class_uid(self) -> str:
        return self.text("SOPClassUID")

    @cached_property
    def sop_uid(self) -> str:
        return self.text("SOPInstanceUID")

    # PS3.3 C.7.1.1 Patient
    @cached_property
    def patient_id(self) -> str:
        return self.text("PatientID")

    @cached_property
    def patient_name(self) -> str:
        return self.text("PatientName")

    @cached_property
    def patient_birth_date(self) -> dt.date | None:
        return _date(self.text("PatientBirthDate"))

    @cached_property
    def patient_sex(self) -> str:
        return self.text("PatientSex")

    # PS3.3 C.7.2.1 General Study
    @cached_property
    def study_uid(self) -> str:
        return self.text("StudyInstanceUID")

    @cached_property
    def study_date(self) -> dt.date | None:
        return _date(self.text("StudyDate"))

    @cached_property
    def study_time(self) -> dt.time | None:
        return _time(self.text("StudyTime"))

    @cached_property
    def accession_number(self) -> str:
        return self.text("AccessionNumber")

    @cached_property
    def study_id(self) -> str:
        return self.text("StudyID")

    @cached_property
    def study_description(self) -> str:
        return self.text("StudyDescription")

    @cached_property
    def referring_physician(self) -> str:
        return self.text("ReferringPhysicianName")

    # PS3.3 C.7.3.1 General Series
    @cached_property
    def series_uid(self) -> str:
        return self.text("SeriesInstanceUID")

    @cached_property
    def modality(self) -> str:
        return self.text("Modality").upper()

    @cached_property
    def series_number(self) -> int | None:
        return self.integer("SeriesNumber")

    @cached_property
    def series_description(self) -> str:
        return self.text("SeriesDescription")

    @cached_property
    def body_part(self) -> str:
        return self.text("BodyPartExamined")

    # PS3.3 C.7.6.1 General Image and C.7.6.3 Image Pixel
    @cached_property
    def instance_number(self) -> int | None:
        return self.integer("InstanceNumber")

    @cached_property
    def rows(self) -> int | None:
        return _unsigned(self.integer("Rows"))

    @cached_property
    def columns(self) -> int | None:
        return _unsigned(self.integer("Columns"))

    @cached_property
    def number_of_frames(self) -> int:
        frames = self.integer("NumberOfFrames")
        return frames if frames and frames > 0 else 1

    @cached_property
    def transfer_syntax_uid(self) -> str:
        meta = getattr(self.ds, "file_meta", None)
        return _text(meta.get("TransferSyntaxUID")) if meta is not None else ""
