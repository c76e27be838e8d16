"""Reads of the image index that pages and the REST API share.

Every query starts from `imaging.access.studies_visible_to`, so the list a doctor sees,
the study they open and the series they page through obey the one access policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Replace
from django.http import Http404

from alliance.access import Principal
from imaging import access
from imaging.models import Instance, Series, Study
from imaging.patients import linked_patient_ids

_NAME_SEPARATORS = re.compile(r"[\s^=,]+")


@dataclass(frozen=True)
class StudyQuery:
    """Search criteria of the study list; empty fields do not filter."""

    patient_name: str = ""
    patient_id: str = ""
    date_from: date | None = None
    date_to: date | None = None
    modality: str = ""
    accession: str = ""
    institution_id: int | None = None


def studies_for(principal: Principal, query: StudyQuery | None = None) -> QuerySet[Study]:
    """The studies the principal may see that match the query, newest first."""
    query = query or StudyQuery()
    studies = access.studies_visible_to(principal).select_related("patient", "patient__issuer", "institution")
    studies = _filter_patient_name(studies, query.patient_name)
    if query.patient_id:
        studies = studies.filter(patient__patient_id__iexact=query.patient_id.strip())
    if query.date_from:
        studies = studies.filter(study_date__gte=query.date_from)
    if query.date_to:
        studies = studies.filter(study_date__lte=query.date_to)
    if query.modality:
        studies = studies.filter(_has_modality(query.modality.strip().upper()))
    if query.accession:
        studies = studies.filter(accession_number__iexact=query.accession.strip())
    if query.institution_id:
        studies = studies.filter(institution_id=query.institution_id)
    return studies.order_by(F("study_date").desc(nulls_last=True), F("study_time").desc(nulls_last=True), "-pk")


def _filter_patient_name(studies: QuerySet[Study], text: str) -> QuerySet[Study]:
    """Case-insensitive, partial: every word typed must occur in the name.

    DICOM names look like "WANG^FANG=王^芳"; a word is also matched against the name with
    its separators removed, so "王芳" finds "王^芳".
    """
    words = [w for w in _NAME_SEPARATORS.split(text) if w]
    if not words:
        return studies
    studies = studies.annotate(
        _joined_name=Replace(Replace(F("patient__name"), Value("^"), Value("")), Value(" "), Value(""))
    )
    for word in words:
        studies = studies.filter(Q(patient__name__icontains=word) | Q(_joined_name__icontains=word))
    return studies


def _has_modality(modality: str) -> Q:
    # Modalities in Study (0008,0061) is kept as the multi-valued string "CT\\SR".
    return (
        Q(modalities__iexact=modality)
        | Q(modalities__istartswith=modality + "\\")
        | Q(modalities__iendswith="\\" + modality)
        | Q(modalities__icontains="\\" + modality + "\\")
    )


def series_of(study: Study) -> QuerySet[Series]:
    return study.series.order_by(F("series_number").asc(nulls_last=True), "pk")


def get_series_for(principal: Principal, series_uid: str, study_uid: str | None = None) -> Series:
    """A series of a study the principal may see; the same 404 when missing or forbidden."""
    series = Series.objects.select_related("study", "study__patient", "study__institution").filter(
        series_uid=series_uid, study__in=access.studies_visible_to(principal)
    )
    if study_uid is not None:
        series = series.filter(study__study_uid=study_uid)
    found = series.first()
    if found is None:
        raise Http404("No such series.")
    return found


def instances_of(series: Series) -> QuerySet[Instance]:
    return series.instances.order_by(F("instance_number").asc(nulls_last=True), "pk")


def representative_instance(series: Series) -> Instance | None:
    """The middle slice: it shows more of the anatomy than the first one."""
    instances = instances_of(series)
    count = series.num_instances or instances.count()
    return instances[count // 2 : count // 2 + 1].first() or instances.first()


def get_instance_for(principal: Principal, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    series = get_series_for(principal, series_uid, study_uid)
    instance = series.instances.filter(sop_uid=sop_uid).first()
    if instance is None:
        raise Http404("No such instance.")
    instance.series = series
    return instance


def linked_studies(principal: Principal, patient: Any) -> QuerySet[Study]:
    """The studies of the patient and of every patient linked to it (both directions) that the
    principal may see: the alliance's cross-reference, newest first. Nothing is merged."""
    ids = linked_patient_ids(patient)
    studies = access.studies_visible_to(principal).filter(patient_id__in=ids)
    return studies.select_related("patient", "patient__issuer", "institution").order_by(
        F("study_date").desc(nulls_last=True), "-pk"
    )
