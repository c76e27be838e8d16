"""How a priority is named wherever a person reads it: its word and its deadline, most urgent first.

One helper for every page, the PDF and the notices, so that the words are the same everywhere
("紧急 · 2 小时内"). The FHIR codes (stat, asap, urgent, routine) stay what the API speaks.
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


def deadlines_of(alliance: Any) -> dict[str, timedelta]:
    """The deadline in force for every priority: the alliance's policy, else the default (one query)."""
    deadlines = {str(p): deadline for p, (deadline, _claim) in DEFAULT_POLICY.items()}
    alliance_id = _alliance_id(alliance)
    if alliance_id is not None:
        for priority, minutes in PriorityPolicy.objects.filter(alliance_id=alliance_id).values_list(
            "priority", "deadline_minutes"
        ):
            deadlines[priority] = timedelta(minutes=minutes)
    return deadlines


def within(deadline: timedelta) -> str:
    """ "within 2 hours" (whole hours), else "within 90 minutes"."""
    minutes = int(deadline.total_seconds() // 60)
    if minutes >= 60 and minutes % 60 == 0:
        hours = minutes // 60
        return ngettext("within %(n)d hour", "within %(n)d hours", hours) % {"n": hours}
    return ngettext("within %(n)d minute", "within %(n)d minutes", minutes) % {"n": minutes}


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
