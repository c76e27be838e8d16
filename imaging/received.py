"""A received file on its way into the store: read and checked, in its stored form, hashed;
the statuses it can be refused with, and the error that refuses it (IngestError).

imaging.ingest decides what becomes of it; imaging.index writes its rows.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO

from django.conf import settings
from django.utils.translation import gettext, gettext_noop

from imaging import storage
from imaging.dicom.datasets import Attributes
from imaging.dicom.part10 import InflateLimits, InvalidFile, ParsedFile, read_file
from imaging.dicom.status import Status
from imaging.models import Instance, Series, Study

log = logging.getLogger(__name__)

# code -> (DIMSE status, HTTP status). PS3.4 B.2.3 (C-STORE) and PS3.7 C.4.2.1.4:
# A7xx refused: out of resources; A9xx error: data set does not match SOP class;
# Cxxx error: cannot understand; 0122 refused: SOP class not supported.
STATUSES: dict[str, tuple[int, int]] = {
    "not-dicom": (Status.CANNOT_UNDERSTAND, HTTPStatus.BAD_REQUEST),
    "truncated": (Status.CANNOT_UNDERSTAND, HTTPStatus.BAD_REQUEST),
    "missing-attribute": (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, HTTPStatus.BAD_REQUEST),
    "invalid-attribute": (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, HTTPStatus.BAD_REQUEST),
    "unsupported-sop-class": (Status.SOP_CLASS_NOT_SUPPORTED, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    "unsupported-transfer-syntax": (Status.CANNOT_UNDERSTAND, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    "too-large": (Status.OUT_OF_RESOURCES, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    "study-mismatch": (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, HTTPStatus.CONFLICT),
    # the request, the file meta and the data set name other instances
    "uid-mismatch": (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, HTTPStatus.CONFLICT),
    "uid-conflict": (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, HTTPStatus.CONFLICT),
    "storage-failed": (Status.OUT_OF_RESOURCES, HTTPStatus.SERVICE_UNAVAILABLE),
    "out-of-space": (Status.OUT_OF_RESOURCES, HTTPStatus.INSUFFICIENT_STORAGE),  # RFC 4918 11.5
}
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
HASH_CHUNK = 1024 * 1024


class IngestError(Exception):
    """An instance was refused; nothing of it is stored.

    `reason` is English (logs, DIMSE Error Comment, STOW-RS); `localized_reason` is the
    same in the active language, for pages. `template` % `params` == `reason`.
    """

    def __init__(self, code: str, template: str, **params: object) -> None:
        self.code = code
        self.template = template
        self.params = params
        self.reason = template % params
        dicom_status, http_status = STATUSES[code]
        self.dicom_status, self.http_status = int(dicom_status), int(http_status)
        self.sop_uid = ""  # the refused instance's SOP Instance UID, when the file named one
        super().__init__(f"{code}: {self.reason}")

    @property
    def localized_reason(self) -> str:
        return gettext(self.template) % self.params


# The one answer to an instance whose UIDs clash with what is stored anywhere in the alliance:
# it says neither where nor whose (another institution's Study Instance UID is no business of
# the sender), only that the instance must come with new UIDs. The clash itself is logged.
UID_CONFLICT = gettext_noop("The UIDs of this instance conflict with stored data; it was not stored")


def uid_conflict(what: str, uid: str) -> IngestError:
    log.info("uid-conflict: %s %s", what, uid)
    return IngestError("uid-conflict", UID_CONFLICT)


def storage_failed(template: str, exc: BaseException) -> IngestError:
    error = str(exc) if isinstance(exc, OSError) else type(exc).__name__
    full = isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE
    return IngestError("out-of-space" if full else "storage-failed", template, error=error)


def index_failed(exc: BaseException) -> IngestError:
    return storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc)


@dataclass
class IngestResult:
    instance: Instance
    created: bool  # False when the SOP Instance UID was already stored
    study: Study
    series: Series
    identical: bool = True  # False when an earlier copy with other bytes was kept


@dataclass
class Received:
    """The file as it will be stored: `prefix` + the bytes at `path`."""

    parsed: ParsedFile
    path: Path
    size: int
    hashing: Future[str] | None = None  # sha256_of(path), started on the pool before parsing
    sha256: str = ""

    def digest(self) -> str:
        if not self.sha256:
            self.sha256 = self.hashing.result() if self.hashing is not None else sha256_of(self.path)
        return self.sha256

    @property
    def attributes(self) -> Attributes:
        return self.parsed.attributes

    def key(self) -> str:
        a = self.parsed.attributes
        return storage.storage_key_for(a.study_uid, a.series_uid, a.sop_uid)


def read(path: Path, expected_study_uid: str | None, expected_sop_uid: str | None = None) -> ParsedFile:
    try:
        return read_file(
            path,
            max_bytes=settings.DICOM_MAX_FILE_BYTES,
            inflate=InflateLimits.of(settings),
            expected_study_uid=expected_study_uid,
            expected_sop_uid=expected_sop_uid,
        )
    except InvalidFile as exc:
        error = IngestError(exc.code, exc.template, **exc.params)
        error.sop_uid = exc.sop_uid
        raise error from None
    except OSError as exc:
        raise storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None


class StoredForm:
    """Context: the received file, or (when a preamble or file meta must be put in front)
    a new temp file holding the PS3.10 form, removed on exit."""

    def __init__(self, path: Path, parsed: ParsedFile) -> None:
        self.path = path
        self.parsed = parsed
        self.staged: Path | None = None

    def __enter__(self) -> Received:
        source = self.path
        if self.parsed.prefix:
            self.staged = source = storage.temp_dir() / f"p10-{uuid.uuid4().hex}.dcm"
            _write_with_prefix(self.path, self.parsed.prefix, source)
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None
        return Received(self.parsed, source, size)

    def __exit__(self, *exc: object) -> None:
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


def _write_with_prefix(path: Path, prefix: bytes, dest: Path) -> None:
    try:
        with path.open("rb") as src, dest.open("xb") as out:
            out.write(prefix)
            while chunk := src.read(HASH_CHUNK):
                out.write(chunk)
    except OSError as exc:
        raise storage_failed(gettext_noop("cannot stage the file (%(error)s)"), exc) from None


def sha256_of(path: Path) -> str:
    """The file's SHA-256, in one call over a memory map: hashlib then holds no interpreter
    lock for the whole file (it runs beside parsing, on the pool)."""
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return hashlib.sha256(b"").hexdigest()  # an empty file cannot be mapped
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return hashlib.sha256(data).hexdigest()
    except OSError as exc:
        raise storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None


def stored_problem(instance: Instance) -> str | None:
    """What is wrong with an instance's stored file: "missing", "other-bytes" (not the bytes its
    row's checksum describes), or None. Read whole: only a duplicate or a recovery asks."""
    try:
        digest = hashlib.sha256()
        with storage.open_instance(instance) as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise storage_failed(gettext_noop("the stored copy cannot be read (%(error)s)"), exc) from exc
    return None if digest.hexdigest() == instance.sha256 else "other-bytes"


def same_data_set(existing: Instance, received: Received) -> bool:
    """Whether the stored file and the received one hold the same bytes after their File Meta
    Information (group 0002, PS3.10 7.1): DIMSE and STOW senders write their own meta."""
    try:
        with storage.open_instance(existing) as stored, received.path.open("rb") as new:
            return _same_after_meta(stored, existing.size_bytes, new, received.size)
    except OSError:
        return False  # not known to be the same: kept and audited as other bytes


def _same_after_meta(stored: IO[bytes], stored_size: int, new: IO[bytes], new_size: int) -> bool:
    start = _data_set_start(stored.read(HASH_CHUNK))
    other = _data_set_start(new.read(HASH_CHUNK))
    if start is None or other is None or stored_size - start != new_size - other:
        return False
    stored.seek(start)
    new.seek(other)
    while chunk := stored.read(HASH_CHUNK):
        if new.read(len(chunk)) != chunk:
            return False
    return True


# PS3.5 7.1.2: explicit VR elements whose length takes 4 bytes after 2 reserved ones
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def _data_set_start(head: bytes) -> int | None:
    """Where the data set begins in a PS3.10 file starting with `head`: after the preamble,
    "DICM" and the group 0002 elements (explicit VR little endian); None when `head` is not
    such a file or its meta runs past `head`."""
    if head[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(head) and head[pos : pos + 2] == b"\x02\x00":
        if head[pos + 4 : pos + 6] in _LONG_VRS:
            pos += 12 + int.from_bytes(head[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(head[pos + 6 : pos + 8], "little")
    return pos if pos <= len(head) else None
