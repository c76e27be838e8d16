"""Notification e-mail through the outbox: a broker that refuses the task at commit loses
nothing (the rows wait, the sweep mails them), and a notice is mailed once."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.exceptions import OperationalError

from consults import tasks
from consults.models import Notification, Status
from tests.consults.conftest import walk


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.send_notification_emails, "delay", refuse)


def test_an_action_commits_and_returns_when_the_broker_refuses_its_mail(
    world: Any, broker_down: None, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.REQUESTED)

    unsent = Notification.objects.filter(consult=consult, verb="request", emailed_at=None)
    assert unsent.filter(user=world.specialist.user).exists()
    assert mailoutbox == []


def test_the_sweep_mails_what_the_broker_refused_once(
    world: Any, broker_down: None, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.REQUESTED)

    assert tasks.send_unsent_emails.apply(kwargs={"older_than_seconds": 0}).get() == 1
    assert tasks.send_unsent_emails.apply(kwargs={"older_than_seconds": 0}).get() == 0
    assert [m.to for m in mailoutbox] == [["specialist@hosp.example"]]
    assert f" #{consult.pk}]" in mailoutbox[0].subject
    assert not Notification.objects.filter(consult=consult, emailed_at=None).exists()


def test_the_sweep_leaves_notices_younger_than_the_retry_age_to_their_task(
    world: Any, broker_down: None, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        walk(world, Status.REQUESTED)

    assert tasks.send_unsent_emails.apply(kwargs={"older_than_seconds": 3600}).get() == 0
    assert Notification.objects.filter(emailed_at=None).exists()


def test_the_mail_task_run_twice_mails_a_notice_once(world: Any, mailoutbox: list[Any]) -> None:
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    walk(world, Status.REQUESTED)  # its on_commit task never runs inside the test's transaction
    ids = list(Notification.objects.values_list("pk", flat=True))

    assert tasks.send_notification_emails.apply(args=[ids]).get() == 1
    assert tasks.send_notification_emails.apply(args=[ids]).get() == 0
    assert len(mailoutbox) == 1
