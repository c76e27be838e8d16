"""Study maintenance by an institution admin (issue 16, item 9): corrections of the index,
each an atomic, audited service. The stored files stay byte for byte as the device wrote
them; what is answered from the index (pages, the REST API, QIDO-RS, C-FIND) shows the
correction."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal
from imaging.access import may_correct_patient
from imaging.models import Patient

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
