"""Reminders to the clinic before and after a screening CT's due date (the beat job
consults.screening.tasks.remind_due): once each, safe to run twice, in the app and by e-mail;
and the same job in a real Celery worker on Redis, on the worker's clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from consults.screening import services, tasks
from consults.screening.models import Round, ScreeningNotification
from tests.celery_worker import new_prefix, sender, start_worker, succeeded, wait_for
from tests.screening.conftest import enrol

DUE = dt.date(2026, 6, 1)


def _at(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(9, 0)))


def _participant_due(world: Any) -> Any:
    participant = enrol(world)
    Round.objects.filter(participant=participant).update(due_date=DUE)
    world.owner.user.email = "owner@clinic-a.example"
    world.owner.user.save()
    return participant


@pytest.mark.django_db
def test_the_clinic_is_reminded_once_before_and_once_after_the_due_date(
    world: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.SCREENING_REMIND_BEFORE_DAYS, settings.SCREENING_REMIND_AFTER_DAYS = 14, 7
    settings.LANGUAGE_CODE = "en"  # the mails' language
    participant = _participant_due(world)
    assert services.rounds_remind(now=_at(DUE - dt.timedelta(days=15))) == 0  # too early
    with django_capture_on_commit_callbacks(execute=True):
        assert services.rounds_remind(now=_at(DUE - dt.timedelta(days=14))) == 1
    assert services.rounds_remind(now=_at(DUE - dt.timedelta(days=10))) == 0  # once
    notices = ScreeningNotification.objects.filter(participant=participant, verb="due_soon")
    assert {n.user for n in notices} == {world.owner.user, world.inst_admin_a.user}
    assert [m.to for m in mail.outbox] == [["owner@clinic-a.example"]]
    assert mail.outbox[0].subject == "[Screening] Screening CT due soon"
    assert "Due: 2026-06-01" in mail.outbox[0].body
    assert participant.patient.patient_id not in mail.outbox[0].body  # the mail names no patient
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=6))) == 0
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=7))) == 1
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=30))) == 0
    assert ScreeningNotification.objects.filter(participant=participant, verb="past_due").count() == 2


@pytest.mark.django_db
def test_no_reminder_once_scanned_or_withdrawn(world: Any) -> None:
    from tests.screening.conftest import principal, scan

    scanned = _participant_due(world)
    scan(world, scanned)
    gone = enrol(world, patient_id="LDCT-009")
    Round.objects.filter(participant=gone).update(due_date=DUE)
    services.participant_withdraw(participant=gone, by=principal(world.owner), reason="moved")
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=10))) == 0


@pytest.mark.django_db
def test_the_unsent_sweep_mails_what_was_left(world: Any, settings: Any) -> None:
    participant = _participant_due(world)
    ScreeningNotification.objects.create(
        user=world.owner.user,
        participant=participant,
        verb="past_due",
        created_at=timezone.now() - dt.timedelta(minutes=10),
    )
    assert tasks.send_unsent_emails(older_than_seconds=60) == 1
    assert tasks.send_unsent_emails(older_than_seconds=60) == 0


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reminds_the_clinic_on_its_clock(world: Any, tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    participant = _participant_due(world)
    prefix = new_prefix("screening")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = start_worker(
            prefix, out, tmp_path / "worker", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend"
        )
    try:
        app = sender(prefix)
        at = _at(DUE + dt.timedelta(days=8)).isoformat()
        app.send_task("consults.screening.tasks.remind_due", kwargs={"now": at})
        told = ScreeningNotification.objects.filter(participant=participant, verb="past_due", user=world.owner.user)
        assert wait_for(told.exists), log.read_text(errors="replace")[-3000:]
        mailed = wait_for(lambda: "[Screening]" in log.read_text(errors="replace"), timeout=30)
        assert mailed, log.read_text(errors="replace")[-3000:]
        app.send_task("consults.screening.tasks.remind_due", kwargs={"now": at})
        twice = wait_for(lambda: succeeded(log, "consults.screening.tasks.remind_due") == 2, timeout=30)
        assert twice, log.read_text(errors="replace")[-3000:]
        assert (
            ScreeningNotification.objects.filter(participant=participant, verb="past_due").count() == 2
        )  # owner, admin
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.django_db
def test_a_clinic_with_screening_switched_off_is_reminded_once_it_is_on_again(world: Any) -> None:
    from alliance import audit
    from alliance import services as alliance_services

    _participant_due(world)
    modules = list(world.clin_a.modules)
    alliance_services.institution_update(
        institution=world.clin_a, modules=[m for m in modules if m != "screening"], by=audit.SYSTEM
    )
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=8))) == 0
    alliance_services.institution_update(institution=world.clin_a, modules=modules, by=audit.SYSTEM)
    assert services.rounds_remind(now=_at(DUE + dt.timedelta(days=8))) == 1


@pytest.mark.django_db
def test_switching_screening_off_asks_first_and_says_what_happens(world: Any) -> None:
    from tests.conftest import client_for

    _participant_due(world)
    admin = client_for(world.alliance_admin)
    institution = world.clin_a
    data = {
        "name": institution.name,
        "level": institution.level,
        "parent": institution.parent_id or "",
        "ae_title": institution.ae_title,
        "modules": [m for m in institution.modules if m != "screening"],
    }
    asked = admin.post(f"/manage/institutions/{institution.pk}/edit/", data, HTTP_ACCEPT_LANGUAGE="en")
    assert asked.status_code == 200
    assert "Screening at Clinic A: 1 taking part, 0 CTs waiting for its readers." in asked.content.decode()
    institution.refresh_from_db()
    assert "screening" in institution.modules
