"""Priorities: the turnaround policy in force for each, and how a priority is named wherever a
person reads it (its word and its deadline, most urgent first).

The one home of both, so that the deadline a consult gets, the one the figures compare
against and the words on every page, the PDF and the notices agree ("紧急 · 2 小时内"). The
FHIR codes (stat, asap, urgent, routine) stay what the API speaks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from consults.models import DEFAULT_POLICY, Priority, PriorityPolicy

# Most urgent first: every list of priorities (form, policy page, figures) uses this order.
BY_URGENCY = (Priority.STAT, Priority.ASAP, Priority.URGENT, Priority.ROUTINE)


def _alliance_id(alliance: Any) -> int | None:
    return alliance if alliance is None or isinstance(alliance, int) else alliance.pk


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


# --- the policy in force ----------------------------------------------------------------


def policy_table(alliance: Any) -> list[dict[str, Any]]:
    """The deadline and claim timeout in force for each priority, most urgent first: the
    alliance's policy (set by its admin) or DEFAULT_POLICY (one query)."""
    alliance_id = _alliance_id(alliance)
    rows = {p.priority: p for p in PriorityPolicy.objects.filter(alliance_id=alliance_id)} if alliance_id else {}
    out = []
    for priority in BY_URGENCY:
        deadline, claim = DEFAULT_POLICY[priority]
        row = rows.get(priority)
        out.append(
            {
                "priority": str(priority),
                "deadline_minutes": row.deadline_minutes if row else _minutes(deadline),
                "claim_timeout_minutes": row.claim_timeout_minutes if row else _minutes(claim),
                "default_deadline_minutes": _minutes(deadline),
                "default_claim_timeout_minutes": _minutes(claim),
                "custom": row is not None,
            }
        )
    return out


def policy_for(alliance: Any, priority: str) -> tuple[timedelta, timedelta]:
    """(deadline, claim timeout) in force for one priority: what a new request gets."""
    row = next(r for r in policy_table(alliance) if r["priority"] == priority)
    return timedelta(minutes=row["deadline_minutes"]), timedelta(minutes=row["claim_timeout_minutes"])


def deadlines_of(alliance: Any) -> dict[str, timedelta]:
    """The deadline in force for every priority (one query)."""
    return {row["priority"]: timedelta(minutes=row["deadline_minutes"]) for row in policy_table(alliance)}


def priority_deadlines(alliance: Any) -> list[dict[str, Any]]:
    """Each priority with its deadline in minutes, for the consult form to show beside the
    priority chosen."""
    return [{"priority": row["priority"], "minutes": row["deadline_minutes"]} for row in policy_table(alliance)]


# --- the words ----------------------------------------------------------------------------


def within(deadline: timedelta) -> str:
    """ "within 2 hours" (whole hours), else "within 90 minutes"."""
    minutes = _minutes(deadline)
    if minutes >= 60 and minutes % 60 == 0:
        hours = minutes // 60
        return ngettext("within %(n)d hour", "within %(n)d hours", hours) % {"n": hours}
    return ngettext("within %(n)d minute", "within %(n)d minutes", minutes) % {"n": minutes}


def within_short(minutes: int) -> str:
    """A deadline in minutes as the consult form's list shows it: "within 8 h", "within 1 h 30 min"."""
    hours, rest = divmod(int(minutes), 60)
    if hours and rest:
        return _("within %(h)d h %(m)d min") % {"h": hours, "m": rest}
    if hours:
        return _("within %(h)d h") % {"h": hours}
    return _("within %(m)d min") % {"m": rest}


def priority_name(priority: str) -> str:
    """A priority's word alone ("紧急"); an unknown code as it is."""
    return str(Priority(priority).label) if priority in Priority.values else priority


def label_with(priority: str, deadline: timedelta) -> str:
    return _("%(name)s · %(deadline)s") % {"name": Priority(priority).label, "deadline": within(deadline)}


def priority_label(priority: str, alliance: Any) -> str:
    """ "紧急 · 2 小时内": the priority's word and the deadline the alliance gives it."""
    return label_with(priority, deadlines_of(alliance)[priority])


def priority_labels(alliance: Any) -> dict[str, str]:
    """Every priority's label, most urgent first (one query, for lists of consults)."""
    deadlines = deadlines_of(alliance)
    return {str(p): label_with(p, deadlines[p]) for p in BY_URGENCY}


def priority_choices(alliance: Any) -> list[tuple[str, str]]:
    """Choices for a form's priority field, most urgent first."""
    return list(priority_labels(alliance).items())


def consult_label(consult: Any, cache: dict[int, dict[str, str]]) -> str:
    """The consult's priority label; `cache` (one per page or response) keeps each alliance's
    labels, so that a list of consults asks one query per alliance."""
    alliance_id = consult.requesting_institution.alliance_id
    if alliance_id not in cache:
        cache[alliance_id] = priority_labels(alliance_id)
    return cache[alliance_id][consult.priority]
