"""kill -9 of the real processes: a DICOM server child while storescu sends, the DICOM
server's parent, the Celery worker while it renders. Nothing acknowledged is lost, the
storage check is clean and every instance comes back byte for byte over C-GET."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from alliance.management.commands.run_embedded import Command as RunEmbedded
from alliance.management.commands.run_embedded import _Part
from alliance.supervise import Restarts
from imaging.models import Instance
from tests.faults.procs_stack import (
    PrivateRedis,
    Stack,
    acknowledged,
    alive,
    body_sha256,
    children_of,
    retrieved_with_getscu,
    storage_check,
    storescu,
    wait_for,
)
from tests.faults.procs_world import dimse_world  # noqa: F401  (a fixture)
from tests.imaging import dicomgen
from tests.processes import free_port

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")


def _series(folder: Path, n: int, size: int = 64, patient_id: str = "PK-1") -> tuple[str, list[Path]]:
    datasets = dicomgen.make_ct_series(n, size, size, patient_id=patient_id)
    return str(datasets[0].StudyInstanceUID), dicomgen.write_series(datasets, folder)


def _assert_all_back_and_clean(port: int, study_uid: str, files: list[Path], folder: Path) -> None:
    assert retrieved_with_getscu(port, study_uid, folder) == dict(body_sha256(p) for p in files)
    status, report, orphans = storage_check()
    assert (status, orphans) == (0, []), report


def _spool_folder_of(data_dir: Path, pids: set[int]) -> int | None:
    """The pid among `pids` whose spool folder exists: the process serving the association."""
    folders = (data_dir / "spool").glob("*-*") if (data_dir / "spool").is_dir() else []
    for folder in folders:
        pid = int(folder.name.rpartition("-")[2])
        if pid in pids:
            return pid
    return None


def _serving_child(log: Path, data_dir: Path, pids: set[int]) -> int:
    """The child serving storescu's association, once it has answered a few instances."""
    serving: list[int] = []

    def answering() -> bool:
        pid = _spool_folder_of(data_dir, pids)
        if pid is None or len(acknowledged(log)) < 10:
            return False
        serving.append(pid)
        return True

    assert wait_for(answering), log.read_text()[-2000:]
    return serving[0]


@pytest.mark.integration
@pytest.mark.usefixtures("dimse_world")
@needs_dcmtk
def test_a_killed_dicom_server_child_is_replaced_and_what_it_answered_is_indexed(tmp_path: Path) -> None:
    study_uid, files = _series(tmp_path / "send", 300)
    stack, port = Stack(tmp_path), free_port()
    try:
        parent = stack.dicom_server(port, processes=2)
        assert wait_for(lambda: len(children_of(parent.pid)) == 2)
        first = children_of(parent.pid)
        log = tmp_path / "storescu-1.log"
        sending = storescu(port, files, log)
        stack.procs["storescu"] = sending
        victim = _serving_child(log, tmp_path, first)
        os.kill(victim, signal.SIGKILL)
        assert sending.wait(timeout=120) != 0  # its association died with the child
        acked = acknowledged(log)

        assert wait_for(lambda: len(children_of(parent.pid) - {victim}) == 2), stack.log("dicom")
        assert wait_for(lambda: _spool_folder_of(tmp_path, {victim}) is None), stack.log("dicom")
        indexed = set(Instance.objects.values_list("sop_uid", flat=True))
        assert {body_sha256(p)[0] for p in acked} <= indexed
        again = storescu(port, files, tmp_path / "storescu-2.log")
        assert again.wait(timeout=300) == 0, (tmp_path / "storescu-2.log").read_text()[-2000:]

        _assert_all_back_and_clean(port, study_uid, files, tmp_path / "get")
        assert "started again" in stack.log("dicom")
    finally:
        stack.stop_all()


@pytest.mark.integration
@pytest.mark.usefixtures("dimse_world")
@needs_dcmtk
def test_a_killed_child_loses_none_of_the_new_studies_it_answered_from_its_spool(tmp_path: Path) -> None:
    """Single-instance studies: each is the first instance of a new study, answered once
    durable in the spool and indexed after. A child killed while it answers them: what it
    acknowledged is indexed (by its replacement's recovery), in studies of their own, and the
    storage check is clean; what it did not acknowledge goes again."""
    files = [
        path for i in range(200) for path in _series(tmp_path / "send" / f"s{i}", 1, size=32, patient_id=f"PK-N{i}")[1]
    ]
    stack, port = Stack(tmp_path), free_port()
    try:
        parent = stack.dicom_server(port, processes=2)
        assert wait_for(lambda: len(children_of(parent.pid)) == 2)
        first = children_of(parent.pid)
        log = tmp_path / "storescu-1.log"
        sending = storescu(port, files, log)
        stack.procs["storescu"] = sending
        victim = _serving_child(log, tmp_path, first)
        os.kill(victim, signal.SIGKILL)
        assert sending.wait(timeout=120) != 0  # its association died with the child
        acked = acknowledged(log)

        assert wait_for(lambda: len(children_of(parent.pid) - {victim}) == 2), stack.log("dicom")
        assert wait_for(lambda: _spool_folder_of(tmp_path, {victim}) is None), stack.log("dicom")
        indexed = dict(Instance.objects.values_list("sop_uid", "series__study__study_uid"))
        assert {body_sha256(p)[0] for p in acked} <= set(indexed)
        assert len(set(indexed.values())) == len(indexed)  # one study each, none merged
        again = storescu(port, files, tmp_path / "storescu-2.log")
        assert again.wait(timeout=300) == 0, (tmp_path / "storescu-2.log").read_text()[-2000:]
        assert Instance.objects.count() == len(files)
        status, report, orphans = storage_check()
        assert (status, orphans) == (0, []), report
    finally:
        stack.stop_all()


@pytest.mark.integration
@pytest.mark.usefixtures("dimse_world")
@needs_dcmtk
def test_the_children_of_a_killed_dicom_server_end_and_the_next_start_binds_the_port_and_clears_stale_tmp(
    tmp_path: Path,
) -> None:
    study_uid, files = _series(tmp_path / "send", 20, patient_id="PK-2")
    stack, port = Stack(tmp_path), free_port()
    try:
        parent = stack.dicom_server(port, processes=2)
        assert wait_for(lambda: len(children_of(parent.pid)) == 2)
        kids = children_of(parent.pid)
        assert storescu(port, files[:10], tmp_path / "storescu-1.log").wait(timeout=120) == 0

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)

        assert wait_for(lambda: not any(alive(pid) for pid in kids), timeout=60)
        partial, receiving = tmp_path / "tmp" / "in-left-by-the-kill.dcm", tmp_path / "tmp" / "in-arriving.dcm"
        partial.write_bytes(b"half an instance")
        os.utime(partial, (time.time() - 7200, time.time() - 7200))
        receiving.write_bytes(b"another process is writing this")
        restarted = stack.dicom_server(port, processes=2, name="dicom-again")
        assert not partial.exists() and receiving.exists()
        assert wait_for(lambda: len(children_of(restarted.pid)) == 2), stack.log("dicom-again")
        assert storescu(port, files[10:], tmp_path / "storescu-2.log").wait(timeout=120) == 0
        _assert_all_back_and_clean(port, study_uid, files, tmp_path / "get")
    finally:
        stack.stop_all()


@pytest.mark.integration
@pytest.mark.usefixtures("dimse_world")
@needs_dcmtk
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_renders_a_killed_worker_had_taken_are_done_by_the_next_worker(tmp_path: Path) -> None:
    study_uid, files = _series(tmp_path / "send", 120, size=256, patient_id="PK-3")
    redis = PrivateRedis(tmp_path)
    redis.start()
    stack, port = Stack(tmp_path, CELERY_BROKER_URL=redis.url, CELERY_VISIBILITY_TIMEOUT="5"), free_port()
    try:
        stack.dicom_server(port)
        assert storescu(port, files, tmp_path / "storescu.log").wait(timeout=300) == 0
        rendered = Instance.objects.filter(rendered=True)
        stack.worker()
        assert wait_for(rendered.exists, timeout=120), stack.log("worker")
        stack.kill("worker")  # its pool too: nothing acknowledges the batch it had taken
        assert rendered.count() < len(files)

        stack.worker(name="worker-2")
        assert wait_for(lambda: rendered.count() == len(files), timeout=120), stack.log("worker-2")[-3000:]
        _assert_all_back_and_clean(port, study_uid, files, tmp_path / "get")
    finally:
        stack.stop_all()
        redis.stop()


def test_run_embedded_starts_a_killed_part_again() -> None:
    part = _Part("sleeper", ["sleep", "60"])
    first = part.process.pid
    part.started -= 60  # it had run a while
    os.kill(first, signal.SIGKILL)
    part.process.wait()
    try:
        assert RunEmbedded()._restart_if_ended(part) == ""
        assert part.process.pid != first and part.process.poll() is None
    finally:
        part.terminate()
        part.wait_then_kill(5)


def test_run_embedded_gives_up_on_a_part_that_keeps_exiting_at_once() -> None:
    part = _Part("broken", ["false"])
    part.restarts = Restarts(first_delay=0.0, give_up_after=3)
    command, failed = RunEmbedded(), ""
    for _ in range(200):
        failed = command._restart_if_ended(part)
        if failed:
            break
        time.sleep(0.05)
    assert failed == "broken keeps exiting (last code 1)"


def test_run_embedded_runs_beat_apart_from_the_worker() -> None:
    command, bin_dir = RunEmbedded(), Path("/venv/bin")
    assert "-B" not in command._worker_command(bin_dir)
    assert command._beat_command(bin_dir)[3] == "beat"
