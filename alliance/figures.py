"""The figures registry: how the alliance's pages show whether it works (C9).

alliance sits below every other app and may not import them, so each app registers its
own section in its AppConfig.ready() (consults/figures.py, imaging/figures.py, ...). A
section is a key, a title and a function from a Scope (the institutions the principal may
see, narrowed by the filter, and a date range) to tables; a table may carry a chart. The
pages (alliance/figures_views.py) render every registered section and export each table
as CSV; who may see which institutions is decided by alliance.access.figures_institutions_for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from django.utils.functional import Promise


@dataclass(frozen=True)
class Scope:
    """What a section computes over: these institutions, from `start` (inclusive) to `end`
    (exclusive, both aware), months cut in `tz`; `now` is the moment "backlog now" means."""

    alliance_id: int
    institution_ids: tuple[int, ...]
    start: datetime
    end: datetime
    now: datetime
    tz: tzinfo
    # Every member of the alliance (no institution chosen by its admin): a section may skip
    # the "requested or received by one of these" test, which every row of the alliance passes.
    whole_alliance: bool = False

    def months(self) -> list[date]:
        """The first day of every month the range touches, in order (empty months included)."""
        first = self.start.astimezone(self.tz).date().replace(day=1)
        last = (self.end.astimezone(self.tz) - _ONE_MICROSECOND).date().replace(day=1)
        out = []
        while first <= last:
            out.append(first)
            first = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return out

    def month_of(self, moment: datetime | date | None) -> date | None:
        """The month a TruncMonth value stands for (aware on PostgreSQL and SQLite alike)."""
        if moment is None:
            return None
        if isinstance(moment, datetime):
            moment = moment.astimezone(self.tz).date() if moment.tzinfo else moment.date()
        return moment.replace(day=1)


@dataclass(frozen=True)
class Series:
    name: str | Promise
    values: Sequence[float | None]


@dataclass(frozen=True)
class Chart:
    """Drawn by alliance.charts as SVG. "columns": vertical bars per category, the series
    stacked (e.g. consults per month by priority). "bars": horizontal bars per category,
    the series side by side, with an optional marker per category (e.g. the deadline)."""

    kind: str
    categories: Sequence[str]
    series: Sequence[Series]
    unit: str | Promise = ""
    markers: Sequence[float | None] = ()
    marker_label: str | Promise = ""


@dataclass(frozen=True)
class Table:
    key: str
    title: str | Promise
    columns: Sequence[str | Promise]
    rows: Sequence[Sequence[Any]]
    note: str | Promise = ""
    chart: Chart | None = None
    # A long table is folded on the page (the CSV has it whole).
    folded: bool = False


# A section's function: the scope, and optionally the key of the one table wanted (a CSV
# export), so that it may skip the queries of the others; it may return more than asked.
Compute = Callable[[Scope, str | None], list[Table]]


@dataclass(frozen=True)
class Section:
    key: str
    title: str | Promise
    compute: Compute
    order: int = 100
    description: str | Promise = ""


_SECTIONS: dict[str, Section] = {}
_ONE_MICROSECOND = datetime.resolution


def register(
    key: str,
    title: str | Promise,
    compute: Compute,
    *,
    order: int = 100,
    description: str | Promise = "",
) -> None:
    """Add an app's section (called from its AppConfig.ready(); registering a key again
    replaces it, so that a reloaded app does not show twice)."""
    _SECTIONS[key] = Section(key=key, title=title, compute=compute, order=order, description=description)


def sections() -> list[Section]:
    return sorted(_SECTIONS.values(), key=lambda section: (section.order, section.key))


def section(key: str) -> Section | None:
    return _SECTIONS.get(key)


def month_label(month: date) -> str:
    return month.strftime("%Y-%m")


def minutes(seconds: float | None) -> float | None:
    """A duration as the tables show it: minutes to one decimal (None stays an empty cell)."""
    return None if seconds is None else round(seconds / 60, 1)
