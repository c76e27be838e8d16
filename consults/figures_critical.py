"""The critical results' section of the figures pages (alliance.figures), registered in
ConsultsConfig.ready().

A flag belongs to the figures of the institutions its consult belongs to (requested or
received it, consults.figures.consults_in) and to the month it was flagged in. Time to
acknowledgement is flagged to read back; escalated counts the flags whose admin was told.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from alliance.aggregates import PercentilesCont, SecondsBetween
from alliance.figures import Chart, Scope, Series, Table, minutes, month_label
from consults.figures import consults_in
from consults.models import CriticalResult

TABLES = ("critical-month", "critical-ack")
TIME_TO_ACK = SecondsBetween("flagged_at", "acknowledged_at")


def flagged_in(scope: Scope) -> QuerySet[CriticalResult]:
    return CriticalResult.objects.filter(
        consult__in=consults_in(scope).values("pk"), flagged_at__gte=scope.start, flagged_at__lt=scope.end
    )


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    wanted = set(TABLES) if only is None else {only}
    tables = []
    if "critical-month" in wanted:
        tables.append(per_month(scope))
    if "critical-ack" in wanted:
        tables.append(acknowledgement(scope))
    return tables


def per_month(scope: Scope) -> Table:
    """Critical results flagged per month, one column per modality."""
    rows = (
        flagged_in(scope)
        .annotate(month=TruncMonth("flagged_at", tzinfo=scope.tz))
        .values("month", "modality")
        .annotate(n=Count("pk"))
    )
    counts: dict[date | None, Counter[str]] = defaultdict(Counter)
    for row in rows:
        counts[scope.month_of(row["month"])][row["modality"] or "—"] += row["n"]
    modalities = sorted({m for c in counts.values() for m in c})
    flagged = bool(counts)  # before the rows: reading the defaultdict fills it
    months = scope.months()
    table = [[month_label(m), *(counts[m][x] for x in modalities), sum(counts[m].values())] for m in months]
    chart = Chart(
        kind="columns",
        categories=[month_label(m) for m in months],
        series=[Series(x, [counts[m][x] for m in months]) for x in modalities],
    )
    return Table(
        key="critical-month",
        title=_("Critical results flagged per month, by modality"),
        columns=[_("Month"), *modalities, _("Total")],
        rows=table if flagged else [],
        chart=chart if flagged else None,
    )


def _aggregates() -> dict[str, Any]:
    acknowledged = Q(acknowledged_at__isnull=False)
    return {
        "flagged": Count("pk"),
        "acknowledged": Count("pk", filter=acknowledged),
        "escalated": Count("pk", filter=Q(escalated_at__isnull=False)),
        "p": PercentilesCont(TIME_TO_ACK, (0.5, 0.9), filter=acknowledged),
    }


def _row(label: Any, s: dict[str, Any]) -> list[Any]:
    p50, p90 = s["p"] or (None, None)
    return [label, s["flagged"], s["acknowledged"], minutes(p50), minutes(p90), s["escalated"]]


def acknowledgement(scope: Scope) -> Table:
    """Per modality and in all: flagged, acknowledged, time to acknowledgement (p50, p90), escalated."""
    by_modality = list(flagged_in(scope).values("modality").annotate(**_aggregates()).order_by("modality"))
    total = flagged_in(scope).aggregate(**_aggregates())
    rows = [_row(s["modality"] or "—", s) for s in by_modality]
    if rows:
        rows.append(_row(_("All"), total))
    return Table(
        key="critical-ack",
        title=_("Critical results: time to acknowledgement and escalations"),
        columns=[
            _("Modality"),
            _("Critical results flagged"),
            _("Acknowledged"),
            _("p50 to acknowledge (min)"),
            _("p90 to acknowledge (min)"),
            _("Escalated"),
        ],
        rows=rows,
        note=_("Flags in the date range; the time runs from the flag to the requesting side's read back."),
    )
