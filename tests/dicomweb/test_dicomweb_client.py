"""DICOMweb against the real web app (gunicorn, PostgreSQL) driven by dicomweb-client.

The server runs in a subprocess on the test database; rows the tests make are committed
(transactional_db) so it sees them. Storage is a folder both processes share.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection
from django.test import Client
from pydicom import dcmread

from alliance import audit, services
from imaging import grants
from imaging.dicomweb.multipart import read_parts
from imaging.models import Study
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.processes import free_port

with warnings.catch_warnings():  # dicomweb-client imports a pydicom 3 name deprecated for v4
    warnings.simplefilter("ignore", DeprecationWarning)
    from dicomweb_client.api import DICOMwebClient

pytestmark = pytest.mark.integration


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
        try:
            requests.get(url, timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dicomweb-server")


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any, data_dir: Path) -> Iterator[str]:
    """gunicorn serving the project on a free port, on the test database."""
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SITE_URL": site,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "DATA_DIR": str(data_dir),
        "CELERY_TASK_ALWAYS_EAGER": "1",
    }
    log = data_dir / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "alliance.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--timeout",
                "120",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"{site}/dicomweb"
    try:
        _wait_until_up(url + "/studies", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def shared_storage(settings: Any, data_dir: Path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": data_dir / "dicom"},
        },
    }


def token_of(doctor: Any) -> str:
    return services.token_create(doctor=doctor, by=audit.SYSTEM).key


def dicomweb(url: str, doctor: Any) -> DICOMwebClient:
    return DICOMwebClient(url, headers={"Authorization": f"Token {token_of(doctor)}"})


def session_of(doctor: Any) -> requests.Session:
    """A browser-like session: the doctor's session cookie, as after signing in."""
    client = Client()
    client.force_login(doctor.user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


@pytest.fixture
def world(transactional_db: Any, alliance_world: Any, shared_storage: None) -> Any:
    return alliance_world


@pytest.fixture
def big_study() -> list[Any]:
    """Twelve 256x256 slices read from Part 10 files (so dicomweb-client sends the files' bytes):
    a body of about 1.6 MB, which dicomweb-client sends chunked."""
    datasets = make_ct_series(12, 256, 256, patient_id="PINT-1", patient_name="Zhang^San")
    return [dcmread(io.BytesIO(part10_bytes(ds))) for ds in datasets]


def raw_parts(response: requests.Response, spool: Path) -> list[bytes]:
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    spool.mkdir(exist_ok=True)
    return [
        p.path.read_bytes() for p in read_parts(io.BytesIO(response.content), boundary, spool, max_part_bytes=1 << 30)
    ]


def test_chunked_stow_then_qido_and_byte_for_byte_wado(world, server, big_study, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = dicomweb(server, world.owner)
    files = [part10_bytes(ds) for ds in big_study]
    assert sum(len(f) for f in files) > 1_000_000  # dicomweb-client chunks bodies over 1 MB
    study_uid, series_uid = big_study[0].StudyInstanceUID, big_study[0].SeriesInstanceUID

    stored = client.store_instances(big_study)
    assert len(stored.ReferencedSOPSequence) == 12
    assert "FailedSOPSequence" not in stored
    assert Study.objects.get(study_uid=study_uid).num_instances == 12

    [found] = client.search_for_studies(search_filters={"PatientID": "PINT-1"})
    assert found["0020000D"]["Value"] == [study_uid]
    assert client.search_for_studies(search_filters={"PatientName": "zhang"}, fuzzymatching=True)
    assert client.search_for_studies(search_filters={"StudyDate": "20260301-20260331"}, fields=["all"])
    assert len(client.search_for_series(study_uid)) == 1
    assert len(client.search_for_instances(study_uid, series_uid, limit=5, offset=10)) == 2

    by_sop = {ds.SOPInstanceUID: f for ds, f in zip(big_study, files, strict=True)}
    got = client.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(by_sop)
    for ds in got:
        original = dcmread(io.BytesIO(by_sop[ds.SOPInstanceUID]))
        assert ds.PixelData == original.PixelData and ds.to_json_dict() == original.to_json_dict()
    raw = requests.get(
        f"{server}/studies/{study_uid}",
        headers={**client._session.headers, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=60,
    )
    digest = sorted(hashlib.sha256(p).hexdigest() for p in raw_parts(raw, tmp_path / "raw"))
    assert digest == sorted(hashlib.sha256(f).hexdigest() for f in files)


def test_metadata_frames_rendered_and_bulk_data(world, server, big_study) -> None:  # type: ignore[no-untyped-def]
    client = dicomweb(server, world.owner)
    client.store_instances(big_study[:2])
    first = big_study[0]
    ids = (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)

    metadata = client.retrieve_study_metadata(first.StudyInstanceUID)
    assert len(metadata) == 2
    mine = next(m for m in metadata if m["00080018"]["Value"] == [first.SOPInstanceUID])
    bulk_uri = mine.pop("7FE00010")["BulkDataURI"]
    expected = first.to_json_dict()
    expected.pop("7FE00010")
    assert mine == expected
    assert client.retrieve_bulkdata(bulk_uri) == [first.PixelData]
    assert len(client.retrieve_series_metadata(*ids[:2])) == 2
    assert client.retrieve_instance_metadata(*ids)["00080018"]["Value"] == [first.SOPInstanceUID]

    assert client.retrieve_instance_frames(*ids, frame_numbers=[1]) == [first.PixelData]
    jpeg = client.retrieve_instance_rendered(*ids, params={"window": "40,400", "quality": 80})
    assert jpeg.startswith(b"\xff\xd8")
    png = client.retrieve_instance_frames_rendered(*ids, frame_numbers=[1], media_types=("image/png",))
    assert png.startswith(b"\x89PNG")
    thumbnail = requests.get(f"{server}/studies/{ids[0]}/thumbnail", headers=client._session.headers, timeout=30)
    assert thumbnail.headers["Content-Type"] == "image/jpeg"
    assert client.retrieve_instance(*ids).SOPInstanceUID == first.SOPInstanceUID
    assert len(client.retrieve_series(*ids[:2])) == 2


def test_clinic_b_token_and_session_see_nothing_until_a_grant(world, server, big_study) -> None:  # type: ignore[no-untyped-def]
    dicomweb(server, world.owner).store_instances(big_study[:2])
    first = big_study[0]
    ids = (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    by_token = dicomweb(server, world.stranger)
    by_session = DICOMwebClient(server, session=session_of(world.stranger))

    def sees(client: DICOMwebClient) -> list[Any]:
        results: list[Any] = [
            len(client.search_for_studies(search_filters={"PatientID": "PINT-1"})),
            len(client.search_for_series(search_filters={"StudyInstanceUID": ids[0]})),
            len(client.search_for_instances(ids[0])),
        ]
        for retrieve in (
            lambda: client.retrieve_study(ids[0]),
            lambda: client.retrieve_study_metadata(ids[0]),
            lambda: client.retrieve_series(*ids[:2]),
            lambda: client.retrieve_instance(*ids),
            lambda: client.retrieve_instance_frames(*ids, frame_numbers=[1]),
            lambda: client.retrieve_instance_rendered(*ids),
        ):
            try:
                retrieve()
                results.append("ok")
            except requests.HTTPError as exc:
                results.append(exc.response.status_code)
        return results

    nothing = [0, 0, 0, 404, 404, 404, 404, 404, 404]
    assert sees(by_token) == nothing
    assert sees(by_session) == nothing
    study = Study.objects.get(study_uid=ids[0])
    grants.grant_study(
        study=study, grantee=grants.Grantee.institution(world.clin_b), basis="consult:5", by=audit.SYSTEM
    )
    everything = [1, 1, 2, "ok", "ok", "ok", "ok", "ok", "ok"]
    assert sees(by_token) == everything
    assert sees(by_session) == everything


def test_bad_stow_bodies_through_the_real_server(world, server, big_study) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Token {token_of(world.owner)}"}
    content_type = 'multipart/related; type="application/dicom"; boundary=b1'
    whole = b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + part10_bytes(big_study[0]) + b"\r\n--b1--\r\n"

    def chunks(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    truncated = requests.post(
        f"{server}/studies", data=chunks(whole[:-40]), headers={**headers, "Content-Type": content_type}, timeout=30
    )
    assert truncated.status_code == 400
    assert not Study.objects.exists()
    wrong = requests.post(
        f"{server}/studies", data=whole, headers={**headers, "Content-Type": "application/dicom"}, timeout=30
    )
    assert wrong.status_code == 415
    ok = requests.post(
        f"{server}/studies", data=chunks(whole), headers={**headers, "Content-Type": content_type}, timeout=30
    )
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/dicom+json"
