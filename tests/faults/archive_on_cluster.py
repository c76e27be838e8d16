"""The archive's real processes on a private PostgreSQL cluster (pgcluster.py), for fault tests.

The test process itself never connects Django to that cluster: the world is provisioned,
checked and read back through subprocesses (manage.py, dcmtk) and plain psycopg2, so the
cluster can be restarted under the processes at any moment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from pydicom import dcmread

from tests.faults.pgcluster import PgCluster
from tests.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SUCCESS = "Success"
_WORLD = """
from alliance import audit, services
from tests import factories
clinic = factories.make_institution(name="Clinic A", ae_title="CLINA")
services.device_create(institution=clinic, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
doctor = factories.make_doctor(institution=clinic, username="owner")
print("TOKEN", services.token_create(doctor=doctor, by=audit.SYSTEM).key)
"""


class Archive:
    """DATA_DIR, the environment of every process, and what a test reads back."""

    def __init__(self, cluster: PgCluster, data_dir: Path) -> None:
        self.cluster = cluster
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "DATABASE_URL": cluster.url,
            "DATA_DIR": str(data_dir),
            "DICOM_CHECK_DEVICE_HOST": "1",
            "CELERY_BROKER_URL": "",  # the filesystem queue in DATA_DIR: no broker needed
            "LOG_LEVEL": "WARNING",
        }
        self.token = ""

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def provision(self) -> None:
        self.manage("migrate", "--noinput", "-v0")
        out = self.manage("shell", "-c", _WORLD).stdout
        self.token = re.search(r"TOKEN (\w+)", out).group(1)  # type: ignore[union-attr]

    @contextmanager
    def dicom_server(self, **env: str) -> Iterator[int]:
        port = free_port()
        log = (self.data_dir / f"dicom-server-{port}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_server"],
            cwd=ROOT,
            env={**self.env, "DICOM_PORT": str(port), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()

    @contextmanager
    def web_server(self) -> Iterator[str]:
        port = free_port()
        log = (self.data_dir / f"gunicorn-{port}.log").open("w")
        site = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "alliance.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "-t", "120"],
            cwd=ROOT,
            env={**self.env, "SITE_URL": site},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            yield site
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()

    def server_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.data_dir.glob("*.log")))

    def storage_check(self) -> subprocess.CompletedProcess[str]:
        return self.manage("dicom_storage_check", check=False)

    def wait_until_clean(self, seconds: float = 180) -> str:
        """dicom_storage_check until it finds nothing (the spool's backlog indexed); its output."""
        deadline = time.monotonic() + seconds
        while True:
            done = self.storage_check()
            if done.returncode == 0 or time.monotonic() > deadline:
                assert done.returncode == 0, f"dicom_storage_check:\n{done.stdout}\n{done.stderr}"
                return done.stdout
            time.sleep(1)

    def rows(self) -> dict[str, tuple[str, str]]:
        """SOP Instance UID -> (storage key, sha256) of every instance row."""
        with psycopg2.connect(self.cluster.url) as db, db.cursor() as cursor:
            cursor.execute("SELECT sop_uid, storage_key, sha256 FROM imaging_instance")
            rows = {sop: (key, sha) for sop, key, sha in cursor.fetchall()}
        db.close()
        return rows

    def stored_files(self) -> set[str]:
        """Storage keys of every file in the store (staging files included: none may be left)."""
        store = self.data_dir / "dicom"
        return {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()} if store.is_dir() else set()

    def assert_nothing_half_stored(self) -> None:
        rows = self.rows()
        assert self.stored_files() == {key for key, _ in rows.values()}, "files without rows or rows without files"
        refused = self.data_dir / "refused"
        assert not refused.exists() or not any(refused.iterdir()), "answered instances set aside"


def store_statuses(port: int, files: list[Path], *, calling: str = "CT_A", called: str = "CLINA") -> dict[Path, str]:
    """storescu the files over one association, going on after a refusal as a modality does;
    each file's C-STORE response status as dcmtk names it ("Success", "Refused: OutOfResources",
    ...), absent when none came."""
    return storescu(port, files, calling=calling, called=called)[0]


def storescu(
    port: int, files: list[Path], *, calling: str = "CT_A", called: str = "CLINA"
) -> tuple[dict[Path, str], str]:
    """store_statuses, and storescu's output."""
    done = subprocess.run(
        ["storescu", "-v", "--no-halt", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    output = done.stdout + done.stderr
    statuses: dict[Path, str] = {}
    sending: Path | None = None
    for line in output.splitlines():
        if m := re.search(r"Sending file: (.+)$", line):
            sending = Path(m.group(1).strip())
        elif (m := re.search(r"Received Store Response \(([^)]*)", line)) and sending is not None:
            statuses[sending] = m.group(1).strip()
            sending = None
    return statuses, output


def retrieved_bodies(port: int, study_uid: str, out: Path) -> dict[str, str]:
    """getscu the study: SOP Instance UID -> sha256 of the data set after the file meta."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(
        [
            "getscu",
            *("-aet", "CT_A", "-aec", "CLINA", "-S", "-od", str(out)),
            *("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"),
            *("127.0.0.1", str(port)),
        ],
        capture_output=True,
        timeout=600,
        check=True,
    )
    return dict(body_sha256(p) for p in out.iterdir())


def body_sha256(path: Path) -> tuple[str, str]:
    """(SOP Instance UID, sha256 of the data set after the file meta): what travels on the wire."""
    with path.open("rb") as f:
        f.seek(132 + 8)  # the value of (0002,0000) File Meta Information Group Length, explicit VR UL
        group_length = int.from_bytes(f.read(4), "little")
        f.seek(132 + 12 + group_length)
        body = f.read()
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID), hashlib.sha256(body).hexdigest()


def sent_bodies(files: list[Path]) -> dict[str, str]:
    return dict(body_sha256(p) for p in files)


def wait_for(condition: Any, seconds: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or condition}")
        time.sleep(0.05)
