"""Referral fixtures: the alliance personas plus a desk member at the hospital, and a helper
that walks an up referral of a clinic A study to a given state.

Personas (tests/conftest.py alliance_world): owner (clinician at clinic A, the referrer),
colleague (clinician at A), inst_admin_a (admin at A), hosp_admin (admin at the hospital: on
its desk by role), desk (a hospital clinician named to the desk), receiver (a hospital
clinician named for the appointment), specialist / outsider_specialist (hospital, not on the
desk), stranger (clinic B), alliance_admin (no clinical role).
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from alliance.access import resolve_principal
from referrals import services
from referrals.models import DeskMember, Referral, Status
from tests import factories
from tests.factories import StudyFactory


def principal(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


def tomorrow_at_nine() -> Any:
    return (timezone.now() + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)


@pytest.fixture
def world(alliance_world: Any) -> SimpleNamespace:
    w = alliance_world
    w.desk = factories.make_doctor(institution=w.hosp, username="desk")
    DeskMember.objects.create(institution=w.hosp, doctor=w.desk)
    w.receiver = factories.make_doctor(institution=w.hosp, username="receiver")
    return w


def walk(world: Any, to: str, *, study: Any = None, named: bool = True, **create: Any) -> Referral:
    """An up referral from clinic A's clinician to the hospital, moved to `to`.
    ON_HOLD: proposed another date; ACCEPTED: appointment tomorrow (the receiver named
    unless named=False); FAILED: no-show; REJECTED / CANCELLED from requested."""
    owner, desk = principal(world.owner), principal(world.desk)
    fields = {
        "studies": [study or StudyFactory(institution=world.clin_a)],
        "direction": "up",
        "to_institution": world.hosp,
        "reason": "Suspected lung cancer, needs thoracic surgery.",
        "summary": "Cough for 3 weeks; CT shows a nodule.",
        "urgency": "urgent",
        **create,
    }
    referral = services.referral_create(by=owner, **fields)
    if to == Status.DRAFT:
        return referral
    services.referral_request(referral=referral, by=owner)
    if to == Status.ON_HOLD:
        services.referral_propose(referral=referral, by=desk, date=timezone.localdate() + timedelta(days=3))
    elif to == Status.REJECTED:
        services.referral_reject(referral=referral, by=desk, reason="No beds.")
    elif to == Status.CANCELLED:
        services.referral_cancel(referral=referral, by=owner, reason="Patient changed their mind.")
    elif to != Status.REQUESTED:
        services.referral_accept(
            referral=referral,
            by=desk,
            appointment_at=tomorrow_at_nine(),
            department="Thoracic surgery",
            doctor=world.receiver if named else None,
        )
        if to == Status.FAILED:
            services.referral_no_show(referral=referral, by=desk, reason="Did not come.")
        elif to in (Status.IN_PROGRESS, Status.COMPLETED):
            services.referral_arrive(referral=referral, by=desk)
            if to == Status.COMPLETED:
                services.referral_complete(
                    referral=referral,
                    by=principal(world.receiver if named else world.desk),
                    summary="Lobectomy done; follow up in 3 months.",
                )
    referral.refresh_from_db()
    assert referral.status == to
    return referral
