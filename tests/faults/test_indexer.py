"""The DIMSE write-ahead indexer when its database connection breaks mid-indexing (issue 21 item 2).

A proxy in front of a private PostgreSQL cluster cuts the connection that carries the
indexer's INSERT of instance rows, twice: the run indexed together fails, then the first
one-by-one attempt. psycopg2 then raises InterfaceError ("connection already closed") on the
broken connection, which is no DatabaseError: the indexer must take it for a lost connection,
try again and live on, never set the instance aside nor end.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.archive_on_cluster import SUCCESS, Archive, retrieved_bodies, sent_bodies, store_statuses
from tests.faults.pgcluster import CuttingProxy, PgCluster, available
from tests.imaging import dicomgen

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
    pytest.mark.skipif(bool(available()), reason=available() or "-"),
]
INSERT_INSTANCE = b'INSERT INTO "imaging_instance"'


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def proxy(cluster: PgCluster) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(cluster.port)
    yield proxy
    proxy.close()


@pytest.fixture
def archive(cluster: PgCluster, proxy: CuttingProxy, tmp_path: Path) -> Archive:
    archive = Archive(cluster, tmp_path / "data")
    archive.data_dir.mkdir()
    archive.provision()
    archive.env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{proxy.port}/alliance"
    return archive


def test_a_connection_broken_mid_indexing_is_retried_and_the_indexer_lives_on(archive, proxy, tmp_path) -> None:  # type: ignore[no-untyped-def]
    series = dicomgen.make_ct_series(12, 32, 32, patient_id="PF-1")
    files = dicomgen.write_series(series, tmp_path / "series")
    study_uid = str(series[0].StudyInstanceUID)
    with archive.dicom_server() as port:
        assert store_statuses(port, files[:1]) == {files[0]: SUCCESS}  # indexed first: the series is known
        proxy.arm(INSERT_INSTANCE, cuts=2)

        answered = store_statuses(port, files[1:10])  # answered from the spool, indexed behind
        assert answered == dict.fromkeys(files[1:10], SUCCESS)
        assert proxy.cut == 2
        assert store_statuses(port, files[10:]) == dict.fromkeys(files[10:], SUCCESS)  # the indexer is still there

        archive.wait_until_clean()
        archive.assert_nothing_half_stored()
        assert retrieved_bodies(port, study_uid, tmp_path / "got") == sent_bodies(files)
    assert "Exception in thread dicom-indexer" not in archive.server_log()
