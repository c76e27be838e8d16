"""What waits for a doctor on the home page: the consults' selectors and lines (alliance.open_work)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import clock, open_work, selectors, services
from consults.models import Notification, Status
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import PatientFactory, StudyFactory


def principal(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


def chinese_study(world: Any) -> Any:
    patient = PatientFactory(issuer=world.clin_a, patient_id="P-1001", name="WANG^FANG=王^芳")
    return StudyFactory(institution=world.clin_a, patient=patient)


def test_reader_question_waits_for_the_requesting_clinic_not_for_the_reader(world: Any) -> None:
    consult = walk(world, Status.ON_HOLD)
    for_clinic = selectors.questions_waiting(principal(world.colleague))
    assert [c.pk for c in for_clinic] == [consult.pk]
    assert for_clinic[0].last_message == "Any prior CT?"
    assert selectors.questions_waiting(principal(world.specialist)) == []
    assert selectors.questions_waiting(principal(world.stranger)) == []


def test_requester_answer_waits_for_the_reader_who_owns_the_case(world: Any) -> None:
    consult = walk(world, Status.ON_HOLD)
    services.consult_answer(consult=consult, by=principal(world.owner), answer="No prior CT.")
    assert [c.pk for c in selectors.questions_waiting(principal(world.specialist))] == [consult.pk]
    assert selectors.questions_waiting(principal(world.owner)) == []
    assert selectors.questions_waiting(principal(world.outsider_specialist)) == []


def test_question_line_names_the_patient_as_the_site_shows_it_and_the_question(world: Any) -> None:
    walk(world, Status.ON_HOLD, study=chinese_study(world))
    [item] = open_work.questions(principal(world.owner), None)
    assert item.patient == "王芳 (WANG FANG) · P-1001"
    assert "WANG^FANG" not in item.patient
    assert "Any prior CT?" in item.asked
    assert item.url.endswith(f"/consults/{item.audit_id}/")


def test_signed_reports_since_the_previous_visit_only(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    owner = principal(world.owner)
    assert [c.pk for c in selectors.reports_signed_since(owner, consult.completed_at - timedelta(minutes=1))] == [
        consult.pk
    ]
    assert selectors.reports_signed_since(owner, consult.completed_at + timedelta(minutes=1)) == []
    assert selectors.reports_signed_since(principal(world.colleague), None) == []  # not their request
    assert selectors.reports_signed_since(principal(world.specialist), None) == []


def test_case_near_its_deadline_is_listed_for_the_reader_and_the_requester(world: Any, monkeypatch: Any) -> None:
    near = walk(world, Status.ACCEPTED, priority="stat")
    walk(world, Status.ACCEPTED)  # routine: days left
    later = near.due_at - timedelta(seconds=near.deadline_seconds * 0.1)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert [c.pk for c, _d in selectors.near_deadline(principal(world.specialist))] == [near.pk]
    assert [c.pk for c, _d in selectors.near_deadline(principal(world.owner))] == [near.pk]
    assert selectors.near_deadline(principal(world.outsider_specialist)) == []
    assert selectors.near_deadline(principal(world.colleague)) == []  # not their request


def test_unclaimed_case_past_its_deadline_is_listed_for_the_pool(world: Any, monkeypatch: Any) -> None:
    consult = walk(world, Status.REQUESTED, priority="stat")
    monkeypatch.setattr(clock, "now", lambda: consult.due_at + timedelta(minutes=5))
    [(found, deadline)] = selectors.near_deadline(principal(world.specialist))
    assert found.pk == consult.pk
    assert deadline.state == "breached"
    [item] = open_work.deadlines(principal(world.specialist), None)
    assert item.state == "breached"


def test_case_with_time_to_spare_is_not_listed(world: Any) -> None:
    walk(world, Status.ACCEPTED, priority="stat")
    assert selectors.near_deadline(principal(world.specialist)) == []


def test_home_page_lists_open_work_and_audits_the_cases_it_shows(world: Any) -> None:
    consult = walk(world, Status.ON_HOLD, study=chinese_study(world))
    response = client_for(world.owner).get("/")
    page = response.content.decode()
    assert 'id="home-work-questions"' in page
    assert "王芳 (WANG FANG) · P-1001" in page
    assert "Any prior CT?" in page
    assert f"/consults/{consult.pk}/" in page
    listed = AuditEvent.objects.filter(action="consult.list", object_id=str(consult.pk), detail__via="home")
    assert listed.count() == 1


def test_home_page_says_when_nothing_waits(world: Any) -> None:
    page = client_for(world.colleague).get("/").content.decode()
    assert 'id="home-work-none"' in page
    assert 'id="home-work-questions"' not in page


def test_bell_list_shows_patient_case_and_what_happened_and_opens_the_case(world: Any) -> None:
    consult = walk(world, Status.ON_HOLD, study=chinese_study(world))
    client = client_for(world.owner)
    client.cookies["django_language"] = "en"
    page = client.get("/consults/notifications/").content.decode()
    item = page[page.index('id="notification-list"') :]
    item = item[: item.index("</li>")]
    assert "王芳 (WANG FANG) · P-1001" in item
    assert f"Consult #{consult.pk}" in item
    assert "Question to the requester" in item
    link = item[item.index('href="') + 6 :].split('"')[0]
    assert client.get(link).url == f"/consults/{consult.pk}/"
    shown = AuditEvent.objects.filter(action="consult.list", detail__via="notifications")
    assert [e.object_id for e in shown] == [str(consult.pk)]


def _notifications_page(doctor: Any) -> str:
    client = client_for(doctor)
    client.cookies["django_language"] = "en"
    page = client.get("/consults/notifications/").content.decode()
    return page[page.index('id="notification-list"') :]


def test_bell_list_names_no_patient_of_a_case_the_user_no_longer_sees(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED, study=chinese_study(world))
    services.consult_cancel(consult=consult, by=principal(world.owner), reason="Patient transferred.")
    shown = walk(world, Status.ACCEPTED)
    page = _notifications_page(world.specialist)  # the reader of both: told of the cancel
    assert f"Consult #{consult.pk}" in page and "Cancelled" in page and "no longer have access" in page
    assert "P-1001" not in page and "王芳" not in page
    assert f"/consults/notifications/{Notification.objects.get(consult=consult, verb='cancel').pk}/" not in page
    listed = AuditEvent.objects.filter(action="consult.list", detail__via="notifications")
    assert [e.object_id for e in listed] == [str(shown.pk)]


def test_bell_list_asks_the_same_queries_for_few_or_many_cases(world: Any, django_assert_max_num_queries: Any) -> None:
    client = client_for(world.specialist)
    for _n in range(2):
        walk(world, Status.ACCEPTED)
    with CaptureQueriesContext(connection) as few:
        client.get("/consults/notifications/")
    for _n in range(4):
        gone = walk(world, Status.ACCEPTED)
        services.consult_cancel(consult=gone, by=principal(world.owner), reason="Transferred.")
    with django_assert_max_num_queries(len(few)):
        client.get("/consults/notifications/")


def test_a_notice_of_a_critical_result_says_it_is_critical() -> None:
    assert all(Notification(verb=v).is_critical for v in ("critical", "critical_ack", "critical_escalate"))
    assert not any(Notification(verb=v).is_critical for v in ("claim", "sign", "message"))
