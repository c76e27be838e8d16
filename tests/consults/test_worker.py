"""The deadline job in a real Celery worker on Redis, against the test database, with the
clock given to the task: the owner is reminded, a stalled claim is released, e-mail goes out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from alliance.models import PoolMembership
from consults import clock
from consults.models import Consult, Notification, Status
from tests.celery_worker import new_prefix, sender, start_worker, succeeded, wait_for
from tests.consults.conftest import walk

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_reminds_the_owner_and_releases_a_stalled_claim(
    alliance_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    world = alliance_world
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    monkeypatch.setattr(clock, "now", lambda: T0)
    PoolMembership.objects.update(since=T0 - timedelta(days=1))  # the desk was staffed before T0
    reading = walk(world, Status.IN_PROGRESS)  # routine: 24 h, claim timeout 4 h
    stalled = walk(world, Status.ACCEPTED)
    prefix = new_prefix("deadlines")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = start_worker(
            prefix, out, tmp_path / "worker", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend"
        )
    try:
        app = sender(prefix)
        at = (T0 + timedelta(hours=12)).isoformat()
        app.send_task("consults.tasks.check_deadlines", kwargs={"now": at})
        reminded = Notification.objects.filter(consult=reading, verb="remind_50", user=world.specialist.user)
        # Each case is its own transaction: wait for both, in whichever order the job took them.
        done = wait_for(lambda: Consult.objects.get(pk=stalled.pk).status == Status.REQUESTED and reminded.exists())
        assert done, log.read_text(errors="replace")[-3000:]
        stalled.refresh_from_db()
        assert stalled.owner is None and stalled.transitions.last().reason == "claim timeout"
        assert Notification.objects.filter(consult=stalled, verb="widen", user=world.hosp_admin.user).exists()
        mailed = wait_for(lambda: f"[Consult #{reading.pk}]" in log.read_text(errors="replace"), timeout=30)
        assert mailed, log.read_text(errors="replace")[-3000:]
        app.send_task("consults.tasks.check_deadlines", kwargs={"now": at})
        ran_twice = wait_for(lambda: succeeded(log, "consults.tasks.check_deadlines") == 2, timeout=30)
        assert ran_twice, log.read_text(errors="replace")[-3000:]
        assert Notification.objects.filter(consult=reading, verb="remind_50").count() == 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)
