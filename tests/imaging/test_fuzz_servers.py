"""Hostile files against the real servers (`manage.py dicom_server` and gunicorn, on the test
database): a seeded fuzzer's 1,000 mutated files over C-STORE and STOW-RS (tests/imaging/
fuzzing.py; bench/fuzz.py runs 10,000), and a deflate bomb over C-STORE.

Pass, for every file: no server process ends, no request goes unanswered within its timeout,
no HTTP 5xx, no association ends without a status, and every instance stored answers its
/metadata with valid JSON and is retrieved. A failure names the seed and case that rebuild it
(fuzzing.make_case).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from pydicom import uid as pydicom_uid
from pynetdicom import AE, _config

from alliance import audit, services
from imaging.models import Instance
from tests import factories
from tests.imaging import fuzzing
from tests.imaging.dicomgen import deflate_bomb

pytestmark = pytest.mark.integration
SEED = 20261202
FILES = 1000
MB = 1024 * 1024


def database_url() -> str:
    db = settings.DATABASES["default"]
    user, host, port = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def world(transactional_db) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    clinic = factories.make_institution(ae_title="CLINA", name="Clinic A")
    services.device_create(institution=clinic, ae_title="FUZZ_SCU", host="127.0.0.1", port=104, by=audit.SYSTEM)
    doctor = factories.make_doctor(institution=clinic, username="fuzzer")
    return SimpleNamespace(clinic=clinic, token=services.token_create(doctor=doctor, by=audit.SYSTEM).key)


@pytest.fixture
def running(world, tmp_path) -> Iterator[fuzzing.Servers]:  # type: ignore[no-untyped-def]
    with fuzzing.servers(database_url(), tmp_path / "data") as started:
        yield started


@pytest.fixture
def running_with_default_limits(world, tmp_path) -> Iterator[fuzzing.Servers]:  # type: ignore[no-untyped-def]
    """The servers as deployed: DICOM_MAX_INFLATED_MB 512 and a ratio of 100, so that a bomb of 1 MB
    is refused only after 100 MB, more than any memory growth the test allows."""
    with fuzzing.servers(database_url(), tmp_path / "data", limits={}) as started:
        yield started


def stored_instances() -> list[tuple[str, str, str]]:
    rows = Instance.objects.values_list("series__study__study_uid", "series__series_uid", "sop_uid")
    return [(study, series, sop_uid) for study, series, sop_uid in rows]


def test_mutated_files_over_c_store_and_stow_are_stored_and_servable_or_refused_with_a_status(  # type: ignore[no-untyped-def]
    world, running, tmp_path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()

    run = fuzzing.run(
        SEED,
        FILES,
        servers=running,
        calling="FUZZ_SCU",
        called="CLINA",
        token=world.token,
        folder=outbox,
        stored_instances=stored_instances,
    )

    print(run.report())  # the counts, for a reader of the test's output
    assert run.passed(), run.report()
    counts = run.counts()
    assert counts["stored"] > FILES // 20 and counts["refused"] > FILES // 4, counts  # the fuzz reached both


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_deflate_bomb_over_c_store_is_refused_with_0xa700_and_never_inflated_in_memory(  # type: ignore[no-untyped-def]
    world, running_with_default_limits, tmp_path
) -> None:
    running = running_with_default_limits
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(1024))  # 1 GB inflated, about 1 MB sent
    server = running.processes[0].pid
    ae = AE(ae_title="FUZZ_SCU")
    ae.dimse_timeout = ae.network_timeout = fuzzing.TIMEOUT
    ae.add_requested_context(fuzzing.CT_STORAGE, pydicom_uid.DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", running.dicom_port, ae_title="CLINA")
    assert assoc.is_established
    Path(f"/proc/{server}/clear_refs").write_text("5")  # the server's peak resident size, from now
    before = _vm_hwm(server)
    previous, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        status: Any = assoc.send_c_store(path)  # the file's data set as it is: still deflated
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
    time.sleep(0.2)  # the release reached the server

    assert status.Status == 0xA700
    assert "inflates to more than" in status.ErrorComment
    assert _vm_hwm(server) - before < 64 * MB
    assert not Instance.objects.exists()
    assert running.dead() == []
