"""Patient and ImagingStudy (FHIR R4) from the image index, through imaging.access.

A Patient is one (issuer, patient ID), seen by whoever sees one of their studies; an
ImagingStudy is one study (its id is the Study Instance UID), with its series and the
DICOMweb endpoint to fetch the images from. Every resource shown is audited with the basis
on which the reader sees it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import F, Q, QuerySet
from django.urls import reverse
from rest_framework.request import Request

from alliance import audit
from alliance.access import IMAGE_STORE, Principal
from alliance.fhir.registry import Provider
from alliance.fhir.search import Param, Search, date_q
from imaging import access
from imaging.fhir import common
from imaging.models import Patient, Series, Study


def _patient_bases(principal: Principal, patients: list[Patient]) -> dict[int, str]:
    """On what basis the principal sees each patient: that of one of their visible studies."""
    studies = list(
        access.studies_visible_to(principal)
        .filter(patient_id__in=[p.pk for p in patients])
        .only("pk", "patient_id", "institution_id")
    )
    bases = access.bases_for(principal, studies)
    found: dict[int, str] = {}
    for study in studies:
        if bases.get(study.pk):
            found.setdefault(study.patient_id, bases[study.pk])
    return found


class PatientProvider(Provider):
    resource_type = "Patient"
    module = IMAGE_STORE
    params = {
        "identifier": Param("token", "The patient ID with its issuer's system, system|value."),
        "birthdate": Param("date", "The date of birth (eq, ge, le, gt, lt, ne)."),
    }
    profile = "One Patient per (issuer, patient ID): the identifier's system names the issuing institution."

    def search(self, principal: Principal, search: Search) -> QuerySet[Patient]:
        rows = access.patients_visible_to(principal).select_related("issuer")
        for tokens in search.tokens.get("identifier", []):
            rows = rows.filter(common.identifier_q(tokens))
        for ranges in search.dates.get("birthdate", []):
            rows = rows.filter(date_q("birth_date", ranges, is_date=True))
        return rows.order_by("issuer__ae_title", "patient_id", "pk")

    def read(self, principal: Principal, local_id: str) -> Patient:
        return access.get_patient_for(principal, local_id)

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        bases = _patient_bases(principal, rows)
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action="patient.view" if read else "patient.list",
            object_type="patient",
            items=[(str(p.pk), str(p.pk), bases.get(p.pk, "")) for p in rows],
            source=audit.source_of(request),
            detail={"via": "fhir"},
        )
        return [patient_resource(p) for p in rows]


def patient_resource(patient: Patient) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.pk),
        "identifier": [common.patient_identifier(patient)],
        "gender": common.gender(patient.sex),
        "managingOrganization": {"display": patient.issuer.name},
    }
    names = common.human_names(patient.name)
    if names:
        resource["name"] = names
    if patient.birth_date:
        resource["birthDate"] = patient.birth_date.isoformat()
    return resource


class ImagingStudyProvider(Provider):
    resource_type = "ImagingStudy"
    module = IMAGE_STORE
    params = {
        **common.PATIENT_PARAMS,
        "started": Param("date", "The study date (eq, ge, le, gt, lt, ne)."),
        "identifier": Param(
            "token", "urn:dicom:uid|urn:oid:<Study Instance UID>, or the accession number with its system."
        ),
    }
    profile = "id = Study Instance UID; the images are fetched over DICOMweb (the contained Endpoint)."

    def search(self, principal: Principal, search: Search) -> QuerySet[Study]:
        rows = access.studies_visible_to(principal).select_related("patient__issuer", "institution")
        rows = common.filter_by_patient(rows, search, "patient")
        for ranges in search.dates.get("started", []):
            rows = rows.filter(date_q("study_date", ranges, is_date=True))
        for tokens in search.tokens.get("identifier", []):
            rows = rows.filter(_study_identifier_q(tokens))
        return rows.order_by(F("study_date").desc(nulls_last=True), "-pk")

    def read(self, principal: Principal, local_id: str) -> Study:
        return access.get_study_for(principal, local_id)

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        bases = access.bases_for(principal, rows)
        audit.read_many(request, rows, "study.view" if read else "study.list", bases, via="fhir")
        series: dict[int, list[Series]] = defaultdict(list)
        for s in Series.objects.filter(study__in=[r.pk for r in rows]).order_by("series_number", "pk"):
            series[s.study_id].append(s)
        wado = request.build_absolute_uri(reverse("dicomweb-studies")).removesuffix("/studies")
        return [imaging_study_resource(study, series[study.pk], wado) for study in rows]


def _study_identifier_q(tokens: list[Any]) -> Q:
    q = Q(pk__in=[])
    for token in tokens:
        if token.system == common.DICOM_UID_SYSTEM or (token.system is None and token.value.startswith("urn:oid:")):
            q |= Q(study_uid=token.value.removeprefix("urn:oid:"))
        elif token.system is None:
            q |= Q(accession_number=token.value) | Q(study_uid=token.value)
        elif (issuer := common.issuer_of(token.system, "accession")) is not None:
            q |= Q(institution__ae_title=issuer, accession_number=token.value)
    return q


def imaging_study_resource(study: Study, series: list[Series], wado: str) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [{"system": common.DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_uid}"}]
    if study.accession_number:
        identifiers.append(
            {
                "type": {"coding": [{"system": common.V2_0203, "code": "ACSN"}]},
                "system": common.accession_system(study.institution.ae_title),
                "value": study.accession_number,
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study.study_uid,
        "contained": [_endpoint(wado)],
        "identifier": identifiers,
        "status": "available",
        "subject": common.patient_reference(study.patient),
        "endpoint": [{"reference": "#dicomweb"}],
        "numberOfSeries": study.num_series,
        "numberOfInstances": study.num_instances,
        "series": [_series(s) for s in series],
    }
    modalities = [{"system": common.DCM, "code": m} for m in study.modality_list]
    optional = {
        "modality": modalities,
        "started": common.study_start(study.study_date, study.study_time),
        "referrer": {"display": study.referring_physician_name} if study.referring_physician_name else None,
        "description": study.description,
    }
    resource |= {k: v for k, v in optional.items() if v}
    return resource


def _endpoint(wado: str) -> dict[str, Any]:
    """The DICOMweb service of this server (WADO-RS, QIDO-RS, STOW-RS under one base URL)."""
    return {
        "resourceType": "Endpoint",
        "id": "dicomweb",
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": wado,
    }


def _series(series: Series) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "uid": series.series_uid,
        "modality": {"system": common.DCM, "code": series.modality or "OT"},
        "numberOfInstances": series.num_instances,
    }
    if series.series_number is not None and series.series_number >= 0:  # FHIR unsignedInt
        entry["number"] = series.series_number
    if series.description:
        entry["description"] = series.description
    if series.body_part:
        entry["bodySite"] = {"display": series.body_part}
    return entry
