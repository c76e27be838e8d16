"""seed_demo's consults: report templates and a living worklist, created once."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

import demo.imaging
from alliance.models import Institution
from consults.models import Consult, CriticalFinding, ReportTemplate, Status
from demo.consults import CASES, CRITICAL_FINDINGS, TEMPLATES
from tests.conftest import client_for
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_demo_studies(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """The demo studies loader stands in with one light study per demo kind at each clinic
    (tests/demo/test_imaging.py covers the real images)."""
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


def test_seed_demo_creates_templates_and_cases_once() -> None:
    assert "Demo consults from QINGSHAN" in seed()
    seed()
    assert ReportTemplate.objects.count() == len(TEMPLATES)
    assert Consult.objects.count() == len(CASES)
    by_modality = {c.studies.get().modalities: c for c in Consult.objects.all()}
    assert by_modality["CT"].status == Status.REQUESTED and by_modality["CT"].priority == "urgent"
    assert by_modality["CT"].owner is None and by_modality["CT"].pool.institution.ae_title == "CITYHOSP"
    assert by_modality["DX"].status == Status.IN_PROGRESS
    assert by_modality["DX"].owner.user.username == "radiologist"
    assert by_modality["MR"].status == Status.COMPLETED
    assert by_modality["MR"].report.versions.get().is_signed
    assert {c.studies.get().institution.ae_title for c in Consult.objects.all()} == {"QINGSHAN"}


def test_demo_report_draft_starts_empty_and_the_editor_offers_the_chest_film_template() -> None:
    seed()
    consult = Consult.objects.get(status=Status.IN_PROGRESS)
    draft = consult.report.versions.get()
    assert (draft.findings, draft.impression) == ("", "")  # a template only when the reader picks one
    template = ReportTemplate.objects.get(modality="DX")
    editor = client_for(consult.owner).get(f"/consults/{consult.pk}/report/?template={template.pk}")
    assert "双肺" in editor.content.decode() and template.impression in editor.content.decode()


def test_demo_radiologist_sees_the_living_worklist_and_the_signed_pdf() -> None:
    seed()
    radiologist = Consult.objects.get(status=Status.IN_PROGRESS).owner
    tabs = dict(client_for(radiologist).get("/consults/").context["tabs"])
    assert tabs == {"unclaimed": 1, "mine": 1, "signed": 1}
    signed = Consult.objects.get(status=Status.COMPLETED)
    response = client_for(signed.requester).get(f"/consults/{signed.pk}/report.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"


def test_seed_demo_keeps_a_list_of_critical_findings_once() -> None:
    seed()
    expected = {(m, n) for m, names in CRITICAL_FINDINGS.items() for n in names}
    assert set(CriticalFinding.objects.values_list("modality", "name")) == expected
    assert {"CT", "DX"} <= {m for m, _n in expected}
    seed()
    assert CriticalFinding.objects.count() == len(expected)
