"""Referral fixtures for the page, PDF and browser tests: a referral from clinic A's clinician
up to the lead hospital, walked by the hospital's desk (its institution admin) to a given state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from alliance.access import resolve_principal
from imaging.models import Study
from referrals import services
from referrals.models import Referral, Status
from tests.factories import StudyFactory

REASON = "胸痛待查，需冠脉造影。 Chest pain: coronary angiography?"
FEEDBACK = "冠脉造影示右冠狭窄70%，已植入支架一枚。出院后继续双抗治疗，社区随访血压血脂。"


def tomorrow_at(hour: int = 9) -> Any:
    day = timezone.localtime() + timedelta(days=1)
    return day.replace(hour=hour, minute=30, second=0, microsecond=0)


def refer_up(world: Any, *, study: Study | None = None, send: bool = True, urgency: str = "urgent") -> Referral:
    owner = resolve_principal(world.owner.user)
    return services.referral_create(
        by=owner,
        studies=[study or StudyFactory(institution=world.clin_a)],
        direction="up",
        to_institution=world.hosp,
        reason=REASON,
        summary="男，58岁，劳力性胸痛两周。",
        urgency=urgency,
        send=send,
    )


def walk(world: Any, to: str, *, study: Study | None = None, urgency: str = "urgent") -> Referral:
    """A referral of a clinic A study to the hospital, moved by the hospital's desk to `to`."""
    owner, desk = resolve_principal(world.owner.user), resolve_principal(world.hosp_admin.user)
    referral = refer_up(world, study=study, send=to != Status.DRAFT, urgency=urgency)
    steps = {
        Status.ON_HOLD: lambda r: services.referral_propose(
            referral=r, by=desk, date=(timezone.localdate() + timedelta(days=3)), note="周四有号"
        ),
        Status.REJECTED: lambda r: services.referral_reject(referral=r, by=desk, reason="床位已满"),
        Status.CANCELLED: lambda r: services.referral_cancel(referral=r, by=owner, reason="患者改去他院"),
        Status.ACCEPTED: lambda r: services.referral_accept(
            referral=r, by=desk, appointment_at=tomorrow_at(), department="心血管内科"
        ),
    }
    if to in (Status.ON_HOLD, Status.REJECTED, Status.CANCELLED, Status.ACCEPTED):
        referral = steps[to](referral) or referral
    elif to in (Status.IN_PROGRESS, Status.FAILED, Status.COMPLETED):
        steps[Status.ACCEPTED](referral)
        referral.refresh_from_db()
        if to == Status.FAILED:
            services.referral_no_show(referral=referral, by=desk, reason="未到诊")
        else:
            services.referral_arrive(referral=referral, by=desk)
            if to == Status.COMPLETED:
                referral.refresh_from_db()
                services.referral_complete(referral=referral, by=desk, summary=FEEDBACK)
    referral.refresh_from_db()
    assert referral.status == to, (referral.status, to)
    return referral
