"""The consults' lines of the home page's open work (alliance.open_work), from consults.selectors."""

from __future__ import annotations

from datetime import datetime

from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance.access import Principal
from alliance.open_work import WorkItem
from consults import selectors
from consults.models import Consult
from consults.templatetags.consults_tags import time_left

TEXT_LENGTH = 120


def patient_of(consult: Consult) -> str:
    """The patients of the consult's studies as the site shows them: "王芳 (WANG FANG) · P-1001"."""
    seen: dict[int, str] = {}
    for study in consult.studies.all():
        patient = study.patient
        seen.setdefault(patient.pk, f"{patient.display_name or _('(no name)')} · {patient.patient_id}")
    return ", ".join(seen.values())


# Every flag waiting for a read back is listed, not the usual first ten.
CRITICAL_LIMIT = 50


def _item(consult: Consult, asked: str, at: datetime | None, state: str = "", anchor: str = "") -> WorkItem:
    return WorkItem(
        patient=patient_of(consult),
        case=_("Consult #%(number)d") % {"number": consult.pk},
        asked=asked,
        url=reverse("consults:detail", args=[consult.pk]) + anchor,
        at=at,
        state=state,
        audit_type="consult",
        audit_id=str(consult.pk),
        audit_patient=consult.audit_patient,
        basis=consult.basis,
    )


def critical(principal: Principal, since: datetime | None) -> list[WorkItem]:
    """The critical results waiting for the user's side to read them back, the oldest first."""
    out = []
    for result in selectors.critical_results_to_acknowledge(principal)[:CRITICAL_LIMIT]:
        asked = _("Critical result flagged by %(name)s: %(text)s. Read it back on the case page.") % {
            "name": result.flagged_by.display_name,
            "text": result.text,
        }
        if result.escalated_at is not None:
            asked = f"{asked} · {_('escalated')}"
        out.append(_item(result.consult, asked, result.flagged_at, "critical", "#critical-banner"))
    return out


def questions(principal: Principal, since: datetime | None) -> list[WorkItem]:
    out = []
    for consult in selectors.questions_waiting(principal):
        text = truncatechars(consult.last_message, TEXT_LENGTH)  # type: ignore[attr-defined]
        if consult.requesting_institution_id == principal.institution_id:
            asked = _("Answer the reader: %(text)s") % {"text": text}
        else:
            asked = _("The requester wrote: %(text)s") % {"text": text}
        out.append(_item(consult, asked, consult.last_message_at))  # type: ignore[attr-defined]
    return out


def signed_reports(principal: Principal, since: datetime | None) -> list[WorkItem]:
    return [
        _item(
            consult,
            _("Report signed. Your question: %(text)s") % {"text": truncatechars(consult.question, TEXT_LENGTH)},
            consult.completed_at,
        )
        for consult in selectors.reports_signed_since(principal, since)
    ]


def deadlines(principal: Principal, since: datetime | None) -> list[WorkItem]:
    out = []
    for consult, deadline in selectors.near_deadline(principal):
        left = time_left(deadline)
        text = truncatechars(consult.question, TEXT_LENGTH)
        asked = _("%(left)s left: %(text)s") % {"left": left, "text": text}
        if deadline.state == "breached":
            asked = _("%(left)s: %(text)s") % {"left": left, "text": text}
        out.append(_item(consult, asked, consult.due_at, deadline.state))
    return out
