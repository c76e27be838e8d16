"""Study maintenance by an institution admin (issue 16, item 9): corrections of the index,
each an atomic, audited service. A patient correction leaves the stored files byte for byte
as the device wrote them; what is answered from the index (pages, the REST API, QIDO-RS,
C-FIND) shows the correction. Moving a misfiled series rewrites its files as well (their
Study Instance UID is part of what WADO-RS serves): the new files are stored under new keys
before the index changes, and the old ones are removed only once the change is committed."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal
from imaging import storage
from imaging.access import may_correct_patient, may_delete_study, may_move_series
from imaging.models import Instance, Patient, ReceivedDay, Series, Study

SEXES = ("", "M", "F", "O")  # PS3.3 C.7.1.1 (0010,0040)


@transaction.atomic
def patient_correct(
    *, by: Principal, patient: Patient, name: str, birth_date: date | None, sex: str, reason: str
) -> Patient:
    """Correct a patient's name, birth date and sex within its issuer; the reason is required."""
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if not may_correct_patient(by, patient):
        raise AccessDenied(_("Only an admin of the institution that issued the Patient ID corrects the patient."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the patient's details are corrected.")})
    if sex not in SEXES:
        raise ValidationError({"sex": _("Choose male, female, other or unknown.")})
    new = {"name": name.strip()[:324], "birth_date": birth_date, "sex": sex}
    changed = {k: [str(getattr(patient, k) or ""), str(v or "")] for k, v in new.items() if getattr(patient, k) != v}
    if not changed:
        return patient
    for field, value in new.items():
        setattr(patient, field, value)
    patient.corrected_at = timezone.now()
    patient.save(update_fields=[*new, "corrected_at"])
    audit.record(
        actor=by.actor,
        action="patient.correct",
        object_type="patient",
        object_id=patient.patient_id,
        patient=str(patient.pk),
        detail={**changed, "reason": reason},
    )
    return patient


RETENTION_DAYS = 30  # a deleted study's files are kept this long (issue 16, item 9)


@transaction.atomic
def study_delete(*, by: Principal, study: Study, reason: str) -> Study:
    """Soft delete: the study disappears from every page, API, DICOMweb and DICOM answer at
    once; its rows and files stay for RETENTION_DAYS, then purge_deleted_studies removes them."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if not may_delete_study(by, study):
        raise AccessDenied(_("Only an admin of the institution that owns the study deletes it."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the study is deleted.")})
    study.deleted_at, study.deleted_reason = timezone.now(), reason
    study.save(update_fields=["deleted_at", "deleted_reason"])
    audit.record(
        actor=by.actor,
        action="study.delete",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        detail={"reason": reason, "files_until": (study.deleted_at + timedelta(days=RETENTION_DAYS)).isoformat()},
    )
    return study


def purge_deleted_studies(*, now: datetime | None = None) -> int:
    """The retention job: studies deleted more than RETENTION_DAYS ago lose their rows, then
    their files (after the commit, so that a failed purge leaves both). Safe to run twice."""
    cutoff = (now or timezone.now()) - timedelta(days=RETENTION_DAYS)
    purged = 0
    for pk in Study.objects.filter(deleted_at__lt=cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            study = Study.objects.select_for_update().filter(pk=pk, deleted_at__lt=cutoff).first()
            if study is None:
                continue
            keys = list(Instance.objects.filter(series__study=study).values_list("storage_key", flat=True))
            audit.record(
                actor=audit.SYSTEM,
                action="study.purge",
                object_type="study",
                object_id=study.study_uid,
                patient=str(study.patient_id),
                detail={"instances": len(keys), "deleted_at": study.deleted_at.isoformat() if study.deleted_at else ""},
            )
            study.delete()
            transaction.on_commit(partial(_delete_files, keys))
        purged += 1
    return purged


def _delete_files(keys: list[str]) -> None:
    for key in keys:
        storage.delete_key(key)


# --- moving a misfiled series ---------------------------------------------------------

# The study-level attributes a moved instance takes from its new study (PS3.3 C.7.2.1),
# when the new study has a value for them.
STUDY_ATTRIBUTES = (
    ("AccessionNumber", "accession_number"),
    ("StudyID", "study_id"),
    ("StudyDescription", "description"),
)


def move_targets(study: Study) -> QuerySet[Study]:
    """The studies a series of `study` may move to: the same patient's other studies of the
    same institution, not deleted (what series_move accepts)."""
    return (
        Study.objects.filter(patient_id=study.patient_id, institution_id=study.institution_id, deleted_at__isnull=True)
        .exclude(pk=study.pk)
        .order_by("-study_date", "-pk")
    )


def _refuse(message: str) -> ValidationError:
    return ValidationError({"target": message})


@transaction.atomic
def series_move(*, by: Principal, series: Series, target: Study, reason: str) -> Series:
    """Move a misfiled series to the right study of the same patient, issuer and institution.

    Each instance's file is rewritten with the target's Study Instance UID (and accession
    number, study ID and description) and stored under the key of its new place; the index
    then points at the new files, the two studies' counts, sizes and modalities follow,
    and the figures' received-day sums with them. The old files are deleted after the
    commit: a failure before it leaves the old files and the old index, the new files
    removed again (or, if the process dies, left as orphans dicom_storage_check reports).
    Refused: another patient, issuer or institution, a deleted study, the series' own
    study, and the only series of a study (delete the study instead, or move the other
    series the other way)."""
    series = Series.objects.select_for_update().get(pk=series.pk)
    locked = {
        s.pk: s for s in Study.objects.select_for_update().filter(pk__in=[series.study_id, target.pk]).order_by("pk")
    }
    source, target = locked[series.study_id], locked.get(target.pk, target)
    if not may_move_series(by, source):
        raise AccessDenied(_("Only an admin of the institution that owns the study moves its series."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the series is moved.")})
    if target.pk == source.pk:
        raise _refuse(_("The series is already in this study."))
    if target.deleted_at is not None:
        raise _refuse(_("The target study is deleted."))
    if target.institution_id != source.institution_id:
        raise _refuse(_("The target study belongs to another institution."))
    if target.patient_id != source.patient_id:
        raise _refuse(_("The target study is of another patient (or another issuer of the Patient ID)."))
    if Series.objects.filter(study=source).count() < 2:
        raise _refuse(_("This is the only series of its study: delete the study instead, or move the other way."))
    instances = list(Instance.objects.select_for_update().filter(series=series).order_by("pk"))
    old_keys = [i.storage_key for i in instances]
    old_size = sum(i.size_bytes for i in instances)
    placed: list[str] = []
    try:
        for instance in instances:
            key, size, sha256 = _store_rewritten(instance, series, target)
            placed.append(key)
            instance.storage_key, instance.size_bytes, instance.sha256 = key, size, sha256
        Instance.objects.bulk_update(instances, ["storage_key", "size_bytes", "sha256"])
        new_size = sum(i.size_bytes for i in instances)
        series.study = target
        series.save(update_fields=["study"])
        _follow(source, -1, -len(instances), -old_size)
        _follow(target, 1, len(instances), new_size)
    except BaseException:
        for key in placed:
            storage.delete_key(key)
        raise
    transaction.on_commit(partial(_delete_files, old_keys))
    audit.record(
        actor=by.actor,
        action="series.move",
        object_type="series",
        object_id=series.series_uid,
        patient=str(source.patient_id),
        detail={
            "from": source.study_uid,
            "to": target.study_uid,
            "instances": len(instances),
            "reason": reason,
        },
    )
    return series


def _store_rewritten(instance: Instance, series: Series, target: Study) -> tuple[str, int, str]:
    """The instance's file with the target study's identity, stored durably under its new
    key; (key, size, sha256)."""
    with storage.open_instance(instance) as fh:
        ds = pydicom.dcmread(fh)
    ds.StudyInstanceUID = target.study_uid
    for keyword, field in STUDY_ATTRIBUTES:
        if getattr(target, field):
            setattr(ds, keyword, getattr(target, field))
    staging = storage.temp_dir() / f"move-{uuid.uuid4().hex}.dcm"
    try:
        ds.save_as(staging, enforce_file_format=True)
        data = staging.read_bytes()
        key = storage.storage_key_for(target.study_uid, series.series_uid, instance.sop_uid)
        try:
            storage.put_file(staging, key)
        except FileExistsError:  # a file no row names (a move that died before its commit)
            key = storage.alternative_key(key)
            storage.put_file(staging, key)
    finally:
        Path(staging).unlink(missing_ok=True)
    return key, len(data), hashlib.sha256(data).hexdigest()


def _follow(study: Study, series: int, instances: int, size: int) -> None:
    """A study's counts, size and modalities after a series left or joined it, and its
    received day's sum in the figures' roll-up (imaging.figures)."""
    modalities: list[str] = []
    for modality in Series.objects.filter(study=study).order_by("pk").values_list("modality", flat=True):
        if modality and modality not in modalities and len("\\".join([*modalities, modality])) <= 64:
            modalities.append(modality)
    Study.objects.filter(pk=study.pk).update(
        num_series=F("num_series") + series,
        num_instances=F("num_instances") + instances,
        size_bytes=F("size_bytes") + size,
        modalities="\\".join(modalities),
        updated_at=timezone.now(),
    )
    day = study.received_at.astimezone(ZoneInfo(settings.TIME_ZONE)).date()
    ReceivedDay.objects.filter(institution_id=study.institution_id, day=day).update(size_bytes=F("size_bytes") + size)
