"""The DICOM storage on S3 (tests/s3.py starts SeaweedFS): ingest, reading back, the render
cache and the storage check, called in this process."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from imaging import index, reconcile, render, storage
from imaging.ingest import IngestError, ingest_bytes
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import index_counts
from tests.s3 import BUCKET, free_ports, keys

pytestmark = pytest.mark.integration


def _ingest(data: bytes, clinic, actor):  # type: ignore[no-untyped-def]
    return ingest_bytes(data, institution=clinic, actor=actor, via="test")


def test_ingest_into_s3_reads_back_byte_identical(s3, clinic, actor):
    sent = [part10_bytes(ds) for ds in make_ct_series(3, 64, 64)]

    results = [_ingest(data, clinic, actor) for data in sent]

    assert keys(s3) == sorted(r.instance.storage_key for r in results)
    for data, result in zip(sent, results, strict=True):
        assert storage.local_path(result.instance) is None
        with storage.open_instance(result.instance) as fh:
            assert fh.read() == data
        body = s3.get_object(Bucket=BUCKET, Key=result.instance.storage_key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == result.instance.sha256


def test_same_instance_twice_is_one_object(s3, clinic, actor):
    data = part10_bytes(make_ct_series(1, 32, 32)[0])

    first, again = _ingest(data, clinic, actor), _ingest(data, clinic, actor)

    assert (first.created, again.created) == (True, False)
    assert keys(s3) == [first.instance.storage_key]


def test_refused_file_leaves_no_object(s3, clinic, actor):
    ds = make_ct_series(1, 32, 32)[0]
    del ds.PatientID

    with pytest.raises(IngestError):
        _ingest(part10_bytes(ds), clinic, actor)

    assert keys(s3) == []


def test_failure_after_upload_deletes_the_object(s3, clinic, actor, monkeypatch):
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("index write failed")

    monkeypatch.setattr(index, "_execute_all", fail)

    with pytest.raises(RuntimeError):
        _ingest(part10_bytes(make_ct_series(1, 32, 32)[0]), clinic, actor)

    assert keys(s3) == []
    assert index_counts() == (0, 0, 0, 0)


def test_thumbnail_renders_from_s3(s3, clinic, actor):
    result = _ingest(part10_bytes(make_ct_series(1, 64, 64)[0]), clinic, actor)

    assert render.thumbnail(result.instance)[:2] == b"\xff\xd8"  # a JPEG


def test_unreachable_s3_is_a_storage_failure_with_nothing_indexed(s3, clinic, actor, settings):
    settings.STORAGES["dicom"]["OPTIONS"]["endpoint_url"] = f"http://127.0.0.1:{free_ports(1)[0]}"
    settings.STORAGES = {**settings.STORAGES}

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(make_ct_series(1, 32, 32)[0]), clinic, actor)

    assert (caught.value.code, caught.value.dicom_status) == ("storage-failed", 0xA700)
    assert index_counts() == (0, 0, 0, 0)


def test_orphan_objects_are_found_through_the_storage_api(s3, clinic, actor):
    kept = _ingest(part10_bytes(make_ct_series(1, 32, 32)[0]), clinic, actor).instance
    s3.put_object(Bucket=BUCKET, Key="ab/cd/1.2.3/1.2.3.4/orphan.dcm", Body=b"left by a crash")

    found = list(reconcile.orphan_keys(older_than=timedelta(minutes=-1)))

    assert found == ["ab/cd/1.2.3/1.2.3.4/orphan.dcm"]
    assert list(reconcile.missing_files()) == []
    assert kept.storage_key in keys(s3)


def test_a_stored_object_is_read_as_a_stream_and_a_seek_is_a_ranged_get(s3, clinic, actor, monkeypatch):
    """One GET read on as the reader reads (a short seek ahead too), a ranged GET for a seek
    back or far ahead: never the whole object fetched first."""
    data = part10_bytes(make_ct_series(1, 1024, 1024)[0])  # 2 MB
    instance = _ingest(data, clinic, actor).instance
    client = storage.dicom_storage().connection.meta.client
    asked: list[str] = []
    get_object = client.get_object

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("Range", "whole"))
        return get_object(**kwargs)

    monkeypatch.setattr(client, "get_object", spy)

    with storage.open_instance(instance) as fh:
        assert fh.read(132)[128:] == b"DICM"
        fh.seek(400_000)  # within reach of the open GET: read on through it
        assert fh.read(10) == data[400_000:400_010]
        fh.seek(len(data) - 1000)
        assert fh.read() == data[-1000:]
        fh.seek(200_000)
        assert fh.read(10) == data[200_000:200_010]
        fh.seek(0)
        assert fh.read() == data

    assert asked == ["whole", f"bytes={len(data) - 1000}-", "bytes=200000-", "whole"]


def test_a_missing_object_is_file_not_found(s3, clinic, actor):
    instance = _ingest(part10_bytes(make_ct_series(1, 32, 32)[0]), clinic, actor).instance
    s3.delete_object(Bucket=BUCKET, Key=instance.storage_key)

    with pytest.raises(FileNotFoundError):
        storage.open_instance(instance)


def test_thumbnails_are_kept_in_the_bucket_and_read_from_there(s3, clinic, actor, settings, monkeypatch):
    instance = _ingest(part10_bytes(make_ct_series(1, 64, 64)[0]), clinic, actor).instance
    media = list(settings.MEDIA_ROOT.rglob("*.jpg")) if settings.MEDIA_ROOT.exists() else []

    made = render.thumbnail(instance)

    key = f"renders/{render.cache_key(instance, render.THUMBNAIL_PX)}"
    assert keys(s3, "renders/") == [key]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == made
    assert (list(settings.MEDIA_ROOT.rglob("*.jpg")) if settings.MEDIA_ROOT.exists() else []) == media

    def no_rendering(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("rendered again instead of read from the cache")

    monkeypatch.setattr(render, "render_frame", no_rendering)
    assert render.thumbnail(instance) == made
    # the cache beside the objects is no orphan of the DICOM storage
    assert list(reconcile.orphan_keys(older_than=timedelta(minutes=-1))) == []
