"""A commit whose answer never arrives: PostgreSQL committed, the client saw its connection cut.

Ingest must not take that for a rollback. It looks the rows up on a fresh connection and
deletes a placed file only when its rows are known absent; a resend repairs a row whose
file has gone. The database sits behind tests/faults/pgproxy.py, which swallows the answer
to the commit of the chosen INSERT INTO "imaging_instance" and cuts the connection.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pytest
from django.db import connection, connections
from pydicom import dcmread

from alliance import audit, services
from alliance.models import AuditEvent
from imaging import ingest, reconcile, spool, storage
from imaging.ingest import IngestError, Spooling, ingest_bytes, receive_path
from imaging.models import Instance, Study
from tests import factories
from tests.faults.pgproxy import PgProxy
from tests.imaging.dicomgen import make_ct_series, part10_bytes, write_series
from tests.processes import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
INSTANCE_INSERT = b'INSERT INTO "imaging_instance"'
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clinic(db):  # type: ignore[no-untyped-def]
    return factories.make_institution(name="Clinic A", ae_title="CLINA")


@pytest.fixture
def actor(clinic) -> audit.Actor:  # type: ignore[no-untyped-def]
    return audit.Actor("device", "1", "CT_CLINA", clinic.pk)


@pytest.fixture
def dicom_dir(settings) -> Path:  # type: ignore[no-untyped-def]
    return Path(settings.STORAGES["dicom"]["OPTIONS"]["location"])


@pytest.fixture
def through_proxy() -> Iterator[PgProxy]:
    """Every new database connection (this thread's and any other's) goes through a proxy that
    loses the answer to the first commit of an instance row."""
    shared = connections.settings["default"]  # the dict each thread's connection is made from
    assert shared is connection.settings_dict
    upstream = (shared["HOST"] or "127.0.0.1", int(shared["PORT"] or 5432))
    proxy = PgProxy(upstream, marker=INSTANCE_INSERT)
    connection.close()
    shared["HOST"], shared["PORT"] = "127.0.0.1", proxy.port
    try:
        yield proxy
    finally:
        proxy.refusing = False
        connection.close()
        shared["HOST"], shared["PORT"] = upstream[0], upstream[1]
        proxy.close()


def _send(data: bytes, clinic, actor):  # type: ignore[no-untyped-def]
    return ingest_bytes(data, institution=clinic, actor=actor, via="test", source="127.0.0.1")


def _assert_every_acknowledged_instance_is_stored(sent: list[bytes]) -> None:
    """Rows present, each file byte for byte, and dicom_storage_check clean."""
    connection.close()
    for data in sent:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert storage.local_path(instance).read_bytes() == data
    assert list(reconcile.missing_files()) == []
    assert list(reconcile.orphan_keys(older_than=timedelta(0))) == []
    assert spool.waiting_entries() == [] and spool.refused_files() == []


def _key_of(data: bytes) -> str:
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    return storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_a_lost_commit_answer_on_the_careful_path_keeps_the_committed_file(clinic, actor, through_proxy):  # type: ignore[no-untyped-def]
    data = part10_bytes(make_ct_series(1, 16, 16)[0])  # the first of its series: the careful path

    result = _send(data, clinic, actor)

    assert through_proxy.cut.is_set()  # the commit's answer was lost
    assert result.created
    _assert_every_acknowledged_instance_is_stored([data])


def test_a_lost_commit_answer_on_the_one_round_trip_path_keeps_the_committed_file(clinic, actor, through_proxy):  # type: ignore[no-untyped-def]
    through_proxy.cut_at = 2  # the first instance goes through; the second's answer is lost
    sent = [part10_bytes(ds) for ds in make_ct_series(2, 16, 16)]
    _send(sent[0], clinic, actor)

    with pytest.MonkeyPatch.context() as patch:
        calls: list[int] = []
        real = ingest._store_once
        patch.setattr(ingest, "_store_once", lambda *a, **k: calls.append(1) or real(*a, **k))
        result = _send(sent[1], clinic, actor)
    assert calls == []  # it was the one-round-trip path that lost its answer

    assert through_proxy.cut.is_set()
    assert result.created
    assert Study.objects.get().num_instances == 2
    _assert_every_acknowledged_instance_is_stored(sent)


def test_a_lost_commit_answer_of_a_spooled_run_keeps_every_file(clinic, actor, tmp_path, through_proxy, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(spool, "LINGER_SECONDS", 3600.0)  # gathers until someone waits: one batch
    through_proxy.cut_at = 2  # the first instance goes through; the answer to the run's commit is lost
    sent = [part10_bytes(ds) for ds in make_ct_series(4, 16, 16)]
    _send(sent[0], clinic, actor)  # its parents are known: the rest goes to the spool
    owner = spool.Spool()
    try:
        association = owner.association(spool.Sender(clinic.pk, actor, "dimse", "10.0.0.5:4100"))
        for i, data in enumerate(sent[1:]):
            path = tmp_path / f"rx-{i}.dcm"
            path.write_bytes(data)
            spooling = Spooling(owner, association)
            answer = receive_path(path, institution=clinic, actor=actor, via="dimse", source="x", spooling=spooling)
            assert answer is None  # answered from the spool
            path.unlink()  # the spool holds its own link
        assert owner.wait_for(association)
        owner.finish(association)
    finally:
        owner.close()

    assert through_proxy.cut.is_set()
    assert Study.objects.get().num_instances == 4
    _assert_every_acknowledged_instance_is_stored(sent)


def test_an_undecidable_outcome_keeps_the_file_and_reports_a_storage_failure(  # type: ignore[no-untyped-def]
    clinic, actor, dicom_dir, through_proxy, monkeypatch
):
    monkeypatch.setattr(ingest, "_SETTLE_SECONDS", 0.5)
    through_proxy.cut_at = 2
    sent = [part10_bytes(ds) for ds in make_ct_series(2, 16, 16)]
    _send(sent[0], clinic, actor)
    through_proxy.refusing = True  # after the cut, the database cannot be reached at all

    with pytest.raises(IngestError) as caught:
        _send(sent[1], clinic, actor)

    assert (caught.value.code, caught.value.dicom_status) == ("storage-failed", 0xA700)
    assert (dicom_dir / _key_of(sent[1])).read_bytes() == sent[1]  # kept: it may be committed
    through_proxy.refusing = False
    again = _send(sent[1], clinic, actor)  # the sender tries again once it heard a failure
    assert (again.created, again.identical) == (False, True)
    _assert_every_acknowledged_instance_is_stored(sent)


def test_a_resend_repairs_a_row_whose_file_is_missing(clinic, actor, dicom_dir):  # type: ignore[no-untyped-def]
    data = part10_bytes(make_ct_series(1, 16, 16)[0])
    first = _send(data, clinic, actor)
    (dicom_dir / first.instance.storage_key).unlink()  # what a lost commit answer used to leave

    again = _send(data, clinic, actor)

    assert (again.created, again.identical) == (False, True)
    assert Instance.objects.get().storage_key == first.instance.storage_key
    repair = AuditEvent.objects.get(action="instance.repair")
    assert (repair.object_id, repair.detail["problem"]) == (first.instance.sop_uid, "missing")
    _assert_every_acknowledged_instance_is_stored([data])


def test_a_resend_repairs_a_stored_file_whose_bytes_do_not_match_its_row(clinic, actor, dicom_dir):  # type: ignore[no-untyped-def]
    sent = [part10_bytes(ds) for ds in make_ct_series(2, 16, 16)]
    _send(sent[0], clinic, actor)
    second = _send(sent[1], clinic, actor)  # the one-round-trip path
    stored = dicom_dir / second.instance.storage_key
    stored.unlink()
    stored.write_bytes(b"not what was stored")

    again = _send(sent[1], clinic, actor)

    assert (again.created, again.identical) == (False, True)
    assert AuditEvent.objects.get(action="instance.repair").detail["problem"] == "other-bytes"
    _assert_every_acknowledged_instance_is_stored(sent)


def test_recovery_repairs_a_row_whose_file_is_missing_from_the_spool_entry(clinic, actor, dicom_dir):  # type: ignore[no-untyped-def]
    data = part10_bytes(make_ct_series(1, 16, 16)[0])
    first = _send(data, clinic, actor)
    (dicom_dir / first.instance.storage_key).unlink()
    stopped = spool.root() / "0123456789ab-99997"
    stopped.mkdir(parents=True)
    (stopped / "a0.json").write_bytes(spool.Sender(clinic.pk, actor, "dimse", "x").to_json())
    (stopped / "a0-0.dcm").write_bytes(data)  # committed, then the stop before the entry went

    assert spool.recover() == 1

    assert AuditEvent.objects.filter(action="instance.repair").count() == 1
    _assert_every_acknowledged_instance_is_stored([data])


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)")
def test_a_lost_commit_answer_in_the_dicom_server_loses_no_acknowledged_instance(  # type: ignore[no-untyped-def]
    clinic, tmp_path, settings, through_proxy
):
    """The real server behind the proxy, a series sent with storescu: the first instance takes
    the careful path, the next ones the write-ahead spool, whose first commit's answer is lost."""
    through_proxy.cut_at = 2
    services.device_create(institution=clinic, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    sent = write_series(make_ct_series(12, 16, 16), tmp_path / "sent")
    data, port = tmp_path / "data", free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@127.0.0.1:{through_proxy.port}/{db['NAME']}",
        "DATA_DIR": str(data),
        "DICOM_PORT": str(port),
    }
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, proc)
            done = subprocess.run(
                ["storescu", "-v", "-aet", "CT_A", "-aec", "CLINA", "127.0.0.1", str(port), *map(str, sent)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("Received Store Response (Success)") == len(sent)  # all acknowledged
    assert through_proxy.cut.is_set()

    settings.DATA_DIR = data
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {**settings.STORAGES["dicom"], "OPTIONS": {"location": data / "dicom"}},
    }
    connection.close()
    for path in sent:
        ds = dcmread(path, stop_before_pixels=True)
        instance = Instance.objects.get(sop_uid=ds.SOPInstanceUID)
        assert _data_set(storage.local_path(instance).read_bytes()) == _data_set(path.read_bytes())
    assert list(reconcile.missing_files()) == []
    assert list(reconcile.orphan_keys(older_than=timedelta(0))) == []
    assert spool.waiting_entries() == [] and spool.refused_files() == []


def _data_set(data: bytes) -> bytes:
    """The bytes after the File Meta Information: what travels in a C-STORE."""
    group_length = int.from_bytes(data[132 + 8 : 132 + 12], "little")
    return data[132 + 12 + group_length :]
