"""PostgreSQL restarted (fast and immediate) under the archive's real processes (issue 21 items 2, 8).

A private cluster is restarted while storescu sends a series to `manage.py dicom_server`
association after association, and while STOW-RS requests reach gunicorn. Every C-STORE is
answered Success or 0xA700 (refused, out of resources: try again; never 0x0110), every
HTTP answer is not a 500; what was refused is sent again, as a modality or a client would.
In the end dicom_storage_check is clean, no file is without its row or row without its
file, and every acknowledged instance is retrieved byte for byte.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from imaging.dicomweb.multipart import read_parts
from tests.faults.archive_on_cluster import (
    SUCCESS,
    Archive,
    retrieved_bodies,
    sent_bodies,
    store_statuses,
    wait_for,
)
from tests.faults.pgcluster import PgCluster, available
from tests.imaging import dicomgen

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
    pytest.mark.skipif(bool(available()), reason=available() or "-"),
]
REFUSED = "Refused: OutOfResources"
CHUNK = 5  # instances per association
BOUNDARY = "fault-test-boundary"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
def provisioned(cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    archive = Archive(cluster, tmp_path_factory.mktemp("restart-data"))
    archive.provision()
    return archive


@pytest.fixture
def archive(provisioned: Archive) -> Iterator[Archive]:
    yield provisioned
    if not _running(provisioned.cluster):
        provisioned.cluster.pg_ctl("start")


def _running(cluster: PgCluster) -> bool:
    return (cluster.data / "postmaster.pid").exists()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_c_store_through_a_database_restart_answers_success_or_a700_and_loses_nothing(archive, mode, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The restart is stopping the cluster (-m fast or immediate) once 10 instances are
    answered and starting it again once 100 more were answered while it was down, a refusal
    among them (or all but the last 20): the outage falls inside the association, whatever the
    speed of the machine, and lasts long enough for the indexer to find it."""
    series = dicomgen.make_ct_series(300, 64, 64, patient_id=f"PR-{mode}")
    files = dicomgen.write_series(series, tmp_path / "series")
    with archive.dicom_server() as port:
        sender = Storescu(port, files)
        sender.answered(10)
        archive.cluster.pg_ctl("stop", mode=mode)
        down_at = len(sender.statuses)
        # The indexer finds the outage at its next batch; until then the spool may still take
        # what it makes durable (Success). On a loaded machine that can be many instances, so
        # wait for 100 answers with a refusal among them, or for all but the last 20 files.
        sender.answered_until(
            lambda answers: (len(answers) >= down_at + 100 and REFUSED in answers[down_at:])
            or len(answers) >= len(files) - 20
        )
        during = list(sender.statuses.values())[down_at:]
        archive.cluster.pg_ctl("start")
        answers = sender.finish()
        print(f"restart -m {mode} during C-STORE: {_counts(answers, files)}; while down: {_tally(during)}")
        assert set(answers.values()) <= {SUCCESS, REFUSED}, answers
        assert REFUSED in during  # back-pressure: no Success while nothing can be indexed
        _send_until_acknowledged(port, [f for f in files if answers.get(f) != SUCCESS])

        archive.wait_until_clean()
        archive.assert_nothing_half_stored()
        assert retrieved_bodies(port, str(series[0].StudyInstanceUID), tmp_path / "got") == sent_bodies(files)
    assert "Exception in thread dicom-indexer" not in archive.server_log()


class Storescu:
    """storescu sending in the background (going on after a refusal), its answers read as they come."""

    def __init__(self, port: int, files: list[Path]) -> None:
        self.statuses: dict[Path, str] = {}
        self._changed = threading.Condition()
        self._proc = subprocess.Popen(
            ["storescu", "-v", "--no-halt", "-aet", "CT_A", "-aec", "CLINA", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        sending: Path | None = None
        assert self._proc.stdout is not None
        with self._proc.stdout as output:
            for line in output:
                if m := re.search(r"Sending file: (.+)$", line):
                    sending = Path(m.group(1).strip())
                elif (m := re.search(r"Received Store Response \(([^)]*)", line)) and sending is not None:
                    with self._changed:
                        self.statuses[sending] = m.group(1).strip()
                        self._changed.notify_all()
        with self._changed:
            self._proc.wait()
            self._changed.notify_all()

    def answered(self, count: int) -> None:
        """Wait until `count` C-STOREs were answered (or storescu has ended)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.statuses) >= count or self._proc.poll() is not None, 600)

    def answered_until(self, done: Callable[[list[str]], bool]) -> None:
        """Wait until `done(answers so far, in order)` holds (or storescu has ended)."""
        with self._changed:
            self._changed.wait_for(lambda: done(list(self.statuses.values())) or self._proc.poll() is not None, 600)

    def finish(self) -> dict[Path, str]:
        self._reader.join(600)
        return dict(self.statuses)


def _tally(statuses: list[str]) -> str:
    return ", ".join(f"{name}: {statuses.count(name)}" for name in sorted(set(statuses)))


def _counts(answers: dict[Path, str], files: list[Path]) -> str:
    refused = sum(1 for f in files if answers.get(f) == REFUSED)
    success = sum(1 for f in files if answers.get(f) == SUCCESS)
    unanswered = len(files) - success - refused
    return f"{success} Success, {refused} refused 0xA700, {unanswered} not answered (association rejected)"


def _send_until_acknowledged(port: int, files: list[Path]) -> None:
    """What a modality does with refused instances: send them again a little later."""
    for _ in range(60):
        if not files:
            return
        answers = store_statuses(port, files)
        assert set(answers.values()) <= {SUCCESS, REFUSED}, answers
        files = [f for f in files if answers.get(f) != SUCCESS]
        time.sleep(1)
    raise AssertionError(f"{len(files)} instance(s) still refused after the database came back")


def _stow(site: str, token: str, data: bytes) -> requests.Response:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    headers = {"Authorization": f"Token {token}", "Content-Type": content_type, "Accept": "application/dicom+json"}
    return requests.post(f"{site}/dicomweb/studies", data=body, headers=headers, timeout=120)


def _stored(response: requests.Response) -> bool:
    """200 naming the instance in ReferencedSOPSequence: acknowledged."""
    return response.status_code == 200 and "00081199" in response.json()


def _wado(site: str, token: str, ds: Any, spool: Path) -> bytes:
    url = f"{site}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = requests.get(url, headers={"Authorization": f"Token {token}", "Accept": accept}, timeout=120)
    assert response.status_code == 200, response.text
    boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
    spool.mkdir(exist_ok=True)
    (part,) = read_parts(io.BytesIO(response.content), boundary, spool, max_part_bytes=1 << 30)
    return part.path.read_bytes()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stow_through_a_database_restart_never_answers_500_and_loses_nothing(archive, mode, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A client posts the instances one by one, again and again until each is acknowledged,
    while the cluster is stopped (-m fast or immediate) after 4 answers and started again
    after 5 more answers came while it was down."""
    series = dicomgen.make_ct_series(30, 64, 64, patient_id=f"PS-{mode}")
    sent = {str(ds.SOPInstanceUID): dicomgen.part10_bytes(ds) for ds in series}
    with archive.web_server() as site:
        client = StowClient(site, archive.token, sent)
        client.answered(4)
        archive.cluster.pg_ctl("stop", mode=mode)
        down_at = len(client.answers)
        client.answered(down_at + 5)
        during = client.answers[down_at:]
        archive.cluster.pg_ctl("start")
        client.finish()
        print(
            f"restart -m {mode} during STOW-RS: HTTP {_tally([str(a) for a in client.answers])}; while down: {during}"
        )
        assert 500 not in client.answers
        assert client.acknowledged == set(sent)

        archive.wait_until_clean()
        archive.assert_nothing_half_stored()
        for ds in series:
            assert _wado(site, archive.token, ds, tmp_path / "wado") == sent[str(ds.SOPInstanceUID)]


class StowClient:
    """Posts each instance (one per request) until acknowledged, in the background."""

    def __init__(self, site: str, token: str, sent: dict[str, bytes]) -> None:
        self.answers: list[int] = []
        self.acknowledged: set[str] = set()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._post_all, args=(site, token, sent))
        self._thread.start()

    def _post_all(self, site: str, token: str, sent: dict[str, bytes]) -> None:
        for _ in range(200):
            missing = [uid for uid in sent if uid not in self.acknowledged]
            if not missing:
                break
            for uid in missing:
                response = _stow(site, token, sent[uid])
                with self._changed:
                    self.answers.append(response.status_code)
                    if _stored(response):
                        self.acknowledged.add(uid)
                    self._changed.notify_all()
            time.sleep(0.2)
        with self._changed:
            self.answers.append(0)  # done
            self._changed.notify_all()

    def answered(self, count: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: len(self.answers) >= count or 0 in self.answers, 600)

    def finish(self) -> None:
        self._thread.join(1200)
        self.answers.remove(0)


def test_the_web_app_answers_503_while_the_database_is_down_and_200_at_once_after_a_restart(archive) -> None:  # type: ignore[no-untyped-def]
    """Kept connections are health-checked (CONN_HEALTH_CHECKS): a stale one after a restart
    is replaced, not a 500 for the next request of each thread."""
    qido = "/dicomweb/studies"
    headers = {"Authorization": f"Token {archive.token}", "Accept": "application/dicom+json"}
    with archive.web_server() as site:
        for _ in range(4):  # every worker holds a connection
            assert requests.get(site + qido, headers=headers, timeout=60).status_code in {200, 204}
        archive.cluster.restart("fast")
        for _ in range(4):
            assert requests.get(site + qido, headers=headers, timeout=60).status_code in {200, 204}

        archive.cluster.pg_ctl("stop", mode="fast")
        try:
            down = requests.get(site + qido, headers=headers, timeout=60)
            assert down.status_code == 503
            assert down.headers["Retry-After"].isdigit()
            assert down.json()["error"]["code"] == "database_unavailable"
            page = requests.get(site + "/audit/", headers={"Cookie": "sessionid=" + "x" * 32}, timeout=60)
            assert (page.status_code, page.headers["Content-Type"].split(";")[0]) == (503, "text/html")
        finally:
            archive.cluster.pg_ctl("start")
        wait_for(lambda: requests.get(site + qido, headers=headers, timeout=60).status_code in {200, 204})
