"""{% film_savings institution %}: film saved by cloud film, per month, for a home page
(alliance's templates may show it; alliance's code does not import imaging)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.utils import timezone

from imaging import films

register = template.Library()

MONTHS_SHOWN = 12


@register.inclusion_tag("films/_savings.html")
def film_savings(institution: Any) -> dict[str, Any]:
    if institution is None or not films.module_on(institution):
        return {"shown": False}
    end = timezone.now()
    start = (end - timedelta(days=31 * (MONTHS_SHOWN - 1))).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    months = films.film_savings([institution.pk], start, end + timedelta(seconds=1))
    total = {"sheets": sum(m["sheets"] for m in months), "yuan": sum(m["yuan"] for m in months)}
    return {"shown": True, "months": months, "total": total}
