"""Reads of the image index that pages and the REST API share.

Every query starts from `imaging.access.studies_visible_to`, so the list a doctor sees,
the study they open and the series they page through obey the one access policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Replace
from django.http import Http404

from alliance.access import Principal
from alliance.models import Doctor, Institution, Pool
from imaging import access
from imaging.models import Instance, Patient, Series, Study, StudyGroupGrant, StudyUserGrant
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
    issuer_id: int | None = None  # the institution that issued the Patient ID (an EMR launch names it)
    oldest_first: bool = False
    patient: str = ""  # every word in the name or the patient ID, partial (the consult form's picker)


def studies_for(principal: Principal, query: StudyQuery | None = None) -> QuerySet[Study]:
    """The studies the principal may see that match the query, newest first (or oldest)."""
    return filter_studies(access.studies_visible_to(principal), query or StudyQuery())


def filter_studies(studies: QuerySet[Study], query: StudyQuery) -> QuerySet[Study]:
    """Narrow studies an access function gave to those matching the query, ordered by date."""
    studies = studies.select_related("patient", "patient__issuer", "institution")
    studies = _filter_patient_name(studies, query.patient_name)
    studies = _filter_patient(studies, query.patient)
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
    if query.issuer_id:
        studies = studies.filter(patient__issuer_id=query.issuer_id)
    if query.oldest_first:
        return studies.order_by(F("study_date").asc(nulls_last=True), F("study_time").asc(nulls_last=True), "pk")
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


def _filter_patient(studies: QuerySet[Study], text: str) -> QuerySet[Study]:
    """As _filter_patient_name, where a word may also be part of the patient ID."""
    words = [w for w in _NAME_SEPARATORS.split(text) if w]
    if not words:
        return studies
    studies = studies.annotate(
        _joined_patient=Replace(Replace(F("patient__name"), Value("^"), Value("")), Value(" "), Value(""))
    )
    for word in words:
        studies = studies.filter(
            Q(patient__name__icontains=word)
            | Q(_joined_patient__icontains=word)
            | Q(patient__patient_id__icontains=word)
        )
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
        existing = Series.objects.filter(series_uid=series_uid, study__deleted_at__isnull=True)
        if study_uid is not None:
            existing = existing.filter(study__study_uid=study_uid)
        access.refuse(principal, "series", existing, series_uid, "study__patient_id")
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


def prior_studies(principal: Principal, study: Study, *, limit: int = 50) -> list[Study]:
    """The patient's other studies the principal may see, newest first: the same patient of
    the same issuer and every patient linked to it (PatientLink), through linked_studies and
    so through every access rule. A study of another issuer's patient without a link is
    never among them."""
    return list(linked_studies(principal, study.patient).exclude(pk=study.pk)[:limit])


def get_prior_for(principal: Principal, study: Study, prior_uid: str) -> Study:
    """One of `study`'s priors by UID, or the same 404 as for a missing study (a refused one
    audited as a denied read of it, as access.get_study_for does)."""
    prior = linked_studies(principal, study.patient).exclude(pk=study.pk).filter(study_uid=prior_uid).first()
    if prior is None:
        existing = Study.objects.filter(study_uid=prior_uid, deleted_at__isnull=True)
        access.refuse(principal, "study", existing, prior_uid, "patient_id")
    return prior


@dataclass(frozen=True)
class Access:
    """One grantee's live access on a case's basis: who, whether they may write, and until when
    (None: while the case is open)."""

    who: str
    kind: str  # "user", "pool" or "institution"
    write: bool
    until: datetime | None


def _group_names(group_ids: set[int]) -> dict[int, tuple[str, str]]:
    names = {g: ("pool", str(p)) for g, p in ((p.group_id, p) for p in Pool.objects.filter(group_id__in=group_ids))}
    for institution in Institution.objects.filter(group_id__in=group_ids):
        names[institution.group_id] = ("institution", institution.name)
    return names


def access_of_basis(basis: str) -> list[Access]:
    """Who holds live grants of a case now, one line per grantee (its studies together), and
    until when: what a case page shows under "who has access"."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    group_rows = StudyGroupGrant.objects.filter(access.live(), basis=basis).values_list(
        "group_id", "permission__codename", "expires_at", "devices_only"
    )
    rows = [
        *(("devices" if devices else "group", g, c, e) for g, c, e, devices in group_rows),
        *(("user", u, c, e) for u, c, e in _live(StudyUserGrant, basis, "user_id")),
    ]
    for kind, pk, codename, expires in rows:
        entry = found.setdefault((kind, pk), {"write": False, "until": expires})
        entry["write"] |= codename == access.WRITE
        if codename == access.READ:
            entry["until"] = expires
    groups = _group_names({pk for kind, pk in found if kind in {"group", "devices"}})
    users = {
        d.user_id: d.display_name
        for d in Doctor.objects.select_related("user").filter(user_id__in=[pk for kind, pk in found if kind == "user"])
    }
    result = []
    for (kind, pk), entry in found.items():
        if kind == "devices":  # an institution's DICOM devices only (imaging.grants.open_to_devices)
            label_kind, who = "devices", groups.get(pk, ("group", str(pk)))[1]
        else:
            label_kind, who = (
                groups.get(pk, ("group", str(pk))) if kind == "group" else ("user", users.get(pk, str(pk)))
            )
        result.append(Access(who=who, kind=label_kind, write=entry["write"], until=entry["until"]))
    return sorted(result, key=lambda a: (a.kind, a.who))


def _live(model: Any, basis: str, grantee: str) -> Any:
    return model.objects.filter(access.live(), basis=basis).values_list(grantee, "permission__codename", "expires_at")


AUDIT_PATIENTS_MAX = 200  # a name that matches more patients than this is too vague to search by


def patient_audit_keys(alliance_id: int, patient_id: str = "", name: str = "") -> list[str]:
    """What the audit trail's patient column holds for the alliance's patients matching a Patient
    ID and/or a name: the index's patient key (what every door records), and the DICOM Patient
    ID (what the DICOM server recorded before issue 16). For the audit page (alliance.audit lookups)."""
    patients = Patient.objects.filter(issuer__alliance_id=alliance_id)
    if patient_id.strip():
        patients = patients.filter(patient_id__iexact=patient_id.strip())
    words = [w for w in _NAME_SEPARATORS.split(name) if w]
    if words:
        patients = patients.annotate(_joined=Replace(Replace(F("name"), Value("^"), Value("")), Value(" "), Value("")))
        for word in words:
            patients = patients.filter(Q(name__icontains=word) | Q(_joined__icontains=word))
    rows = list(patients.values_list("pk", "patient_id")[:AUDIT_PATIENTS_MAX])
    return sorted({str(pk) for pk, _ in rows} | {pid for _, pid in rows if pid})


def study_audit_keys(alliance_id: int, key: str) -> list[str]:
    """The Study Instance UIDs of the alliance's studies with this UID or accession number."""
    key = key.strip()
    studies = Study.objects.filter(institution__alliance_id=alliance_id)
    return list(studies.filter(Q(study_uid=key) | Q(accession_number=key)).values_list("study_uid", flat=True)[:50])


def patient_audit_labels(keys: list[str]) -> dict[str, str]:
    """How the audit page shows its patient column: the index key ("13") as "P-1001 王芳 (Wang Fang)"."""
    pks = {int(k) for key in keys for k in key.split(",") if k.isdigit()}
    rows = Patient.objects.filter(pk__in=pks).only("pk", "patient_id", "name")
    return {str(p.pk): f"{p.patient_id} {p.display_name}".strip() for p in rows}
