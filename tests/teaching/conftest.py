"""A teaching world on top of alliance_world: the hospital's own CT (three slices) and
radiograph, read by its specialist, who makes cases of them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from alliance.access import resolve_principal
from consults.teaching import diseases, services
from consults.teaching.models import Disease, TeachingCase
from imaging.ingest import ingest_bytes
from tests.factories import SYSTEM, store_ct_study
from tests.imaging.dicomgen import part10_bytes

PATIENT_ID, PATIENT_NAME = "H-7781", "Zhang^Wei=张^伟"


@pytest.fixture(autouse=True)
def _kept_diseases(request: pytest.FixtureRequest) -> None:
    """The kept list its migration seeds: a transactional test run before this one emptied
    every table, that list with them."""
    if request.node.get_closest_marker("django_db") is not None:
        diseases.ensure_kept_list()


def principal(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


def ingest(datasets: list[Any], institution: Any) -> Any:
    results = [ingest_bytes(part10_bytes(ds), institution=institution, actor=SYSTEM, via="test") for ds in datasets]
    return results[0].study


@pytest.fixture
def teaching(alliance_world: Any) -> SimpleNamespace:
    w = alliance_world
    study = store_ct_study(w.hosp, slices=3, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, accession_number="ACC-9")
    return SimpleNamespace(world=w, study=study, author=w.specialist, by=principal(w.specialist))


def make_case(t: SimpleNamespace, *, title: str = "Chest CT, cough", **changes: Any) -> TeachingCase:
    series_uid = t.study.series.get().series_uid
    return services.case_create(by=t.by, study=t.study, series_uids=[series_uid], key_sop_uids=[], title=title)


def ready(case: TeachingCase, by: Any, **changes: Any) -> TeachingCase:
    """Fill in what publishing asks for, with a quiz."""
    answer, *wrong = Disease.objects.filter(body_part="chest").order_by("code")[:4]
    fields: dict[str, Any] = {
        "title": case.title,
        "question": "What do you see?",
        "findings": "A round opacity in the right upper lobe.",
        "diagnosis": "Community-acquired pneumonia.",
        "discussion": "Air bronchograms favour consolidation.",
        "modality": "CT",
        "body_part": "chest",
        "difficulty": "introductory",
        "diseases": [answer],
        "answer": answer,
        "distractors": wrong,
    }
    fields.update(changes)
    return services.case_update(case=case, by=by, **fields)


def published(t: SimpleNamespace, **changes: Any) -> TeachingCase:
    case = ready(make_case(t), t.by, **changes)
    return services.case_publish(case=case, by=t.by)
