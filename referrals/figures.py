"""The referrals' section of the figures pages (alliance.figures), registered in ReferralsConfig.ready().

Referrals sent up, down and at the same level per institution, how many the receiving
side accepted, and the days from the request to the appointment (p50 and p90), for the
referrals requested in the range that an institution of the scope sent or received.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from alliance.aggregates import PercentilesCont, SecondsBetween
from alliance.figures import Chart, Scope, Series, Table, month_label
from alliance.models import Institution
from referrals.models import Direction, Referral, Status

DAY = 86400.0
# Answered by the receiving side: accepted (and what follows it) or declined.
ACCEPTED = (Status.ACCEPTED, Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED)
ANSWERED = (*ACCEPTED, Status.REJECTED)


def requested_in(scope: Scope) -> QuerySet[Referral]:
    rows = Referral.objects.filter(requested_at__gte=scope.start, requested_at__lt=scope.end)
    if scope.whole_alliance:
        return rows.filter(from_institution__alliance_id=scope.alliance_id)
    ids = scope.institution_ids
    return rows.filter(Q(from_institution_id__in=ids) | Q(to_institution_id__in=ids))


def compute(scope: Scope, only: str | None = None) -> list[Table]:
    tables = []
    if only in (None, "referrals-month"):
        tables.append(per_month(scope))
    if only in (None, "referrals-institution"):
        tables.append(per_institution(scope))
    return tables


def per_month(scope: Scope) -> Table:
    months = scope.months()
    counts: dict[Any, dict[str, int]] = {m: defaultdict(int) for m in months}
    rows = (
        requested_in(scope)
        .annotate(month=TruncMonth("requested_at", tzinfo=scope.tz))
        .values("month", "direction")
        .annotate(n=Count("pk"))
    )
    found = False
    for row in rows:
        month = scope.month_of(row["month"])
        if month in counts:
            counts[month][row["direction"]] += row["n"]
            found = True
    directions = list(Direction)
    return Table(
        key="referrals-month",
        title=_("Referrals requested per month, by direction"),
        columns=[_("Month"), *[d.label for d in directions]],
        rows=[[month_label(m), *[counts[m][d] for d in directions]] for m in months] if found else [],
        chart=Chart(
            kind="columns",
            categories=[month_label(m) for m in months],
            series=[Series(d.label, [counts[m][d] for m in months]) for d in directions],
        )
        if found
        else None,
    )


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / DAY, 1)


def per_institution(scope: Scope) -> Table:
    referrals = requested_in(scope)
    sent = {
        (r["from_institution_id"], r["direction"]): r["n"]
        for r in referrals.values("from_institution_id", "direction").annotate(n=Count("pk"))
    }
    received = {
        r["to_institution_id"]: r
        for r in referrals.values("to_institution_id").annotate(
            n=Count("pk"),
            answered=Count("pk", filter=Q(status__in=ANSWERED)),
            accepted=Count("pk", filter=Q(status__in=ACCEPTED)),
            wait=PercentilesCont(
                SecondsBetween("requested_at", "appointment_at"),
                (0.5, 0.9),
                filter=Q(appointment_at__isnull=False),
            ),
        )
    }
    ids = {pk for pk, _d in sent} | set(received)
    if not scope.whole_alliance:
        ids &= set(scope.institution_ids)
    names = dict(Institution.objects.filter(pk__in=ids).values_list("pk", "name"))
    rows: list[list[Any]] = []
    rates: list[float | None] = []
    for pk in sorted(ids, key=lambda pk: names.get(pk, "")):
        got = received.get(pk, {})
        rate = round(100 * got["accepted"] / got["answered"], 1) if got.get("answered") else None
        p50, p90 = got.get("wait") or (None, None)
        rates.append(rate)
        rows.append(
            [
                names.get(pk, str(pk)),
                *[sent.get((pk, d), 0) for d in Direction],
                got.get("n", 0),
                rate,
                _days(p50),
                _days(p90),
            ]
        )
    return Table(
        key="referrals-institution",
        title=_("Referrals per institution"),
        columns=[
            _("Institution"),
            *[_("Sent: %(direction)s") % {"direction": d.label} for d in Direction],
            _("Received"),
            _("Accepted, per cent of answered"),
            _("Days to appointment, p50"),
            _("Days to appointment, p90"),
        ],
        rows=rows,
        note=_("Requested in the range; an institution counts what it sent and what it received."),
        chart=Chart(
            kind="bars",
            categories=[r[0] for r in rows],
            series=[Series(_("Accepted, per cent of answered"), rates)],
            unit="%",
        )
        if rows
        else None,
    )
