"""The signed report goes into the study through a real Celery worker on Redis: the task the
signing sends on commit runs there, and a second delivery of it writes nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection

from alliance.access import resolve_principal
from consults import services, tasks
from consults.models import Status
from imaging.dicom import objects
from imaging.models import Instance
from tests.consults.conftest import walk
from tests.consults.test_worker import _broker_up, _database_url, _succeeded, _wait_for
from tests.factories import store_ct_study

BROKER = os.environ.get("CONSULTS_TEST_BROKER_URL", "redis://127.0.0.1:6379/8")
TASK = "consults.tasks.report_into_studies"


def _start_worker(queue: str, log: Any) -> subprocess.Popen[bytes]:
    """A worker on this test's data folder: it reads the study's stored files."""
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DATA_DIR": str(settings.DATA_DIR),
        "LANGUAGE_CODE": "en",
    }
    celery = Path(sys.executable).parent / "celery"
    args = [str(celery), "-A", "alliance", "worker", "-Q", queue, "--pool=solo", "-l", "INFO"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{queue}@%h"]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_writes_the_signed_report_into_the_study_once(
    alliance_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql" or not _broker_up():
        pytest.skip("needs PostgreSQL and the Redis broker")
    study = store_ct_study(alliance_world.clin_a, slices=2)
    consult = walk(alliance_world, Status.IN_PROGRESS, study=study)
    queue = f"report-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = _start_worker(queue, out)
    try:
        sender = Celery(broker=BROKER)
        monkeypatch.setattr(
            tasks.report_into_studies, "delay", lambda pk: sender.send_task(TASK, args=[pk], queue=queue)
        )
        version = services.consult_sign(
            consult=consult, by=resolve_principal(alliance_world.specialist.user), findings="", impression="Normal."
        )
        written = Instance.objects.filter(
            series__study=study, sop_class_uid__in=[objects.ENCAPSULATED_PDF, objects.BASIC_TEXT_SR]
        )
        assert _wait_for(lambda: written.count() == 2, timeout=120), log.read_text(errors="replace")[-3000:]
        sender.send_task(TASK, args=[version.pk], queue=queue)  # delivered again
        assert _wait_for(lambda: _succeeded(log, TASK) == 2, timeout=120), log.read_text(errors="replace")[-3000:]
        assert written.count() == 2
    finally:
        worker.terminate()
        worker.wait(timeout=30)
