"""seed_demo's referrals: a waiting request at the city hospital, an appointment tomorrow, and a
completed referral sent back down to the clinic, created once."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

import demo.imaging
from alliance.models import Institution
from demo.referrals import CASES
from referrals.models import Referral, Status
from tests.conftest import client_for
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_demo_studies(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """One light study per demo kind at each clinic instead of the real images."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    def load(*, stdout: Any, actor: Any) -> None:
        for clinic in Institution.objects.filter(ae_title__in=["QINGSHAN", "BAIHE"]):
            if not clinic.studies.exists():
                for modality, body_part in (("CT", "CHEST"), ("DX", "CHEST"), ("MR", "HEAD")):
                    StudyFactory(institution=clinic, modalities=modality, series__body_part=body_part)

    monkeypatch.setattr(demo.imaging, "load", load)


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_seed_demo_creates_the_living_referrals_once() -> None:
    assert "Demo referrals from QINGSHAN to CITYHOSP: 3 new." in seed()
    assert "Demo referrals from QINGSHAN to CITYHOSP: 0 new." in seed()
    ups = {r.studies.get().modalities: r for r in Referral.objects.filter(direction="up")}
    assert len(ups) == len(CASES)
    assert ups["CT"].status == Status.REQUESTED and ups["CT"].to_institution.ae_title == "CITYHOSP"
    accepted = ups["DX"]
    assert accepted.status == Status.ACCEPTED
    assert timezone.localtime(accepted.appointment_at).date() == timezone.localdate() + timedelta(days=1)
    completed = ups["MR"]
    assert completed.status == Status.COMPLETED and completed.feedback
    down = Referral.objects.get(direction="down")
    assert down.based_on == completed and down.status == Status.REQUESTED
    assert down.to_institution.ae_title == "QINGSHAN" and down.patient == completed.patient


def test_demo_desk_and_clinic_see_their_lists_and_the_summary() -> None:
    seed()
    desk = Referral.objects.get(direction="down").referrer
    incoming = client_for(desk).get("/referrals/incoming/")
    assert dict((n, c) for n, _l, c in incoming.context["tabs"])["waiting"] == 1
    clinician = Referral.objects.filter(direction="up").first().referrer
    home = client_for(clinician).get("/")
    assert home.context["referrals_waiting"]["summaries"] == 1
    tabs = dict((n, c) for n, _l, c in client_for(clinician).get("/referrals/incoming/").context["tabs"])
    assert tabs["waiting"] == 1  # the patient coming back down; the clinic's desk (its admin) answers it
