"""Cloud film's section of the figures pages (alliance.figures): printed film not needed,
counted once per study its patient opened through a link (imaging.films.film_savings)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from alliance.figures import Chart, Scope, Series, Table, month_label
from imaging.films import film_savings


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    months = scope.months()
    by_month: dict[Any, dict[str, Any]] = {}
    for row in film_savings(scope.institution_ids, scope.start, scope.end):
        month = scope.month_of(row["month"])
        if month is not None:
            by_month[month] = row
    rows = [
        [
            month_label(m),
            by_month[m]["studies"] if m in by_month else 0,
            by_month[m]["sheets"] if m in by_month else 0,
            float(by_month[m]["yuan"]) if m in by_month else 0.0,
        ]
        for m in months
    ]
    return [
        Table(
            key="film-saved",
            title=_("Printed film saved per month"),
            columns=[_("Month"), _("Studies opened by their patient"), _("Sheets saved"), _("Yuan saved")],
            rows=rows if by_month else [],
            note=_("A study counts once, the first time its patient opens it through a film link."),
            chart=Chart(
                kind="columns",
                categories=[month_label(m) for m in months],
                series=[Series(_("Sheets saved"), [float(r[2]) for r in rows])],
            )
            if by_month
            else None,
        )
    ]
