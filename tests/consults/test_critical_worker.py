"""Escalation of critical results in a real Celery worker with its embedded beat, on Redis,
against the test database, on the worker's own clock: a flag left unacknowledged for
longer than CRITICAL_ESCALATE_MINUTES goes to the requesting institution's admin once
(in-app and by e-mail); a flag read back in time never does."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import clock, critical
from consults.models import CriticalResult, Notification, Status
from tests.celery_worker import new_prefix, start_worker, succeeded, wait_for
from tests.consults.conftest import walk

TASK = "consults.tasks.escalate_critical_results"


def _start_worker_with_beat(log: Any, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A worker as tests/celery_worker.py starts one, with its embedded beat: the escalation
    job every 5 s, the consults' other jobs an hour apart so that they stay out of the way.
    The beat sends to the worker's own prefixed queues."""
    return start_worker(
        new_prefix("critical"),
        log,
        tmp_path / "worker",
        "-B",
        "-s",
        str(tmp_path / "beat-schedule"),
        EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
        CRITICAL_CHECK_SECONDS="5",
        CRITICAL_ESCALATE_MINUTES="15",
        CONSULT_DEADLINE_CHECK_SECONDS="3600",
        RETRY_SWEEP_SECONDS="3600",
        REFERRAL_REMINDER_CHECK_SECONDS="3600",
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_escalates_an_unacknowledged_flag_once_on_its_own_clock(
    alliance_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    world = alliance_world
    world.inst_admin_a.user.email = "admin@clinic-a.example"
    world.inst_admin_a.user.save()
    reader, requester = resolve_principal(world.specialist.user), resolve_principal(world.owner.user)
    # Both flags were made 16 minutes ago by the worker's clock (the real one).
    sixteen_ago = timezone.now() - timedelta(minutes=16)
    monkeypatch.setattr(clock, "now", lambda: sixteen_ago)
    waiting = critical.critical_flag(consult=walk(world, Status.IN_PROGRESS), by=reader, text="主动脉夹层")
    read = critical.critical_flag(consult=walk(world, Status.IN_PROGRESS), by=reader, text="张力性气胸")
    critical.critical_acknowledge(result=read, by=requester, read_back="张力性气胸")
    monkeypatch.undo()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = _start_worker_with_beat(out, tmp_path)
    try:
        escalated = CriticalResult.objects.filter(pk=waiting.pk, escalated_at__isnull=False)
        assert wait_for(escalated.exists, timeout=90), log.read_text(errors="replace")[-3000:]
        mailed = wait_for(lambda: "Critical result not acknowledged" in log.read_text(errors="replace"), 30)
        assert mailed, log.read_text(errors="replace")[-3000:]
        # Two more runs of the job change nothing.
        done = succeeded(log, TASK)
        assert wait_for(lambda: succeeded(log, TASK) >= done + 2, timeout=60), log.read_text(errors="replace")[-3000:]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    notices = Notification.objects.filter(verb="critical_escalate")
    assert list(notices.values_list("consult_id", "user_id")) == [(waiting.consult_id, world.inst_admin_a.user_id)]
    assert AuditEvent.objects.filter(action="consult.critical_escalate").count() == 1
    read.refresh_from_db()
    assert read.escalated_at is None
