"""/api/v1/consults/<id>/critical/: flag and read back over the API, with the consults' error mapping."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from alliance.access import resolve_principal
from consults import critical
from consults.models import Status
from tests.consults.conftest import walk


def api_for(doctor: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(doctor.user)
    return client


def test_reader_flags_from_the_list_and_the_requester_reads_back(world: Any) -> None:
    finding = critical.critical_finding_create(
        alliance=world.alliance,
        modality="CT",
        name="主动脉夹层",
        actor=resolve_principal(world.alliance_admin.user).actor,
    )
    consult = walk(world, Status.IN_PROGRESS)
    url = f"/api/v1/consults/{consult.pk}/critical/"
    flagged = api_for(world.specialist).post(url, {"finding": finding.pk}, format="json")
    assert flagged.status_code == 201, flagged.json()
    body = flagged.json()
    assert (body["text"], body["finding"], body["acknowledged_at"]) == ("主动脉夹层", finding.pk, None)
    listed = api_for(world.owner).get(url).json()
    assert [r["id"] for r in listed] == [body["id"]]
    ack_url = f"{url}{body['id']}/acknowledge/"
    wrong = api_for(world.owner).post(ack_url, {"read_back": "气胸"}, format="json")
    assert wrong.status_code == 400 and "read_back" in wrong.json()["error"]["fields"]
    done = api_for(world.owner).post(ack_url, {"read_back": "主动脉夹层"}, format="json")
    assert done.status_code == 200
    assert done.json()["acknowledged_by"]["id"] == world.owner.pk and done.json()["read_back"] == "主动脉夹层"
    again = api_for(world.colleague).post(ack_url, {"read_back": "主动脉夹层"}, format="json")
    assert again.status_code == 409


def test_wrong_side_is_403_unseen_case_404_bad_input_400(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    url = f"/api/v1/consults/{consult.pk}/critical/"
    assert api_for(world.owner).post(url, {"text": "气胸"}, format="json").status_code == 403
    assert api_for(world.stranger).post(url, {"text": "气胸"}, format="json").status_code == 404
    empty = api_for(world.specialist).post(url, {"text": " "}, format="json")
    assert empty.status_code == 400 and "text" in empty.json()["error"]["fields"]
    unknown = api_for(world.specialist).post(url, {"finding": 999999}, format="json")
    assert unknown.status_code == 400 and "finding" in unknown.json()["error"]["fields"]
    pk = api_for(world.specialist).post(url, {"text": "气胸"}, format="json").json()["id"]
    refused = api_for(world.specialist).post(f"{url}{pk}/acknowledge/", {"read_back": "气胸"}, format="json")
    assert refused.status_code == 403
    assert api_for(world.stranger).post(f"{url}{pk}/acknowledge/", {"read_back": "气胸"}).status_code == 404
