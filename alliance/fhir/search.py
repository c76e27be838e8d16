"""FHIR search parameters (R4 3.1.1): what `GET /fhir/<type>?...` asks, parsed and checked.

Only the parameters a resource declares are accepted; anything else answers 400 naming the
parameter (a filter the server silently ignored would give a caller more than it asked for).
Repeated parameters are ANDed, comma-separated values ORed (R4 3.1.1.3). A chained search on
the patient (`patient.identifier`, `subject:Patient.identifier`) is read as its plain name
`patient.identifier`, `subject.identifier`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

MAX_COUNT = 1000
MAX_OFFSET = 10**9
# Parameters every search takes (R4 3.1.1.5 and 3.1.1.7); _offset pages through a searchset.
COMMON = ("_count", "_offset", "_format")
JSON_FORMATS = {"json", "application/json", "application/fhir+json"}

_DATE = re.compile(
    r"^(?P<prefix>[a-z]{2})?(?P<value>\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?)$"
)
_PREFIXES = {"eq", "ne", "gt", "lt", "ge", "le"}
_CHAIN = re.compile(r"^(?P<name>[a-z-]+):Patient(?P<rest>(\.identifier)?)$")


class SearchError(Exception):
    """A search the server cannot answer as asked: 400, with an OperationOutcome naming the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class Param:
    """A search parameter a resource declares: its FHIR type (token, date or reference) and what it matches."""

    type: str
    documentation: str


@dataclass(frozen=True)
class Token:
    """One token value: system None matches any system, "" only values without one."""

    system: str | None
    value: str


@dataclass(frozen=True)
class DateRange:
    """One date value with its prefix: the instant or day it names is [start, end)."""

    prefix: str
    start: datetime
    end: datetime


@dataclass
class Search:
    """A parsed search. Each dict maps a parameter to its repetitions (AND), each a list of values (OR)."""

    tokens: dict[str, list[list[Token]]] = field(default_factory=dict)
    dates: dict[str, list[list[DateRange]]] = field(default_factory=dict)
    references: dict[str, list[list[str]]] = field(default_factory=dict)
    count: int = 50
    offset: int = 0


def plain_name(name: str) -> str:
    """`subject:Patient.identifier` -> `subject.identifier`; `patient:Patient` -> `patient`."""
    match = _CHAIN.match(name)
    return f"{match['name']}{match['rest']}" if match else name


def parse(query: Mapping[str, list[str]], params: Mapping[str, Param]) -> Search:
    """The search `query` (name -> its values, as QueryDict.lists() gives) asks of a resource
    that declares `params`; SearchError for anything else or a bad value."""
    search = Search(count=settings.FHIR_PAGE_SIZE)
    for raw_name, values in query.items():
        name = plain_name(raw_name)
        if name in COMMON:
            _common(search, name, values)
            continue
        param = params.get(name)
        if param is None:
            raise SearchError(raw_name, "This server does not support this search parameter on this resource.")
        for value in values:
            parts = _split(value)
            if not parts:
                raise SearchError(raw_name, "The parameter has no value.")
            if param.type == "token":
                search.tokens.setdefault(name, []).append([_token(p) for p in parts])
            elif param.type == "date":
                search.dates.setdefault(name, []).append([_date(raw_name, p) for p in parts])
            else:
                search.references.setdefault(name, []).append([_patient_reference(raw_name, p) for p in parts])
    return search


def _common(search: Search, name: str, values: list[str]) -> None:
    value = values[-1]
    if name == "_format":
        if value not in JSON_FORMATS:
            raise SearchError(name, "This server answers in JSON only (application/fhir+json).")
    elif name == "_count":
        search.count = _integer(name, value, MAX_COUNT)
    else:
        search.offset = _integer(name, value, MAX_OFFSET)


def _integer(name: str, value: str, maximum: int) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) > maximum:
        raise SearchError(name, f"An integer from 0 to {maximum}.")
    return int(value)


def _split(value: str) -> list[str]:
    """Comma-separated values (OR), with R4 3.1.1.3's escapes \\, \\| and \\\\ kept for _token."""
    return [p for p in re.split(r"(?<!\\),", value) if p]


def _unescape(text: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", text)


def _token(text: str) -> Token:
    parts = re.split(r"(?<!\\)\|", text, maxsplit=1)
    if len(parts) == 1:
        return Token(None, _unescape(text))
    return Token(_unescape(parts[0]), _unescape(parts[1]))


def _patient_reference(name: str, text: str) -> str:
    """`Patient/17`, `17` or an absolute URL ending so -> "17"."""
    kind, _slash, local = text.rstrip("/").rpartition("/")
    if kind and not kind.endswith("Patient"):
        raise SearchError(name, "Only references to a Patient are supported.")
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", local):
        raise SearchError(name, "Not a resource id.")
    return local


def _date(name: str, text: str) -> DateRange:
    match = _DATE.match(text)
    if match is None or (match["prefix"] and match["prefix"] not in _PREFIXES):
        raise SearchError(name, "A date as YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, with eq, ne, gt, lt, ge or le.")
    value = match["value"]
    try:
        start, end = _interval(value)
    except ValueError:
        raise SearchError(name, "Not a valid date.") from None
    return DateRange(match["prefix"] or "eq", start, end)


def _interval(value: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date value covers, [start, end), in the server's time zone when it names none."""
    if "T" in value:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if timezone.is_naive(instant):
            instant = timezone.make_aware(instant)
        clock = re.split(r"[Z+-]", value.split("T")[1])[0]
        precision = {1: timedelta(minutes=1), 2: timedelta(seconds=1)}[clock.count(":")]
        return instant, instant + (timedelta(microseconds=1) if "." in clock else precision)
    parts = [int(p) for p in value.split("-")]
    first = date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    if len(parts) == 3:
        after = first + timedelta(days=1)
    elif len(parts) == 2:
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        after = date(first.year + 1, 1, 1)
    zone = timezone.get_current_timezone()
    return datetime.combine(first, time(), zone), datetime.combine(after, time(), zone)


def date_q(field_name: str, ranges: Iterable[DateRange], *, is_date: bool) -> Q:
    """One repetition of a date parameter (its values ORed) as a filter on a DateField
    (is_date: compared by local day) or a DateTimeField. A row whose field is empty matches none."""
    q = Q(pk__in=[])
    for r in ranges:
        start: Any = timezone.localdate(r.start) if is_date else r.start
        end: Any = _day_after(r.end) if is_date else r.end
        within = Q(**{f"{field_name}__gte": start, f"{field_name}__lt": end})
        q |= {
            "eq": within,
            "ne": Q(**{f"{field_name}__isnull": False}) & ~within,
            "ge": Q(**{f"{field_name}__gte": start}),
            "gt": Q(**{f"{field_name}__gte": end}),
            "le": Q(**{f"{field_name}__lt": end}),
            "lt": Q(**{f"{field_name}__lt": start}),
        }[r.prefix]
    return q


def _day_after(end: datetime) -> date:
    """The first local day not covered by an interval ending (exclusively) at `end`."""
    local = timezone.localtime(end)
    return local.date() if local.time() == time() else local.date() + timedelta(days=1)
