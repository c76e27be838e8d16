"""The referral slip as a PDF: the text, Chinese included, comes out of pdftotext; every
download is audited; only the two sides of the case get it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from alliance.models import AuditEvent
from referrals.models import Status
from tests.conftest import client_for
from tests.referrals.ui_helpers import FEEDBACK, walk


@pytest.fixture
def world(alliance_world: Any) -> Any:
    return alliance_world


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "slip.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout


@pytest.mark.integration  # runs poppler's pdftotext
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_slip_holds_patient_both_institutions_reason_summary_appointment_and_feedback(
    world: Any, tmp_path: Path
) -> None:
    referral = walk(world, Status.COMPLETED)
    response = client_for(world.owner).get(f"/referrals/{referral.pk}/slip.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = _text(response.content, tmp_path)
    for expected in (
        referral.patient.patient_id,
        "Clinic A",
        "Lead Hospital",
        "胸痛待查，需冠脉造影。",
        "男，58岁，劳力性胸痛两周。",
        "心血管内科",
        timezone.localtime(referral.appointment_at).strftime("%Y-%m-%d %H:%M"),
        FEEDBACK[:12],
        "转诊单",
    ):
        assert expected in text, expected


def test_every_download_of_the_slip_is_audited(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    client = client_for(world.hosp_admin)
    for _ in range(2):
        assert client.get(f"/referrals/{referral.pk}/slip.pdf").status_code == 200
    events = AuditEvent.objects.filter(action="referral.slip_pdf", object_id=str(referral.pk))
    assert events.count() == 2
    assert {e.basis for e in events} == {referral.basis}


@pytest.mark.parametrize("persona", ["stranger", "alliance_admin"])
def test_people_outside_the_case_get_404_for_the_slip(world: Any, persona: str) -> None:
    referral = walk(world, Status.ACCEPTED)
    assert client_for(getattr(world, persona)).get(f"/referrals/{referral.pk}/slip.pdf").status_code == 404
    assert not AuditEvent.objects.filter(action="referral.slip_pdf").exists()


def test_qr_code_points_at_the_case_page(world: Any) -> None:
    from referrals import pdf

    referral = walk(world, Status.REQUESTED)
    assert pdf.case_url(referral).endswith(f"/referrals/{referral.pk}/")
