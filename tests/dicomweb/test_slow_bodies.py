"""Slow request bodies against the real web app: gunicorn's threaded worker, PostgreSQL.

A client that declares a body and stops sending must not hold a worker thread: with as
many stalled uploads as the server has threads, and more, a QIDO-RS search still answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection

from alliance import audit, services
from tests.dicomweb.test_dicomweb_client import _wait_until_up
from tests.processes import free_port

pytestmark = pytest.mark.integration

THREADS = 2
BODY_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def threaded_server(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """gunicorn with one worker of THREADS threads (gthread, as `make run` starts it)."""
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    data_dir: Path = tmp_path_factory.mktemp("slow-bodies")
    port = free_port()
    env = {
        **os.environ,
        "SITE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "DATA_DIR": str(data_dir),
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
    }
    log = data_dir / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "alliance.wsgi", "-b", f"127.0.0.1:{port}"]
    command += ["-w", "1", "--threads", str(THREADS), "--timeout", "300"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dicomweb"
    try:
        _wait_until_up(url + "/studies", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def stalled_upload(url: str, token: str, declared: int) -> socket.socket:
    """A STOW-RS request that declares `declared` bytes and sends a hundred."""
    port = int(url.split(":")[2].split("/")[0])
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = (
        "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Token {token}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 56)
    return sock


def stalled_form(url: str) -> socket.socket:
    """A sign-in form that declares a thousand bytes and sends ten: any view, not only STOW-RS
    (with the CSRF cookie, so that the form is read)."""
    site = url.removesuffix("/dicomweb")
    csrf = requests.get(f"{site}/login/", timeout=60).cookies["csrftoken"]
    sock = socket.create_connection(("127.0.0.1", int(site.rsplit(":", 1)[1])), timeout=120)
    head = (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Cookie: csrftoken={csrf}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b"username=x")
    return sock


def status_of(sock: socket.socket) -> int:
    return int(sock.recv(4096).split(b" ", 2)[1])


def test_stalled_uploads_free_their_threads_and_a_search_still_answers(
    transactional_db: Any, alliance_world: Any, threaded_server: str
) -> None:
    token = services.token_create(doctor=alliance_world.owner, by=audit.SYSTEM).key
    with contextlib.ExitStack() as sockets:
        over_cap = sockets.enter_context(stalled_upload(threaded_server, token, 1 << 40))
        stalled = [sockets.enter_context(stalled_upload(threaded_server, token, 1_000_000)) for _ in range(THREADS)]
        stalled.append(sockets.enter_context(stalled_form(threaded_server)))
        stalled += [sockets.enter_context(stalled_upload(threaded_server, token, 1_000_000)) for _ in range(THREADS)]
        search = requests.get(f"{threaded_server}/studies", headers={"Authorization": f"Token {token}"}, timeout=120)
        assert search.status_code in (200, 204)
        answers = [sock.recv(4096) for sock in stalled]
        assert [int(answer.split(b" ", 2)[1]) for answer in answers] == [408] * len(stalled)
        assert b"request_timeout" in answers[0], "STOW-RS gives its own answer, in JSON"
        assert status_of(over_cap) == 413
