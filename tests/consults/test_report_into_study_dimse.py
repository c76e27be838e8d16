"""A hospital PACS that retrieves the study over DIMSE gets the signed report with it: the
real dicom_server process, dcmtk's getscu, and the report written by the task that signing
sends on commit (eager Celery here; the worker path is the same task)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from pydicom import dcmread

from alliance import audit, services
from alliance.access import resolve_principal
from consults import services as consult_services
from consults.models import Status
from imaging.dicom import objects
from imaging.models import Study
from tests.consults.conftest import walk
from tests.factories import store_ct_study
from tests.imaging.test_dicom_server import ROOT, database_url, dcmtk, k
from tests.processes import wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("getscu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]


def _our_port() -> int:
    """A free port of this helper's range (18500-18599)."""
    for port in range(18500, 18600):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 18500-18599")


@pytest.fixture
def dicom_server(transactional_db: Any) -> Iterator[int]:
    port = _our_port()
    data_dir = Path(settings.DATA_DIR)
    env = {**os.environ, "DATABASE_URL": database_url(), "DATA_DIR": str(data_dir), "DICOM_PORT": str(port)}
    log = (data_dir / "dicom-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def signed_study(transactional_db: Any, alliance_world: Any) -> Study:
    services.device_create(
        institution=alliance_world.clin_a, ae_title="PACS_A", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    study = store_ct_study(alliance_world.clin_a, slices=2)
    consult = walk(alliance_world, Status.IN_PROGRESS, study=study)
    consult_services.consult_sign(
        consult=consult,
        by=resolve_principal(alliance_world.specialist.user),
        findings="右上肺结节，直径8毫米。",
        impression="结节 8 mm。",
    )
    return study


def test_getscu_of_the_study_brings_the_encapsulated_pdf_and_text_sr(
    signed_study: Study, dicom_server: int, tmp_path: Path
) -> None:
    got = tmp_path / "got"
    got.mkdir()
    dcmtk(
        "getscu",
        *("-aet", "PACS_A", "-aec", "CLINA", "-S", "-od", str(got)),
        *k("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={signed_study.study_uid}"),
        *("127.0.0.1", str(dicom_server)),
    )
    files = [dcmread(path) for path in got.iterdir()]
    retrieved = {ds.SOPClassUID: ds for ds in files}
    assert objects.ENCAPSULATED_PDF in retrieved and objects.BASIC_TEXT_SR in retrieved
    pdf = retrieved[objects.ENCAPSULATED_PDF]
    assert pdf.StudyInstanceUID == signed_study.study_uid and pdf.Modality == "DOC"
    assert pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength].startswith(b"%PDF")
    report = retrieved[objects.BASIC_TEXT_SR]
    texts = [c.ContentSequence[0].TextValue for c in report.ContentSequence if c.ValueType == "CONTAINER"]
    assert texts == ["右上肺结节，直径8毫米。", "结节 8 mm。"]
    assert len(files) == 4  # the two CT slices and the two report objects, once each
