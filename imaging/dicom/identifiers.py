"""Typed views of what peers send: query identifiers, received instances, objects to send back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imaging.dicom.status import DimseFailure, Status

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_ROOT = "PATIENT"
STUDY_ROOT = "STUDY"
# Elements that steer the request rather than select or return attributes.
_CONTROL = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


def element_text(elem: DataElement) -> str:
    """An identifier element as the DICOM string a matching key is written in ("" when empty)."""
    if elem.VR == "SQ" or elem.is_empty:
        return ""
    if isinstance(elem.value, MultiValue):
        return "\\".join(str(v) for v in elem.value)
    if isinstance(elem.value, bytes):
        return elem.value.decode("ascii", "replace").strip(" \x00")
    return str(elem.value).strip()


@dataclass(frozen=True)
class QueryRequest:
    """A C-FIND, C-MOVE or C-GET identifier: level, matching keys and the keys to return."""

    root: str
    level: str
    criteria: dict[str, str]
    keywords: list[str]

    @classmethod
    def from_identifier(cls, identifier: Dataset | None, root: str) -> QueryRequest:
        if identifier is None:
            raise DimseFailure(Status.CANNOT_UNDERSTAND, "the request carries no identifier")
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVELS:
            raise DimseFailure(
                Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                f"QueryRetrieveLevel (0008,0052) must be one of {', '.join(LEVELS)}, got {level!r}",
            )
        if root == STUDY_ROOT and level == "PATIENT":
            # PS3.4 C.6.2: the study root information model has no patient level
            raise DimseFailure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "the study root model has no PATIENT level")
        criteria: dict[str, str] = {}
        keywords: list[str] = []
        for elem in identifier:
            if not elem.keyword or elem.keyword in _CONTROL:
                continue
            keywords.append(elem.keyword)
            criteria[elem.keyword] = element_text(elem)
        return cls(root=root, level=level, criteria=criteria, keywords=keywords)


@dataclass(frozen=True)
class ReceivedInstance:
    """One C-STORE request's data set, kept encoded as the peer sent it: in a PS3.10 file at
    `path` when it was received into a file (imaging/dicom/accel), else in memory."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    part10: Callable[[], bytes]  # preamble, file meta and the data set as received
    path: Path | None = None


@dataclass(frozen=True)
class StoredObject:
    """An instance to send back (C-MOVE, C-GET), read from storage only when its turn comes."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    open: Callable[[], IO[bytes]]
    path: Path | None = None  # the stored PS3.10 file itself, on a local store


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE sends (a registered device)."""

    ae_title: str
    host: str
    port: int


@dataclass
class Retrieval:
    """What a C-MOVE or C-GET sends, decided by the services."""

    objects: list[StoredObject]
    destination: Destination | None = None
