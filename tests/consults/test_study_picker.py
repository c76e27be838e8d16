"""The consult form's study picker searches instead of listing every study, shows names as the
site does, and shows the deadline of each priority; a second opinion carries the question over
and does not offer the first reader."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.urls import reverse

from alliance.models import AuditEvent
from consults.models import PriorityPolicy, Status
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import StudyFactory, make_pool


def en_client(doctor: Any) -> Any:
    client = client_for(doctor)
    client.cookies["django_language"] = "en"
    return client


@pytest.fixture
def studies(world: Any) -> list[Any]:
    return [
        StudyFactory(
            institution=world.clin_a,
            patient__name="WANG^XIAOMING=王^小明",
            patient__patient_id="CLA-0001",
            study_date=date(2026, 1, 5),
            modalities="CT",
        ),
        StudyFactory(
            institution=world.clin_a,
            patient__name="LI^NA=李^娜",
            patient__patient_id="CLA-0002",
            study_date=date(2026, 2, 5),
            modalities="MR",
        ),
        StudyFactory(institution=world.clin_b, patient__name="WANG^XIAOMING", patient__patient_id="CLB-0001"),
    ]


def search(doctor: Any, **params: str) -> Any:
    return en_client(doctor).get(reverse("consults:study_search"), params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "王小明"}, [0]),
        ({"q": "wang xiaoming"}, [0]),
        ({"q": "cla-0002"}, [1]),
        ({"q": "CLA"}, [1, 0]),
        ({"date": "2026-02-05"}, [1]),
        ({"modality": "CT"}, [0]),
        ({"q": "wang", "modality": "MR"}, []),
    ],
)
def test_picker_finds_own_studies_by_name_id_date_and_modality(
    world: Any, studies: list[Any], params: dict[str, str], expected: list[int]
) -> None:
    response = search(world.owner, **params)
    assert response.status_code == 200
    assert [s["study_uid"] for s in response.json()["studies"]] == [studies[i].study_uid for i in expected]


def test_picker_shows_names_as_the_site_does_never_the_raw_pn(world: Any, studies: list[Any]) -> None:
    [found] = search(world.owner, q="CLA-0001").json()["studies"]
    assert found["patient"] == "王小明 (WANG XIAOMING)"
    assert "^" not in found["label"]
    assert found["label"].startswith("王小明 (WANG XIAOMING) · CLA-0001")


def test_picker_never_offers_another_institutions_study(world: Any, studies: list[Any]) -> None:
    assert [s["patient_id"] for s in search(world.owner, q="xiaoming").json()["studies"]] == ["CLA-0001"]
    assert search(world.stranger, q="CLA").json()["studies"] == []


def test_picker_refuses_a_doctor_without_a_clinical_role_and_a_bad_date(world: Any, studies: list[Any]) -> None:
    assert search(world.alliance_admin, q="wang").status_code == 403
    bad = search(world.owner, date="5 Feb")
    assert bad.status_code == 400
    assert "date" in bad.json()["errors"]


def test_picker_audits_the_studies_it_shows(world: Any, studies: list[Any]) -> None:
    search(world.owner, q="CLA-0002")
    event = AuditEvent.objects.get(action="study.list")
    assert (event.object_id, event.detail) == (studies[1].study_uid, {"via": "consult-picker"})


def test_form_lists_no_study_until_a_search_and_then_only_matches(world: Any, studies: list[Any]) -> None:
    page = en_client(world.owner).get(reverse("consults:new")).content.decode()
    assert 'name="studies"' not in page
    found = en_client(world.owner).get(reverse("consults:new"), {"find": "1", "q": "李娜"}).content.decode()
    assert f'name="studies" value="{studies[1].pk}"' in found
    assert f'name="studies" value="{studies[0].pk}"' not in found
    assert "李娜 (LI NA) · CLA-0002" in found
    assert "LI^NA" not in found


def test_form_opened_from_a_study_has_it_ticked(world: Any, studies: list[Any]) -> None:
    page = en_client(world.owner).get(reverse("consults:new"), {"study": studies[0].study_uid}).content.decode()
    assert f'name="studies" value="{studies[0].pk}" checked' in page


def test_form_accepts_a_study_older_than_any_list(world: Any, studies: list[Any]) -> None:
    response = en_client(world.owner).post(
        reverse("consults:new"),
        {"studies": [studies[1].pk], "question": "Lesion?", "priority": "routine", "pool": world.pool.pk, "send": "1"},
    )
    assert response.status_code == 302


def test_form_shows_each_priority_with_the_deadline_in_force(world: Any) -> None:
    PriorityPolicy.objects.create(
        alliance=world.alliance, priority="urgent", deadline_minutes=300, claim_timeout_minutes=60
    )
    page = en_client(world.owner).get(reverse("consults:new")).content.decode()
    block = page[page.index('id="priority-deadlines"') :]
    block = block[: block.index("</ul>")]
    assert 'data-priority="urgent"' in block and "answer within 5 h" in block
    assert 'data-priority="stat"' in block and "answer within 1 h" in block  # DEFAULT_POLICY
    assert 'class="cs-deadline-chosen"' in block


def test_second_opinion_carries_the_question_and_leaves_out_the_first_reader(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    other_pool = make_pool(institution=world.hosp, members=[world.outsider_specialist], name="Second desk")
    response = en_client(world.owner).get(reverse("consults:second_opinion", args=[consult.pk]))
    form = response.context["form"]
    assert form["question"].value() == consult.question
    assert world.specialist not in form.fields["specialist"].queryset
    assert world.outsider_specialist in form.fields["specialist"].queryset
    assert world.pool not in form.fields["pool"].queryset
    assert other_pool in form.fields["pool"].queryset
