"""The consults' section of the figures pages (alliance.figures), registered in ConsultsConfig.ready().

A consult belongs to an institution's figures when that institution requested it or
received it (its pool's or its named specialist's institution). Volume and turnaround
count the consults requested in the date range; the backlog is what is open now.
Turnaround is request to signed less the time on hold, the clock the deadline runs on.
Every number is an SQL aggregate; the section makes the same queries whatever the data.

Fast on a year of a region (bench/figures_bench.py): the whole months of the range are
summed from the roll-up ConsultMonth (turnarounds included, stored sorted so that the
percentiles stay exact) and the claims per specialist from ReaderDay, both kept by the
hourly beat job consults.tasks.roll_up_consult_days (a month is rolled up once every
consult requested in it is closed, so a rolled-up row never changes); the rest of the
range from the consults themselves. The percentiles are computed by selection
(numpy.partition) with percentile_cont's interpolation, on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import numpy
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, IntegerField, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncDate, TruncMonth
from django.utils.translation import gettext_lazy as _

from alliance.aggregates import SecondsBetween
from alliance.figures import Chart, Scope, Series, Table, minutes, month_label
from alliance.models import Doctor, Pool
from consults import clock
from consults.models import UNFINISHED_STATUSES, Consult, ConsultMonth, ConsultRollUp, Priority, ReaderDay, Status
from consults.priorities import BY_URGENCY, policy_table

# Age of an open consult since it was requested: (upper bound, label); the last is open-ended.
AGE_BUCKETS = (
    (timedelta(hours=1), _("Under 1 h")),
    (timedelta(hours=4), _("1–4 h")),
    (timedelta(hours=24), _("4–24 h")),
    (timedelta(days=3), _("1–3 days")),
    (None, _("Over 3 days")),
)
TURNAROUND = SecondsBetween("requested_at", "completed_at") - F("paused_seconds")
TABLES = ("volume-month", "volume-modality", "turnaround", "breaches", "backlog", "readers")


def consults_in(scope: Scope) -> QuerySet[Consult]:
    """The consults the scope's institutions requested or received."""
    ids = scope.institution_ids
    if scope.whole_alliance:
        return Consult.objects.filter(requesting_institution_id__in=ids)
    return Consult.objects.filter(
        Q(requesting_institution_id__in=ids)
        | Q(pool_id__in=Pool.objects.filter(institution_id__in=ids).values("pk"))
        | Q(specialist_id__in=Doctor.objects.filter(institution_id__in=ids).values("pk"))
    )


def requested_in(scope: Scope) -> QuerySet[Consult]:
    return consults_in(scope).filter(requested_at__gte=scope.start, requested_at__lt=scope.end)


def _rollup_zone() -> tzinfo:
    return ZoneInfo(settings.TIME_ZONE)


def _oldest_unfinished_day(tz: tzinfo) -> date | None:
    """The day of the oldest consult that may still change (a preliminary report too: its
    verification signs it): the roll-up stops before its month."""
    oldest = Consult.objects.filter(status__in=UNFINISHED_STATUSES).aggregate(first=Min("requested_at"))["first"]
    return None if oldest is None else oldest.astimezone(tz).date()


_INSTITUTIONS = {
    "pool_institution_id": F("pool__institution_id"),
    "specialist_institution_id": F("specialist__institution_id"),
}
_KEYS = ("requesting_institution_id", "pool_institution_id", "specialist_institution_id")


def _first_of_month(day: date) -> date:
    return day.replace(day=1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _packed(values: list[float]) -> bytes:
    return numpy.sort(numpy.asarray(values, dtype="<f8")).tobytes()


@transaction.atomic
def roll_up_consult_days(*, now: datetime | None = None) -> int:
    """Sum the consults of every month not yet rolled up whose consults are all finished (the
    months ended before today and before the day of the oldest unfinished consult) into
    ConsultMonth, and their claims and signatures per day into ReaderDay; returns the rows
    written. Derived numbers only: no record of a patient or a person changes, so there is
    nothing to audit. Run hourly; a month is rolled up once, after it ends."""
    tz = _rollup_zone()
    today = (now or clock.now()).astimezone(tz).date()
    oldest_unfinished = _oldest_unfinished_day(tz)
    cutoff = _first_of_month(today if oldest_unfinished is None else min(today, oldest_unfinished))
    mark = ConsultRollUp.objects.select_for_update().first()
    if mark is None:
        first = Consult.objects.filter(requested_at__isnull=False).aggregate(first=Min("requested_at"))["first"]
        if first is None:
            return 0
        start = _first_of_month(first.astimezone(tz).date())
    else:
        start = mark.until
    if start >= cutoff:
        return 0
    low, high = datetime.combine(start, time.min, tzinfo=tz), datetime.combine(cutoff, time.min, tzinfo=tz)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    rows = (
        Consult.objects.filter(requested_at__gte=low, requested_at__lt=high)
        .annotate(month=TruncMonth("requested_at", tzinfo=tz), turnaround=TURNAROUND, **_INSTITUTIONS)
        .values_list("month", *_KEYS, "priority", "modality", "status", "breached_at", "turnaround", "deadline_seconds")
    )
    for month, *keys, priority, modality, status, breached_at, turn, deadline in rows.iterator(chunk_size=5000):
        key = (_month_date(month, tz), *keys, priority, modality)
        group = groups.setdefault(key, {"requested": 0, "signed": 0, "in_time": 0, "breached": 0, "turnarounds": []})
        group["requested"] += 1
        group["breached"] += breached_at is not None
        if status == Status.COMPLETED:
            group["signed"] += 1
            group["in_time"] += turn <= deadline
            group["turnarounds"].append(turn)
    months = [
        ConsultMonth(
            month=key[0],
            **dict(zip(_KEYS, key[1:4], strict=True)),
            priority=key[4],
            modality=key[5],
            requested=g["requested"],
            signed=g["signed"],
            in_time=g["in_time"],
            breached=g["breached"],
            turnarounds=_packed(g["turnarounds"]),
        )
        for key, g in groups.items()
    ]
    readers: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for index, (moment, extra) in enumerate((("claimed_at", Q()), ("completed_at", Q(status=Status.COMPLETED)))):
        for row in (
            Consult.objects.filter(extra, owner__isnull=False, **{f"{moment}__gte": low, f"{moment}__lt": high})
            .annotate(day=TruncDate(moment, tzinfo=tz), **_INSTITUTIONS)
            .values("day", "owner_id", *_KEYS)
            .annotate(n=Count("pk"))
        ):
            readers[(row["day"], row["owner_id"], *(row[key] for key in _KEYS))][index] += row["n"]
    reader_days = [
        ReaderDay(day=key[0], owner_id=key[1], **dict(zip(_KEYS, key[2:], strict=True)), claims=n[0], reports=n[1])
        for key, n in readers.items()
    ]
    ConsultMonth.objects.filter(month__gte=start).delete()
    ReaderDay.objects.filter(day__gte=start).delete()
    ConsultMonth.objects.bulk_create(months, batch_size=2000)
    ReaderDay.objects.bulk_create(reader_days, batch_size=5000)
    if mark is None:
        ConsultRollUp.objects.create(until=cutoff)
    else:
        mark.until = cutoff
        mark.save(update_fields=["until"])
    return len(months) + len(reader_days)


def _month_date(value: date | datetime, tz: tzinfo) -> date:
    if isinstance(value, datetime):
        return (value.astimezone(tz) if value.tzinfo else value).date().replace(day=1)
    return value.replace(day=1)


class _Split:
    """Where the roll-ups serve this scope. Claims and signatures: days before `day` from
    ReaderDay, moments from `moment` on from the consults. Volume and turnaround: the whole
    months from `months[0]` to `months[1]` (exclusive) from ConsultMonth, the rest of the
    range from the consults. No roll-up, or one cut in another zone: all live."""

    def __init__(self, scope: Scope) -> None:
        mark = ConsultRollUp.objects.first()
        oldest_unfinished = _oldest_unfinished_day(scope.tz)
        first_day = scope.start.astimezone(scope.tz).date()
        if mark is None or str(scope.tz) != str(_rollup_zone()):
            self.day, self.moment = date.min, None
            self.months = (first_day, first_day)
            return
        # A consult open now on a rolled-up day (none should be) sends that day live again.
        self.day = mark.until if oldest_unfinished is None else min(mark.until, oldest_unfinished)
        self.moment = datetime.combine(self.day, time.min, tzinfo=scope.tz)
        last = min(scope.end.astimezone(scope.tz).date(), self.day)
        begin = first_day if first_day.day == 1 else _next_month(first_day)
        end = begin
        while _next_month(end) <= last:
            end = _next_month(end)
        self.months = (begin, end) if end > begin else (first_day, first_day)

    def live_from(self, start: datetime) -> datetime:
        return start if self.moment is None else max(start, self.moment)

    def live(self, scope: Scope) -> Q:
        """The part of the range the month roll-up does not cover."""
        begin, end = (datetime.combine(m, time.min, tzinfo=scope.tz) for m in self.months)
        return Q(requested_at__gte=scope.start, requested_at__lt=begin) | Q(
            requested_at__gte=max(end, scope.start), requested_at__lt=scope.end
        )

    def _mine(self, scope: Scope) -> Q:
        ids = scope.institution_ids
        mine = Q(requesting_institution_id__in=ids)
        if not scope.whole_alliance:
            mine |= Q(pool_institution_id__in=ids) | Q(specialist_institution_id__in=ids)
        return mine

    def rolled_days(self, rows: QuerySet[Any], scope: Scope) -> QuerySet[Any]:
        """The day roll-up rows of the scope's institutions and its closed days."""
        until = min(scope.end.astimezone(scope.tz).date(), self.day)
        return rows.filter(self._mine(scope), day__gte=scope.start.astimezone(scope.tz).date(), day__lt=until)

    def rolled_months(self, scope: Scope) -> QuerySet[ConsultMonth]:
        return ConsultMonth.objects.filter(self._mine(scope), month__gte=self.months[0], month__lt=self.months[1])


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    """Every table, or the one named by `only` with just the queries it needs."""
    wanted = set(TABLES) if only is None else {only}
    split = _Split(scope)
    volume = _volume(scope, split) if wanted & {"volume-month", "volume-modality", "turnaround", "breaches"} else []
    builders: dict[str, Callable[[], Table]] = {
        "volume-month": lambda: volume_by_month(scope, volume),
        "volume-modality": lambda: volume_by_modality(volume),
        "turnaround": lambda: turnaround(scope, volume, split),
        "breaches": lambda: breaches(volume),
        "backlog": lambda: backlog(scope),
        "readers": lambda: readers(scope, split),
    }
    return [builders[key]() for key in TABLES if key in wanted]


def _volume(scope: Scope, split: _Split) -> list[dict[str, Any]]:
    """Consults requested per month, priority and modality, with how many were signed and
    breached: one query of the roll-up and one of the rest of the range, for four tables."""
    rolled = (
        split.rolled_months(scope)
        .values("month", "priority", "modality")
        .annotate(n=Sum("requested"), signed=Sum("signed"), breached=Sum("breached"))
    )
    live = (
        requested_in(scope)
        .filter(split.live(scope))
        .annotate(month=TruncMonth("requested_at", tzinfo=scope.tz))
        .values("month", "priority", "modality")
        .annotate(
            n=Count("pk"),
            signed=Count("pk", filter=Q(status=Status.COMPLETED)),
            breached=Count("pk", filter=Q(breached_at__isnull=False)),
        )
    )
    return [*rolled, *live]


def percentiles(values: numpy.ndarray, fractions: Sequence[float]) -> list[float] | None:
    """PostgreSQL's percentile_cont of the values (alliance.aggregates.percentile_cont),
    without sorting them all: the two neighbours of each position by selection."""
    if not len(values):
        return None
    positions = [f * (len(values) - 1) for f in fractions]
    wanted = sorted({int(math.floor(p)) for p in positions} | {int(math.ceil(p)) for p in positions})
    chosen = numpy.partition(values, wanted)
    out = []
    for position in positions:
        low, high = math.floor(position), math.ceil(position)
        out.append(float(chosen[low] + (chosen[high] - chosen[low]) * (position - low)))
    return out


def _priority_labels() -> list[Any]:
    return [Priority(p).label for p in BY_URGENCY]


def volume_by_month(scope: Scope, volume: list[dict[str, Any]]) -> Table:
    counts: dict[date | None, Counter[str]] = defaultdict(Counter)
    for row in volume:
        counts[scope.month_of(row["month"])][row["priority"]] += row["n"]
    months = scope.months()
    rows = [[month_label(m), *(counts[m][p] for p in BY_URGENCY), sum(counts[m].values())] for m in months]
    chart = Chart(
        kind="columns",
        categories=[month_label(m) for m in months],
        series=[Series(Priority(p).label, [counts[m][p] for m in months]) for p in BY_URGENCY],
    )
    return Table(
        key="volume-month",
        title=_("Consults requested per month, by priority"),
        columns=[_("Month"), *_priority_labels(), _("Total")],
        rows=rows if volume else [],
        chart=chart if volume else None,
    )


def volume_by_modality(volume: list[dict[str, Any]]) -> Table:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in volume:
        counts[row["modality"]][row["priority"]] += row["n"]
    order = sorted(counts, key=lambda m: (-sum(counts[m].values()), m))
    rows = [[m or "—", *(counts[m][p] for p in BY_URGENCY), sum(counts[m].values())] for m in order]
    chart = Chart(
        kind="bars",
        categories=[m or "—" for m in order],
        series=[Series(_("Consults"), [sum(counts[m].values()) for m in order])],
    )
    return Table(
        key="volume-modality",
        title=_("Consults requested by modality"),
        columns=[_("Modality"), *_priority_labels(), _("Total")],
        rows=rows,
        note=_("The modality of the consult's first study."),
        chart=chart if rows else None,
    )


def _share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _per_priority(volume: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in volume:
        for name in ("n", "signed", "breached"):
            counts[row["priority"]][name] += row[name]
    return counts


def turnaround(scope: Scope, volume: list[dict[str, Any]], split: _Split | None = None) -> Table:
    """p50 and p90 over the signed consults' turnarounds: those of the rolled-up months as
    stored (sorted float64), the rest read live, the percentiles by selection."""
    split = split or _Split(scope)
    counts = _per_priority(volume)
    values: dict[str, list[numpy.ndarray]] = defaultdict(list)
    in_time: Counter[str] = Counter()
    for priority, blob, n in (
        split.rolled_months(scope).filter(signed__gt=0).values_list("priority", "turnarounds", "in_time")
    ):
        values[priority].append(numpy.frombuffer(bytes(blob), dtype="<f8"))
        in_time[priority] += n
    live = (
        requested_in(scope)
        .filter(split.live(scope), status=Status.COMPLETED)
        .annotate(turnaround=TURNAROUND)
        .values_list("priority", "turnaround", "deadline_seconds")
    )
    extra: dict[str, list[float]] = defaultdict(list)
    for priority, turn, deadline in live:
        extra[priority].append(turn)
        in_time[priority] += turn <= deadline
    deadlines = {row["priority"]: row["deadline_minutes"] for row in policy_table(scope.alliance_id)}
    stats = []
    for p in BY_URGENCY:
        parts = [*values[p], numpy.asarray(extra[p], dtype="<f8")]
        found = percentiles(numpy.concatenate(parts), (0.5, 0.9))
        p50, p90 = found if found else (None, None)
        stats.append((p, {"signed": counts[p]["signed"], "in_time": in_time[p], "p50": p50, "p90": p90}))
    return _turnaround_table(stats, deadlines)


def breaches(volume: list[dict[str, Any]]) -> Table:
    counts = _per_priority(volume)
    return _breaches_table([(p, {"requested": counts[p]["n"], "breached": counts[p]["breached"]}) for p in BY_URGENCY])


def _turnaround_table(stats: Sequence[tuple[str, dict[str, Any]]], deadlines: dict[str, int]) -> Table:
    rows = [
        [
            Priority(p).label,
            s["signed"],
            minutes(s["p50"]),
            minutes(s["p90"]),
            deadlines[p],
            _share(s["in_time"], s["signed"]),
        ]
        for p, s in stats
    ]
    chart = Chart(
        kind="bars",
        categories=[str(Priority(p).label) for p, _s in stats],
        series=[
            Series(_("p50"), [minutes(s["p50"]) for _p, s in stats]),
            Series(_("p90"), [minutes(s["p90"]) for _p, s in stats]),
        ],
        unit=_("min"),
        markers=[deadlines[p] for p, _s in stats],
        marker_label=_("Deadline"),
    )
    any_signed = any(s["signed"] for _p, s in stats)
    return Table(
        key="turnaround",
        title=_("Turnaround, request to signed report, against the deadline"),
        columns=[
            _("Priority"),
            _("Signed"),
            _("p50 (min)"),
            _("p90 (min)"),
            _("Deadline (min)"),
            _("Signed in time (%)"),
        ],
        rows=rows if any_signed else [],
        note=_(
            "Time on hold waiting for the requester is not counted, as for the deadline. "
            "The deadline shown is the policy in force now; each consult is judged by its own."
        ),
        chart=chart if any_signed else None,
    )


def _breaches_table(stats: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    rows: list[list[Any]] = [
        [Priority(p).label, s["requested"], s["breached"], _share(s["breached"], s["requested"])] for p, s in stats
    ]
    requested = sum(s["requested"] for _p, s in stats)
    breached = sum(s["breached"] for _p, s in stats)
    rows.append([_("All"), requested, breached, _share(breached, requested)])
    return Table(
        key="breaches",
        title=_("Deadline breaches"),
        columns=[_("Priority"), _("Requested"), _("Breached"), _("Share (%)")],
        rows=rows if requested else [],
        note=_("Consults requested in the range whose deadline passed before they were signed."),
    )


def _age_bucket(scope: Scope) -> Case:
    whens = [
        When(requested_at__gt=scope.now - bound, then=Value(index))
        for index, (bound, _label) in enumerate(AGE_BUCKETS)
        if bound is not None
    ]
    return Case(*whens, default=Value(len(AGE_BUCKETS) - 1), output_field=IntegerField())


def backlog(scope: Scope) -> Table:
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for row in (
        consults_in(scope)
        .filter(status__in=UNFINISHED_STATUSES)
        .annotate(bucket=_age_bucket(scope))
        .values("status", "bucket")
        .annotate(n=Count("pk"))
    ):
        counts[row["status"]][row["bucket"]] += row["n"]
    buckets = range(len(AGE_BUCKETS))
    states = UNFINISHED_STATUSES
    rows = [[Status(s).label, *(counts[s][b] for b in buckets), sum(counts[s].values())] for s in states]
    chart = Chart(
        kind="columns",
        categories=[str(Status(s).label) for s in states],
        series=[Series(label, [counts[s][b] for s in states]) for b, (_bound, label) in enumerate(AGE_BUCKETS)],
    )
    return Table(
        key="backlog",
        title=_("Backlog now: open consults by state and time since the request"),
        columns=[_("State"), *(label for _bound, label in AGE_BUCKETS), _("Total")],
        rows=rows if counts else [],
        note=_("Open now, whatever the date range."),
        chart=chart if counts else None,
    )


def readers(scope: Scope, split: _Split | None = None) -> Table:
    """Claims and signatures in the range, counted on the consults (the owner who kept the
    case: a consult released and claimed again counts for its last owner)."""
    split = split or _Split(scope)
    since = split.live_from(scope.start)
    claimed = Q(claimed_at__gte=since, claimed_at__lt=scope.end)
    signed = Q(status=Status.COMPLETED, completed_at__gte=since, completed_at__lt=scope.end)
    counts: dict[int, tuple[int, int]] = {}
    for row in [
        *split.rolled_days(ReaderDay.objects.all(), scope)
        .values("owner")
        .annotate(claims=Sum("claims"), reports=Sum("reports")),
        *consults_in(scope)
        .filter(claimed | signed, owner__isnull=False)
        .values("owner")
        .annotate(claims=Count("pk", filter=claimed), reports=Count("pk", filter=signed)),
    ]:
        before = counts.get(row["owner"], (0, 0))
        counts[row["owner"]] = (before[0] + row["claims"], before[1] + row["reports"])
    counts = {owner: n for owner, n in counts.items() if n != (0, 0)}
    doctors = Doctor.objects.filter(pk__in=list(counts)).select_related("user", "institution") if counts else []
    ranked = sorted(doctors, key=lambda d: (-counts[d.pk][1], -counts[d.pk][0], d.display_name))
    rows = [[d.display_name, d.institution.name, *counts[d.pk]] for d in ranked]
    return Table(
        key="readers",
        title=_("Claims and signed reports per specialist"),
        columns=[_("Specialist"), _("Institution"), _("Claims"), _("Reports signed")],
        rows=rows,
        note=_("Claims and signatures made in the date range, on consults of the institutions shown."),
        folded=len(rows) > 12,
    )
