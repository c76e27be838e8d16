"""The film slip: one A5 page with the QR code, the code to type and the PIN (poppler reads it)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import translation

from alliance.access import resolve_principal
from imaging import films
from tests.conftest import client_for
from tests.factories import PatientFactory, StudyFactory

pytestmark = [
    pytest.mark.integration,  # runs poppler's pdftotext and pdfinfo
    pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed"),
]


def _poppler(tool: str, pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "slip.pdf"
    path.write_bytes(pdf)
    args = [tool, "-enc", "UTF-8", str(path), "-"] if tool == "pdftotext" else [tool, str(path)]
    return subprocess.run(args, capture_output=True, check=True, text=True).stdout


def test_film_slip_is_one_a5_page_with_code_pin_and_scan_line_in_chinese(alliance_world: Any, tmp_path: Path) -> None:
    patient = PatientFactory(issuer=alliance_world.clin_a, birth_date=dt.date(1970, 1, 2))
    study = StudyFactory(institution=alliance_world.clin_a, patient=patient, description="CT CHEST")
    made = films.film_create(studies=[study], by=resolve_principal(alliance_world.owner.user), verify="pin")
    doctor = client_for(alliance_world.owner)
    with translation.override("zh-hans"):
        response = doctor.get(reverse("imaging:film_slip", args=[made.link.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    info = _poppler("pdfinfo", response.content, tmp_path)
    assert re.search(r"Pages:\s+1\n", info) and "419.528 x 595.276 pts" in info  # A5 in points
    text = _poppler("pdftotext", response.content, tmp_path)
    spaced_out = text.replace(" ", "")  # the code is printed letter-spaced: pdftotext may split it
    assert made.code_display in spaced_out and made.pin in spaced_out and "Clinic A" in text
    assert "扫码查看您的影像和报告" in text
