"""The broker (a private redis-server) stopped while instances arrive over C-STORE and STOW
and while a consult moves: every sender is answered as usual, and once the broker is back
the thumbnails are rendered and the notification is mailed (beat's sweeps); the storage
check is clean and every instance comes back byte for byte over C-GET."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from alliance import audit, services
from consults.models import Notification, Status
from imaging.models import Instance, Study
from tests.consults.conftest import walk
from tests.faults.procs_stack import (
    PrivateRedis,
    Stack,
    body_sha256,
    retrieved_with_getscu,
    storage_check,
    storescu,
    wait_for,
)
from tests.imaging import dicomgen
from tests.processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
BOUNDARY = "procs-outage-boundary"


def _stow(site: str, token: str, files: list[Path]) -> requests.Response:
    parts = [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() for p in files]
    body = b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }
    return requests.post(f"{site}/dicomweb/studies", data=body, headers=headers, timeout=300)


def _series(folder: Path, n: int, patient_id: str) -> tuple[str, list[Path]]:
    datasets = dicomgen.make_ct_series(n, 64, 64, patient_id=patient_id)
    return str(datasets[0].StudyInstanceUID), dicomgen.write_series(datasets, folder)


def test_a_broker_outage_delays_renders_and_mail_and_loses_none(alliance_world: Any, tmp_path: Path) -> None:
    world = alliance_world
    services.device_create(institution=world.clin_a, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    token = services.token_create(doctor=world.owner, by=audit.SYSTEM).key
    dimse_study, dimse_files = _series(tmp_path / "dimse", 30, "PB-1")
    stow_study, stow_files = _series(tmp_path / "stow", 10, "PB-2")
    redis = PrivateRedis(tmp_path)
    redis.start()
    stack = Stack(tmp_path, CELERY_BROKER_URL=redis.url, RETRY_SWEEP_SECONDS="2", RETRY_AFTER_SECONDS="1")
    port = free_port()
    try:
        stack.dicom_server(port)
        site = stack.web()
        redis.stop()

        assert storescu(port, dimse_files, tmp_path / "storescu.log").wait(timeout=300) == 0
        assert _stow(site, token, stow_files).status_code == 200
        consult = walk(world, Status.DRAFT, study=Study.objects.get(study_uid=dimse_study))
        moved = requests.post(
            f"{site}/api/v1/consults/{consult.pk}/request/", headers={"Authorization": f"Token {token}"}, timeout=60
        )
        assert moved.status_code == 200, moved.text[:2000]

        redis.start()
        stack.worker()
        stack.beat()
        every = Instance.objects.filter(series__study__study_uid__in=[dimse_study, stow_study])
        all_rendered = wait_for(lambda: every.filter(rendered=True).count() == len(dimse_files) + len(stow_files))
        assert all_rendered, stack.log("worker")[-3000:]
        mailed = Notification.objects.filter(consult=consult, user=world.specialist.user).exclude(emailed_at=None)
        assert wait_for(mailed.exists), stack.log("worker")[-3000:]
        assert f"[Consult #{consult.pk}]" in stack.log("worker")

        assert retrieved_with_getscu(port, dimse_study, tmp_path / "get-1") == dict(map(body_sha256, dimse_files))
        assert retrieved_with_getscu(port, stow_study, tmp_path / "get-2") == dict(map(body_sha256, stow_files))
        status, report, orphans = storage_check()
        assert (status, orphans) == (0, []), report
    finally:
        stack.stop_all()
        redis.stop()
