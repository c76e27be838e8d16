"""Critical results (危急值) on the case page and in the report editor (the home page lists them
through alliance.open_work: consults.open_work.critical)."""

from __future__ import annotations

from typing import Any

from django import template

from alliance.access import principal_of
from consults import access, selectors
from consults.models import Consult

register = template.Library()


@register.inclusion_tag("consults/_critical_case.html", takes_context=True)
def critical_case(context: dict[str, Any], consult: Consult) -> dict[str, Any]:
    """The red banner of unacknowledged flags, the read-back form, the flags' history and
    the reader's flag form (the case page's read is audited by its view)."""
    request = context["request"]
    principal = principal_of(request)
    results = selectors.critical_results_of(consult)
    may_flag = access.may_flag_critical(principal, consult)
    choices = list(access.critical_findings_for(consult).values_list("name", flat=True))
    return {
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "consult": consult,
        "waiting": [r for r in results if not r.is_acknowledged],
        "acknowledged": [r for r in results if r.is_acknowledged],
        "may_acknowledge": bool(results)
        and access.critical_results_acknowledgeable_by(principal).filter(consult=consult).exists(),
        "may_flag": may_flag,
        "findings": access.critical_findings_for(consult) if may_flag else [],
        "read_back_choices": choices,
    }


@register.inclusion_tag("consults/_critical_flag_form.html", takes_context=True)
def critical_flag_form(context: dict[str, Any], consult: Consult, back: str = "") -> dict[str, Any]:
    """The reader's flag form (the report editor shows it too)."""
    principal = principal_of(context["request"])
    may_flag = access.may_flag_critical(principal, consult)
    return {
        "csrf_token": context.get("csrf_token"),
        "consult": consult,
        "may_flag": may_flag,
        "findings": access.critical_findings_for(consult) if may_flag else [],
        "back": back,
    }
