"""The image store's section of the figures pages (alliance.figures), registered in ImagingConfig.ready().

Studies and bytes received per institution and month, and what each institution stores
at the end of the range; three queries, answered from the covering index
imaging_figures_received on PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from alliance.figures import Chart, Scope, Series, Table, month_label
from alliance.models import Institution
from imaging.models import Study

GB = 10**9


def _gb(size: int) -> float:
    return round(size / GB, 3)


def compute(scope: Scope) -> list[Table]:
    ids = scope.institution_ids
    received: dict[int, dict[date | None, tuple[int, int]]] = defaultdict(dict)
    for row in (
        Study.objects.filter(institution_id__in=ids, received_at__gte=scope.start, received_at__lt=scope.end)
        .annotate(month=TruncMonth("received_at", tzinfo=scope.tz))
        .values("institution_id", "month")
        .annotate(n=Count("pk"), size=Sum("size_bytes"))
    ):
        received[row["institution_id"]][scope.month_of(row["month"])] = (row["n"], row["size"] or 0)
    before = dict(
        Study.objects.filter(institution_id__in=ids, received_at__lt=scope.start)
        .values("institution_id")
        .annotate(size=Sum("size_bytes"))
        .values_list("institution_id", "size")
    )
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
