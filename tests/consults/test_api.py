"""The consults REST API follows the same rules as the pages."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from consults.models import Consult, Status
from tests.consults.conftest import walk
from tests.factories import PASSWORD, StudyFactory


def api_for(doctor: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(doctor.user)
    return client


def test_whole_journey_over_the_api(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    owner, spec = api_for(world.owner), api_for(world.specialist)
    created = owner.post(
        "/api/v1/consults/",
        {"studies": [study.study_uid], "question": "PE?", "priority": "stat", "pool": world.pool.pk},
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    assert created.json()["status"] == "requested"
    listed = spec.get("/api/v1/consults/?tab=unclaimed").json()
    assert [r["id"] for r in listed["results"]] == [pk] and listed["counts"]["unclaimed"] == 1
    assert spec.post(f"/api/v1/consults/{pk}/claim/").json()["actions"] == ["release", "start_report"]
    assert spec.post(f"/api/v1/consults/{pk}/start-report/").status_code == 200
    draft = spec.put(f"/api/v1/consults/{pk}/report/draft/", {"findings": "左下肺动脉充盈缺损。", "impression": "PE."})
    assert draft.status_code == 200 and draft.json()["findings"] == "左下肺动脉充盈缺损。"
    assert spec.post(f"/api/v1/consults/{pk}/hold/", {"question": "D-dimer?"}).json()["status"] == "on-hold"
    assert owner.post(f"/api/v1/consults/{pk}/answer/", {"answer": "1.8 mg/L"}).json()["status"] == "in-progress"
    signed = spec.post(f"/api/v1/consults/{pk}/sign/", {"password": PASSWORD})
    assert signed.json()["status"] == "completed"
    detail = owner.get(f"/api/v1/consults/{pk}/").json()
    assert detail["report"][0]["findings"] == "左下肺动脉充盈缺损。"
    assert [t["action"] for t in detail["transitions"]] == [
        "create", "request", "claim", "start_report", "hold", "answer", "sign",
    ]  # fmt: skip
    assert owner.get("/api/v1/consults/notifications/").json()["unread"] >= 3


def test_wrong_state_is_409_wrong_persona_403_invisible_404(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    conflict = api_for(world.specialist).post(f"/api/v1/consults/{consult.pk}/sign/")
    assert conflict.status_code == 403  # not the owner yet
    api_for(world.specialist).post(f"/api/v1/consults/{consult.pk}/claim/")
    again = api_for(world.specialist).post(f"/api/v1/consults/{consult.pk}/claim/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert api_for(world.owner).post(f"/api/v1/consults/{consult.pk}/claim/").status_code == 403
    assert api_for(world.stranger).get(f"/api/v1/consults/{consult.pk}/").status_code == 404
    assert api_for(world.outsider_specialist).post(f"/api/v1/consults/{consult.pk}/release/").status_code == 404


def test_missing_reason_is_400_naming_the_field(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    response = api_for(world.owner).post(f"/api/v1/consults/{consult.pk}/cancel/", {"reason": ""})
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]


def test_create_refuses_another_institutions_study(world: Any) -> None:
    study = StudyFactory(institution=world.clin_b)
    response = api_for(world.owner).post(
        "/api/v1/consults/", {"studies": [study.study_uid], "question": "?", "pool": world.pool.pk}, format="json"
    )
    assert response.status_code == 400 and "studies" in response.json()["error"]["fields"]
    assert not Consult.objects.exists()


def test_policy_is_set_by_the_alliance_admin_only_and_used_for_new_requests(world: Any) -> None:
    body = {"priority": "stat", "deadline_minutes": 30, "claim_timeout_minutes": 5}
    assert api_for(world.hosp_admin).put("/api/v1/consults/policies/", body).status_code == 403
    assert api_for(world.alliance_admin).put("/api/v1/consults/policies/", body).status_code == 200
    consult = walk(world, Status.REQUESTED, priority="stat")
    assert (consult.due_at - consult.requested_at).total_seconds() == 30 * 60
    rows = {r["priority"]: r for r in api_for(world.owner).get("/api/v1/consults/policies/").json()}
    assert rows["stat"]["deadline_minutes"] == 30 and rows["routine"]["deadline_minutes"] == 24 * 60


def test_after_cancel_the_specialist_gets_404_on_the_case_and_its_study(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    uid = consult.studies.get().study_uid
    api_for(world.owner).post(f"/api/v1/consults/{consult.pk}/cancel/", {"reason": "Transferred."})
    spec = api_for(world.specialist)
    assert spec.get(f"/api/v1/consults/{consult.pk}/").status_code == 404
    assert spec.get(f"/api/v1/studies/{uid}/").status_code == 404
