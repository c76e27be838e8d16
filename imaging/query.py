"""Attribute matching for C-FIND and QIDO-RS over the image index (PS3.4 C.2.2.2, PS3.18 8.3.4).

Both the DICOM server and QIDO-RS call `find(level, criteria, studies)` with the studies
the caller may see (from imaging.access) and build each response with `identifier`.
Matching kinds (PS3.4 C.2.2.2): single value, universal (empty or "*"), wild card ("*"
and "?"), range ("a-b", "a-", "-b" for DA and TM) and list of UIDs (backslash). Person
names match case-insensitively (C.2.2.2.1 allows it, and clinics type names in any case).

Keys this index does not hold are ignored for matching and returned empty, as PS3.4
C.2.2.1.1 asks of a C-FIND SCP; `unsupported_keys` lets QIDO-RS refuse them instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from django.db.models import Count, Exists, IntegerField, Model, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from imaging.models import Instance, Patient, Series, Study

RESPONSE_CHARSET = "ISO_IR 192"  # UTF-8: names may be Chinese (PS3.5 6.1.2.5.3)


class Level(StrEnum):
    """Query/Retrieve Level (0008,0052)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class InvalidCriterion(ValueError):
    """A matching key whose value cannot be used (a malformed date, range or number)."""

    def __init__(self, keyword: str, value: str, reason: str) -> None:
        super().__init__(f"{keyword}={value!r}: {reason}")
        self.keyword = keyword
        self.value = value
        self.reason = reason


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}
_ENTITY_DEPTH = {"patient": 0, "study": 1, "series": 2, "instance": 3}

# How to reach each entity from the row model of each level (ORM lookups and attributes).
_PREFIX: dict[Level, dict[str, str]] = {
    Level.PATIENT: {"patient": ""},
    Level.STUDY: {"patient": "patient__", "study": ""},
    Level.SERIES: {"patient": "study__patient__", "study": "study__", "series": ""},
    Level.IMAGE: {
        "patient": "series__study__patient__",
        "study": "series__study__",
        "series": "series__",
        "instance": "",
    },
}


@dataclass(frozen=True)
class Key:
    """One attribute the index holds: where it lives, its VR, whether it can be matched."""

    keyword: str
    entity: str
    field: str
    vr: str
    matchable: bool = True
    levels: frozenset[Level] | None = None  # None: this entity's level and below

    def supported_at(self, level: Level) -> bool:
        if self.levels is not None:
            return level in self.levels
        return _ENTITY_DEPTH[self.entity] <= _DEPTH[level]

    def lookup(self, level: Level) -> str:
        return _PREFIX[level][self.entity] + self.field


_PATIENT_ONLY = frozenset({Level.PATIENT})
KEYS: dict[str, Key] = {
    k.keyword: k
    for k in [
        # PS3.4 C.6.1.1.2 Patient level
        Key("PatientName", "patient", "name", "PN"),
        Key("PatientID", "patient", "patient_id", "LO"),
        Key("IssuerOfPatientID", "patient", "issuer__ae_title", "LO"),
        Key("PatientBirthDate", "patient", "birth_date", "DA"),
        Key("PatientSex", "patient", "sex", "CS"),
        Key("NumberOfPatientRelatedStudies", "patient", "n_studies", "IS", False, _PATIENT_ONLY),
        Key("NumberOfPatientRelatedSeries", "patient", "n_series", "IS", False, _PATIENT_ONLY),
        Key("NumberOfPatientRelatedInstances", "patient", "n_instances", "IS", False, _PATIENT_ONLY),
        # PS3.4 C.6.1.1.3 Study level
        Key("StudyInstanceUID", "study", "study_uid", "UI"),
        Key("StudyDate", "study", "study_date", "DA"),
        Key("StudyTime", "study", "study_time", "TM"),
        Key("AccessionNumber", "study", "accession_number", "SH"),
        Key("StudyID", "study", "study_id", "SH"),
        Key("StudyDescription", "study", "description", "LO"),
        Key("ReferringPhysicianName", "study", "referring_physician", "PN"),
        Key("ModalitiesInStudy", "study", "modalities", "CS"),
        Key("NumberOfStudyRelatedSeries", "study", "num_series", "IS", False),
        Key("NumberOfStudyRelatedInstances", "study", "num_instances", "IS", False),
        # PS3.4 C.6.1.1.4 Series level
        Key("SeriesInstanceUID", "series", "series_uid", "UI"),
        Key("Modality", "series", "modality", "CS"),
        Key("SeriesNumber", "series", "series_number", "IS"),
        Key("SeriesDescription", "series", "description", "LO"),
        Key("BodyPartExamined", "series", "body_part", "CS"),
        Key("NumberOfSeriesRelatedInstances", "series", "num_instances", "IS", False),
        # PS3.4 C.6.1.1.5 Composite object instance level
        Key("SOPInstanceUID", "instance", "sop_uid", "UI"),
        Key("SOPClassUID", "instance", "sop_class_uid", "UI"),
        Key("InstanceNumber", "instance", "instance_number", "IS"),
        Key("Rows", "instance", "rows", "US"),
        Key("Columns", "instance", "columns", "US"),
        Key("NumberOfFrames", "instance", "number_of_frames", "IS"),
        Key("AvailableTransferSyntaxUID", "instance", "transfer_syntax_uid", "UI"),
    ]
}

# Keys whose single value selects a few rows through a unique or selective index: a query that
# matches only these is planned alike whatever the values (QIDO-RS prepares it, alliance.prepared).
IDENTIFIERS = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber"})

# Keys that carry the request itself, never matched nor reported as unsupported.
CONTROL_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"})


def unsupported_keys(level: Level, keywords: Iterable[str]) -> list[str]:
    """Keys this index cannot match or return at `level` (QIDO-RS may refuse them)."""
    return [
        kw for kw in keywords if kw not in CONTROL_KEYS and not (kw in KEYS and KEYS[kw].supported_at(Level(level)))
    ]


def by_identifiers(criteria: dict[str, str]) -> bool:
    """Whether some key is matched and every key matched is one of IDENTIFIERS with a single
    value (no wild card or list; none of them is a date or time, so none has a range)."""
    matched = {k: v.strip() for k, v in criteria.items() if k in KEYS and KEYS[k].matchable and not is_universal(v)}
    return bool(matched) and all(
        k in IDENTIFIERS and not _has_wildcard(v) and "\\" not in v for k, v in matched.items()
    )


def find(level: Level | str, criteria: dict[str, str], studies: QuerySet[Study]) -> QuerySet[Any]:
    """Rows at `level` (Patient, Study, Series or Instance) matching every criterion, among `studies`."""
    level = Level(level)
    condition = Q()
    for keyword, value in criteria.items():
        if not matched_at(keyword, level):
            continue
        key = KEYS[keyword]
        if "\x00" in value:  # no DICOM value holds one, and the database refuses it in a string
            raise InvalidCriterion(key.keyword, value, "a NUL byte is not allowed")
        condition &= _match(key, key.lookup(level), value)
    return _rows(level, studies).filter(condition)


def matched_at(keyword: str, level: Level) -> bool:
    """Whether `find` matches on `keyword` at `level` (other keys are only returned, or ignored)."""
    key = KEYS.get(keyword)
    return key is not None and key.matchable and key.supported_at(level)


def matching(keyword: str, vr: str, lookup: str, value: str) -> Q:
    """The condition of one matching key of another information model (the modality worklist,
    imaging.worklist_query) on an ORM lookup, by the same rules (PS3.4 C.2.2.2)."""
    if "\x00" in value:
        raise InvalidCriterion(keyword, value, "a NUL byte is not allowed")
    return _match(Key(keyword, "", lookup, vr), lookup, value)


def date_range(keyword: str, value: str) -> tuple[date | None, date | None]:
    """A DA matching value as (first day, last day), None where open; both None when universal."""
    key = Key(keyword, "", "", "DA")
    return _bounds(key, value, _parse_date)  # type: ignore[return-value]


def time_range(keyword: str, value: str) -> tuple[time | None, time | None]:
    """A TM matching value as (start, end), a single time covering the period it names."""
    key = Key(keyword, "", "", "TM")
    return _bounds(key, value, _parse_time)  # type: ignore[return-value]


def _bounds(key: Key, raw: str, parse: Callable[[Key, str, bool], Any]) -> tuple[Any, Any]:
    value = raw.strip()
    if is_universal(value):
        return None, None
    if "\x00" in value:
        raise InvalidCriterion(key.keyword, value, "a NUL byte is not allowed")
    bounds = _range(key, value)
    if bounds is None:
        return parse(key, value, False), parse(key, value, True)
    start, end = bounds
    return (parse(key, start, False) if start else None), (parse(key, end, True) if end else None)


def _rows(level: Level, studies: QuerySet[Study]) -> QuerySet[Any]:
    visible = studies.order_by()
    if level is Level.PATIENT:
        return _patient_rows(visible)
    if level is Level.STUDY:
        return visible.select_related("patient__issuer").order_by("pk")
    if level is Level.SERIES:
        return (
            Series.objects.filter(study__in=visible.values("pk"))
            .select_related("study__patient__issuer")
            .order_by("study_id", "series_number", "pk")
        )
    return (
        Instance.objects.filter(series__study__in=visible.values("pk"))
        .select_related("series__study__patient__issuer")
        .order_by("series_id", "instance_number", "pk")
    )


def _patient_rows(visible: QuerySet[Study]) -> QuerySet[Patient]:
    """Patients with a visible study; the counts cover only what the caller may see."""
    of_patient = visible.filter(patient=OuterRef("pk")).values("patient")

    def total(aggregate: Any) -> Coalesce:
        return Coalesce(Subquery(of_patient.annotate(v=aggregate).values("v")), 0, output_field=IntegerField())

    return (
        Patient.objects.filter(Exists(of_patient))
        .select_related("issuer")
        .annotate(
            n_studies=total(Count("pk")),
            n_series=total(Sum("num_series")),
            n_instances=total(Sum("num_instances")),
        )
        .order_by("pk")
    )


# --- matching (PS3.4 C.2.2.2) ---------------------------------------------------------------


def is_universal(value: str) -> bool:
    """An empty or "*" value matches everything (PS3.4 C.2.2.2.3): a key only asked back."""
    return value.strip() in {"", "*"}


def _match(key: Key, lookup: str, raw: str) -> Q:
    value = raw.strip()
    if is_universal(value):
        return Q()
    if key.keyword == "ModalitiesInStudy":
        return _match_multi_valued(lookup, value)
    matcher = _MATCHERS.get(key.vr, _match_string)
    return matcher(key, lookup, value)


def _match_uid(key: Key, lookup: str, value: str) -> Q:
    uids = [u.strip() for u in value.split("\\") if u.strip()]
    if len(uids) == 1:
        return Q(**{lookup: uids[0]})
    return Q(**{f"{lookup}__in": uids})


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _wildcard_regex(value: str) -> str:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value)
    return "^" + "".join(parts) + "$"


def _match_text(lookup: str, value: str, *, case_insensitive: bool) -> Q:
    i = "i" if case_insensitive else ""
    if not _has_wildcard(value):
        return Q(**{f"{lookup}__{i}exact": value})
    head = value[:-1]
    if value.endswith("*") and not _has_wildcard(head):
        return Q(**{f"{lookup}__{i}startswith": head})
    return Q(**{f"{lookup}__{i}regex": _wildcard_regex(value)})


def _match_string(key: Key, lookup: str, value: str) -> Q:
    return _match_text(lookup, value, case_insensitive=False)


def _match_person_name(key: Key, lookup: str, value: str) -> Q:
    return _match_text(lookup, value, case_insensitive=True)


def _match_multi_valued(lookup: str, value: str) -> Q:
    """ModalitiesInStudy: a study matches when any of its values matches any requested one."""
    condition = Q()
    for wanted in (v.strip() for v in value.split("\\") if v.strip()):
        pattern = _wildcard_regex(wanted)[1:-1] if _has_wildcard(wanted) else re.escape(wanted)
        condition |= Q(**{f"{lookup}__regex": rf"(^|\\){pattern}(\\|$)"})
    return condition


def _match_int(key: Key, lookup: str, value: str) -> Q:
    try:
        return Q(**{lookup: int(value)})
    except ValueError:
        raise InvalidCriterion(key.keyword, value, "not an integer") from None


def _range(key: Key, value: str) -> tuple[str, str] | None:
    if "-" not in value:
        return None
    start, _, end = value.partition("-")
    if "-" in end or not (start or end):
        raise InvalidCriterion(key.keyword, value, "a range is start-end, start- or -end")
    return start.strip(), end.strip()


def _match_range(key: Key, lookup: str, value: str, parse: Callable[[Key, str, bool], Any]) -> Q:
    bounds = _range(key, value)
    if bounds is None:
        if key.vr == "TM":  # a single time matches the whole period it names
            return Q(**{f"{lookup}__gte": parse(key, value, False), f"{lookup}__lte": parse(key, value, True)})
        return Q(**{lookup: parse(key, value, False)})
    start, end = bounds
    condition = Q()
    if start:
        condition &= Q(**{f"{lookup}__gte": parse(key, start, False)})
    if end:
        condition &= Q(**{f"{lookup}__lte": parse(key, end, True)})
    return condition


def _parse_date(key: Key, value: str, _end: bool) -> date:
    text = value.replace(".", "")  # ACR-NEMA "YYYY.MM.DD" (PS3.5 6.2, retired form)
    try:
        if len(text) != 8:
            raise ValueError
        return datetime.strptime(text, "%Y%m%d").date()  # noqa: DTZ007 - a DICOM DA has no zone
    except ValueError:
        raise InvalidCriterion(key.keyword, value, "a date is YYYYMMDD") from None


def _parse_time(key: Key, value: str, end: bool) -> time:
    """A TM value may stop after hours or minutes; as an end bound it covers the period it names."""
    text = value.replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        raise InvalidCriterion(key.keyword, value, "a time is HH, HHMM, HHMMSS or HHMMSS.FFFFFF")
    fill = "5959" if end else "0000"
    full = (whole + fill[len(whole) - 2 :])[:6]
    micro = int((fraction + "000000")[:6]) if fraction else (999999 if end and len(whole) <= 6 else 0)
    try:
        return time(int(full[:2]), int(full[2:4]), int(full[4:6]), micro)
    except ValueError:
        raise InvalidCriterion(key.keyword, value, "not a valid time of day") from None


_MATCHERS: dict[str, Callable[[Key, str, str], Q]] = {
    "UI": _match_uid,
    "PN": _match_person_name,
    "IS": _match_int,
    "US": _match_int,
    "DA": lambda key, lookup, value: _match_range(key, lookup, value, _parse_date),
    "TM": lambda key, lookup, value: _match_range(key, lookup, value, _parse_time),
}


# --- responses ------------------------------------------------------------------------------


def _entity_of(row: Model, level: Level, entity: str) -> Any:
    obj: Any = row
    for step in filter(None, _PREFIX[level][entity].split("__")):
        obj = getattr(obj, step)
    return obj


def _value_of(row: Model, level: Level, key: Key) -> Any:
    obj = _entity_of(row, level, key.entity)
    for step in key.field.split("__"):
        obj = getattr(obj, step, None)
        if obj is None:
            return None
    return obj


def _dicom_value(key: Key, value: Any) -> Any:
    if value is None or value == "":
        return None
    if key.vr == "DA":
        return value.strftime("%Y%m%d")
    if key.vr == "TM":
        return value.strftime("%H%M%S.%f") if value.microsecond else value.strftime("%H%M%S")
    if key.keyword == "ModalitiesInStudy":
        return [m for m in value.split("\\") if m]
    return value


def identifier(row: Model, level: Level | str, keywords: Iterable[str]) -> Dataset:
    """The response identifier for one matching row: every requested key, empty when unknown."""
    level = Level(level)
    ds = Dataset()
    ds.SpecificCharacterSet = RESPONSE_CHARSET
    for keyword in keywords:
        if keyword in CONTROL_KEYS:
            continue
        key = KEYS.get(keyword)
        if key is not None and key.supported_at(level):
            value = _dicom_value(key, _value_of(row, level, key))
            tag = tag_for_keyword(keyword)
            if tag is None:  # KEYS holds only dictionary keywords
                raise ValueError(f"query key {keyword} is not a DICOM keyword")
            ds.add_new(tag, key.vr, value)
        elif (tag := tag_for_keyword(keyword)) is not None:
            ds.add_new(tag, dictionary_VR(tag), None)
    ds.QueryRetrieveLevel = level.value
    return ds
