"""Patients known without images (a referral typed by hand) and the alliance's cross-reference.

A patient is (issuer, patient ID). A referral may name a patient who has no images yet: that
patient is registered under the referring institution as issuer. When a receiving hospital
knows the same person under its own ID, the two rows are linked (PatientLink), never merged:
neither Patient row changes, and imaging.selectors.linked_studies finds both sides' studies
that a viewer may see anyway.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from alliance import audit
from alliance.models import Institution
from imaging.models import Patient, PatientLink

SEXES = ("M", "F", "O", "")


@transaction.atomic
def register_patient(
    *,
    issuer: Institution,
    patient_id: str,
    name: str = "",
    birth_date: date | None = None,
    sex: str = "",
    by: audit.Actor,
) -> Patient:
    """The patient with this ID under the issuer; made from the typed demographics if new.

    An existing row is returned as it is: typed details never overwrite what the issuer's
    devices sent.
    """
    patient_id = (patient_id or "").strip()
    if not patient_id:
        raise ValidationError({"patient_id": _("Give the patient's ID.")})
    if len(patient_id) > 64:
        raise ValidationError({"patient_id": _("A patient ID has at most 64 characters.")})
    sex = (sex or "").strip().upper()
    if sex not in SEXES:
        raise ValidationError({"sex": _("Sex is M, F or O.")})
    patient, created = Patient.objects.get_or_create(
        issuer=issuer,
        patient_id=patient_id,
        defaults={"name": (name or "").strip()[:324], "birth_date": birth_date, "sex": sex},
    )
    if created:
        audit.record(
            actor=by,
            action="patient.register",
            object_type="patient",
            object_id=patient.pk,
            patient=str(patient.pk),
            detail={"issuer": issuer.pk},
        )
    return patient


@transaction.atomic
def link_patients(*, patient: Patient, linked: Patient, basis: str, by: audit.Actor, user: Any = None) -> PatientLink:
    """Record that two issuers' patients are the same person (either order finds the same link)."""
    if patient.pk == linked.pk:
        raise ValidationError({"patient_id": _("A patient cannot be linked to itself.")})
    existing = PatientLink.objects.filter(Q(patient=patient, linked=linked) | Q(patient=linked, linked=patient)).first()
    if existing is not None:
        return existing
    link = PatientLink.objects.create(patient=patient, linked=linked, basis=basis, created_by=user)
    audit.record(
        actor=by,
        action="patient.link",
        object_type="patient",
        object_id=patient.pk,
        patient=str(patient.pk),
        basis=basis,
        detail={"linked": linked.pk, "linked_issuer": linked.issuer_id},
    )
    return link


def linked_patient_ids(patient: Patient) -> set[int]:
    """The patient and every patient linked to it, in either direction (one query)."""
    pairs = PatientLink.objects.filter(Q(patient=patient) | Q(linked=patient)).values_list("patient_id", "linked_id")
    ids = {patient.pk}
    for a, b in pairs:
        ids.update((a, b))
    return ids


def issuer_of_audit_key(key: str) -> int | None:
    """The institution holding the patient an audit event names by its key (the Patient's pk,
    as every `audit_patient` writes it); None for anything else (alliance.audit.build)."""
    if not key.isdigit():
        return None
    return Patient.objects.filter(pk=int(key)).values_list("issuer_id", flat=True).first()
