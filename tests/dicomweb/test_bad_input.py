"""Issue 22 item 9: a NUL byte in any filter value, and an absurd offset or limit, answer 400
naming the parameter (never 500) on QIDO-RS, the REST API, pages and C-FIND; STOW of another
institution's Study Instance UID answers the same conflict as any other clash."""

from __future__ import annotations

from typing import Any

import pytest

from alliance import audit, services
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dicom.status import DimseFailure
from imaging.dimse_services import DjangoServices
from tests.conftest import client_for
from tests.dicomweb.conftest import BASE
from tests.dicomweb.test_stow import multipart, post
from tests.imaging.dicomgen import make_ct_series, part10_bytes

pytestmark = pytest.mark.django_db

ABSURD = ["-1", "abc", "1e3", "99999999999999999999999", "١٢", ""]


@pytest.mark.parametrize("key", ["PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber", "StudyDate"])
def test_a_nul_byte_in_a_qido_key_is_400_naming_it(owner_client: Any, key: str) -> None:
    response = owner_client.get(f"{BASE}/studies", {key: "P1\x00001"})
    assert response.status_code == 400
    assert key in response.content.decode()


@pytest.mark.parametrize("name", ["offset", "limit"])
@pytest.mark.parametrize("value", ABSURD)
def test_an_absurd_qido_offset_or_limit_is_400_naming_it(owner_client: Any, name: str, value: str) -> None:
    response = owner_client.get(f"{BASE}/studies", {name: value})
    assert response.status_code == 400, response.content
    assert name in response.content.decode()


@pytest.mark.parametrize("name", ["offset", "limit"])
@pytest.mark.parametrize("value", [*ABSURD, "-5"])
def test_an_absurd_api_offset_or_limit_is_400_naming_it(owner_client: Any, name: str, value: str) -> None:
    response = owner_client.get("/api/v1/studies/", {name: value})
    assert response.status_code == 400, response.content
    assert name in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/api/v1/studies/", "/api/v1/consults/", "/api/v1/referrals/", "/api/v1/doctors/"])
def test_a_nul_byte_in_an_api_filter_is_400_naming_it(owner_client: Any, path: str) -> None:
    response = owner_client.get(path, {"q": "wang\x00", "patient_id": "x"})
    assert response.status_code == 400
    assert "q" in response.json()["error"]["fields"]


def test_a_nul_byte_in_a_page_filter_is_400_naming_it(alliance_world: Any) -> None:
    response = client_for(alliance_world.owner).get("/imaging/studies/", {"patient": "wang\x00"})
    assert response.status_code == 400
    assert "patient" in response.content.decode()


def test_a_sane_api_page_still_answers(owner_client: Any, ct: Any) -> None:
    response = owner_client.get("/api/v1/studies/", {"limit": "1", "offset": "0"})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


def test_a_nul_byte_in_a_c_find_key_is_refused_not_a_crash(alliance_world: Any) -> None:
    device = services.device_create(
        institution=alliance_world.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM
    )
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(root="study", level="STUDY", criteria={"PatientID": "P\x001"}, keywords=["PatientID"])
    with pytest.raises(DimseFailure, match="PatientID"):
        list(DjangoServices(check_host=False).find(peer, query))


def test_stow_of_another_institutions_study_uid_says_nothing_of_it(owner_client: Any, stranger_client: Any) -> None:
    ours = make_ct_series(2, 16, 16)
    assert post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ours[0])])).status_code == 200
    # the stranger's instance in clinic A's study, and one reusing clinic A's SOP Instance UID
    study_clash = post(stranger_client, f"{BASE}/studies", multipart([part10_bytes(ours[1])]))
    sop_clash = post(stranger_client, f"{BASE}/studies", multipart([part10_bytes(ours[0])]))
    assert study_clash.status_code == sop_clash.status_code == 409
    assert study_clash.headers["Warning"] == sop_clash.headers["Warning"]
    warning = study_clash.headers["Warning"]
    assert "institution" not in warning and ours[0].StudyInstanceUID not in warning
    assert ours[0].StudyInstanceUID not in study_clash.content.decode()
