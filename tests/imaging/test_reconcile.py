"""dicom_storage_check: what a crash between storing and indexing could leave behind."""

from __future__ import annotations

import os
import time
from io import StringIO

import pytest
from django.core.management import call_command

from alliance.models import AuditEvent
from imaging import storage
from imaging.ingest import ingest_bytes
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import stored_files


def _stored(clinic, actor):  # type: ignore[no-untyped-def]
    data = part10_bytes(make_ct_series(1, 16, 16)[0])
    return ingest_bytes(data, institution=clinic, actor=actor, via="test").instance


def _orphan(dicom_dir, age_seconds: int, name: str = "orphan.dcm"):  # type: ignore[no-untyped-def]
    path = dicom_dir / "ab" / "cd" / "1.2.3" / "1.2.3.4" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by a crash")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def _check(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("dicom_storage_check", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_agreeing_storage_and_index_pass(clinic, actor):
    _stored(clinic, actor)

    assert _check() == (0, "0 orphan file(s) found, 0 instance(s) without a file\n")


def test_a_store_that_was_never_written_to_is_clean(db, dicom_dir):
    assert not dicom_dir.exists()

    assert _check() == (0, "0 orphan file(s) found, 0 instance(s) without a file\n")


def test_old_orphan_is_reported_and_removed_but_a_fresh_one_is_left_alone(clinic, actor, dicom_dir):
    instance = _stored(clinic, actor)
    old = _orphan(dicom_dir, age_seconds=7200)
    fresh = _orphan(dicom_dir, age_seconds=0, name="in-flight.dcm")

    status, report = _check()
    assert status == 1 and "orphan file found: ab/cd/1.2.3/1.2.3.4/orphan.dcm" in report
    assert old.exists()

    status, report = _check("--remove-orphans")

    assert status == 0 and "1 orphan file(s) removed" in report
    assert not old.exists() and fresh.exists()
    assert storage.local_path(instance).exists()
    assert AuditEvent.objects.filter(action="storage.remove-orphans").count() == 1


def test_instance_whose_file_is_gone_is_reported_and_kept(clinic, actor, dicom_dir):
    instance = _stored(clinic, actor)
    storage.local_path(instance).unlink()

    status, report = _check("--remove-orphans")

    assert status == 1
    assert f"missing file: {instance.storage_key}" in report
    instance.refresh_from_db()
    assert stored_files(dicom_dir) == []


@pytest.mark.parametrize("minutes", ["1", "600"])
def test_older_than_sets_the_orphan_age(minutes, clinic, actor, dicom_dir):
    _orphan(dicom_dir, age_seconds=3600)

    status, _ = _check("--older-than", minutes)

    assert status == (1 if minutes == "1" else 0)


def test_what_the_spool_holds_for_a_person_is_reported(clinic, actor, settings):  # type: ignore[no-untyped-def]
    from imaging import spool

    _stored(clinic, actor)
    stopped = spool.root() / "0123456789ab-4242"
    stopped.mkdir(parents=True)
    (stopped / "a0-0.dcm").write_bytes(b"answered, not indexed")
    live = spool.Spool()  # a running process's folder: its backlog is reported, not touched
    try:
        (live.folder / "a0-0.dcm").write_bytes(b"being indexed")
        spool.refused_dir().mkdir(parents=True)
        (spool.refused_dir() / "abc-x.dcm").write_bytes(b"refused when indexed")

        status, report = _check()
    finally:
        live.close()

    assert status == 1
    assert f"spooled, waiting for the next dicom_server start: {stopped / 'a0-0.dcm'}" in report
    assert "spooled, not indexed yet by the running dicom_server" in report
    assert str(live.folder / "a0-0.dcm") in report
    assert "answered but refused when indexed (see the audit log)" in report
    assert report.endswith("1 spooled instance(s) not indexed yet, 1 waiting for a restart, 1 refused file(s) kept\n")
    assert stopped.exists()  # reported, not touched


def _aged(path, age_seconds: int):  # type: ignore[no-untyped-def]
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_stale_partial_receives_are_removed_and_files_being_written_are_kept(db):
    from datetime import timedelta

    from imaging import reconcile

    tmp = storage.temp_dir()
    (tmp / "in-dead.dcm").write_bytes(b"half a file")
    _aged(tmp / "in-dead.dcm", 7200)
    (tmp / "in-live.dcm").write_bytes(b"being received")
    dead_upload = tmp / "upload-dead"
    dead_upload.mkdir()
    (dead_upload / "a.dcm").write_bytes(b"unpacked, never ingested")
    _aged(dead_upload / "a.dcm", 7200)
    _aged(dead_upload, 7200)
    live_stow = tmp / "stow-live"
    live_stow.mkdir()
    (live_stow / "part-1").write_bytes(b"a part arriving now")
    _aged(live_stow, 7200)  # the folder is old, what is in it is not

    assert reconcile.remove_stale_temp(older_than=timedelta(hours=1)) == 2

    assert sorted(p.name for p in tmp.iterdir()) == ["in-live.dcm", "stow-live"]
