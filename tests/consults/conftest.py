"""Consult fixtures: studies of clinic A, and a helper that walks a consult to a given state."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from alliance.access import resolve_principal
from consults import services
from consults.models import Consult, Status
from imaging.models import Instance, Patient, Series, Study

_uid = itertools.count(1)


def make_study(institution: Any, *, modality: str = "CT", body_part: str = "CHEST", patient: Any = None) -> Study:
    n = next(_uid)
    patient = patient or Patient.objects.create(issuer=institution, patient_id=f"P{n}", name=f"Patient^{n}")
    study = Study.objects.create(
        study_uid=f"1.2.826.0.1.3680043.10.{n}",
        patient=patient,
        institution=institution,
        description=f"{modality} {body_part}",
        modalities=modality,
        num_series=1,
        num_instances=1,
    )
    series = Series.objects.create(
        series_uid=f"{study.study_uid}.1", study=study, modality=modality, series_number=1, body_part=body_part
    )
    Instance.objects.create(
        sop_uid=f"{study.study_uid}.1.1",
        series=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        instance_number=1,
        storage_key=f"test/{n}.dcm",
        size_bytes=1,
        sha256="0" * 64,
    )
    return study


def walk(world: Any, to: str, *, named: bool = False, study: Study | None = None, priority: str = "routine") -> Consult:
    """A consult from clinic A's clinician to the hospital's pool (or its specialist), moved to `to`."""
    owner, spec = resolve_principal(world.owner.user), resolve_principal(world.specialist.user)
    consult = services.consult_create(
        by=owner,
        studies=[study or make_study(world.clin_a)],
        question="Nodule in the right upper lobe?",
        history="Cough for 3 weeks.",
        priority=priority,
        pool=None if named else world.pool,
        specialist=world.specialist if named else None,
    )
    steps = {
        Status.REQUESTED: lambda c: services.consult_request(consult=c, by=owner),
        Status.ACCEPTED: lambda c: services.consult_claim(consult=c, by=spec),
        Status.IN_PROGRESS: lambda c: services.consult_start_report(consult=c, by=spec),
        Status.ON_HOLD: lambda c: services.consult_hold(consult=c, by=spec, question="Any prior CT?"),
    }
    order = [Status.REQUESTED, Status.ACCEPTED, Status.IN_PROGRESS]
    if to == Status.ON_HOLD:
        order.append(Status.ON_HOLD)
    for status in order:
        if to == Status.DRAFT:
            break
        steps[status](consult)
        if to == status:
            break
    if to == Status.COMPLETED:
        services.consult_sign(consult=consult, by=spec, findings="右上肺结节，直径8毫米。", impression="Nodule 8 mm.")
    consult.refresh_from_db()
    assert consult.status == to
    return consult


@pytest.fixture
def world(alliance_world: Any) -> SimpleNamespace:
    return alliance_world


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    """The personas' passwords are hashed with a cheap hasher: Argon2 ten times per test is slow."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
