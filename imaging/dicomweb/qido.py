"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

The request's query parameters become a criteria dict for imaging.query, the one copy
of the matching rules (PS3.4 C.2.2.2) that the DICOM server uses too; the rows it finds
among the caller's visible studies are written straight to DICOM JSON from the columns
(PS3.18 F.2), without building a pydicom Dataset per row.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import time
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import prepared
from alliance.access import Principal, principal_of
from imaging import access, query
from imaging.dicomweb import media
from imaging.dicomweb.views import BadRequest, DicomWebView, audit_studies, base_url
from imaging.query import KEYS, Level

MAX_RESULTS = 1000
CONTROL_PARAMS = {"limit", "offset", "fuzzymatching", "includefield", "accept"}
# Larger offsets or limits are refused (400), not passed to the database (a bigint overflows).
MAX_OFFSET = 10**9
CHARSET = "ISO_IR 192"

# PS3.18 Table 10.6.3-3..5: attributes returned by default at each level (those indexed here).
STUDY_DEFAULTS = [
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]
SERIES_DEFAULTS = [
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
]
INSTANCE_DEFAULTS = ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"]

# Where the owning study's identity lives in a row of each level (for access and audit).
_STUDY_OF = {Level.STUDY: "", Level.SERIES: "study__", Level.IMAGE: "series__study__"}
_IDENTITY = ("pk", "study_uid", "institution_id", "patient_id")


@dataclass
class Search:
    """A validated QIDO-RS request."""

    level: Level
    criteria: dict[str, str]
    fields: list[str]
    limit: int
    offset: int
    warnings: list[str] = field(default_factory=list)
    # Matched only by identifiers, on the first page of the default size, with the default
    # fields: the most asked search (a clinic's look-up of one patient, a viewer's of one study),
    # whose query is the same text whatever the values, and whose plan does not depend on them.
    routine: bool = False


@dataclass(frozen=True)
class StudyIdentity:
    """The owning study of a result row, enough for the audit trail."""

    pk: int
    study_uid: str
    institution_id: int
    patient_id: int


# --- the request ------------------------------------------------------------------------


def keyword_of(attribute_id: str) -> str:
    """A QIDO attributeID (keyword or 8-hex-digit tag) as a keyword; BadRequest when unknown."""
    if "." in attribute_id:
        raise BadRequest(f"Matching on sequence items ({attribute_id}) is not supported.")
    if len(attribute_id) == 8 and all(c in "0123456789abcdefABCDEF" for c in attribute_id):
        keyword = keyword_for_tag(int(attribute_id, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(attribute_id) is not None:
        return attribute_id
    raise BadRequest(f"Unknown query key {attribute_id!r}: not a DICOM keyword or tag.")


def parse_search(params: QueryDict, level: Level, path: dict[str, str], defaults: list[str]) -> Search:
    criteria: dict[str, str] = {}
    for name in params:
        if name in CONTROL_PARAMS:
            continue
        keyword = keyword_of(name)
        values = params.getlist(name)
        criteria[keyword] = _criterion(keyword, values)
    unsupported = [k for k in query.unsupported_keys(level, criteria) if k not in path]
    if unsupported:
        raise BadRequest(f"Matching on {', '.join(unsupported)} is not supported at the {level.value} level.")
    if _flag(params, "fuzzymatching"):
        criteria = _fuzzy(criteria)
    criteria.update(path)
    search = Search(level, criteria, [], *_paging(params))
    search.fields = _fields(params, level, defaults, criteria, search.warnings)
    search.routine = (
        query.by_identifiers(criteria)
        and search.offset == 0
        and search.limit == MAX_RESULTS
        and not params.getlist("includefield")
    )
    return search


def _criterion(keyword: str, values: list[str]) -> str:
    """One value per key; a UI key may list UIDs separated by commas (PS3.18 8.3.4.1)."""
    if len(values) > 1 and KEYS.get(keyword, None) is not None and KEYS[keyword].vr != "UI":
        raise BadRequest(f"{keyword} is given more than once.")
    joined = ",".join(values)
    return joined.replace(",", "\\") if dictionary_VR(keyword) == "UI" else joined


def _flag(params: QueryDict, name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {value!r}.")
    return value == "true"


def _fuzzy(criteria: dict[str, str]) -> dict[str, str]:
    """Fuzzy person-name matching: each given name part may appear anywhere, in any case."""
    fuzzy = dict(criteria)
    for keyword, value in criteria.items():
        if dictionary_VR(keyword) == "PN" and value.strip() not in ("", "*"):
            fuzzy[keyword] = "*" + value.strip().strip("*") + "*"
    return fuzzy


def _paging(params: QueryDict) -> tuple[int, int, list[str]]:
    warnings: list[str] = []
    limit = _non_negative(params, "limit", MAX_RESULTS)
    if limit == 0 or limit > MAX_RESULTS:
        limit = MAX_RESULTS
        if "limit" in params:
            warnings.append(f"The limit exceeds the maximum of {MAX_RESULTS} results this server returns at once.")
    return limit, _non_negative(params, "offset", 0), warnings


def _non_negative(params: QueryDict, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_OFFSET:
        raise BadRequest(f"{name} must be an integer from 0 to {MAX_OFFSET}, not {raw[:40]!r}.")
    return int(raw)


def _fields(
    params: QueryDict, level: Level, defaults: list[str], criteria: dict[str, str], warnings: list[str]
) -> list[str]:
    wanted = list(defaults) + [k for k in criteria if k not in defaults]
    for raw in params.getlist("includefield"):
        for item in filter(None, (p.strip() for p in raw.split(","))):
            if item == "all":
                wanted += [k for k, key in KEYS.items() if key.supported_at(level)]
                continue
            keyword = keyword_of(item)
            if keyword in KEYS and KEYS[keyword].supported_at(level):
                wanted.append(keyword)
            else:
                warnings.append(f"{keyword} is not held by this server's index and is not returned.")
    return [k for k in dict.fromkeys(wanted) if k in KEYS and KEYS[k].supported_at(level)]


# --- the answer -----------------------------------------------------------------------


def run(search: Search, principal: Principal, base_url: str) -> tuple[list[dict[str, Any]], list[StudyIdentity], bool]:
    """(DICOM JSON datasets, the owning studies, whether more results exist)."""
    statement = _routine_statement(search, principal) if search.routine else None
    if statement is not None:
        with connection.cursor() as cursor:
            prepared.execute(cursor, [statement])
            found = cursor.fetchall()
    else:
        window = _window(search, access.studies_visible_to(principal))
        with prepared.preparing() if search.routine else nullcontext():  # planned once per session
            found = list(window)
    more = len(found) > search.limit
    found = found[: search.limit]
    writer = _RowWriter(search.level, search.fields, base_url)
    studies = {row[1]: StudyIdentity(*row[:4]) for row in found}
    return [writer.dataset(row) for row in found], list(studies.values()), more


def _window(search: Search, visible: QuerySet[Any]) -> QuerySet[Any]:
    """The search's page of value rows: the owning study's identity, then the fields."""
    try:
        rows = query.find(search.level, search.criteria, visible)
    except query.InvalidCriterion as exc:
        raise BadRequest(f"Invalid value for {exc.keyword}: {exc.reason}.") from None
    prefix = _STUDY_OF[search.level]
    identity = [prefix + name for name in _IDENTITY]
    lookups = [KEYS[k].lookup(search.level) for k in search.fields]
    return rows.values_list(*identity, *lookups)[search.offset : search.offset + search.limit + 1]


# --- routine searches, compiled once ----------------------------------------------------
# Building and compiling the ORM's query was half of a routine search's time in the web
# process (about 0.6 of 1.1 ms), the same work for each of a clinic's look-ups. For a routine
# search (Search.routine), the query is compiled once per principal's visibility
# (imaging.access.visibility_key: who they are, what reaches them) and shape of search, with
# stand-ins for the criteria's values and for the present moment; each search fills in its
# own values and the present where the stand-ins are. What the caller may see is still decided
# by that query when it runs (the grants, revocations and expiries in force then).


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]
    now_at: tuple[int, ...]  # where the present goes
    slots: tuple[tuple[int, str], ...]  # (where, criterion keyword): the criterion's value goes


_COMPILED: dict[tuple[Any, ...], _Compiled | None] = {}
_COMPILED_MAX = 4096  # shapes kept per process; more and the cache starts again


def _stand_in(number: int) -> str:
    return f"\x01qido-{number}\x01"  # no DICOM value holds a control character (and strip() keeps this one)


def _routine_statement(search: Search, principal: Principal) -> tuple[str, list[Any]] | None:
    """The routine search's (sql, parameters), from its compiled shape; None where this
    principal's or search's query is not kept (the ORM's query is then run as it is)."""
    seen = access.visibility_key(principal)
    if seen is None or connection.vendor != "postgresql" or any("\x00" in v for v in search.criteria.values()):
        return None  # (a NUL byte: find refuses it, with its own message)
    shape = tuple((k, query.is_universal(v)) for k, v in search.criteria.items())
    key = (seen, search.level, shape, tuple(search.fields), search.offset, search.limit)
    if key in _COMPILED:
        compiled = _COMPILED[key]
    else:
        compiled = _compile(search, principal)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    if compiled is None:
        return None
    values = list(compiled.params)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    for at in compiled.now_at:
        values[at] = now
    for at, keyword in compiled.slots:
        values[at] = search.criteria[keyword].strip()  # as query.find matches an identifier
    return compiled.sql, values


def _compile(search: Search, principal: Principal) -> _Compiled | None:
    """The search's query compiled with stand-ins, or None when its parameters cannot all be
    placed (then it is not kept: each such search runs the ORM's query)."""
    stand_ins = {k: v if query.is_universal(v) else _stand_in(n) for n, (k, v) in enumerate(search.criteria.items())}
    window = _window(replace(search, criteria=stand_ins), access.studies_visible_to(principal, now=access.NOW_STAND_IN))
    compiler = window.query.get_compiler(using=window.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return None
    columns = compiler.select[: compiler.col_count]
    if [alias for _, _, alias in columns] != list(window._fields):  # type: ignore[attr-defined]
        return None  # rows the ORM would not hand on as the database sends them
    if compiler.get_converters([column for column, _, _ in columns]):
        return None  # values the ORM converts after fetching
    now = connection.ops.adapt_datetimefield_value(access.NOW_STAND_IN)
    slots: list[tuple[int, str]] = []
    for keyword, value in stand_ins.items():
        at = [i for i, p in enumerate(params) if p == value]
        if value != search.criteria[keyword] and len(at) != (1 if query.matched_at(keyword, search.level) else 0):
            return None  # a value the ORM wrote otherwise than as it was given
        slots += [(i, keyword) for i in at]
    return _Compiled(sql, tuple(params), tuple(i for i, p in enumerate(params) if p == now), tuple(slots))


class _RowWriter:
    """Writes value tuples as DICOM JSON objects (PS3.18 F.2.2), one per row.

    The layout (tag order, constant elements, one converter per column) is worked out
    once per request; a row then costs one small function call per attribute.
    """

    def __init__(self, level: Level, fields: list[str], base_url: str) -> None:
        self.base_url = base_url
        offset = len(_IDENTITY)
        self.uid_at = {k: offset + i for i, k in enumerate(fields)}
        layout: list[tuple[str, Any, int]] = [
            (f"{tag_for_keyword(k):08X}", _CONVERTERS.get(KEYS[k].vr, _plain_element)(KEYS[k].vr), offset + i)
            for i, k in enumerate(fields)
        ]
        layout += [("00080005", _constant(_CHARSET), 0), ("00080056", _constant(_ONLINE), 0)]
        layout.append(("00081190", self.retrieve_url, -1))
        self.layout = sorted(layout, key=lambda item: item[0])

    def dataset(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {tag: convert(row[index] if index >= 0 else row) for tag, convert, index in self.layout}

    def retrieve_url(self, row: tuple[Any, ...]) -> dict[str, Any]:
        url = f"{self.base_url}/studies/{row[1]}"
        for keyword, segment in (("SeriesInstanceUID", "series"), ("SOPInstanceUID", "instances")):
            if keyword in self.uid_at:
                url += f"/{segment}/{row[self.uid_at[keyword]]}"
        return {"vr": "UR", "Value": [url]}


_CHARSET = {"vr": "CS", "Value": [CHARSET]}
_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


def _constant(element: dict[str, Any]) -> Any:
    return lambda _value: element


def _plain_element(vr: str) -> Any:
    empty = {"vr": vr}

    def convert(value: Any) -> dict[str, Any]:
        if value is None or value == "":
            return empty
        if isinstance(value, str) and "\\" in value:
            return {"vr": vr, "Value": [v for v in value.split("\\") if v]}
        return {"vr": vr, "Value": [value]}

    return convert


def _person_name(vr: str) -> Any:
    empty = {"vr": vr}
    groups = ("Alphabetic", "Ideographic", "Phonetic")

    def convert(value: Any) -> dict[str, Any]:
        if not value:
            return empty
        if "=" not in value:
            return {"vr": vr, "Value": [{"Alphabetic": value}]}
        return {"vr": vr, "Value": [{g: v for g, v in zip(groups, value.split("="), strict=False) if v}]}

    return convert


def _date(vr: str) -> Any:
    empty = {"vr": vr}
    return lambda value: {"vr": vr, "Value": [value.strftime("%Y%m%d")]} if value else empty


def _time(vr: str) -> Any:
    empty = {"vr": vr}

    def convert(value: time | None) -> dict[str, Any]:
        if value is None:
            return empty
        return {"vr": vr, "Value": [value.strftime("%H%M%S.%f" if value.microsecond else "%H%M%S")]}

    return convert


_CONVERTERS = {"PN": _person_name, "DA": _date, "TM": _time}


# --- views ----------------------------------------------------------------------------


class _SearchView(DicomWebView):
    level: Level
    defaults: list[str]

    def get(self, request: Request, study: str = "", series: str = "") -> Response:
        self.choose(request, [media.DICOM_JSON, media.JSON])
        path = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
        search = parse_search(request.query_params, self.level, {k: v for k, v in path.items() if v}, self.defaults)
        datasets, studies, more = run(search, principal_of(request), base_url(request))
        if more and search.limit == MAX_RESULTS:
            search.warnings.append("There are more results: request them with offset.")
        if studies:
            audit_studies(
                request, f"dicomweb.search.{self.level.value.lower()}", studies, {"query": request.GET.urlencode()}
            )
        response = Response(datasets or None, status=200 if datasets else 204)
        for warning in search.warnings:
            response.headers["Warning"] = f'299 {request.get_host()} "{warning}"'
        return response


class SearchStudies(_SearchView):
    level = Level.STUDY
    defaults = STUDY_DEFAULTS


class SearchSeries(_SearchView):
    level = Level.SERIES
    defaults = SERIES_DEFAULTS

    def get(self, request: Request, study: str = "", series: str = "") -> Response:
        if not study:
            self.defaults = STUDY_DEFAULTS + SERIES_DEFAULTS
        return super().get(request, study=study)


class SearchInstances(_SearchView):
    level = Level.IMAGE
    defaults = INSTANCE_DEFAULTS

    def get(self, request: Request, study: str = "", series: str = "") -> Response:
        if not series:
            self.defaults = (STUDY_DEFAULTS if not study else []) + SERIES_DEFAULTS + INSTANCE_DEFAULTS
        return super().get(request, study=study, series=series)
