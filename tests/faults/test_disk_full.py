"""A full store under the real DICOM server (issue 21 item 9).

The store (DATA_DIR/dicom) is a small tmpfs the test mounts, filled up but for a little
room; DATA_DIR itself (the received files, the spool) has space. While the store is full
the server must not keep answering Success with instances piling up in its spool: once the
indexer cannot place them it answers 0xA700 (back-pressure) and releases are answered.
Nothing is half stored; once space returns the spool is indexed, refused instances sent
again are stored, and every acknowledged instance is retrieved byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.archive_on_cluster import (
    SUCCESS,
    Archive,
    retrieved_bodies,
    sent_bodies,
    store_statuses,
    storescu,
)
from tests.faults.pgcluster import PgCluster, available
from tests.imaging import dicomgen

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
    pytest.mark.skipif(bool(available()), reason=available() or "-"),
]
REFUSED = "Refused: OutOfResources"
STORE_MB = 24  # the whole series fits once the filler is gone
ROOM_BYTES = 600 * 1024  # left free in the store: a few instances fit, the rest do not


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    store = tmp_path / "data" / "dicom"
    store.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STORE_MB}m", "tmpfs", str(store)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def _fill(store: Path, leave: int) -> Path:
    """A file taking all the store's space but `leave` bytes."""
    filler = store / ".filler"
    stat = os.statvfs(store)
    size = stat.f_bavail * stat.f_frsize - leave
    with filler.open("wb") as out:
        out.write(b"\0" * size)
    return filler


def test_a_full_store_answers_a700_not_success_and_everything_acknowledged_is_kept(
    cluster, small_store, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    archive = Archive(cluster, tmp_path / "data")
    archive.provision()
    series = dicomgen.make_ct_series(120, 256, 256, patient_id="PD-1")  # 128 KB each: 15 MB
    files = dicomgen.write_series(series, tmp_path / "series")
    with archive.dicom_server() as port:
        assert store_statuses(port, files[:1]) == {files[0]: SUCCESS}  # the series is known: spooled from now
        filler = _fill(small_store, ROOM_BYTES)

        answers, output = storescu(port, files[1:])
        print(
            f"store full: {sum(v == SUCCESS for v in answers.values())} Success, "
            f"{sum(v == REFUSED for v in answers.values())} refused 0xA700 of {len(files) - 1}"
        )
        assert set(answers.values()) <= {SUCCESS, REFUSED}, answers
        assert REFUSED in answers.values()  # back-pressure, not Success while the spool grows
        assert "Release Failed" not in output  # the release is answered

        filler.unlink()  # space returns
        refused = [f for f in files[1:] if answers.get(f) != SUCCESS]
        for _ in range(60):
            if not refused:
                break
            again = store_statuses(port, refused)
            refused = [f for f in refused if again.get(f) != SUCCESS]
        assert refused == []

        archive.wait_until_clean()
        archive.assert_nothing_half_stored()
        assert retrieved_bodies(port, str(series[0].StudyInstanceUID), tmp_path / "got") == sent_bodies(files)
