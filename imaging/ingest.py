"""The one path from received bytes to an indexed, stored instance (DIMSE, STOW-RS, upload).

`ingest_path` checks the file (imaging.dicom.part10), stores its bytes unchanged, and
indexes Patient, Study, Series and Instance with the audit event in one transaction.

Guarantees:
- Nothing half-stored: the file is put in place inside the transaction and deleted again
  if the transaction does not commit; no row ever points at a missing file. (Call it
  outside any transaction of your own: an outer rollback after we return is yours.)
- Durable before success: on a local store the file and its folder are fsynced, and the
  rows are committed, before `ingest_path` returns.
- Idempotent per SOP Instance UID: concurrent stores of one instance are serialised by a
  lock on the UID; the second finds the first and returns created=False. Same UID with
  different bytes: the first stored copy is kept (DICOM says one UID is one instance;
  modalities that resend after an error must not duplicate or silently replace it);
  the result says identical=False, the log warns and the audit event records both
  checksums. The same UID under another institution is refused (uid-conflict).
- A study belongs to the institution that first stored it: another institution sending
  the same Study Instance UID is refused with uid-conflict rather than merged.
- Every attempt is audited as "instance.store": success, duplicate, or failure with the
  reason; refusals are also logged at WARNING.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from alliance import audit
from alliance.models import AuditEvent, Institution
from imaging import storage
from imaging.dicom.datasets import Attributes
from imaging.dicom.part10 import InvalidFile, ParsedFile, read_file
from imaging.models import Instance, Patient, Series, Study

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=models.Model)

# code -> (DIMSE status, HTTP status). PS3.4 B.2.3 (C-STORE) and PS3.7 C.4.2.1.4:
# A7xx refused: out of resources; A9xx error: data set does not match SOP class;
# Cxxx error: cannot understand; 0122 refused: SOP class not supported.
STATUSES: dict[str, tuple[int, int]] = {
    "not-dicom": (0xC000, 400),
    "truncated": (0xC000, 400),
    "missing-attribute": (0xA900, 400),
    "invalid-attribute": (0xA900, 400),
    "unsupported-sop-class": (0x0122, 415),
    "unsupported-transfer-syntax": (0xC000, 415),
    "too-large": (0xA700, 413),
    "study-mismatch": (0xA900, 409),
    "uid-conflict": (0xA900, 409),
    "storage-failed": (0xA700, 503),
}
_HASH_CHUNK = 1024 * 1024
_LOCK_NAMESPACE = 3_000_003  # pg_advisory_xact_lock(namespace, hashtext(SOP Instance UID))


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
        self.dicom_status, self.http_status = STATUSES[code]
        self.sop_uid = ""  # the refused instance's SOP Instance UID, when the file named one
        super().__init__(f"{code}: {self.reason}")

    @property
    def localized_reason(self) -> str:
        return gettext(self.template) % self.params


def _storage_failed(template: str, exc: BaseException) -> IngestError:
    error = str(exc) if isinstance(exc, OSError) else type(exc).__name__
    return IngestError("storage-failed", template, error=error)


@dataclass
class IngestResult:
    instance: Instance
    created: bool  # False when the SOP Instance UID was already stored
    study: Study
    series: Series
    identical: bool = True  # False when an earlier copy with other bytes was kept


@dataclass(frozen=True)
class _Received:
    """The file as it will be stored: `prefix` + the bytes at `path`."""

    parsed: ParsedFile
    path: Path
    size: int
    sha256: str

    @property
    def attributes(self) -> Attributes:
        return self.parsed.attributes


def ingest_bytes(
    data: bytes,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str = "",
    expected_study_uid: str | None = None,
) -> IngestResult:
    path = storage.temp_dir() / f"in-{uuid.uuid4().hex}.dcm"
    try:
        path.write_bytes(data)
        return ingest_path(
            path, institution=institution, actor=actor, via=via, source=source, expected_study_uid=expected_study_uid
        )
    finally:
        path.unlink(missing_ok=True)


def ingest_path(
    path: Path,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str = "",
    expected_study_uid: str | None = None,
) -> IngestResult:
    """Store and index the DICOM file at `path` (the caller removes `path` afterwards)."""
    path = Path(path)
    parsed: ParsedFile | None = None
    try:
        parsed = _read(path, expected_study_uid)
        with _StoredForm(path, parsed) as received:
            return _store(received, institution=institution, actor=actor, via=via, source=source)
    except IngestError as exc:
        exc.sop_uid = parsed.sop_uid if parsed is not None else exc.sop_uid
        name = exc.sop_uid or path.name
        log.warning("refused %s via %s from %s (%s): %s", name, via, source or "-", actor.name, exc)
        _audit_refusal(exc, object_id=name, actor=actor, via=via, source=source)
        raise


def _read(path: Path, expected_study_uid: str | None) -> ParsedFile:
    try:
        return read_file(path, max_bytes=settings.DICOM_MAX_FILE_BYTES, expected_study_uid=expected_study_uid)
    except InvalidFile as exc:
        error = IngestError(exc.code, exc.template, **exc.params)
        error.sop_uid = exc.sop_uid
        raise error from None
    except OSError as exc:
        raise _storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None


class _StoredForm:
    """Context: the received file, or (when a preamble or file meta must be put in front)
    a new temp file holding the PS3.10 form, removed on exit."""

    def __init__(self, path: Path, parsed: ParsedFile) -> None:
        self.path = path
        self.parsed = parsed
        self.staged: Path | None = None

    def __enter__(self) -> _Received:
        source = self.path
        if self.parsed.prefix:
            self.staged = source = storage.temp_dir() / f"p10-{uuid.uuid4().hex}.dcm"
            _write_with_prefix(self.path, self.parsed.prefix, source)
        size, digest = _size_and_sha256(source)
        return _Received(self.parsed, source, size, digest)

    def __exit__(self, *exc: object) -> None:
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


def _write_with_prefix(path: Path, prefix: bytes, dest: Path) -> None:
    try:
        with path.open("rb") as src, dest.open("xb") as out:
            out.write(prefix)
            while chunk := src.read(_HASH_CHUNK):
                out.write(chunk)
    except OSError as exc:
        raise _storage_failed(gettext_noop("cannot stage the file (%(error)s)"), exc) from None


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise _storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None
    return size, digest.hexdigest()


def _store(received: _Received, *, institution: Institution, actor: audit.Actor, via: str, source: str) -> IngestResult:
    a = received.attributes
    key = storage.storage_key_for(a.study_uid, a.series_uid, a.sop_uid)
    file_placed = False
    try:
        with transaction.atomic():
            _lock_sop_uid(a.sop_uid)
            existing = Instance.objects.select_related("series__study").filter(sop_uid=a.sop_uid).first()
            if existing is not None:
                return _duplicate(existing, received, institution=institution, actor=actor, via=via, source=source)
            pending = _start_put(received.path, key)
            file_placed = True
            result = _index(received, key, institution)
            _audit_stored(result, received, actor=actor, via=via, source=source)
            _wait_durable(pending, key)
            transaction.on_commit(partial(_enqueue_render, result.instance.pk), robust=True)
        return result
    except BaseException as exc:
        if file_placed:
            _delete_quietly(key)
        if isinstance(exc, DatabaseError):
            raise _storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc) from exc
        raise


def _lock_sop_uid(sop_uid: str) -> None:
    """Serialise stores of one SOP Instance UID until commit (SQLite's IMMEDIATE
    transactions already serialise all writers)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_NAMESPACE, sop_uid])


def _start_put(path: Path, key: str) -> Future[None]:
    try:
        return storage.start_put(path, key)
    except Exception as exc:  # any backend's failure (OSError, botocore's ClientError...) is ours to report
        log.exception("storing %s failed", key)
        raise _storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc


def _wait_durable(pending: Future[None], key: str) -> None:
    """The file's fsyncs ran while we indexed; the rows commit only after they succeed."""
    try:
        pending.result()
    except Exception as exc:
        log.exception("syncing %s to disk failed", key)
        raise _storage_failed(gettext_noop("the file could not be made durable (%(error)s)"), exc) from exc


def _delete_quietly(key: str) -> None:
    try:
        storage.delete_key(key)
    except Exception:  # the original error matters more; the orphan is logged for cleanup
        log.exception("could not delete %s after a failed ingest; remove it by hand", key)


def _duplicate(
    existing: Instance, received: _Received, *, institution: Institution, actor: audit.Actor, via: str, source: str
) -> IngestResult:
    series = existing.series
    study = series.study
    if study.institution_id != institution.pk:
        raise IngestError(
            "uid-conflict", gettext_noop("SOP Instance UID %(uid)s is already in use"), uid=existing.sop_uid
        )
    identical = existing.sha256 == received.sha256
    if not identical:
        log.warning(
            "SOP Instance UID %s received again via %s with other bytes (sha256 %s); kept the stored copy (sha256 %s)",
            existing.sop_uid,
            via,
            received.sha256,
            existing.sha256,
        )
    detail = {"via": via, "duplicate": True, "identical": identical, "sha256": received.sha256}
    if not identical:
        detail["kept_sha256"] = existing.sha256
    audit.record(
        actor=actor,
        action="instance.store",
        object_type="instance",
        object_id=existing.sop_uid,
        patient=str(study.patient_id),
        source=source,
        detail=detail,
    )
    return IngestResult(instance=existing, created=False, study=study, series=series, identical=identical)


# --- indexing -------------------------------------------------------------------------


def _index(received: _Received, key: str, institution: Institution) -> IngestResult:
    a = received.attributes
    patient = _patient(a, institution)
    study, study_created = _locked_get_or_create(
        Study, {"study_uid": a.study_uid}, lambda: _new_study(a, institution, patient)
    )
    if not study_created:
        _check_study(study, a, institution, patient)
    series, series_created = _locked_get_or_create(Series, {"series_uid": a.series_uid}, lambda: _new_series(a, study))
    if series.study_id != study.pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Series Instance UID %(series_uid)s already belongs to another study than %(study_uid)s"),
            series_uid=a.series_uid,
            study_uid=a.study_uid,
        )
    instance = Instance.objects.create(
        sop_uid=a.sop_uid,
        series=series,
        sop_class_uid=a.sop_class_uid,
        transfer_syntax_uid=received.parsed.transfer_syntax_uid,
        instance_number=a.instance_number,
        rows=a.rows,
        columns=a.columns,
        number_of_frames=a.number_of_frames,
        storage_key=key,
        size_bytes=received.size,
        sha256=received.sha256,
    )
    series.num_instances += 1
    Series.objects.filter(pk=series.pk).update(num_instances=series.num_instances)
    _update_study(study, a, received.size, series_created)
    return IngestResult(instance=instance, created=True, study=study, series=series)


def _patient(a: Attributes, institution: Institution) -> Patient:
    identity = {"issuer": institution, "patient_id": a.patient_id}
    seen = {"name": a.patient_name[:324], "birth_date": a.patient_birth_date, "sex": a.patient_sex[:16]}
    patient, created = _locked_get_or_create(Patient, identity, lambda: Patient(**identity, **seen))
    changed = {k: v for k, v in seen.items() if v and getattr(patient, k) != v} if not created else {}
    if changed:
        Patient.objects.filter(pk=patient.pk).update(**changed)
        for field, value in changed.items():
            setattr(patient, field, value)
    return patient


def _new_study(a: Attributes, institution: Institution, patient: Patient) -> Study:
    return Study(
        study_uid=a.study_uid,
        patient=patient,
        institution=institution,
        study_date=a.study_date,
        study_time=a.study_time,
        accession_number=a.accession_number[:16],
        study_id=a.study_id[:16],
        description=a.study_description[:64],
        referring_physician=a.referring_physician[:324],
    )


def _new_series(a: Attributes, study: Study) -> Series:
    return Series(
        series_uid=a.series_uid,
        study=study,
        modality=a.modality[:16],
        series_number=a.series_number,
        description=a.series_description[:64],
        body_part=a.body_part[:16],
    )


def _check_study(study: Study, a: Attributes, institution: Institution, patient: Patient) -> None:
    if study.institution_id != institution.pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Study Instance UID %(uid)s is already in use by another institution"),
            uid=a.study_uid,
        )
    if study.patient_id != patient.pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Study Instance UID %(uid)s belongs to another patient than Patient ID %(patient_id)s"),
            uid=a.study_uid,
            patient_id=a.patient_id,
        )


def _update_study(study: Study, a: Attributes, size: int, series_created: bool) -> None:
    """Counters and blank fields filled from later instances; the row is locked, so the
    values read are current and the object is kept in step with the row."""
    changes: dict[str, Any] = {
        "num_instances": study.num_instances + 1,
        "size_bytes": study.size_bytes + size,
        "num_series": study.num_series + (1 if series_created else 0),
        "updated_at": timezone.now(),
    }
    modalities = study.modality_list
    if a.modality and a.modality not in modalities and len(study.modalities) + len(a.modality) + 1 <= 64:
        changes["modalities"] = "\\".join([*modalities, a.modality])
    for field, value in (
        ("study_date", a.study_date),
        ("study_time", a.study_time),
        ("accession_number", a.accession_number[:16]),
        ("description", a.study_description[:64]),
        ("referring_physician", a.referring_physician[:324]),
    ):
        if value and not getattr(study, field):
            changes[field] = value
    Study.objects.filter(pk=study.pk).update(**changes)
    for field, value in changes.items():
        setattr(study, field, value)


def _locked_get_or_create(model: type[ModelT], lookup: dict[str, Any], build: Any) -> tuple[ModelT, bool]:
    """The row for `lookup`, locked until commit; created from build() when missing.

    Under concurrency the loser's INSERT waits for the winner's commit, fails on the
    unique constraint inside its savepoint, and then locks the winner's row.
    """
    row = model.objects.select_for_update().filter(**lookup).first()  # type: ignore[attr-defined]
    if row is not None:
        return row, False
    try:
        with transaction.atomic():
            row = build()
            row.save(force_insert=True)
            return row, True
    except IntegrityError:
        return model.objects.select_for_update().get(**lookup), False  # type: ignore[attr-defined]


# --- audit and follow-up --------------------------------------------------------------


def _audit_stored(result: IngestResult, received: _Received, *, actor: audit.Actor, via: str, source: str) -> None:
    audit.record(
        actor=actor,
        action="instance.store",
        object_type="instance",
        object_id=result.instance.sop_uid,
        patient=str(result.study.patient_id),
        source=source,
        detail={
            "via": via,
            "study_uid": result.study.study_uid,
            "series_uid": result.series.series_uid,
            "size": received.size,
            "sha256": received.sha256,
        },
    )


def _audit_refusal(exc: IngestError, *, object_id: str, actor: audit.Actor, via: str, source: str) -> None:
    try:
        with transaction.atomic():
            audit.record(
                actor=actor,
                action="instance.store",
                object_type="instance",
                object_id=object_id,
                source=source,
                outcome=AuditEvent.Outcome.FAILURE,
                detail={"via": via, "code": exc.code, "reason": exc.reason[:500], "dicom_status": exc.dicom_status},
            )
    except DatabaseError:
        log.exception("could not audit the refusal of %s", object_id)


def _enqueue_render(instance_id: int) -> None:
    from imaging import tasks

    tasks.render_instance.delay(instance_id)
