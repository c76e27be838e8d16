"""seed_demo's screening programme: the alliance's lung screening for its township clinics, one
Qingshan participant whose CT waits for the radiology desk's reading and one invited, created once."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

import demo.imaging
from alliance.models import Doctor, Institution
from consults.screening.models import Participant, Programme
from demo.screening import NAME
from tests.conftest import client_for
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_demo_studies(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """One light study per demo kind at Qingshan instead of the real images."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    def load(*, stdout: Any, actor: Any) -> None:
        clinic = Institution.objects.get(ae_title="QINGSHAN")
        if not clinic.studies.exists():
            for modality, body_part in (("CT", "CHEST"), ("DX", "CHEST")):
                StudyFactory(institution=clinic, modalities=modality, series__body_part=body_part)

    monkeypatch.setattr(demo.imaging, "load", load)


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_seed_demo_creates_the_screening_programme_and_its_participants_once() -> None:
    assert "2 new participant(s)" in seed()
    assert "0 new participant(s)" in seed()
    programme = Programme.objects.get(name=NAME)
    assert sorted(programme.institutions.values_list("ae_title", flat=True)) == ["BAIHE", "DONGHU", "QINGSHAN"]
    scanned, waiting = (
        Participant.objects.filter(programme=programme, rounds__study__isnull=flag).get() for flag in (False, True)
    )
    assert scanned.rounds.get().study.modalities == "CT"
    radiologist = Doctor.objects.get(user__username="radiologist")
    page = client_for(radiologist).get("/screening/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert f"/screening/rounds/{scanned.rounds.get().pk}/read/" in page
    assert waiting.rounds.get().due_date > scanned.rounds.get().due_date
