"""The DICOM storage on S3 end to end, through the real processes: `dicom_server` (dcmtk's
storescu, findscu, getscu, movescu), gunicorn (dicomweb-client: STOW-RS, QIDO-RS, WADO-RS)
and a Celery worker on RabbitMQ rendering thumbnails into the bucket; all of them reach
SeaweedFS (tests/s3.py) through a gate the test shuts to make the bucket unreachable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread

from alliance import audit, services
from imaging import render, spool
from imaging.models import Instance, Study
from tests import factories
from tests.celery_worker import BROKER, new_prefix
from tests.faults.procs_stack import Stack, acknowledged, retrieved_with_getscu, storescu, wait_for
from tests.faults.procs_world import dimse_world  # noqa: F401  (a fixture)
from tests.imaging import dicomgen
from tests.processes import free_port, wait_for_port
from tests.region.nodes import (
    dcmtk,
    dicomweb,
    find_studies,
    keys,
    retrieved_bodies,
    storage_check_report,
    stored_bodies,
)
from tests.s3 import dicom_keys, environment
from tests.s3 import keys as bucket_keys

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]


def _series(folder: Path, n: int, patient_id: str, size: int = 64) -> tuple[str, list[Path]]:
    datasets = dicomgen.make_ct_series(n, size, size, patient_id=patient_id)
    return str(datasets[0].StudyInstanceUID), dicomgen.write_series(datasets, folder)


def _send(port: int, files: list[Path], log: Path) -> subprocess.Popen[bytes]:
    proc = storescu(port, files, log, "-nh")  # on past a refused instance (storescu halts by default)
    proc.wait(timeout=300)
    return proc


def _refused_out_of_resources(log: Path) -> int:
    """storescu's answers that were 0xA700 (Refused: Out of Resources)."""
    text = log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "Received Store Response" in line and "OutOfResources" in line)


def test_store_query_retrieve_and_render_over_s3_and_ride_out_an_unreachable_bucket(
    dimse_world: Any,  # noqa: F811
    s3: Any,
    s3_gate: Any,
    tmp_path: Path,
) -> None:
    world = dimse_world
    reader = factories.make_doctor(institution=world.clin_a, username="reader")
    ws_port = free_port()
    services.device_create(institution=world.clin_a, ae_title="WS_A", host="127.0.0.1", port=ws_port, by=audit.SYSTEM)
    prefix = new_prefix("s3e2e")
    # The sweep asks again for renders owed 5 s after their instance came, as beat does in a
    # region after RETRY_AFTER_SECONDS: a render task whose retries ran out while the bucket
    # was away is not asked again by anything else.
    sweeps = {"RETRY_SWEEP_SECONDS": "2", "RETRY_AFTER_SECONDS": "5"}
    stack = Stack(
        tmp_path, **environment(s3_gate.endpoint), **sweeps, CELERY_BROKER_URL=BROKER, CELERY_QUEUE_PREFIX=prefix
    )
    study_a, series_a = _series(tmp_path / "a", 40, "S3-A", size=256)
    study_b, stowed = _series(tmp_path / "b", 3, "S3-B")
    study_c, series_c = _series(tmp_path / "c", 12, "S3-C")
    dicom_port = free_port()
    try:
        stack.dicom_server(dicom_port)
        site = stack.web()
        stack.worker()
        stack.beat()
        [client] = dicomweb(reader, site)

        # C-STORE and STOW-RS into the bucket
        assert _send(dicom_port, series_a, tmp_path / "store-a.log").returncode == 0
        assert len(acknowledged(tmp_path / "store-a.log")) == 40
        stored = client.store_instances([dcmread(p) for p in stowed])
        assert len(stored.ReferencedSOPSequence) == 3 and "FailedSOPSequence" not in stored
        instances = list(Instance.objects.all())
        assert len(instances) == 43
        assert dicom_keys(s3) == sorted(i.storage_key for i in instances)  # every object a row's
        assert not (stack.data_dir / "dicom").exists()  # and nothing in the node's DATA_DIR

        # C-FIND, C-GET, C-MOVE and WADO-RS read it back byte for byte
        assert sorted(find_studies(dicom_port, tmp_path / "find")) == sorted([(study_a, 40), (study_b, 3)])
        assert retrieved_with_getscu(dicom_port, study_a, tmp_path / "get") == stored_bodies(series_a)
        moved = tmp_path / "moved"
        moved.mkdir()
        receiver = subprocess.Popen(["storescp", "+B", "-aet", "WS_A", "-od", str(moved), str(ws_port)])
        try:
            wait_for_port(ws_port, receiver)
            move = keys("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_b}")
            dcmtk("movescu", "-aet", "CT_A", "-aec", "CLINA", "-aem", "WS_A", "-S", *move, "127.0.0.1", str(dicom_port))
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
        assert stored_bodies(list(moved.iterdir())) == stored_bodies(stowed)
        assert retrieved_bodies(client, study_a, tmp_path / "wado-a") == stored_bodies(series_a)
        assert retrieved_bodies(client, study_b, tmp_path / "wado-b") == stored_bodies(stowed)
        found = client.search_for_instances(study_a)
        assert len(found) == 40
        first = dcmread(series_a[0])
        frame = client.retrieve_instance_frames(study_a, first.SeriesInstanceUID, first.SOPInstanceUID, [1])
        assert frame == [first.PixelData]

        # the worker renders into the bucket; the web serves thumbnails from there
        assert wait_for(lambda: not Instance.objects.filter(rendered=False).exists(), 300), stack.log("worker")
        rendered = set(bucket_keys(s3, "renders/"))
        for instance in Instance.objects.all():
            assert f"renders/{render.cache_key(instance, render.THUMBNAIL_PX)}" in rendered
        thumbnail = requests.get(
            f"{site}/dicomweb/studies/{study_a}/thumbnail",
            headers={**client._session.headers, "Accept": "image/jpeg"},
            timeout=60,
        )
        assert (thumbnail.status_code, thumbnail.content[:2]) == (200, b"\xff\xd8")
        assert not list(stack.data_dir.rglob("*.jpg"))  # no node keeps renders of its own
        status, report = storage_check_report()
        assert status == 0, report

        # the bucket unreachable: what the spool answered stays there, the rest is refused
        assert _send(dicom_port, series_c[:2], tmp_path / "store-c1.log").returncode == 0  # parents known now
        s3_gate.shut()
        assert _send(dicom_port, series_c[2:3], tmp_path / "store-c2.log").returncode == 0
        assert acknowledged(tmp_path / "store-c2.log") == series_c[2:3]  # durable in the local spool
        assert wait_for(lambda: "refusing new instances" in stack.log("dicom"), 120), stack.log("dicom")
        _send(dicom_port, series_c[3:], tmp_path / "store-c3.log")
        assert acknowledged(tmp_path / "store-c3.log") == []
        assert _refused_out_of_resources(tmp_path / "store-c3.log") == len(series_c) - 3
        away = requests.post(
            f"{site}/dicomweb/studies",
            data=_multipart(
                dicomgen.write_series(dicomgen.make_ct_series(2, 32, 32, patient_id="S3-D"), tmp_path / "d")
            ),
            headers={**client._session.headers, **_MULTIPART_HEADERS},
            timeout=120,
        )
        assert away.status_code == 503 and int(away.headers["Retry-After"]) > 0, away.text[:500]
        assert not Study.objects.filter(patient__patient_id="S3-D").exists()  # nothing half-indexed
        status, report = storage_check_report()
        assert status == 1 and "not indexed yet by the running dicom_server" in report, report
        assert Instance.objects.filter(series__study__study_uid=study_c).count() == 2

        # the bucket back: the spool's instance is indexed, the refused ones sent again
        s3_gate.open()
        assert wait_for(lambda: Instance.objects.filter(series__study__study_uid=study_c).count() == 3, 120)
        assert wait_for(lambda: not spool.live_entries(), 60)
        assert _send(dicom_port, series_c, tmp_path / "store-c4.log").returncode == 0
        assert retrieved_with_getscu(dicom_port, study_c, tmp_path / "get-c") == stored_bodies(series_c)
        assert wait_for(lambda: not Instance.objects.filter(rendered=False).exists(), 300), stack.log("worker")
        status, report = storage_check_report()
        assert status == 0, report
        assert dicom_keys(s3) == sorted(Instance.objects.values_list("storage_key", flat=True))
    finally:
        stack.stop_all()


_BOUNDARY = "s3-end-to-end"
_MULTIPART_HEADERS = {
    "Content-Type": f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}',
    "Accept": "application/dicom+json",
}


def _multipart(files: list[Path]) -> bytes:
    parts = [f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() for p in files]
    return b"\r\n".join(parts) + f"\r\n--{_BOUNDARY}--\r\n".encode()
