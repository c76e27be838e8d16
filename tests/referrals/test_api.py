"""/api/v1/referrals/: a script drives the whole workflow with the pages' rules
(201 with id and status, 400 naming the field, 403 wrong party or module off, 404 not
visible, 409 out of turn), and the list answers in a constant number of queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from alliance import audit
from alliance.models import AuditEvent
from alliance.services import institution_update
from imaging.models import PatientLink
from referrals.models import Referral, Status
from tests.factories import StudyFactory
from tests.referrals.conftest import tomorrow_at_nine, walk

pytestmark = pytest.mark.django_db

BASE = "/api/v1/referrals/"


def api_for(doctor: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(doctor.user)
    return client


def payload(study: Any, **extra: Any) -> dict[str, Any]:
    return {
        "studies": [study.study_uid],
        "direction": "up",
        "to_institution": "HOSP",
        "reason": "Suspected lung cancer.",
        "summary": "Cough for 3 weeks.",
        "urgency": "urgent",
        **extra,
    }


def act(client: APIClient, referral_id: int, action: str, **body: Any) -> Any:
    return client.post(f"{BASE}{referral_id}/{action}/", body, format="json")


def test_a_script_drives_a_referral_up_and_back_down(world) -> None:  # type: ignore[no-untyped-def]
    owner, desk, receiver = api_for(world.owner), api_for(world.desk), api_for(world.receiver)
    study = StudyFactory(institution=world.clin_a)
    created = owner.post(BASE, payload(study), format="json")
    assert created.status_code == 201, created.json()
    rid = created.json()["id"]
    assert created.json()["status"] == "draft"
    assert "24" in created.json()["urgency_display"]
    assert act(owner, rid, "request").json()["status"] == "requested"
    in3 = str(timezone.localdate() + timedelta(days=3))
    assert act(desk, rid, "propose", date=in3, note="Fully booked this week.").json()["status"] == "on-hold"
    agreed = act(owner, rid, "agree").json()
    assert (agreed["status"], agreed["wished_date"]) == ("requested", in3)
    accepted = act(
        desk,
        rid,
        "accept",
        appointment_at=tomorrow_at_nine().isoformat(),
        department="Thoracic surgery",
        doctor=world.receiver.pk,
    )
    assert accepted.status_code == 200 and accepted.json()["appointment_doctor"]["id"] == world.receiver.pk
    assert accepted.json()["actions"] == ["arrive", "no-show"]
    arrived = act(desk, rid, "arrive", patient_id="H-42")
    assert arrived.json()["status"] == "in-progress" and arrived.json()["receiving_patient_id"] == "H-42"
    assert PatientLink.objects.count() == 1
    done = act(receiver, rid, "complete", summary="Lobectomy; follow up in 3 months.")
    assert done.json()["status"] == "completed" and done.json()["feedback"].startswith("Lobectomy")
    assert [a["expires_at"] is not None for a in done.json()["access"]] == [True]
    detail = owner.get(f"{BASE}{rid}/")
    assert detail.status_code == 200
    assert [t["action"] for t in detail.json()["transitions"]] == [
        "create", "request", "propose", "agree", "accept", "arrive", "complete",
    ]  # fmt: skip
    assert AuditEvent.objects.filter(action="referral.view", object_id=str(rid)).exists()
    hosp_ct = StudyFactory(institution=world.hosp)
    back = receiver.post(
        BASE,
        payload(hosp_ct, direction="down", to_institution="CLINA", based_on=rid, send=True, reason="Rehab."),
        format="json",
    )
    assert back.status_code == 201, back.json()
    assert (back.json()["status"], back.json()["based_on"], back.json()["direction"]) == ("requested", rid, "down")


def test_a_patient_with_no_images_is_typed(world) -> None:  # type: ignore[no-untyped-def]
    body = {
        "patient": {"patient_id": "T-1", "name": "Wang^Fang", "birth_date": "1960-01-02", "sex": "F"},
        "direction": "up",
        "to_institution": "hosp",
        "reason": "Chest pain.",
        "send": True,
    }
    created = api_for(world.owner).post(BASE, body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["patient"]["patient_id"] == "T-1" and created.json()["status"] == "requested"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"direction": "down"}, "direction"),
        ({"direction": "sideways"}, "direction"),
        ({"to_institution": "NOWHERE"}, "to_institution"),
        ({"to_institution": "CLINB", "direction": "up"}, "direction"),
        ({"reason": ""}, "reason"),
        ({"urgency": "later"}, "urgency"),
        ({"wished_date": "2001-01-01"}, "wished_date"),
        ({"based_on": 99999}, "based_on"),
        ({"consult": 99999}, "consult"),
        ({"studies": []}, "patient"),
        ({"studies": [], "patient": {"patient_id": "", "name": "x"}}, "patient_id"),
    ],
)
def test_bad_input_is_400_naming_the_field(world, override, field) -> None:  # type: ignore[no-untyped-def]
    response = api_for(world.owner).post(
        BASE, payload(StudyFactory(institution=world.clin_a), **override), format="json"
    )
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert Referral.objects.count() == 0


def test_another_institutions_study_is_400(world) -> None:  # type: ignore[no-untyped-def]
    response = api_for(world.owner).post(BASE, payload(StudyFactory(institution=world.clin_b)), format="json")
    assert response.status_code == 400 and "studies" in response.json()["error"]["fields"]


def test_status_codes_of_the_actions(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    assert act(api_for(world.stranger), referral.pk, "accept").status_code == 404
    assert api_for(world.stranger).get(f"{BASE}{referral.pk}/").status_code == 404
    wrong_party = act(api_for(world.owner), referral.pk, "reject", reason="no")
    assert wrong_party.status_code == 403 and wrong_party.json()["error"]["code"] == "permission_denied"
    out_of_turn = act(api_for(world.owner), referral.pk, "request")
    assert out_of_turn.status_code == 409 and f"#{referral.pk}" in out_of_turn.json()["error"]["message"]
    assert act(api_for(world.desk), referral.pk, "arrive").status_code == 409
    missing = act(api_for(world.desk), referral.pk, "reject", reason=" ")
    assert missing.status_code == 400 and "reason" in missing.json()["error"]["fields"]
    past = act(
        api_for(world.desk),
        referral.pk,
        "accept",
        appointment_at=(timezone.now() - timedelta(days=1)).isoformat(),
        department="Surgery",
    )
    assert past.status_code == 400 and "appointment_at" in past.json()["error"]["fields"]
    assert act(api_for(world.desk), referral.pk, "accept", department="x").json()["error"]["fields"].keys() == {
        "appointment_at"
    }
    assert act(api_for(world.desk), referral.pk, "teleport").status_code == 404
    assert act(api_for(world.desk), referral.pk, "reject", reason="No beds.").json()["status"] == "rejected"


@pytest.mark.parametrize(
    ("state", "action", "who", "body"),
    [
        (Status.ACCEPTED, "no-show", "desk", {"reason": "Did not come."}),
        (Status.ACCEPTED, "cancel", "owner", {"reason": "Went elsewhere."}),
        (Status.DRAFT, "cancel", "owner", {"reason": "Typo."}),
    ],
)
def test_closing_actions(world, state, action, who, body) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, state)
    response = act(api_for(getattr(world, who)), referral.pk, action, **body)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] in {"failed", "cancelled"}
    assert response.json()["closed_reason"] == body["reason"]


def test_the_module_switched_off_refuses_the_api_with_a_clear_message(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    modules = [m for m in world.clin_a.modules if m != "referrals"]
    institution_update(institution=world.clin_a, modules=modules, by=audit.SYSTEM)
    owner = api_for(world.owner)
    for response in (
        owner.get(BASE),
        owner.get(f"{BASE}{referral.pk}/"),
        owner.post(BASE, payload(StudyFactory(institution=world.clin_a)), format="json"),
        act(owner, referral.pk, "cancel", reason="x"),
    ):
        assert response.status_code == 404  # as every door of a switched-off module (C11)
        assert response.json()["error"]["code"] == "module_off"
    assert api_for(world.desk).get(BASE, {"box": "incoming"}).status_code == 200


def test_the_list_has_both_boxes_counts_and_tabs(world) -> None:  # type: ignore[no-untyped-def]
    walk(world, Status.REQUESTED)
    walk(world, Status.ACCEPTED)
    walk(world, Status.DRAFT)
    out = api_for(world.owner).get(BASE).json()
    assert out["box"] == "outgoing" and out["tab"] == "waiting" and out["count"] == 1
    assert out["counts"]["outgoing"] == {"waiting": 1, "appointments": 1, "in_care": 0, "closed": 0, "drafts": 1}
    incoming = api_for(world.desk).get(BASE, {"box": "incoming", "tab": "appointments"}).json()
    assert incoming["count"] == 1 and incoming["results"][0]["status"] == "accepted"
    assert api_for(world.desk).get(BASE, {"box": "incoming", "tab": "drafts"}).status_code == 404
    assert api_for(world.desk).get(BASE, {"box": "sideways"}).status_code == 400
    listed = AuditEvent.objects.filter(action="referral.list", actor_name="desk")
    assert [e.object_id for e in listed] == [str(incoming["results"][0]["id"])]


def test_the_list_answers_in_a_constant_number_of_queries(world, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    desk = api_for(world.desk)
    for _i in range(2):
        walk(world, Status.REQUESTED)
    with django_assert_max_num_queries(12) as few:
        assert desk.get(BASE, {"box": "incoming"}).json()["count"] == 2
    for _i in range(12):
        walk(world, Status.REQUESTED)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert desk.get(BASE, {"box": "incoming"}).json()["count"] == 14


def test_notifications(world) -> None:  # type: ignore[no-untyped-def]
    walk(world, Status.REQUESTED)
    desk = api_for(world.desk)
    listed = desk.get(f"{BASE}notifications/").json()
    assert listed["unread"] == 1 and listed["results"][0]["verb"] == "request"
    assert desk.post(f"{BASE}notifications/read/", {}, format="json").json() == {"marked": 1}
    assert desk.get(f"{BASE}notifications/").json()["unread"] == 0


def test_messages(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    posted = api_for(world.desk).post(f"{BASE}{referral.pk}/messages/", {"body": "Bring films."}, format="json")
    assert posted.status_code == 201
    assert [m["body"] for m in api_for(world.owner).get(f"{BASE}{referral.pk}/messages/").json()] == ["Bring films."]
    assert (
        api_for(world.specialist).post(f"{BASE}{referral.pk}/messages/", {"body": "hi"}, format="json").status_code
        == 403
    )
