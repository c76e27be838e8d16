"""Routing to real peers: dcmtk's storescp, and a second deployment of this project (its own
database, `manage.py dicom_server` for C-STORE and gunicorn for STOW-RS). What arrives is
compared with what we keep, byte for byte (the data set after the file meta, which every
receiver writes anew). A closed port fails the item with the reason, and the retry delivers
once the peer is up; an association the peer rejects fails it for good (no automatic retry)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from django.utils import timezone
from pydicom import dcmread
from pydicom.data import get_testdata_file

from alliance.access import resolve_principal
from imaging import storage
from imaging.ingest import ingest_bytes
from imaging.models import Instance
from imaging.routing import services
from imaging.routing.models import RouteItem, State
from tests import factories
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.processes import free_port, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]
ROOT = Path(__file__).resolve().parents[2]
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
PEER_SETUP = """
from alliance import audit, services
from tests import factories
peer = factories.make_institution(name="Peer Hospital", ae_title="PEERPACS")
services.device_create(institution=peer, ae_title="CLINA", host="127.0.0.1", port=104, by=audit.SYSTEM)
doctor = factories.make_doctor(institution=peer, username="peer_clinician")
print(services.token_create(doctor=doctor, by=audit.SYSTEM).key)
"""


def body(data: bytes) -> bytes:
    """The data set of a PS3.10 file: what travels on the wire."""
    return data[144 + int.from_bytes(data[140:144], "little") :]


def digests(files: list[Path]) -> dict[str, str]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): hashlib.sha256(body(p.read_bytes())).hexdigest()
        for p in files
    }


def ours(study: Any) -> dict[str, str]:
    found = {}
    for instance in Instance.objects.filter(series__study=study):
        with storage.open_instance(instance) as f:
            found[instance.sop_uid] = hashlib.sha256(body(f.read())).hexdigest()
    return found


@pytest.fixture
def world(transactional_db):  # type: ignore[no-untyped-def]
    w = SimpleNamespace()
    w.clinic = factories.make_institution(name="Clinic A", ae_title="CLINA")
    w.admin = resolve_principal(factories.make_doctor(institution=w.clinic, roles=["institution_admin"]).user)
    w.owner = resolve_principal(factories.make_doctor(institution=w.clinic).user)
    datasets = make_ct_series(20, 128, 128, patient_id="RT-1")
    study = None
    for ds in datasets:
        study = ingest_bytes(part10_bytes(ds), institution=w.clinic, actor=w.owner.actor, via="test").study
    w.study = study
    return w


def destination(w: Any, **values: Any) -> Any:
    return services.destination_save(by=w.admin, institution=w.clinic, values={"name": f"d{free_port()}", **values})


def route(w: Any, dest: Any) -> RouteItem:
    """Send by hand; the task runs (eagerly) once route_study's transaction commits."""
    item = services.route_study(by=w.owner, study=w.study, destination=dest)
    assert item is not None
    item.refresh_from_db()
    return item


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[SimpleNamespace]:
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "+B", "-aet", "STORESCP", "-od", str(out), str(port)], env=NODELAY)
    try:
        wait_for_port(port, proc)
        yield SimpleNamespace(port=port, folder=out)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("accelerate", [True, False], ids=["accelerated", "plain"])
def test_storescp_receives_the_stored_bytes_and_a_refused_syntax_converted(
    world, storescp, settings, accelerate
) -> None:  # type: ignore[no-untyped-def]
    settings.DICOM_ACCELERATE = accelerate
    jpeg_ls = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    sample = ingest_bytes(jpeg_ls.read_bytes(), institution=world.clinic, actor=world.owner.actor, via="test")
    dest = destination(world, kind="dimse", ae_title="STORESCP", host="127.0.0.1", port=storescp.port)
    item = route(world, dest)
    assert (item.state, item.instances_sent, item.reason) == (State.SENT, 20, "")
    assert digests(sorted(storescp.folder.iterdir())) == ours(world.study)  # byte for byte
    # storescp accepts no JPEG-LS by default: that one instance is decompressed for it
    world.study = sample.study
    assert route(world, dest).state == State.SENT
    (arrived,) = [p for p in storescp.folder.iterdir() if p.name.startswith("MR.")]
    converted = dcmread(arrived)
    assert converted.file_meta.TransferSyntaxUID in {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}
    original = dcmread(jpeg_ls)
    assert (converted.pixel_array == original.pixel_array).all()


def test_a_closed_port_fails_with_the_reason_and_the_retry_delivers(world, tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROUTE_PEER_TIMEOUT = 5
    port = free_port()
    dest = destination(world, kind="dimse", ae_title="STORESCP", host="127.0.0.1", port=port)
    item = services.route_study(by=world.owner, study=world.study, destination=dest)  # sent after the commit
    assert item is not None
    item.refresh_from_db()
    assert item.state == State.FAILED and item.transient and item.attempts == 1
    assert "Connection refused" in item.reason
    assert f"STORESCP@127.0.0.1:{port}" in item.reason and item.next_attempt_at > timezone.now()
    out = tmp_path / "late"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "+B", "-aet", "STORESCP", "-od", str(out), str(port)], env=NODELAY)
    try:
        wait_for_port(port, proc)
        RouteItem.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now())  # the backoff has passed
        assert services.send_item(item_id=item.pk).ran
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    item.refresh_from_db()
    assert (item.state, item.attempts, item.instances_sent) == (State.SENT, 2, 20)
    assert len(list(out.iterdir())) == 20  # each instance once


@pytest.fixture(scope="module")
def peer_site(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> Iterator[SimpleNamespace]:
    """A second deployment of this project: its own database, DICOM server and web server."""
    name = f"alliance_route_peer_{os.getpid()}"
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    data = tmp_path_factory.mktemp("peer-site")
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATA_DIR": str(data),
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "TCP_NODELAY": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    log = (data / "peer.log").open("wb")
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        token = (
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", PEER_SETUP],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        dicom_port, web_port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "dicom_server"],
                cwd=ROOT,
                env={**env, "DICOM_PORT": str(dicom_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        site = f"http://127.0.0.1:{web_port}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "alliance.wsgi",
                    "-b",
                    f"127.0.0.1:{web_port}",
                    "-w",
                    "1",
                    "--timeout",
                    "120",
                ],
                cwd=ROOT,
                env={**env, "SITE_URL": site},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for_port(dicom_port, procs[0])
        wait_for_port(web_port, procs[1])
        yield SimpleNamespace(dicom_port=dicom_port, dicomweb=f"{site}/dicomweb", token=token, data=data)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
            capture_output=True,
        )


def peer_files(peer: Any) -> list[Path]:
    return [p for p in (peer.data / "dicom").rglob("*") if p.is_file()]


def test_a_second_deployment_receives_by_c_store_byte_for_byte(world, peer_site, settings) -> None:  # type: ignore[no-untyped-def]
    dest = destination(world, kind="dimse", ae_title="PEERPACS", host="127.0.0.1", port=peer_site.dicom_port)
    item = route(world, dest)
    assert (item.state, item.instances_sent) == (State.SENT, 20), item.reason
    received = digests(peer_files(peer_site))
    assert {uid: received[uid] for uid in ours(world.study)} == ours(world.study)


def test_a_peer_that_rejects_the_association_fails_the_item_for_good(world, peer_site) -> None:  # type: ignore[no-untyped-def]
    dest = destination(world, kind="dimse", ae_title="NOSUCHAE", host="127.0.0.1", port=peer_site.dicom_port)
    item = route(world, dest)
    assert item.state == State.FAILED and not item.transient and item.next_attempt_at is None
    assert "association rejected (result 1" in item.reason


def test_a_second_deployment_receives_by_stow_rs_and_a_bad_token_is_refused(world, peer_site) -> None:  # type: ignore[no-untyped-def]
    world.study = factories.store_ct_study(world.clinic, slices=4, patient_id="RT-STOW")
    bad = destination(world, kind="stow", url=peer_site.dicomweb)
    services.destination_save(by=world.admin, institution=world.clinic, values={}, token="not-a-token", destination=bad)
    item = route(world, bad)
    assert item.state == State.FAILED and item.peer_status == 401 and not item.transient
    good = destination(world, kind="stow", url=peer_site.dicomweb)
    services.destination_save(
        by=world.admin, institution=world.clinic, values={}, token=peer_site.token, destination=good
    )
    item = route(world, good)
    assert (item.state, item.instances_sent) == (State.SENT, 4), item.reason
    received = digests(peer_files(peer_site))
    assert {uid: received[uid] for uid in ours(world.study)} == ours(world.study)
    found = requests.get(
        f"{peer_site.dicomweb}/studies",
        params={"StudyInstanceUID": world.study.study_uid},
        headers={"Authorization": f"Bearer {peer_site.token}"},
        timeout=30,
    )
    assert found.status_code == 200 and len(found.json()) == 1
