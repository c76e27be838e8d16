"""Consult fixtures: a helper that walks a consult of a clinic A study to a given state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from alliance.access import resolve_principal
from consults import services
from consults.models import Consult, Status
from imaging.models import Study
from tests.factories import StudyFactory


def walk(world: Any, to: str, *, named: bool = False, study: Study | None = None, priority: str = "routine") -> Consult:
    """A consult from clinic A's clinician to the hospital's pool (or its specialist), moved to `to`."""
    owner, spec = resolve_principal(world.owner.user), resolve_principal(world.specialist.user)
    consult = services.consult_create(
        by=owner,
        studies=[study or StudyFactory(institution=world.clin_a)],
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
