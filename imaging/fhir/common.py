"""What every FHIR mapping of patient data shares: identifier systems, names, references,
and the search on the patient (`patient`, `patient.identifier` and their `subject` forms).

A patient is (issuer, patient ID), as everywhere here: the issuer's AE title names the
identifier's system ({FHIR_SYSTEM_BASE}/patient-id/<AE>), as it is the Issuer of Patient ID
(0010,0021) the DICOM server answers with.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from alliance.fhir.search import Param, Search
from imaging.models import Patient

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
GENDERS = {"M": "male", "F": "female", "O": "other"}

# The search parameters on the patient every patient-bound resource declares.
PATIENT_PARAMS = {
    "patient": Param("reference", "The patient, as Patient/<id>."),
    "subject": Param("reference", "The patient, as Patient/<id>."),
    "patient.identifier": Param(
        "token", "The patient's identifier, system|value (also subject:Patient.identifier, patient:Patient.identifier)."
    ),
    "subject.identifier": Param("token", "The patient's identifier, system|value."),
}


def patient_system(ae_title: str) -> str:
    return f"{settings.FHIR_SYSTEM_BASE}/patient-id/{ae_title}"


def accession_system(ae_title: str) -> str:
    return f"{settings.FHIR_SYSTEM_BASE}/accession/{ae_title}"


def issuer_of(system: str, kind: str = "patient-id") -> str | None:
    """The AE title a system of ours names, or None for a system that is not ours."""
    prefix = f"{settings.FHIR_SYSTEM_BASE}/{kind}/"
    return system[len(prefix) :] if system.startswith(prefix) and len(system) > len(prefix) else None


def patient_identifier(patient: Patient) -> dict[str, Any]:
    return {
        "use": "usual",
        "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
        "system": patient_system(patient.issuer.ae_title),
        "value": patient.patient_id,
        "assigner": {"display": patient.issuer.name},
    }


def patient_reference(patient: Patient) -> dict[str, Any]:
    """A reference that names the patient even to a reader who may not read the Patient itself."""
    reference: dict[str, Any] = {"reference": f"Patient/{patient.pk}", "identifier": patient_identifier(patient)}
    if patient.display_name:
        reference["display"] = patient.display_name
    return reference


def human_names(pn: str) -> list[dict[str, Any]]:
    """A DICOM PN (PS3.5 6.2.1.1: alphabetic=ideographic=phonetic, each family^given^middle^prefix^suffix)
    as FHIR HumanNames, one per component group that is there."""
    names = []
    for index, group in enumerate(pn.split("=")[:3]):
        components = [c.strip() for c in [*group.split("^"), "", "", "", ""][:5]]
        family, given, middle, prefix, suffix = components
        parts = {"family": family, "given": [g for g in (given, middle) if g]}
        parts |= {"prefix": [prefix] if prefix else [], "suffix": [suffix] if suffix else []}
        name: dict[str, Any] = {k: v for k, v in parts.items() if v}
        if name:
            # as people write it: family name first; ideographic names without spaces
            name["text"] = ("" if index == 1 else " ").join(c for c in components if c)
            names.append({"use": "official", **name})
    return names


def gender(sex: str) -> str:
    return GENDERS.get(sex.strip().upper(), "unknown")


def instant(moment: datetime | None) -> str | None:
    return timezone.localtime(moment).isoformat(timespec="seconds") if moment is not None else None


def study_start(day: date | None, at: time | None) -> str | None:
    """A study's date and time (local) as a FHIR dateTime: the day alone when the time is not known."""
    if day is None:
        return None
    if at is None:
        return day.isoformat()
    return datetime.combine(day, at, timezone.get_current_timezone()).isoformat(timespec="seconds")


def patients_q(search: Search, *, reference_params: tuple[str, ...] = ("patient", "subject")) -> Q | None:
    """The patients a search names, as a filter on Patient (None when it names none). Each
    repetition narrows; the values of one repetition are alternatives."""
    q = Q()
    named = False
    for name in reference_params:
        for values in search.references.get(name, []):
            named = True
            q &= Q(pk__in=[int(v) for v in values if v.isdigit() and len(v) <= 18])
        for tokens in search.tokens.get(f"{name}.identifier", []):
            named = True
            q &= identifier_q(tokens)
    return q if named else None


def identifier_q(tokens: list[Any]) -> Q:
    """Patients with one of these identifiers: system|value, |value (no system: none here) or value (any issuer)."""
    q = Q(pk__in=[])
    for token in tokens:
        if token.system is None:
            q |= Q(patient_id=token.value)
            continue
        issuer = issuer_of(token.system)
        if issuer is not None:
            q |= Q(issuer__ae_title=issuer, patient_id=token.value) if token.value else Q(issuer__ae_title=issuer)
    return q


def filter_by_patient(rows: Any, search: Search, path: str) -> Any:
    """Rows narrowed to the patients the search names; `path` leads from a row to its Patient."""
    q = patients_q(search)
    if q is None:
        return rows
    patients = Patient.objects.filter(q).values("pk")
    return rows.filter(**{f"{path}__in": patients})
