"""STOW-RS (PS3.18 10.5) through the Django test client: statuses, response body, bad input."""

from __future__ import annotations

import io

import pytest
from django.conf import settings

from alliance.models import AuditEvent
from imaging.models import Instance, Study
from tests.dicomweb.conftest import BASE, token_client
from tests.imaging.dicomgen import make_ct_series, part10_bytes

BOUNDARY = "stow-boundary-1"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> bytes:
    return typed_multipart([(part_type, part) for part in parts])


def typed_multipart(parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for part_type, part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(client, url: str, body: bytes, content_type: str = CONTENT_TYPE):  # type: ignore[no-untyped-def]
    return client.generic("POST", url, body, content_type=content_type, HTTP_ACCEPT="application/dicom+json")


def referenced(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [item["00081155"]["Value"][0] for item in response.json().get("00081199", {}).get("Value", [])]


def failures(response) -> list[int]:  # type: ignore[no-untyped-def]
    return [item["00081197"]["Value"][0] for item in response.json().get("00081198", {}).get("Value", [])]


def test_all_stored_is_200_with_references_and_exact_media_type(alliance_world, owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert referenced(response) == [ds.SOPInstanceUID for ds in datasets]
    body = response.json()
    assert body["00081190"]["Value"] == [f"{settings.SITE_URL}{BASE}/studies/{datasets[0].StudyInstanceUID}"]
    study = Study.objects.get(study_uid=datasets[0].StudyInstanceUID)
    assert study.institution == alliance_world.clin_a and study.num_instances == 2


def test_a_chunked_body_is_read_from_the_raw_input(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    body = multipart([part10_bytes(ds) for ds in datasets])
    response = owner_client.generic(
        "POST",
        f"{BASE}/studies",
        b"",
        content_type=CONTENT_TYPE,
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body)},
    )
    assert response.status_code == 200
    assert referenced(response) == [ds.SOPInstanceUID for ds in datasets]


def test_storing_into_a_named_study_refuses_other_studies_with_409(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    response = post(owner_client, f"{BASE}/studies/1.2.3.999", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 409
    assert failures(response) == [0xA900, 0xA900]
    assert response.json()["00081198"]["Value"][0]["00081155"]["Value"] == [datasets[0].SOPInstanceUID]
    assert not Instance.objects.exists()


def test_some_stored_some_not_is_202_with_failure_reasons(owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    response = post(
        owner_client, f"{BASE}/studies/{ds.StudyInstanceUID}", multipart([part10_bytes(ds), b"not dicom at all"])
    )
    assert response.status_code == 202
    assert referenced(response) == [ds.SOPInstanceUID]
    assert failures(response) == [0xC000]
    assert "Warning" in response.headers
    assert Instance.objects.count() == 1


def test_a_part_of_another_media_type_fails_alone(owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    body = typed_multipart([("application/dicom", part10_bytes(ds)), ("application/json", b"{}")])
    response = post(owner_client, f"{BASE}/studies", body)
    assert response.status_code == 202 and failures(response) == [0xC000]


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=x', "text/plain"],
)
def test_wrong_media_type_is_415(owner_client, content_type) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    assert post(owner_client, f"{BASE}/studies", part10_bytes(ds), content_type).status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"--stow-boundary-1--\r\n",
        b"no boundary anywhere",
        b"--stow-boundary-1\r\nContent-Type: application/dicom\r\n\r\ntruncated without a closing line",
    ],
)
def test_empty_or_malformed_body_is_400_and_stores_nothing(owner_client, body) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    truncated = multipart([part10_bytes(ds)])[:-30] if body.startswith(b"--stow-boundary-1\r\n") else body
    response = post(owner_client, f"{BASE}/studies", truncated)
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert not Instance.objects.exists()


def test_missing_boundary_is_400(owner_client) -> None:  # type: ignore[no-untyped-def]
    response = post(owner_client, f"{BASE}/studies", b"x", 'multipart/related; type="application/dicom"')
    assert response.status_code == 400


def test_storing_again_is_idempotent(owner_client) -> None:  # type: ignore[no-untyped-def]
    body = multipart([part10_bytes(ds) for ds in make_ct_series(1, 16, 16)])
    assert post(owner_client, f"{BASE}/studies", body).status_code == 200
    assert post(owner_client, f"{BASE}/studies", body).status_code == 200
    assert Instance.objects.count() == 1


def test_who_may_store(alliance_world, client) -> None:  # type: ignore[no-untyped-def]
    body = multipart([part10_bytes(ds) for ds in make_ct_series(1, 16, 16)])
    assert post(client, f"{BASE}/studies", body).status_code == 401
    assert post(token_client(alliance_world.alliance_admin), f"{BASE}/studies", body).status_code == 403
    assert not Instance.objects.exists()


def test_another_clinics_study_uid_is_refused(alliance_world, owner_client, stranger_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    assert post(owner_client, f"{BASE}/studies", multipart([part10_bytes(datasets[0])])).status_code == 200
    response = post(stranger_client, f"{BASE}/studies", multipart([part10_bytes(datasets[1])]))
    assert response.status_code == 409
    assert Instance.objects.count() == 1


def test_one_audit_event_for_the_request(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(3, 16, 16)
    post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    [event] = AuditEvent.objects.filter(action="dicomweb.store")
    assert event.object_id == datasets[0].StudyInstanceUID and event.detail["stored"] == 3


def test_parts_stored_on_threads_keep_their_order_and_errors_surface() -> None:
    from imaging.dicomweb.stow import in_threads

    assert in_threads(lambda n: n * 2, list(range(25)), 4) == [n * 2 for n in range(25)]

    def fails_on_seven(n: int) -> int:
        if n == 7:
            raise ValueError("seven")
        return n

    with pytest.raises(ValueError, match="seven"):
        in_threads(fails_on_seven, list(range(25)), 4)
