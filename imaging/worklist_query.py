"""The Modality Worklist Information Model - FIND over scheduled steps (PS3.4 K.6).

`find(steps, query)` narrows an institution's steps (imaging.access.steps_visible_to) by the
matching keys of an MWL C-FIND identifier, by the same matching rules as the image index
(imaging.query); `answers(query)` reads the matching rows and lays out their responses:
every key asked for, the Scheduled Procedure Step Sequence with one item. Keys we do not hold
are returned empty (PS3.4 C.2.2.1.1). Dates and times are the institution's local time
(settings.TIME_ZONE).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from pydicom.datadict import dictionary_VR, tag_for_keyword

from imaging.dicom.layout import Field, Layout, Row, RowIdentifier
from imaging.dicom.procedures import WorklistQuery
from imaging.models import ScheduledStep
from imaging.query import InvalidCriterion, date_range, matching, time_range

Status = ScheduledStep.Status

# PS3.3 C.4.10: Scheduled Procedure Step Status (0040,0020) for each of our statuses
DICOM_STATUS = {
    Status.SCHEDULED: "SCHEDULED",
    Status.IN_PROGRESS: "STARTED",
    Status.COMPLETED: "COMPLETED",
    Status.DISCONTINUED: "DISCONTINUED",
}
_FROM_DICOM_STATUS = {v: k for k, v in DICOM_STATUS.items()}

# Matching keys we hold: keyword -> (VR, ORM lookup); the sequence item's apart.
_TOP_KEYS = {
    "PatientName": ("PN", "patient_name"),
    "PatientID": ("LO", "patient__patient_id"),
    "IssuerOfPatientID": ("LO", "patient__issuer__ae_title"),
    "PatientBirthDate": ("DA", "birth_date"),
    "PatientSex": ("CS", "sex"),
    "AccessionNumber": ("SH", "accession_number"),
    "RequestedProcedureID": ("SH", "requested_procedure_id"),
    "RequestedProcedureDescription": ("LO", "procedure_description"),
    "StudyInstanceUID": ("UI", "study_uid"),
}
_STEP_KEYS = {
    "Modality": ("CS", "modality"),
    "ScheduledPerformingPhysicianName": ("PN", "performing_physician"),
    "ScheduledProcedureStepDescription": ("LO", "procedure_description"),
}


def find(steps: QuerySet[ScheduledStep], query: WorklistQuery) -> QuerySet[ScheduledStep]:
    """The steps matching every matching key of the query, oldest scheduled first."""
    condition = Q()
    for keyword, value in query.criteria.items():
        if keyword in _TOP_KEYS:
            vr, lookup = _TOP_KEYS[keyword]
            condition &= matching(keyword, vr, lookup, value)
    items = query.step_criteria
    for keyword, value in items.items():
        if keyword in _STEP_KEYS:
            vr, lookup = _STEP_KEYS[keyword]
            condition &= matching(keyword, vr, lookup, value)
    condition &= _station(items.get("ScheduledStationAETitle", ""))
    condition &= _step_id(items.get("ScheduledProcedureStepID", ""))
    condition &= _status(items.get("ScheduledProcedureStepStatus", ""))
    condition &= _start(
        items.get("ScheduledProcedureStepStartDate", ""), items.get("ScheduledProcedureStepStartTime", "")
    )
    return steps.filter(condition).order_by("scheduled_at", "pk")


def _values(value: str) -> list[str]:
    return [v.strip() for v in value.split("\\") if v.strip() and v.strip() != "*"]


def _station(value: str) -> Q:
    """A step scheduled for no particular station is on every station's list of its modality."""
    titles = _values(value)
    if not titles:
        return Q()
    condition = Q(station_ae="")
    for title in titles:
        condition |= matching("ScheduledStationAETitle", "AE", "station_ae", title)
    return condition


def _step_id(value: str) -> Q:
    ids = _values(value)
    if not ids:
        return Q()
    pks = [int(i[3:]) for i in ids if i.startswith("SPS") and i[3:].isdigit()]
    return Q(pk__in=pks)


def _status(value: str) -> Q:
    """Universal: the steps still to be done or under way; a modality has no use for the rest."""
    wanted = [v.upper() for v in _values(value)]
    if not wanted:
        return Q(status__in=[Status.SCHEDULED, Status.IN_PROGRESS])
    unknown = [v for v in wanted if v not in _FROM_DICOM_STATUS]
    if len(unknown) == len(wanted):
        return Q(pk__in=[])  # ARRIVED, READY ...: states we do not keep
    return Q(status__in=[_FROM_DICOM_STATUS[v] for v in wanted if v in _FROM_DICOM_STATUS])


def _start(date_value: str, time_value: str) -> Q:
    """(0040,0002) and (0040,0003) matched together as one date-time range (PS3.4 C.2.2.2.5)."""
    first, last = date_range("ScheduledProcedureStepStartDate", date_value)
    start, end = time_range("ScheduledProcedureStepStartTime", time_value)
    if first is None and last is None:
        return _time_of_day(start, end)
    condition = Q()
    if first is not None:
        condition &= Q(scheduled_at__gte=_local(first, start or time.min))
    if last is not None:
        if end is None:
            condition &= Q(scheduled_at__lt=_local(last + timedelta(days=1), time.min))
        else:
            condition &= Q(scheduled_at__lte=_local(last, end))
    return condition


def _time_of_day(start: time | None, end: time | None) -> Q:
    condition = Q()
    if start is not None:
        condition &= Q(scheduled_at__time__gte=start)
    if end is not None:
        condition &= Q(scheduled_at__time__lte=end)
    return condition


def _local(day: date, at: time) -> datetime:
    return timezone.make_aware(datetime.combine(day, at), timezone.get_default_timezone())


# --- responses (PS3.4 K.6.1.2.2) --------------------------------------------------------------


def _text(value: str | None) -> str:
    return value or ""


def _da(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _start_date(value: datetime) -> str:
    return value.astimezone(timezone.get_default_timezone()).strftime("%Y%m%d")


def _start_time(value: datetime) -> str:
    return value.astimezone(timezone.get_default_timezone()).strftime("%H%M%S")


def _sps_id(pk: int) -> str:
    return f"SPS{pk}"  # ScheduledStep.step_id


def _dicom_status(status: str) -> str:
    return DICOM_STATUS[Status(status)]


# Each key we hold: the column its value is read from, and the value's DICOM text from it.
_TOP_VALUES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "PatientName": ("patient_name", _text),
    "PatientID": ("patient__patient_id", _text),
    "IssuerOfPatientID": ("patient__issuer__ae_title", _text),
    "PatientBirthDate": ("birth_date", _da),
    "PatientSex": ("sex", _text),
    "AccessionNumber": ("accession_number", _text),
    "RequestedProcedureID": ("requested_procedure_id", _text),
    "RequestedProcedureDescription": ("procedure_description", _text),
    "StudyInstanceUID": ("study_uid", _text),
}
_STEP_VALUES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "ScheduledStationAETitle": ("station_ae", _text),
    "ScheduledProcedureStepStartDate": ("scheduled_at", _start_date),
    "ScheduledProcedureStepStartTime": ("scheduled_at", _start_time),
    "Modality": ("modality", _text),
    "ScheduledPerformingPhysicianName": ("performing_physician", _text),
    "ScheduledProcedureStepDescription": ("procedure_description", _text),
    "ScheduledProcedureStepID": ("pk", _sps_id),
    "ScheduledProcedureStepStatus": ("status", _dicom_status),
}
# What the audit event of each match reads (ScheduledStep.audit_id, audit_patient): always fetched.
_AUDITED = ("pk", "patient_id")
_STEP_SEQUENCE = 0x00400100  # Scheduled Procedure Step Sequence, SQ


class Answers:
    """The answers to one MWL query, from the database rows: only the columns the asked keys
    and the audit read (one query, joined to the patient and its issuer only when a key needs
    them), each match's identifier laid out once for all (imaging.dicom.layout). Keys we do
    not hold are returned empty (PS3.4 C.2.2.1.1); the Scheduled Procedure Step Sequence,
    if asked, with one item."""

    def __init__(self, query: WorklistQuery) -> None:
        self.query = query
        self.columns: list[str] = list(_AUDITED)
        top = self._fields(query.keywords, _TOP_VALUES)
        if query.step_asked:
            item = tuple(self._fields(query.step_keywords, _STEP_VALUES))
            top.append(Field(_STEP_SEQUENCE, "SQ", item=item))
        self.layout = Layout(top)

    def _fields(self, keywords: list[str], values: dict[str, tuple[str, Callable[[Any], str]]]) -> list[Field]:
        """Each asked key's tag, VR and value, worked out once per query rather than per match."""
        fields = []
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:
                continue
            held = values.get(keyword)
            fields.append(Field(tag, dictionary_VR(tag), None if held is None else self._value(*held)))
        return fields

    def _value(self, column: str, convert: Callable[[Any], str]) -> Callable[[Row], str]:
        if column not in self.columns:
            self.columns.append(column)
        at = self.columns.index(column)
        if convert is _text:
            return lambda row: row[at] or ""
        return lambda row: convert(row[at])

    def rows(self, steps: QuerySet[ScheduledStep]) -> list[Row]:
        """The matching steps' rows, oldest scheduled first (raises InvalidCriterion)."""
        return list(find(steps, self.query).values_list(*self.columns))

    @staticmethod
    def audited(row: Row) -> tuple[str, str]:
        """The audit event's object and patient for a match (ScheduledStep.audit_id, audit_patient)."""
        return str(row[0]), str(row[1])

    def identifier(self, row: Row) -> RowIdentifier:
        return RowIdentifier(self.layout, row)


def answers(query: WorklistQuery) -> Answers:
    return Answers(query)


__all__ = ["DICOM_STATUS", "Answers", "InvalidCriterion", "answers", "find"]
