"""The upload page: DICOM files, folders and zips go through ingest; one result per file;
whatever is refused leaves nothing behind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from alliance import audit, services
from alliance.models import AuditEvent
from imaging.models import Instance, Study
from tests.conftest import client_for
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import index_counts, stored_files

URL = "/imaging/upload/files/"


def en_client(doctor) -> Client:  # type: ignore[no-untyped-def]
    client = client_for(doctor)
    client.cookies["django_language"] = "en"
    return client


def post(client, files: list[tuple[str, bytes]], paths: list[str] | None = None):  # type: ignore[no-untyped-def]
    data = {"files": [SimpleUploadedFile(name, content) for name, content in files]}
    if paths is not None:
        data["paths"] = paths
    return client.post(URL, data, HTTP_ACCEPT="application/json")


def results(response) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return [(r["name"], r["status"]) for r in response.json()["results"]]


def ct_files(n: int = 3, **kwargs) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [part10_bytes(ds) for ds in make_ct_series(n, 32, 32, **kwargs)]


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def dicom_dir(settings) -> Path:  # type: ignore[no-untyped-def]
    return Path(settings.STORAGES["dicom"]["OPTIONS"]["location"])


def test_upload_page_is_for_clinicians_of_an_institution(alliance_world):  # type: ignore[no-untyped-def]
    assert client_for(alliance_world.owner).get(reverse("imaging:upload")).status_code == 200
    assert client_for(alliance_world.alliance_admin).get(reverse("imaging:upload")).status_code == 403
    assert post(en_client(alliance_world.alliance_admin), [("a.dcm", ct_files(1)[0])]).status_code == 403
    assert Client().get(reverse("imaging:upload")).status_code == 302
    assert Instance.objects.count() == 0


def test_upload_page_loads_its_script_from_static_without_inline_code(alliance_world):  # type: ignore[no-untyped-def]
    body = client_for(alliance_world.owner).get(reverse("imaging:upload")).content.decode()
    assert 'src="/static/imaging/upload.js"' in body
    assert "<script>" not in body
    assert "csrfmiddlewaretoken" in body


def test_good_files_are_stored_for_the_uploaders_institution(alliance_world, dicom_dir):  # type: ignore[no-untyped-def]
    files = ct_files(3, patient_id="U-1")
    response = post(en_client(alliance_world.owner), [(f"{i}.dcm", d) for i, d in enumerate(files)], ["ct/0.dcm"])
    assert results(response) == [("ct/0.dcm", "stored"), ("1.dcm", "stored"), ("2.dcm", "stored")]
    study = Study.objects.get()
    assert study.institution == alliance_world.clin_a
    assert response.json()["results"][0]["study_uid"] == study.study_uid
    assert len(stored_files(dicom_dir)) == 3
    events = AuditEvent.objects.filter(action="instance.store", outcome="success", actor_name="owner")
    assert events.count() == 3
    assert {e.detail["via"] for e in events} == {"upload"}


def test_the_same_files_twice_are_stored_once(alliance_world, dicom_dir):  # type: ignore[no-untyped-def]
    files = [("a.dcm", d) for d in ct_files(2)]
    client = en_client(alliance_world.colleague)
    assert [s for _, s in results(post(client, files))] == ["stored", "stored"]
    assert [s for _, s in results(post(client, files))] == ["duplicate", "duplicate"]
    assert Instance.objects.count() == 2
    assert len(stored_files(dicom_dir)) == 2


def test_bad_files_are_refused_with_reasons_and_nothing_is_stored(alliance_world, dicom_dir):  # type: ignore[no-untyped-def]
    good = ct_files(1)[0]
    no_patient = make_ct_series(1, 32, 32)[0]
    del no_patient.PatientID
    response = post(
        en_client(alliance_world.owner),
        [
            ("notes.txt", b"just some text\n" * 20),
            ("cut.dcm", good[: len(good) // 2]),
            ("nopid.dcm", part10_bytes(no_patient)),
        ],
    )
    assert [s for _, s in results(response)] == ["refused", "refused", "refused"]
    reasons = [r["reason"] for r in response.json()["results"]]
    assert all(reasons), reasons
    assert "Patient ID" in reasons[2] or "PatientID" in reasons[2]
    assert index_counts() == (0, 0, 0, 0)
    assert stored_files(dicom_dir) == []
    assert AuditEvent.objects.filter(action="instance.store", outcome="failure").count() == 3


def test_a_zip_is_unpacked_safely_with_a_result_per_member(alliance_world, dicom_dir):  # type: ignore[no-untyped-def]
    good = ct_files(3)
    archive = zipped(
        {
            "study/IM1": good[0],
            "study/sub/IM2.dcm": good[1],
            "IM3": good[2],
            "README.txt": b"exported by a workstation",
            "__MACOSX/study/._IM1": b"\x00\x05\x16\x07",
            "../escape.dcm": good[0],
            "/abs/path.dcm": good[0],
            "inner.zip": zipped({"x.dcm": good[0]}),
            "DICOMDIR": b"\x00" * 200,
        }
    )
    response = post(en_client(alliance_world.owner), [("export.zip", archive)])
    assert results(response) == [
        ("export.zip/study/IM1", "stored"),
        ("export.zip/study/sub/IM2.dcm", "stored"),
        ("export.zip/IM3", "stored"),
        ("export.zip/README.txt", "refused"),
        ("export.zip/__MACOSX/study/._IM1", "skipped"),
        ("export.zip/../escape.dcm", "refused"),
        ("export.zip//abs/path.dcm", "refused"),
        ("export.zip/inner.zip", "refused"),
        ("export.zip/DICOMDIR", "skipped"),
    ]
    assert Instance.objects.count() == 3
    assert len(stored_files(dicom_dir)) == 3
    assert not (dicom_dir.parent / "escape.dcm").exists()
    assert "Unsafe path" in response.json()["results"][5]["reason"]


def test_a_zip_member_over_the_size_limit_is_not_inflated(alliance_world, settings, dicom_dir):  # type: ignore[no-untyped-def]
    settings.DICOM_MAX_FILE_BYTES = 64 * 1024
    bomb = b"\x00" * (4 * 1024 * 1024)  # 4 MB of zeros deflates to a few kB
    response = post(
        en_client(alliance_world.owner), [("bomb.zip", zipped({"big.dcm": bomb, "ok.dcm": ct_files(1)[0]}))]
    )
    assert results(response) == [("bomb.zip/big.dcm", "refused"), ("bomb.zip/ok.dcm", "stored")]
    assert "limit" in response.json()["results"][0]["reason"]
    assert Instance.objects.count() == 1


def test_a_broken_zip_is_refused(alliance_world):  # type: ignore[no-untyped-def]
    broken = zipped({"a.dcm": ct_files(1)[0]})[:60]
    response = post(en_client(alliance_world.owner), [("broken.zip", broken)])
    assert results(response) == [("broken.zip", "refused")]
    assert Instance.objects.count() == 0


def test_uploads_belong_to_the_uploader_and_stay_hidden_from_others(alliance_world):  # type: ignore[no-untyped-def]
    results(post(en_client(alliance_world.stranger), [("b.dcm", ct_files(1)[0])]))
    study = Study.objects.get()
    assert study.institution == alliance_world.clin_b
    owner = client_for(alliance_world.owner)
    assert owner.get(reverse("imaging:study_detail", args=[study.study_uid])).status_code == 404


def test_posting_without_files_says_so(alliance_world):  # type: ignore[no-untyped-def]
    response = client_for(alliance_world.owner).post(URL, {}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_the_form_works_without_javascript(alliance_world):  # type: ignore[no-untyped-def]
    client = en_client(alliance_world.owner)
    response = client.post(
        URL, {"files": [SimpleUploadedFile("a.dcm", ct_files(1)[0]), SimpleUploadedFile("b.txt", b"no")]}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "img-result-stored" in body and "img-result-refused" in body
    assert Instance.objects.count() == 1


def test_upload_needs_the_csrf_token(alliance_world):  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=True)
    client.force_login(alliance_world.owner.user)
    response = client.post(
        URL, {"files": [SimpleUploadedFile("a.dcm", ct_files(1)[0])]}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 403
    assert Instance.objects.count() == 0


def test_no_upload_where_the_image_store_is_switched_off(alliance_world):  # type: ignore[no-untyped-def]
    services.institution_update(institution=alliance_world.clin_a, modules=["consults"], by=audit.SYSTEM)
    client = en_client(alliance_world.owner)
    assert client.get(reverse("imaging:upload")).status_code == 404  # switched off: absent (issue 16)
    assert post(client, [("a.dcm", ct_files(1)[0])]).status_code == 404
    assert Instance.objects.count() == 0
