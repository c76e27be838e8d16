"""Screening fixtures: the alliance of tests/conftest.py with a lung screening programme that
clinics A and B take part in, read by the hospital's CT desk; helpers that walk a participant
through enrolment, scan, reading and signature with the product's services."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from alliance.access import resolve_principal
from consults.screening import services
from consults.screening.models import Participant, Reading, Round
from consults.screening.services import NoduleInput, ReadingInput
from tests.factories import store_ct_study

PATIENT_ID = "LDCT-001"
PATIENT_NAME = "Wang^Fang=王^芳"


def principal(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


@pytest.fixture
def world(alliance_world: Any) -> SimpleNamespace:
    w = alliance_world
    w.programme = services.programme_create(
        by=principal(w.alliance_admin),
        name="低剂量螺旋CT肺癌筛查",
        description="Annual low-dose CT for smokers aged 50 to 74.",
        reading_pool=w.pool,
        institutions=[w.clin_a, w.clin_b],
    )
    return w


def enrol(world: Any, *, patient_id: str = PATIENT_ID, due: dt.date | None = None) -> Participant:
    return services.participant_enrol(
        by=principal(world.owner),
        programme=world.programme,
        patient_data={"patient_id": patient_id, "name": PATIENT_NAME, "birth_date": dt.date(1960, 1, 1), "sex": "F"},
        consent_by="本人 (the participant)",
        consent_at=timezone.now() - dt.timedelta(minutes=5),
        consent_method="written",
        consent_note="Form LDCT-2026-001",
        baseline_due=due,
    )


def scan(world: Any, participant: Participant, *, study_date: dt.date | None = None, slices: int = 3) -> Round:
    """A CT of the participant stored at clinic A and tagged to their open round by the owner."""
    study = store_ct_study(
        world.clin_a,
        slices=slices,
        patient_id=participant.patient.patient_id,
        patient_name=PATIENT_NAME,
        study_date=study_date or timezone.localdate(),
    )
    round_ = participant.rounds.get(study__isnull=True, cancelled_at__isnull=True)
    return services.round_tag(round_=round_, study=study, by=principal(world.owner))


def nodule(lobe: str = "RUL", kind: str = "solid", long: str = "9.0", short: str = "8.0", **extra: Any) -> NoduleInput:
    return NoduleInput(lobe=lobe, kind=kind, long_axis=Decimal(long), short_axis=Decimal(short), **extra)


def read(world: Any, round_: Round, *nodules: NoduleInput, **extra: Any) -> Reading:
    return services.reading_save(
        round_=round_, by=principal(world.specialist), data=ReadingInput(nodules=list(nodules), **extra)
    )


def sign(world: Any, reading: Reading) -> Reading:
    return services.reading_sign(reading=reading, by=principal(world.specialist))
