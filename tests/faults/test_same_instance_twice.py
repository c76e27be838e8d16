"""The same instances sent at once over DIMSE and STOW-RS (issue 21, "Tests that stay").

A modality resends a series while a gateway posts the same files to DICOMweb: each SOP
Instance UID is stored once (one row, one file), every sender is told Success, the second
copy of each is audited as an identical duplicate (the data set is the same, only the file
meta differs), and everything comes back byte for byte.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
import requests
from pydicom import dcmread

from tests.faults.archive_on_cluster import SUCCESS, Archive, retrieved_bodies, sent_bodies, store_statuses
from tests.faults.pgcluster import PgCluster, available
from tests.imaging import dicomgen

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
    pytest.mark.skipif(bool(available()), reason=available() or "-"),
]
BOUNDARY = "same-instance-boundary"
INSTANCES = 24


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def _stow_one(site: str, token: str, path: Path) -> int:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }
    return requests.post(f"{site}/dicomweb/studies", data=body, headers=headers, timeout=120).status_code


def _audited_copies(archive: Archive) -> list[tuple[str, str]]:
    """(object id, identical flag) of every successful instance.store event."""
    with psycopg2.connect(archive.cluster.url) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT object_id, COALESCE(detail->>'identical', 'new') FROM alliance_auditevent"
            " WHERE action = 'instance.store' AND outcome = 'success'"
        )
        rows = [(object_id, identical) for object_id, identical in cursor.fetchall()]
    db.close()
    return rows


def test_one_series_over_dimse_and_stow_at_once_is_stored_once_and_comes_back_whole(
    cluster: PgCluster, tmp_path: Path
) -> None:
    archive = Archive(cluster, tmp_path / "data")
    archive.provision()
    files = dicomgen.write_series(dicomgen.make_ct_series(INSTANCES, 128, 128), tmp_path / "sent")
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    with archive.dicom_server() as port, archive.web_server() as site, ThreadPoolExecutor(max_workers=3) as pool:
        over_dimse = pool.submit(store_statuses, port, files)
        over_stow = list(pool.map(lambda path: _stow_one(site, archive.token, path), files))
        dimse_answers = over_dimse.result()
        archive.wait_until_clean()
        back = retrieved_bodies(port, study_uid, tmp_path / "back")

    assert set(dimse_answers.values()) == {SUCCESS} and len(dimse_answers) == INSTANCES
    assert over_stow == [200] * INSTANCES
    rows = archive.rows()
    assert len(rows) == INSTANCES
    archive.assert_nothing_half_stored()
    assert back == sent_bodies(files)
    copies = _audited_copies(archive)
    assert sorted(object_id for object_id, _ in copies) == sorted(list(rows) * 2)
    assert sorted(identical for _, identical in copies) == ["new"] * INSTANCES + ["true"] * INSTANCES
