"""The deadline job in a real Celery worker on Redis, against the test database, with the
clock given to the task: the owner is reminded, a stalled claim is released, e-mail goes out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connection

from alliance.models import PoolMembership
from consults import clock
from consults.models import Consult, Notification, Status
from tests.consults.conftest import walk

BROKER = os.environ.get("CONSULTS_TEST_BROKER_URL", "redis://127.0.0.1:6379/8")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _broker_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _start_worker(queue: str, log: Any, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DATA_DIR": str(tmp_path / "worker"),
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
        "LANGUAGE_CODE": "en",
    }
    celery = Path(sys.executable).parent / "celery"
    args = [str(celery), "-A", "alliance", "worker", "-Q", f"{queue},celery", "--pool=solo", "-l", "INFO"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{queue}@%h"]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def _succeeded(log: Path, task: str) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if f"{task}[" in line and "succeeded" in line)


def _wait_for(check: Any, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_reminds_the_owner_and_releases_a_stalled_claim(
    alliance_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql" or not _broker_up():
        pytest.skip("needs PostgreSQL and the Redis broker")
    world = alliance_world
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    monkeypatch.setattr(clock, "now", lambda: T0)
    PoolMembership.objects.update(since=T0 - timedelta(days=1))  # the desk was staffed before T0
    reading = walk(world, Status.IN_PROGRESS)  # routine: 24 h, claim timeout 4 h
    stalled = walk(world, Status.ACCEPTED)
    queue = f"consults-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = _start_worker(queue, out, tmp_path)
    try:
        sender = Celery(broker=BROKER)
        at = (T0 + timedelta(hours=12)).isoformat()
        sender.send_task("consults.tasks.check_deadlines", kwargs={"now": at}, queue=queue)
        reminded = Notification.objects.filter(consult=reading, verb="remind_50", user=world.specialist.user)
        # Each case is its own transaction: wait for both, in whichever order the job took them.
        done = _wait_for(lambda: Consult.objects.get(pk=stalled.pk).status == Status.REQUESTED and reminded.exists())
        assert done, log.read_text(errors="replace")[-3000:]
        stalled.refresh_from_db()
        assert stalled.owner is None and stalled.transitions.last().reason == "claim timeout"
        assert Notification.objects.filter(consult=stalled, verb="widen", user=world.hosp_admin.user).exists()
        mailed = _wait_for(lambda: f"[Consult #{reading.pk}]" in log.read_text(errors="replace"), timeout=30)
        assert mailed, log.read_text(errors="replace")[-3000:]
        sender.send_task("consults.tasks.check_deadlines", kwargs={"now": at}, queue=queue)
        ran_twice = _wait_for(lambda: _succeeded(log, "consults.tasks.check_deadlines") == 2, timeout=30)
        assert ran_twice, log.read_text(errors="replace")[-3000:]
        assert Notification.objects.filter(consult=reading, verb="remind_50").count() == 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)
