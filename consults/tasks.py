"""Celery tasks of the consults: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from consults import priorities, services
from consults.models import Notification

log = logging.getLogger(__name__)

# Unsent notices older than this are given up (logged): a mail a day late helps nobody.
EMAIL_GIVE_UP_AFTER = timedelta(days=1)
SWEEP_BATCH = 500


@shared_task(acks_late=True)
def check_deadlines(now: str | None = None) -> dict[str, int]:
    """The beat job. `now` (ISO 8601) lets an operator or a test run it for a given moment."""
    moment = datetime.fromisoformat(now) if now else None
    counts = services.consult_check_deadlines(now=moment)
    if counts:
        log.info("consult deadlines: %s", counts)
    return counts


@shared_task(
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def send_notification_emails(notification_ids: list[int]) -> int:
    """One e-mail per notice not mailed yet to a user with an address; each notice is then
    marked mailed. A notice another run is mailing (its row locked) is skipped, so two runs
    do not both mail it; a run that fails mails its notices again on retry (at-least-once)."""
    sent = 0
    with transaction.atomic(), translation.override(settings.LANGUAGE_CODE):
        rows = list(
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=notification_ids, emailed_at=None)
            .select_related("user", "consult__requesting_institution")
        )
        for n in rows:
            if n.user.email:
                sent += _mail(n)
        Notification.objects.filter(pk__in=[n.pk for n in rows]).update(emailed_at=timezone.now())
    return sent


def _mail(n: Notification) -> int:
    link = settings.SITE_URL + reverse("consults:detail", args=[n.consult_id])
    subject = _("[Consult #%(id)s] %(what)s") % {"id": n.consult_id, "what": n.label}
    body = _("%(what)s: consult #%(id)s.\n\nOpen the case: %(link)s\n") % {
        "what": n.label,
        "id": n.consult_id,
        "link": link,
    }
    consult = n.consult
    priority = priorities.priority_label(consult.priority, consult.requesting_institution.alliance_id)
    body += _("Priority: %(priority)s\n") % {"priority": priority}
    return send_mail(subject, body, None, [n.user.email])


@shared_task(acks_late=True)
def send_unsent_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep: mail the notices whose e-mail task was never queued (the broker was
    away at commit) or was lost, once they are older than RETRY_AFTER_SECONDS (younger
    ones may still be on their way); how many mails went out."""
    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    unsent = Notification.objects.filter(emailed_at=None, created_at__lt=now - age)
    stale = unsent.filter(created_at__lt=now - EMAIL_GIVE_UP_AFTER).update(emailed_at=now)
    if stale:
        log.error("gave up mailing %d notice(s) older than %s", stale, EMAIL_GIVE_UP_AFTER)
    ids = list(unsent.order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH])
    if not ids:
        return 0
    log.warning("mailing %d notice(s) whose e-mail was not sent when they were made", len(ids))
    return int(send_notification_emails(ids))


@shared_task(acks_late=True)
def escalate_critical_results(now: str | None = None) -> int:
    """The beat job of critical results: escalate each flag unacknowledged past the setting, once."""
    from consults import critical  # critical imports services, which imports this module

    moment = datetime.fromisoformat(now) if now else None
    escalated = critical.critical_escalate_due(now=moment)
    if escalated:
        log.warning("escalated %d unacknowledged critical result(s)", escalated)
    return escalated


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def report_into_studies(version_id: int) -> list[str]:
    """The signed report version into each of its consult's studies (Encapsulated PDF and
    Basic Text SR). Safe to run twice: a second run finds the instances and writes nothing.
    Retried on OSError (storage or broker away for a moment)."""
    from consults import report_objects
    from consults.models import ReportVersion

    version = ReportVersion.objects.select_related("report__consult", "signed_by__institution").get(pk=version_id)
    return report_objects.report_into_studies(version=version)


@shared_task
def roll_up_consult_days() -> int:
    """The beat job keeping the figures' per-day sums of closed consults (consults.figures)."""
    from consults.figures import roll_up_consult_days as roll_up

    return roll_up()
