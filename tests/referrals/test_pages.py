"""The referral pages, per persona: lists, the form, the case page and its actions, the desk's
calendar and desk page, the navigation and home page, and the module switch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from alliance import services as alliance_services
from alliance.models import AuditEvent
from referrals.models import DeskMember, Referral, Status
from tests.conftest import client_for as _client_for
from tests.factories import SYSTEM, StudyFactory
from tests.referrals.ui_helpers import FEEDBACK, REASON, tomorrow_at, walk


def client_for(doctor: Any) -> Any:
    """A signed-in client that reads the pages in English (the default language is Chinese)."""
    client = _client_for(doctor)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def world(alliance_world: Any) -> Any:
    return alliance_world


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _form_post(world: Any, study: Any, **overrides: Any) -> dict[str, Any]:
    data = {
        "studies": [study.pk],
        "direction": "up",
        "to_institution": world.hosp.pk,
        "reason": "胸痛待查",
        "summary": "劳力性胸痛两周",
        "urgency": "urgent",
        "send": "1",
    }
    data.update(overrides)
    return data


# --- the new-referral form ----------------------------------------------------------------------


def test_clinician_refers_a_patient_up_with_a_study_through_the_form(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    client = client_for(world.owner)
    page = client.get("/referrals/new/", {"study": study.study_uid})
    body = page.content.decode()
    assert page.status_code == 200
    assert study.patient.patient_id in body
    assert page.context["form"].initial["studies"] == [study.pk]
    assert 'data-direction="up"' in body and "Lead Hospital" in body
    assert "Clinic B" in body  # a same-level peer is offered, under "same"
    response = client.post("/referrals/new/", _form_post(world, study))
    referral = Referral.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/referrals/{referral.pk}/"
    assert referral.status == Status.REQUESTED and referral.urgency == "urgent"
    assert list(referral.studies.all()) == [study] and referral.patient == study.patient


def test_urgency_choices_show_the_answer_time(world: Any) -> None:
    body = client_for(world.owner).get("/referrals/new/").content.decode()
    assert "Emergency · desk answers within 2 h" in body
    assert "Routine · desk answers within 72 h" in body


def test_draft_is_saved_without_sending(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    data = _form_post(world, study)
    del data["send"]
    data["draft"] = "1"
    client_for(world.owner).post("/referrals/new/", data)
    assert Referral.objects.get().status == Status.DRAFT


def test_form_errors_name_the_field_and_nothing_is_saved(world: Any) -> None:
    response = client_for(world.owner).post("/referrals/new/", {"direction": "up", "urgency": "routine", "send": "1"})
    assert response.status_code == 200
    assert {"reason", "to_institution"} <= set(response.context["form"].errors)
    assert not Referral.objects.exists()


def test_direction_contradicting_the_levels_is_refused_naming_the_field(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    response = client_for(world.owner).post("/referrals/new/", _form_post(world, study, direction="down"))
    assert response.status_code == 200
    assert "direction" in response.context["form"].errors
    assert not Referral.objects.exists()


def test_a_patient_without_images_is_typed_and_registered_under_the_clinic(world: Any) -> None:
    data = _form_post(world, StudyFactory(institution=world.clin_a), patient_id="QS-778", patient_name="Li^Wei")
    data["studies"] = []
    response = client_for(world.owner).post("/referrals/new/", data)
    referral = Referral.objects.get()
    assert response.status_code == 302
    assert referral.patient.patient_id == "QS-778" and referral.patient.issuer == world.clin_a
    assert not referral.studies.exists()


def test_form_offers_only_the_clinics_own_studies(world: Any) -> None:
    mine, theirs = StudyFactory(institution=world.clin_a), StudyFactory(institution=world.clin_b)
    body = client_for(world.owner).get("/referrals/new/").content.decode()
    assert mine.patient.patient_id in body and theirs.patient.patient_id not in body


# --- lists ----------------------------------------------------------------------------------------


def test_outgoing_and_incoming_lists_have_tabs_with_counts(world: Any) -> None:
    walk(world, Status.REQUESTED)
    walk(world, Status.ACCEPTED)
    walk(world, Status.COMPLETED)
    walk(world, Status.DRAFT)
    out = client_for(world.owner).get("/referrals/outgoing/")
    assert {name: count for name, _label, count in out.context["tabs"]} == {
        "waiting": 1,
        "appointments": 1,
        "in_care": 0,
        "closed": 1,
        "drafts": 1,
    }
    assert len(out.context["rows"]) == 1 and out.context["tab"] == "waiting"
    incoming = client_for(world.hosp_admin).get("/referrals/incoming/?tab=appointments")
    assert {name: count for name, _label, count in incoming.context["tabs"]} == {
        "waiting": 1,
        "appointments": 1,
        "in_care": 0,
        "closed": 1,
    }
    assert [r.status for r in incoming.context["rows"]] == [Status.ACCEPTED]
    assert "心血管内科" in incoming.content.decode()


def test_a_colleague_sees_the_clinics_referrals_but_not_anothers_draft(world: Any) -> None:
    walk(world, Status.REQUESTED)
    walk(world, Status.DRAFT)
    tabs = {
        name: count for name, _label, count in client_for(world.colleague).get("/referrals/outgoing/").context["tabs"]
    }
    assert tabs["waiting"] == 1 and tabs["drafts"] == 0


@pytest.mark.parametrize("persona", ["stranger", "inst_admin_a"])
def test_people_of_other_institutions_see_nothing_incoming(world: Any, persona: str) -> None:
    walk(world, Status.REQUESTED)
    response = client_for(getattr(world, persona)).get("/referrals/incoming/")
    assert response.status_code == 200 and list(response.context["rows"]) == []


def test_desk_lands_on_incoming_and_referrer_on_outgoing(world: Any) -> None:
    assert client_for(world.hosp_admin).get("/referrals/")["Location"] == "/referrals/incoming/"
    assert client_for(world.owner).get("/referrals/")["Location"] == "/referrals/outgoing/"


def test_a_bad_filter_date_gives_a_message_naming_the_field(world: Any) -> None:
    walk(world, Status.REQUESTED)
    response = client_for(world.owner).get("/referrals/outgoing/", {"date_from": "2026-13-45"})
    assert response.status_code == 200
    assert any(m.startswith("From date:") for m in _messages(response)), _messages(response)


def test_filters_by_patient_direction_and_dates(world: Any) -> None:
    one = walk(world, Status.REQUESTED)
    walk(world, Status.REQUESTED)
    client = client_for(world.hosp_admin)
    by_patient = client.get("/referrals/incoming/", {"patient": one.patient.patient_id})
    assert [r.pk for r in by_patient.context["rows"]] == [one.pk]
    assert len(client.get("/referrals/incoming/", {"direction": "down"}).context["rows"]) == 0
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert len(client.get("/referrals/incoming/", {"date_from": tomorrow}).context["rows"]) == 0
    today = timezone.localdate().isoformat()
    assert len(client.get("/referrals/incoming/", {"date_from": today, "date_to": today}).context["rows"]) == 2


def test_list_pages_take_the_same_number_of_queries_for_3_and_30_referrals(
    world: Any, django_assert_max_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(client: Any, url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    study = StudyFactory(institution=world.clin_a)
    for _ in range(3):
        walk(world, Status.ACCEPTED, study=study)
    desk, owner = client_for(world.hosp_admin), client_for(world.owner)
    few = (
        queries(desk, "/referrals/incoming/?tab=appointments"),
        queries(owner, "/referrals/outgoing/?tab=appointments"),
    )
    for _ in range(27):
        walk(world, Status.ACCEPTED, study=study)
    many = (
        queries(desk, "/referrals/incoming/?tab=appointments"),
        queries(owner, "/referrals/outgoing/?tab=appointments"),
    )
    assert few == many, (few, many)
    with django_assert_max_num_queries(20):
        desk.get("/referrals/incoming/?tab=appointments&page=2")


def test_list_views_are_audited_per_row_shown(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    client_for(world.hosp_admin).get("/referrals/incoming/")
    event = AuditEvent.objects.get(action="referral.list")
    assert event.object_id == str(referral.pk) and event.basis == referral.basis


# --- the case page --------------------------------------------------------------------------------


def _actions(response: Any) -> list[str]:
    return [name for name, _form in response.context["action_forms"]]


def test_case_page_shows_each_persona_only_its_moves(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    url = f"/referrals/{referral.pk}/"
    assert _actions(client_for(world.hosp_admin).get(url)) == ["accept", "propose", "reject"]
    assert _actions(client_for(world.owner).get(url)) == ["cancel"]
    assert _actions(client_for(world.colleague).get(url)) == []
    assert _actions(client_for(world.specialist).get(url)) == []
    assert client_for(world.stranger).get(url).status_code == 404
    assert client_for(world.alliance_admin).get(url).status_code == 404


def test_case_page_shows_patient_studies_with_thumbnails_summary_and_history(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    study = referral.studies.get()
    body = client_for(world.hosp_admin).get(f"/referrals/{referral.pk}/").content.decode()
    assert referral.patient.patient_id in body and "男，58岁，劳力性胸痛两周。" in body
    assert f"/imaging/studies/{study.study_uid}/series/" in body and "thumbnail.jpg" in body
    assert "/viewer/" in body
    assert 'id="appointment"' in body and "心血管内科" in body
    assert "Accepted with an appointment" in body or "已接诊" in body
    assert AuditEvent.objects.filter(action="referral.view", object_id=str(referral.pk)).exists()


def test_desk_accepts_marks_arrival_and_completes_through_the_pages(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    desk = client_for(world.hosp_admin)
    at = tomorrow_at(10).strftime("%Y-%m-%dT%H:%M")
    response = desk.post(f"/referrals/{referral.pk}/accept/", {"appointment_at": at, "department": "心内科"})
    assert response.status_code == 302
    referral.refresh_from_db()
    assert referral.status == Status.ACCEPTED and referral.department == "心内科"
    desk.post(f"/referrals/{referral.pk}/arrive/", {"patient_id": "H-2026-0042"})
    referral.refresh_from_db()
    assert referral.status == Status.IN_PROGRESS and referral.receiving_patient.patient_id == "H-2026-0042"
    desk.post(f"/referrals/{referral.pk}/complete/", {"summary": FEEDBACK, "confirm": "on"})
    referral.refresh_from_db()
    assert referral.status == Status.COMPLETED and referral.feedback == FEEDBACK
    owner_page = client_for(world.owner).get(f"/referrals/{referral.pk}/").content.decode()
    assert FEEDBACK in owner_page and 'id="feedback"' in owner_page


def test_an_irreversible_move_without_the_confirmation_changes_nothing(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    response = client_for(world.hosp_admin).post(f"/referrals/{referral.pk}/reject/", {"reason": "床位已满"})
    assert response.status_code == 302
    assert any("confirm" in m.lower() or "确认" in m for m in _messages(response))
    referral.refresh_from_db()
    assert referral.status == Status.REQUESTED


def test_an_appointment_in_the_past_is_refused_naming_the_field(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    past = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = client_for(world.hosp_admin).post(
        f"/referrals/{referral.pk}/accept/", {"appointment_at": past, "department": "心内科"}
    )
    assert any(m.startswith("Appointment:") for m in _messages(response)), _messages(response)
    referral.refresh_from_db()
    assert referral.status == Status.REQUESTED


def test_an_action_out_of_turn_shows_why_and_changes_nothing(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    response = client_for(world.owner).post(f"/referrals/{referral.pk}/arrive/", {}, follow=True)
    assert response.status_code == 200
    assert _messages(response) or "may not" in response.content.decode()
    referral.refresh_from_db()
    assert referral.status == Status.REQUESTED


def test_proposal_and_agreement_through_the_pages(world: Any) -> None:
    referral = walk(world, Status.ON_HOLD)
    owner = client_for(world.owner)
    page = owner.get(f"/referrals/{referral.pk}/")
    assert _actions(page) == ["agree", "cancel"]
    owner.post(f"/referrals/{referral.pk}/agree/")
    referral.refresh_from_db()
    assert referral.status == Status.REQUESTED and referral.wished_date is not None


def test_the_two_sides_exchange_messages(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    client_for(world.hosp_admin).post(f"/referrals/{referral.pk}/messages/", {"body": "请带既往心电图。"})
    body = client_for(world.owner).get(f"/referrals/{referral.pk}/").content.decode()
    assert "请带既往心电图。" in body


def test_refer_back_down_is_offered_on_a_completed_referral_and_prefills_the_form(world: Any) -> None:
    referral = walk(world, Status.COMPLETED)
    page = client_for(world.hosp_admin).get(f"/referrals/{referral.pk}/")
    assert page.context["may_refer_back"] and f"?based_on={referral.pk}" in page.content.decode()
    assert not client_for(world.owner).get(f"/referrals/{referral.pk}/").context["may_refer_back"]
    form = client_for(world.hosp_admin).get(f"/referrals/new/?based_on={referral.pk}")
    assert form.status_code == 200
    assert form.context["form"].initial["direction"] == "down"
    assert form.context["form"].initial["to_institution"] == world.clin_a.pk
    assert form.context["form"].initial["summary"] == FEEDBACK
    response = client_for(world.hosp_admin).post(
        f"/referrals/new/?based_on={referral.pk}",
        {
            "direction": "down",
            "to_institution": world.clin_a.pk,
            "reason": "康复期社区随访",
            "summary": FEEDBACK,
            "urgency": "routine",
            "send": "1",
        },
    )
    down = Referral.objects.get(based_on=referral)
    assert response.status_code == 302 and down.direction == "down" and down.patient == referral.patient
    assert down.status == Status.REQUESTED


# --- the desk ----------------------------------------------------------------------------------------


def test_desk_calendar_shows_the_appointments_by_day_and_week(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    day = timezone.localtime(referral.appointment_at).date().isoformat()
    desk = client_for(world.hosp_admin)
    week = desk.get("/referrals/calendar/", {"view": "week", "date": day})
    assert week.status_code == 200 and len(week.context["days"]) == 7
    assert f"/referrals/{referral.pk}/" in week.content.decode()
    one = desk.get("/referrals/calendar/", {"view": "day", "date": day})
    assert [r.pk for _d, rows in one.context["days"] for r in rows] == [referral.pk]
    other_day = (timezone.localtime(referral.appointment_at).date() + timedelta(days=1)).isoformat()
    assert desk.get("/referrals/calendar/", {"view": "day", "date": other_day}).context["count"] == 0
    assert client_for(world.owner).get("/referrals/calendar/").status_code == 403


def test_institution_admin_names_a_desk_doctor_who_may_then_accept(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    admin = client_for(world.hosp_admin)
    page = admin.get("/referrals/desk/")
    assert page.status_code == 200
    admin.post("/referrals/desk/", {"doctor": world.specialist.pk})
    assert DeskMember.objects.filter(institution=world.hosp, doctor=world.specialist).exists()
    assert _actions(client_for(world.specialist).get(f"/referrals/{referral.pk}/")) == ["accept", "propose", "reject"]
    admin.post(f"/referrals/desk/{world.specialist.pk}/remove/")
    assert not DeskMember.objects.exists()
    assert client_for(world.specialist).get("/referrals/desk/").status_code == 403


# --- navigation, home page, consults and the module switch ---------------------------------------


def test_navigation_and_home_show_what_waits_for_the_desk(world: Any) -> None:
    walk(world, Status.REQUESTED)
    walk(world, Status.REQUESTED)
    home = client_for(world.hosp_admin).get("/")
    body = home.content.decode()
    assert 'id="nav-referrals"' in body
    assert home.context["referrals_waiting"]["incoming"] == 2
    assert 'id="home-referrals-incoming"' in body


def test_home_page_shows_the_summary_returned_until_the_referrer_opens_it(world: Any) -> None:
    referral = walk(world, Status.COMPLETED)
    owner = client_for(world.owner)
    body = owner.get("/").content.decode()
    assert 'id="home-summaries"' in body and FEEDBACK[:20] in body
    owner.get(f"/referrals/{referral.pk}/")
    assert 'id="home-summaries"' not in owner.get("/").content.decode()


def test_a_completed_consult_offers_refer_this_patient_prefilled_from_the_report(world: Any) -> None:
    from tests.consults.conftest import walk as walk_consult

    consult = walk_consult(world, "completed")
    page = client_for(world.owner).get(f"/consults/{consult.pk}/").content.decode()
    assert f"/referrals/new/?consult={consult.pk}" in page
    specialist_page = client_for(world.specialist).get(f"/consults/{consult.pk}/").content.decode()
    assert f"/referrals/new/?consult={consult.pk}" not in specialist_page
    form = client_for(world.owner).get(f"/referrals/new/?consult={consult.pk}")
    assert form.status_code == 200
    assert form.context["form"].initial["studies"] == [consult.studies.get().pk]


def test_switching_the_module_off_removes_every_referral_page(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    modules = [m for m in world.clin_a.modules if m != "referrals"]
    alliance_services.institution_update(institution=world.clin_a, by=SYSTEM, modules=modules)
    owner = client_for(world.owner)
    for url in (
        "/referrals/",
        "/referrals/outgoing/",
        "/referrals/new/",
        f"/referrals/{referral.pk}/",
        f"/referrals/{referral.pk}/slip.pdf",
    ):
        assert owner.get(url).status_code == 404, url
    assert owner.post(f"/referrals/{referral.pk}/cancel/", {"reason": "x", "confirm": "on"}).status_code == 404
    home = owner.get("/").content.decode()
    assert 'id="nav-referrals"' not in home and 'id="home-referrals"' not in home
    assert REASON not in home


def test_notifications_list_the_moves_and_opening_one_marks_it_read(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    owner = client_for(world.owner)
    page = owner.get("/referrals/notifications/")
    body = page.content.decode()
    assert "Accepted with an appointment" in body and f"referral #{referral.pk}" in body
    notice = page.context["page"][0]
    assert owner.get(f"/referrals/notifications/{notice.pk}/")["Location"] == f"/referrals/{referral.pk}/"
    notice.refresh_from_db()
    assert notice.read_at is not None
    assert client_for(world.stranger).get(f"/referrals/notifications/{notice.pk}/").status_code == 404


def test_the_study_page_offers_a_referral_to_the_owning_clinic_only(world: Any) -> None:
    study = walk(world, Status.REQUESTED).studies.get()
    offers = {
        persona: f"/referrals/new/?study={study.study_uid}"
        in client_for(getattr(world, persona)).get(f"/imaging/studies/{study.study_uid}/").content.decode()
        for persona in ("owner", "hosp_admin")
    }
    assert offers == {"owner": True, "hosp_admin": False}


def test_the_console_links_the_institution_admin_to_the_referral_desk(world: Any) -> None:
    page = client_for(world.hosp_admin).get(f"/manage/institutions/{world.hosp.pk}/")
    assert page.status_code == 200 and 'id="manage-referral-desk"' in page.content.decode()


def test_case_history_names_the_system_for_a_move_nobody_made(world: Any) -> None:
    """A move with no user (a job's) reads "system" in the history instead of breaking the page."""
    from referrals.models import ReferralTransition

    referral = walk(world, Status.ACCEPTED)
    ReferralTransition.objects.create(
        referral=referral,
        action="remind",
        from_status=Status.ACCEPTED,
        to_status=Status.ACCEPTED,
        by=None,
        at=timezone.now(),
    )
    response = client_for(world.hosp_admin).get(f"/referrals/{referral.pk}/")
    assert response.status_code == 200
    history = response.content.decode().split('id="history"')[1]
    assert "<td>system</td>" in history
