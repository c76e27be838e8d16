"""What the region tests share: a node (a web process and a DICOM server on one DATA_DIR of
its own) storing into the bucket of tests/s3.py through RabbitMQ's Celery, and the dcmtk
and DICOMweb clients that store through it and read it back."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from django.core.management import call_command
from pydicom import dcmread

from alliance import audit, services
from imaging.dicomweb.multipart import read_parts
from tests.faults.procs_stack import body_sha256

with warnings.catch_warnings():  # dicomweb-client imports a pydicom 3 name deprecated for v4
    warnings.simplefilter("ignore", DeprecationWarning)
    from dicomweb_client.api import DICOMwebClient


def dcmtk(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def keys(*pairs: str) -> list[str]:
    return [item for pair in pairs for item in ("-k", pair)]


def find_studies(port: int, out: Path) -> list[tuple[str, int]]:
    """Study-level C-FIND of CT_A on the server at `port`: (Study Instance UID, its number of
    instances) for each answer, in the order given."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    query = keys("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "NumberOfStudyRelatedInstances")
    dcmtk("findscu", "-aet", "CT_A", "-aec", "CLINA", "-S", "-X", "-od", str(out), *query, "127.0.0.1", str(port))
    found = [dcmread(p) for p in sorted(out.iterdir())]
    return [(str(ds.StudyInstanceUID), int(ds.NumberOfStudyRelatedInstances)) for ds in found]


def stored_bodies(files: list[Path]) -> dict[str, str]:
    """SOP Instance UID to the sha256 of its data set after the file meta (as DIMSE sends it)."""
    return dict(body_sha256(p) for p in files)


def dicomweb(doctor: Any, *sites: str) -> list[DICOMwebClient]:
    """A client of each site with the doctor's API token (one a doctor: a new one replaces it)."""
    token = services.token_create(doctor=doctor, by=audit.SYSTEM).key
    return [DICOMwebClient(f"{url}/dicomweb", headers={"Authorization": f"Token {token}"}) for url in sites]


def retrieved_bodies(client: DICOMwebClient, study_uid: str, spool: Path) -> dict[str, str]:
    """WADO-RS of the whole study as stored (transfer-syntax=*), each part's data set after its
    file meta hashed as stored_bodies hashes the files sent; dicomweb-client's own retrieval
    must agree on the instances and their pixel data."""
    response = client._session.get(
        f"{client.base_url}/studies/{study_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:500]
    boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
    spool.mkdir(parents=True, exist_ok=True)
    parts = read_parts(io.BytesIO(response.content), boundary, spool, max_part_bytes=1 << 30)
    found = dict(body_sha256(part.path) for part in parts)
    decoded = {str(ds.SOPInstanceUID): ds.PixelData for ds in client.retrieve_study(study_uid)}
    assert sorted(decoded) == sorted(found)
    for part in parts:
        sent = dcmread(part.path)
        assert decoded[str(sent.SOPInstanceUID)] == sent.PixelData
    return found


def storage_check_report() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("dicom_storage_check", "--older-than", "1", stdout=out)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, out.getvalue()
