"""The notification bell in the top bar, and small display helpers for consult pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import gettext as _

from consults import priorities, selectors
from consults.forms import study_label
from consults.models import ACTION_LABELS, Priority

register = template.Library()


@register.inclusion_tag("consults/_bell_link.html", takes_context=True)
def notification_bell(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"unread": selectors.unread_count(user) if user is not None else 0}


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
    """A deadline in minutes as the consult form shows it: "within 8 h", "within 1 h 30 min"."""
    hours, rest = divmod(int(minutes), 60)
    if hours and rest:
        return _("within %(h)d h %(m)d min") % {"h": hours, "m": rest}
    if hours:
        return _("within %(h)d h") % {"h": hours}
    return _("within %(m)d min") % {"m": rest}


@register.filter
def study_choice(study: Any) -> str:
    """A study in the consult form's picker (consults.forms.study_label)."""
    return study_label(study)


@register.filter
def priority_name(priority: str) -> str:
    """A priority's name alone (the form's deadline list shows the deadline beside it)."""
    return str(Priority(priority).label) if priority in Priority.values else priority


@register.simple_tag(takes_context=True)
def priority_label(context: Any, consult: Any) -> str:
    """The consult's priority as everyone reads it ("紧急 · 2 小时内"), one query per page and alliance."""
    request = context.get("request")
    cache = getattr(request, "_priority_labels", None)
    if cache is None:
        cache = {}
        if request is not None:
            request._priority_labels = cache
    alliance_id = consult.requesting_institution.alliance_id
    if alliance_id not in cache:
        cache[alliance_id] = priorities.priority_labels(alliance_id)
    return cache[alliance_id][consult.priority]
