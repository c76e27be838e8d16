"""seed_demo's teaching case: the signed brain MR consult, published with a quiz, once."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

import demo.imaging
from alliance.models import Institution
from consults.teaching.models import Status, TeachingCase
from demo import synthetic
from demo.teaching import TITLE
from tests.factories import SYSTEM, StudyFactory
from tests.imaging.dicomgen import part10_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_demo_studies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Light demo studies: a real three-slice brain MR at Qingshan (the teaching case copies its
    files), index rows for the rest."""
    from imaging.ingest import ingest_bytes

    def load(*, stdout: Any, actor: Any) -> None:
        clinic = Institution.objects.get(ae_title="QINGSHAN")
        if clinic.studies.exists():
            return
        mr = next(s for s in demo.imaging.demo_studies_for(clinic) if s.kind == "mr")
        for ds in synthetic.mr_series(mr.info, slices=3, size=64):
            ingest_bytes(part10_bytes(ds), institution=clinic, actor=SYSTEM, via="test")
        for modality in ("CT", "DX"):
            StudyFactory(institution=clinic, modalities=modality, series__body_part="CHEST")

    monkeypatch.setattr(demo.imaging, "load", load)


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_seed_demo_publishes_one_teaching_case_once() -> None:
    assert "Demo teaching case: 1 new (published)." in seed()
    assert "Demo teaching case: 0 new." in seed()
    case = TeachingCase.objects.get()
    assert case.title == TITLE and case.status == Status.PUBLISHED and case.has_quiz
    assert case.images.count() == 3 and case.author.user.username == "radiologist"
    patient = Institution.objects.get(ae_title="QINGSHAN").studies.get(modalities="MR").patient
    assert patient.name.split("=")[1].replace("^", "") not in case.findings + case.discussion
