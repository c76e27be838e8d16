"""The signed report goes into the study through a real Celery worker on Redis: the task the
signing sends on commit runs there, and a second delivery of it writes nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from alliance.access import resolve_principal
from consults import services, tasks
from consults.models import Status
from imaging.dicom import objects
from imaging.models import Instance
from tests.celery_worker import new_prefix, sender, start_worker, succeeded, wait_for
from tests.consults.conftest import walk
from tests.factories import store_ct_study

TASK = "consults.tasks.report_into_studies"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_writes_the_signed_report_into_the_study_once(
    alliance_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    study = store_ct_study(alliance_world.clin_a, slices=2)
    consult = walk(alliance_world, Status.IN_PROGRESS, study=study)
    prefix = new_prefix("report")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = start_worker(prefix, out, settings.DATA_DIR)  # it reads the study's stored files
    try:
        app = sender(prefix)
        monkeypatch.setattr(tasks.report_into_studies, "delay", lambda pk: app.send_task(TASK, args=[pk]))
        version = services.consult_sign(
            consult=consult, by=resolve_principal(alliance_world.specialist.user), findings="", impression="Normal."
        )
        written = Instance.objects.filter(
            series__study=study, sop_class_uid__in=[objects.ENCAPSULATED_PDF, objects.BASIC_TEXT_SR]
        )
        assert wait_for(lambda: written.count() == 2, timeout=120), log.read_text(errors="replace")[-3000:]
        app.send_task(TASK, args=[version.pk])  # delivered again
        assert wait_for(lambda: succeeded(log, TASK) == 2, timeout=120), log.read_text(errors="replace")[-3000:]
        assert written.count() == 2
    finally:
        worker.terminate()
        worker.wait(timeout=30)
