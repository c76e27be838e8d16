"""The study list and study page show each study's consults and referrals with their state and
the signed report (imaging.study_cases, filled by consults and referrals); the list searches and
sorts by date."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import services
from consults.models import Status
from imaging.views import STUDIES_PER_PAGE
from referrals import services as referral_services
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import StudyFactory

LIST = "/imaging/studies/"


def en_client(doctor: Any) -> Any:
    client = client_for(doctor)
    client.cookies["django_language"] = "en"
    return client


def row_of(response: Any, study: Any) -> Any:
    return next(r for r in response.context["rows"] if r.study.pk == study.pk)


def refer(world: Any, study: Any) -> Any:
    owner = resolve_principal(world.owner.user)
    referral = referral_services.referral_create(
        by=owner, studies=[study], direction="up", to_institution=world.hosp, reason="Surgery?", urgency="routine"
    )
    return referral_services.referral_request(referral=referral, by=owner)


def test_list_shows_signed_report_with_links_to_open_it_and_its_pdf(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    response = en_client(world.owner).get(LIST)
    row = row_of(response, study)
    assert row.report_status == "signed"
    page = response.content.decode()
    assert f'href="/consults/{consult.pk}/#report"' in page
    assert f'href="/consults/{consult.pk}/report.pdf"' in page
    assert f"Consult #{consult.pk} · Completed" in page


def test_list_shows_awaiting_report_while_the_consult_is_open(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    row = row_of(en_client(world.owner).get(LIST), consult.studies.get())
    assert row.report_status == "pending"
    assert [(c.kind, c.number, str(c.state)) for c in row.cases] == [("consult", consult.pk, "In progress")]


def test_study_without_cases_has_no_report(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    row = row_of(en_client(world.owner).get(LIST), study)
    assert (row.report_status, row.cases) == ("none", [])


def test_a_draft_consult_is_shown_only_to_its_author(world: Any) -> None:
    draft = walk(world, Status.DRAFT)
    study = draft.studies.get()
    assert [c.number for c in row_of(en_client(world.owner).get(LIST), study).cases] == [draft.pk]
    assert row_of(en_client(world.colleague).get(LIST), study).cases == []


def test_study_page_lists_consults_and_referrals_with_their_state(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    referral = refer(world, study)
    page = en_client(world.owner).get(reverse("imaging:study_detail", args=[study.study_uid])).content.decode()
    block = page[page.index('id="study-cases"') :]
    assert f'data-case-kind="consult" data-case-number="{consult.pk}"' in block
    assert f'data-case-kind="referral" data-case-number="{referral.pk}"' in block
    assert "Requested" in block
    assert f"/consults/{consult.pk}/report.pdf" in block


def test_specialist_sees_the_consult_on_the_shared_study(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    page = en_client(world.specialist).get(reverse("imaging:study_detail", args=[study.study_uid]))
    assert [c.number for c in page.context["study_cases"]] == [consult.pk]


def cases_everywhere(world: Any, count: int) -> None:
    owner = resolve_principal(world.owner.user)
    for _n in range(count):
        study = StudyFactory(institution=world.clin_a, series=0)
        services.consult_create(
            by=owner,
            studies=[study],
            question="Nodule?",
            history="",
            priority="routine",
            pool=world.pool,
            specialist=None,
        )
        refer(world, study)


def test_study_list_with_cases_does_not_grow_with_studies(world: Any, django_assert_max_num_queries: Any) -> None:
    client = en_client(world.owner)
    cases_everywhere(world, 2)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(LIST).status_code == 200
    few = len(captured.captured_queries)
    cases_everywhere(world, STUDIES_PER_PAGE)
    with django_assert_max_num_queries(few):
        response = client.get(LIST)
    rows = response.context["rows"]
    assert len(rows) == STUDIES_PER_PAGE
    assert all({c.kind for c in r.cases} == {"consult", "referral"} for r in rows)


@pytest.fixture
def named_studies(world: Any) -> list[Any]:
    return [
        StudyFactory(
            institution=world.clin_a,
            patient__name="WANG^XIAOMING=王^小明",
            patient__patient_id="CLA-0001",
            accession_number="ACC-77",
            study_date=date(2026, 1, 5),
        ),
        StudyFactory(
            institution=world.clin_a,
            patient__name="Wang Xiaoming",
            patient__patient_id="CLA-0002",
            accession_number="ACC-78",
            study_date=date(2026, 2, 5),
        ),
        StudyFactory(
            institution=world.clin_a,
            patient__name="LI^NA=李^娜",
            patient__patient_id="CLA-0003",
            accession_number="ACC-79",
            study_date=date(2026, 3, 5),
        ),
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"patient_name": "王小明"}, [0]),
        ({"patient_name": "小明"}, [0]),
        ({"patient_name": "Wang Xiaoming"}, [1, 0]),
        ({"patient_name": "xiaoming"}, [1, 0]),
        ({"patient_name": "李娜"}, [2]),
        ({"patient_id": "cla-0003"}, [2]),
        ({"accession": "ACC-78"}, [1]),
        ({"sort": "oldest"}, [0, 1, 2]),
        ({"sort": "newest"}, [2, 1, 0]),
        ({}, [2, 1, 0]),
    ],
)
def test_search_by_name_id_accession_and_sort_by_date(
    world: Any, named_studies: list[Any], params: dict[str, str], expected: list[int]
) -> None:
    response = en_client(world.owner).get(LIST, params)
    assert [r.study.pk for r in response.context["rows"]] == [named_studies[i].pk for i in expected]


def test_date_header_link_turns_the_order_and_keeps_the_search(world: Any, named_studies: list[Any]) -> None:
    response = en_client(world.owner).get(LIST, {"patient_name": "wang", "page": "1"})
    assert response.context["date_sort_url"] == "?patient_name=wang&sort=oldest"
    again = en_client(world.owner).get(LIST, {"patient_name": "wang", "sort": "oldest"})
    assert again.context["date_sort_url"] == "?patient_name=wang&sort=newest"
    assert 'aria-sort="ascending"' in again.content.decode()


def test_the_cases_shown_beside_studies_are_audited_as_the_studies_are(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    referral = refer(world, study)
    draft = walk(world, Status.DRAFT)  # shown to its author only
    en_client(world.owner).get(LIST)
    en_client(world.owner).get(reverse("imaging:study_detail", args=[study.study_uid]))
    events = AuditEvent.objects.filter(action__in=["consult.list", "referral.list"], actor_id=str(world.owner.user.pk))
    seen = sorted((e.action, e.object_id, e.patient, e.basis, e.detail["via"]) for e in events)
    patient = str(study.patient_id)
    expected = [
        (f"{kind}.list", str(number), patient, f"{kind}:{number}", via)
        for kind, number in (("consult", consult.pk), ("referral", referral.pk))
        for via in ("study-list", "study-page")
    ]
    draft_patient = str(draft.studies.get().patient_id)
    assert seen == sorted(
        [*expected, ("consult.list", str(draft.pk), draft_patient, f"consult:{draft.pk}", "study-list")]
    )
    en_client(world.colleague).get(LIST)
    by_colleague = AuditEvent.objects.filter(action="consult.list", actor_id=str(world.colleague.user.pk))
    assert sorted(e.object_id for e in by_colleague) == [str(consult.pk)]
    assert str(draft.pk) not in {e.object_id for e in by_colleague}
