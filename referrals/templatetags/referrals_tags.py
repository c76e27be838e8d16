"""Small display helpers for the referral pages."""

from __future__ import annotations

from django import template

from referrals.models import Status

register = template.Library()


@register.filter
def status_label(value: str) -> str:
    """A status as the reader's language names it ("in-progress" -> "In progress"); "" for none."""
    if not value:
        return ""
    return str(Status(value).label) if value in Status.values else value
