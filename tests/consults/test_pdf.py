"""The signed report as a PDF: the text, Chinese included, comes out of pdftotext."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from alliance.access import resolve_principal
from consults import services
from consults.models import Status
from tests.conftest import client_for
from tests.consults.conftest import walk


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout


@pytest.mark.integration  # runs poppler's pdftotext
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_report_pdf_holds_institutions_patient_question_chinese_findings_signer_and_versions(
    world: Any, tmp_path: Path
) -> None:
    consult = walk(world, Status.COMPLETED)
    services.consult_addendum(
        consult=consult, by=resolve_principal(world.specialist.user), text="与2025年片对比无变化。"
    )
    response = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = _text(response.content, tmp_path)
    study = consult.studies.get()
    for expected in (
        "Clinic A",
        "Lead Hospital",
        study.patient.patient_id,
        "Nodule in the right upper lobe?",
        "右上肺结节，直径8毫米。",
        "与2025年片对比无变化。",
        "Nodule 8 mm.",
        world.specialist.display_name,
        "远程会诊报告",
    ):
        assert expected in text, expected
    assert text.count("Nodule 8 mm.") == 2  # version 1 and the addendum's version 2


def test_report_pdf_is_404_before_signing_and_for_people_outside_the_case(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    assert client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf").status_code == 404
    signed = walk(world, Status.COMPLETED)
    assert client_for(world.stranger).get(f"/consults/{signed.pk}/report.pdf").status_code == 404
    assert client_for(world.outsider_specialist).get(f"/consults/{signed.pk}/report.pdf").status_code == 404


def test_qr_code_points_at_the_case_page(world: Any) -> None:
    from consults import pdf

    consult = walk(world, Status.COMPLETED)
    assert pdf.case_url(consult).endswith(f"/consults/{consult.pk}/")


def test_without_a_chinese_font_the_report_pdf_is_refused_with_what_to_install(world: Any, monkeypatch: Any) -> None:
    from alliance import pdf

    monkeypatch.setattr(pdf, "cjk_font_families", lambda: ())
    consult = walk(world, Status.COMPLETED)
    response = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b"fonts-noto-cjk" in response.content
    assert [m.id for m in pdf.check_cjk_font()] == ["alliance.W001"]


def test_with_a_chinese_font_the_start_up_check_is_silent(monkeypatch: Any) -> None:
    from alliance import pdf

    monkeypatch.setattr(pdf, "cjk_font_families", lambda: ("Noto Sans CJK SC",))
    assert pdf.check_cjk_font() == []
