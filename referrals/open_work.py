"""The referrals' lines of the home page's open work (alliance.open_work), from referrals.selectors."""

from __future__ import annotations

from datetime import datetime

from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance.access import Principal
from alliance.open_work import WorkItem
from referrals import selectors
from referrals.models import URGENCY_RANK, Referral, Status, Urgency

TEXT_LENGTH = 120


def _asked(referral: Referral) -> str:
    if referral.status == Status.ON_HOLD:
        return _("%(institution)s proposes %(date)s instead: agree or cancel") % {
            "institution": referral.to_institution.name,
            "date": referral.proposed_date.isoformat() if referral.proposed_date else "",
        }
    return _("Answer the referral from %(institution)s: %(reason)s") % {
        "institution": referral.from_institution.name,
        "reason": truncatechars(referral.reason, TEXT_LENGTH),
    }


def waiting(principal: Principal, since: datetime | None) -> list[WorkItem]:
    return [
        WorkItem(
            patient=f"{r.patient.display_name or _('(no name)')} · {r.patient.patient_id}",
            case=_("Referral #%(number)d") % {"number": r.pk},
            asked=_asked(r),
            url=reverse("referrals:detail", args=[r.pk]),
            at=r.requested_at,
            state="danger" if r.urgency_rank == URGENCY_RANK[Urgency.EMERGENCY] else "",
            audit_type="referral",
            audit_id=str(r.pk),
            audit_patient=str(r.patient_id),
            basis=r.basis,
        )
        for r in selectors.waiting_for_action(principal)
    ]
