"""Browser uploads: each posted file, or each member of a posted zip, goes through ingest.

A zip is unpacked member by member into a private temporary folder under generated names
(the member's own name is only reported, never used as a path), with limits on the
number of members, on each member's size and on the total, and on how much each member
inflates (DICOM_MAX_INFLATE_RATIO past the first 16 MB), so that a zip bomb or a "../"
name can do no harm; a deflated DICOM file inside is capped by ingest in the same way.
Whatever is not DICOM is reported with a reason.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from alliance import audit
from alliance.models import Institution
from imaging import storage
from imaging.dicom import part10
from imaging.ingest import IngestError, ingest_bytes, ingest_path

ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_TOTAL_BYTES = 8 * 1024**3
_CHUNK = 1024 * 1024
_SKIPPED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class FileResult:
    """What became of one uploaded file: stored, duplicate, skipped or refused (with a reason)."""

    name: str
    status: str
    reason: str = ""
    study_uid: str = ""
    sop_uid: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class _TooLarge(Exception):
    """The member unpacks to more than `limit` bytes (the file limit, what is left of the zip's
    total, or its own compressed size times DICOM_MAX_INFLATE_RATIO when `by_ratio`)."""

    def __init__(self, *, by_ratio: bool = False) -> None:
        super().__init__()
        self.by_ratio = by_ratio


def ingest_upload(
    uploaded: UploadedFile, *, name: str, institution: Institution, actor: audit.Actor, source: str
) -> list[FileResult]:
    head = uploaded.read(len(ZIP_MAGIC))
    uploaded.seek(0)
    if head == ZIP_MAGIC:
        return _ingest_zip(uploaded, name=name, institution=institution, actor=actor, source=source)
    common = {"institution": institution, "actor": actor, "via": "upload", "source": source}
    if hasattr(uploaded, "temporary_file_path"):
        return [_ingest_one(name, ingest_path, uploaded.temporary_file_path(), **common)]
    return [_ingest_one(name, ingest_bytes, uploaded.read(), **common)]


def _ingest_one(name: str, ingest: Callable[..., Any], data: Any, **common: Any) -> FileResult:
    try:
        result = ingest(data, **common)
    except IngestError as exc:
        return FileResult(name=name, status="refused", reason=exc.localized_reason)
    return FileResult(
        name=name,
        status="stored" if result.created else "duplicate",
        study_uid=result.study.study_uid,
        sop_uid=result.instance.sop_uid,
    )


def _ingest_zip(
    uploaded: UploadedFile, *, name: str, institution: Institution, actor: audit.Actor, source: str
) -> list[FileResult]:
    try:
        archive = zipfile.ZipFile(uploaded)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError):
        return [FileResult(name=name, status="refused", reason=_("Not a readable zip file."))]
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        reason = _("The zip holds %(count)d files; at most %(limit)d are accepted.")
        return [
            FileResult(name=name, status="refused", reason=reason % {"count": len(members), "limit": MAX_ZIP_MEMBERS})
        ]
    results: list[FileResult] = []
    budget = MAX_ZIP_TOTAL_BYTES
    common = {"institution": institution, "actor": actor, "via": "upload", "source": source}
    with archive, tempfile.TemporaryDirectory(prefix="upload-", dir=storage.temp_dir()) as folder:
        for number, member in enumerate(members):
            label = f"{name}/{member.filename}"
            refusal = _member_refusal(member)
            if refusal is not None:
                results.append(FileResult(name=label, status=refusal[0], reason=refusal[1]))
                continue
            target = Path(folder, f"{number}.dcm")
            try:
                budget -= _extract(archive, member, target, min(settings.DICOM_MAX_FILE_BYTES, budget))
            except _TooLarge as exc:
                results.append(FileResult(name=label, status="refused", reason=_too_large_reason(budget, exc)))
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
                reason = _("The zip member cannot be read: %(error)s") % {"error": exc}
                results.append(FileResult(name=label, status="refused", reason=reason))
            else:
                results.append(_ingest_one(label, ingest_path, str(target), **common))
            target.unlink(missing_ok=True)
    return results


def _member_refusal(member: zipfile.ZipInfo) -> tuple[str, str] | None:
    path = PurePosixPath(member.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or ":" in member.filename:
        return "refused", _("Unsafe path inside the zip; the file was not unpacked.")
    if member.flag_bits & 0x1:
        return "refused", _("Encrypted zip members are not accepted.")
    if path.parts[0] == "__MACOSX" or path.name.lower() in _SKIPPED_NAMES or path.name.startswith("._"):
        return "skipped", _("Operating-system metadata file, not an image.")
    if path.name.upper() == "DICOMDIR":
        return "skipped", _("DICOMDIR is a media index, not an image; the images it lists are read on their own.")
    if path.suffix.lower() == ".zip":
        return "refused", _("A zip inside a zip is not unpacked; upload it on its own.")
    return None


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, limit: int) -> int:
    """Copy one member out, counting the bytes really inflated (the header's size may lie), and
    stopping past `limit` or past the inflation ratio (a zip bomb: zipfile reads at most the
    member's compressed size from the archive, so the ratio holds whatever the header says)."""
    by_ratio = max(part10.RATIO_FREE_BYTES, settings.DICOM_MAX_INFLATE_RATIO * member.compress_size)
    if member.file_size > min(limit, by_ratio):
        raise _TooLarge(by_ratio=member.file_size > by_ratio)
    written = 0
    with archive.open(member) as source, open(target, "wb") as sink:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > min(limit, by_ratio):
                raise _TooLarge(by_ratio=written > by_ratio)
            sink.write(chunk)
    return written


def _too_large_reason(budget: int, exc: _TooLarge) -> str:
    if exc.by_ratio:
        reason = _("The file inflates more than %(ratio)d-fold from the zip; it was not unpacked.")
        return reason % {"ratio": settings.DICOM_MAX_INFLATE_RATIO}
    if budget <= 0:
        limit = filesizeformat(MAX_ZIP_TOTAL_BYTES)
        return _("The zip unpacks to more than %(limit)s; the rest of it was not read.") % {"limit": limit}
    limit = filesizeformat(settings.DICOM_MAX_FILE_BYTES)
    return _("The file is larger than the limit of %(limit)s.") % {"limit": limit}
