"""Break-glass in the figures pages (alliance.figures; issue 16, items 5 and B of the rest):
emergency accesses opened per institution and month, how many were approved, flagged or
still wait for review, and how long the review took.

An access counts for the institution whose study was opened (the owner, whose admin
reviews it), in the month it was opened. Review time is opened to reviewed, p50 and p90
over the reviewed ones (continuous percentiles, PostgreSQL's percentile_cont or the SQLite
fallback of alliance.aggregates). One query whatever the data.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from alliance.aggregates import PercentilesCont, SecondsBetween
from alliance.figures import Chart, Scope, Series, Table, month_label
from imaging.models import BreakGlassReview

State = BreakGlassReview.State
COUNTS = ("opened", "approved", "flagged", "pending")


def opened_in(scope: Scope) -> QuerySet[BreakGlassReview]:
    return BreakGlassReview.objects.filter(
        owner_institution_id__in=scope.institution_ids, opened_at__gte=scope.start, opened_at__lt=scope.end
    )


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 1)


def per_institution_month(scope: Scope) -> dict[tuple[int, date | None], dict[str, Any]]:
    """{(owner institution, month): counts and review-time percentiles in seconds}."""
    rows = (
        opened_in(scope)
        .annotate(month=TruncMonth("opened_at", tzinfo=scope.tz), review=SecondsBetween("opened_at", "reviewed_at"))
        .values("owner_institution_id", "owner_institution__name", "month")
        .annotate(
            opened=Count("pk"),
            approved=Count("pk", filter=Q(state=State.APPROVED)),
            flagged=Count("pk", filter=Q(state=State.FLAGGED)),
            pending=Count("pk", filter=Q(state=State.PENDING)),
            # reviewed_at is NULL while pending: percentile_cont skips NULLs.
            p=PercentilesCont("review", (0.5, 0.9)),
        )
    )
    out: dict[tuple[int, date | None], dict[str, Any]] = {}
    for row in rows:
        key = (row["owner_institution_id"], scope.month_of(row["month"]))
        out[key] = row
    return out


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    """Both tables (they share one query, so `only` changes nothing)."""
    data = per_institution_month(scope)
    return [by_month(scope, data), by_institution_month(data)]


def by_month(scope: Scope, data: dict[tuple[int, date | None], dict[str, Any]]) -> Table:
    months = scope.months()
    totals: dict[date | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for (_pk, month), row in data.items():
        for name in COUNTS:
            totals[month][name] += row[name]
    rows = [[month_label(m), *(totals[m][name] for name in COUNTS)] for m in months]
    chart = Chart(
        kind="columns",
        categories=[month_label(m) for m in months],
        series=[
            Series(State.APPROVED.label, [totals[m]["approved"] for m in months]),
            Series(State.FLAGGED.label, [totals[m]["flagged"] for m in months]),
            Series(State.PENDING.label, [totals[m]["pending"] for m in months]),
        ],
    )
    return Table(
        key="break-glass-month",
        title=_("Emergency accesses opened per month, by review"),
        columns=[_("Month"), _("Accesses opened"), _("Approved"), _("Flagged"), _("Waiting for review")],
        rows=rows if data else [],
        chart=chart if data else None,
    )


def by_institution_month(data: dict[tuple[int, date | None], dict[str, Any]]) -> Table:
    names = {pk: row["owner_institution__name"] for (pk, _month), row in data.items()}
    order = sorted(data, key=lambda key: (names.get(key[0], ""), key[1] or date.min))
    rows = []
    for pk, month in order:
        row = data[(pk, month)]
        p50, p90 = row["p"] if row["p"] else (None, None)
        rows.append(
            [
                names.get(pk, str(pk)),
                month_label(month) if month else "—",
                *(row[name] for name in COUNTS),
                _hours(p50),
                _hours(p90),
            ]
        )
    return Table(
        key="break-glass-institution",
        title=_("Emergency accesses per institution and month, and the time to review"),
        columns=[
            _("Institution"),
            _("Month"),
            _("Accesses opened"),
            _("Approved"),
            _("Flagged"),
            _("Waiting for review"),
            _("Review p50 (h)"),
            _("Review p90 (h)"),
        ],
        rows=rows,
        note=_(
            "An access counts for the institution whose study was opened, in the month it was opened. "
            "Review time runs from opening to the admin's decision, over the accesses reviewed."
        ),
        folded=len(rows) > 12,
    )
