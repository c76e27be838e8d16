"""The image store's section of the figures pages (alliance.figures), registered in ImagingConfig.ready().

Studies and bytes received per institution and month, and what each institution stores
at the end of the range. Closed days are summed from the ReceivedDay roll-up (rewritten
hourly by imaging.tasks.roll_up_received_days), the days after it from the studies
themselves through the covering index imaging_figures_received; the two meet at the
day after the last rolled-up one, so that no study counts twice or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alliance.figures import Chart, Scope, Series, Table, month_label
from alliance.models import Institution
from imaging.models import ReceivedDay, Study

GB = 10**9
# A study keeps growing while its instances arrive: the last days are summed again each run.
ROLL_UP_AGAIN_DAYS = 7
Received = dict[int, dict[date | None, tuple[int, int]]]


def _gb(size: int) -> float:
    return round(size / GB, 3)


def _rollup_zone() -> tzinfo:
    return ZoneInfo(settings.TIME_ZONE)


@transaction.atomic
def roll_up_received_days(*, now: datetime | None = None) -> int:
    """Sum each institution's studies per closed day not yet rolled up (and the last
    ROLL_UP_AGAIN_DAYS again); returns the rows written. Derived numbers only: no record of
    a patient or a person changes, so there is nothing to audit."""
    tz = _rollup_zone()
    today = (now or timezone.now()).astimezone(tz).date()
    last = ReceivedDay.objects.aggregate(last=Max("day"))["last"]
    if last is None:
        first = Study.objects.aggregate(first=Min("received_at"))["first"]
        if first is None:
            return 0
        start = first.astimezone(tz).date()
    else:
        start = min(last + timedelta(days=1), today - timedelta(days=ROLL_UP_AGAIN_DAYS))
    if start >= today:
        return 0
    rows = (
        Study.objects.filter(
            received_at__gte=datetime.combine(start, time.min, tzinfo=tz),
            received_at__lt=datetime.combine(today, time.min, tzinfo=tz),
        )
        .annotate(day=TruncDate("received_at", tzinfo=tz))
        .values("institution_id", "day")
        .annotate(n=Count("pk"), size=Sum("size_bytes"))
    )
    days = [
        ReceivedDay(institution_id=r["institution_id"], day=r["day"], studies=r["n"], size_bytes=r["size"] or 0)
        for r in rows
    ]
    ReceivedDay.objects.filter(day__gte=start, day__lt=today).delete()
    ReceivedDay.objects.bulk_create(days, batch_size=5000)
    return len(days)


class _Split:
    """Where the roll-up ends for this scope: days before `day` come from ReceivedDay,
    moments from `moment` on from the studies (no roll-up, or one cut in another zone: all live)."""

    def __init__(self, scope: Scope) -> None:
        last = ReceivedDay.objects.aggregate(last=Max("day"))["last"]
        if last is None or str(scope.tz) != str(_rollup_zone()):
            self.day, self.moment = date.min, None
        else:
            self.day = last + timedelta(days=1)
            self.moment = datetime.combine(self.day, time.min, tzinfo=scope.tz)

    def live_from(self, start: datetime) -> datetime:
        return start if self.moment is None else max(start, self.moment)

    def rolled_until(self, end: datetime, tz: tzinfo) -> date:
        return min(end.astimezone(tz).date(), self.day)


def received_per_month(scope: Scope, split: _Split) -> Received:
    ids = scope.institution_ids
    received: Received = defaultdict(dict)
    sums: dict[tuple[int, date | None], list[int]] = defaultdict(lambda: [0, 0])
    rolled = (
        ReceivedDay.objects.filter(
            institution_id__in=ids,
            day__gte=scope.start.astimezone(scope.tz).date(),
            day__lt=split.rolled_until(scope.end, scope.tz),
        )
        .annotate(month=TruncMonth("day"))
        .values("institution_id", "month")
        .annotate(n=Sum("studies"), size=Sum("size_bytes"))
    )
    live = (
        Study.objects.filter(
            institution_id__in=ids, received_at__gte=split.live_from(scope.start), received_at__lt=scope.end
        )
        .annotate(month=TruncMonth("received_at", tzinfo=scope.tz))
        .values("institution_id", "month")
        .annotate(n=Count("pk"), size=Sum("size_bytes"))
    )
    for row in [*rolled, *live]:
        total = sums[(row["institution_id"], scope.month_of(row["month"]))]
        total[0] += row["n"] or 0
        total[1] += row["size"] or 0
    for (pk, month), (n, size) in sums.items():
        received[pk][month] = (n, size)
    return received


def stored_before(scope: Scope, split: _Split) -> dict[int, int]:
    """Bytes of each institution's studies received before the range."""
    ids = scope.institution_ids
    before: dict[int, int] = defaultdict(int)
    rolled = (
        ReceivedDay.objects.filter(institution_id__in=ids, day__lt=split.rolled_until(scope.start, scope.tz))
        .values("institution_id")
        .annotate(size=Sum("size_bytes"))
    )
    live = Study.objects.filter(institution_id__in=ids, received_at__lt=scope.start)
    if split.moment is not None:
        live = live.filter(received_at__gte=split.moment)
    for row in [*rolled, *live.values("institution_id").annotate(size=Sum("size_bytes"))]:
        before[row["institution_id"]] += row["size"] or 0
    return before


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    """Every table (they share their three queries, so `only` changes nothing)."""
    split = _Split(scope)
    received = received_per_month(scope, split)
    before = stored_before(scope, split)
    ids = scope.institution_ids
    names = dict(Institution.objects.filter(pk__in=ids).values_list("pk", "name"))
    order = sorted((pk for pk in ids if pk in received or before.get(pk)), key=lambda pk: names.get(pk, ""))
    return [
        per_month(scope, received),
        per_institution(order, names, received, before),
        per_institution_month(scope, order, names, received, before),
    ]


def per_month(scope: Scope, received: dict[int, dict[date | None, tuple[int, int]]]) -> Table:
    months = scope.months()
    totals = {m: [0, 0] for m in months}
    for by_month in received.values():
        for month, (n, size) in by_month.items():
            if month in totals:
                totals[month][0] += n
                totals[month][1] += size
    rows = [[month_label(m), totals[m][0], _gb(totals[m][1])] for m in months]
    chart = Chart(
        kind="columns",
        categories=[month_label(m) for m in months],
        series=[Series(_("Studies"), [totals[m][0] for m in months])],
    )
    return Table(
        key="received-month",
        title=_("Studies received per month"),
        columns=[_("Month"), _("Studies"), _("GB received")],
        rows=rows if received else [],
        chart=chart if received else None,
    )


def per_institution(order: list[int], names: dict[int, str], received: dict[int, Any], before: dict[int, int]) -> Table:
    rows: list[list[Any]] = []
    stored: list[float | None] = []
    for pk in order:
        n = sum(count for count, _size in received[pk].values()) if pk in received else 0
        size = sum(size for _count, size in received[pk].values()) if pk in received else 0
        stored.append(_gb((before.get(pk) or 0) + size))
        rows.append([names.get(pk, str(pk)), n, _gb(size), stored[-1]])
    chart = Chart(
        kind="bars",
        categories=[names.get(pk, str(pk)) for pk in order],
        series=[Series(_("GB stored"), stored)],
        unit=_("GB"),
    )
    return Table(
        key="per-institution",
        title=_("Studies received and stored per institution"),
        columns=[_("Institution"), _("Studies received"), _("GB received"), _("GB stored at the end")],
        rows=rows,
        note=_("Stored: every study the institution holds that was received before the end of the range."),
        chart=chart if rows else None,
    )


def per_institution_month(
    scope: Scope, order: list[int], names: dict[int, str], received: dict[int, Any], before: dict[int, int]
) -> Table:
    rows = []
    for pk in order:
        stored = before.get(pk) or 0
        for month in scope.months():
            n, size = received.get(pk, {}).get(month, (0, 0))
            stored += size
            rows.append([names.get(pk, str(pk)), month_label(month), n, _gb(size), _gb(stored)])
    return Table(
        key="institution-month",
        title=_("Per institution and month"),
        columns=[_("Institution"), _("Month"), _("Studies"), _("GB received"), _("GB stored at month end")],
        rows=rows,
        folded=True,
    )
