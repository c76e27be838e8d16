"""The notification bell in the top bar, and small display helpers for consult pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import gettext as _

from alliance import unread
from consults import priorities
from consults.forms import study_label
from consults.models import ACTION_LABELS

register = template.Library()


@register.inclusion_tag("consults/_bell_link.html", takes_context=True)
def notification_bell(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    return {"unread": unread.unread_counts(request).get("consults", 0) if request is not None else 0}


@register.filter
def action_label(action: str) -> str:
    return str(ACTION_LABELS.get(action, action))


@register.filter
def time_left(deadline: Any) -> str:
    """Time left as "3 h 20 min" or "overdue 15 min"; "" for a consult without a running clock."""
    if deadline is None or deadline.left is None:
        return ""
    minutes = abs(deadline.minutes or 0)
    text = _("%(h)d h %(m)02d min") % {"h": minutes // 60, "m": minutes % 60}
    return _("overdue %(t)s") % {"t": text} if deadline.state == "breached" else text


@register.filter
def within(minutes: int) -> str:
    """A deadline in minutes as the consult form shows it (consults.priorities.within_short)."""
    return priorities.within_short(minutes)


@register.filter
def study_choice(study: Any) -> str:
    """A study in the consult form's picker (consults.forms.study_label)."""
    return study_label(study)


@register.filter
def priority_name(priority: str) -> str:
    """A priority's name alone (the form's deadline list shows the deadline beside it)."""
    return priorities.priority_name(priority)


@register.simple_tag(takes_context=True)
def priority_label(context: Any, consult: Any) -> str:
    """The consult's priority as everyone reads it ("紧急 · 2 小时内"), one query per page and alliance."""
    request = context.get("request")
    cache = getattr(request, "_priority_labels", None)
    if cache is None:
        cache = {}
        if request is not None:
            request._priority_labels = cache
    return priorities.consult_label(consult, cache)
