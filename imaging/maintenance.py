"""Study maintenance by an institution admin (issue 16, item 9): corrections of the index,
each an atomic, audited service. The stored files stay byte for byte as the device wrote
them; what is answered from the index (pages, the REST API, QIDO-RS, C-FIND) shows the
correction."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import partial

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal
from imaging import storage
from imaging.access import may_correct_patient, may_delete_study
from imaging.models import Instance, Patient, Study

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
