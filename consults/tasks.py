"""Celery tasks of the consults: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import notice_mail
from consults import priorities, services
from consults.models import Notification

log = logging.getLogger(__name__)

# How far back the report objects' sweep looks: longer than the broker outages it mends. A
# version still without its objects after that is an operator's (the sweep logged its id).
REPORT_OBJECTS_RETRY_DAYS = timedelta(days=7)


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
    """Mail the notices not mailed yet (alliance/notice_mail.py); how many mails went out."""
    return notice_mail.mail_notices(
        Notification, notification_ids, compose=_compose, related=("consult__requesting_institution",)
    )


def _compose(n: Notification) -> tuple[str, str]:
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
    return subject, body


@shared_task(acks_late=True)
def send_unsent_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep of the consult notices whose mail was never sent (alliance/notice_mail.py)."""
    return notice_mail.sweep_unsent(
        Notification, mail=send_notification_emails, older_than_seconds=older_than_seconds, what="consult notice(s)"
    )


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

    version = (
        ReportVersion.objects.select_related("report__consult", "signed_by__institution")
        .prefetch_related("reviews__reviewer__institution")
        .get(pk=version_id)
    )
    return report_objects.report_into_studies(version=version)


@shared_task(acks_late=True)
def write_missing_report_objects(older_than_seconds: float | None = None) -> int:
    """The beat sweep: queue report_into_studies again for every final report version signed
    in the last REPORT_OBJECTS_RETRY_DAYS, and at least RETRY_AFTER_SECONDS ago (a younger one's
    task may still be on its way), whose objects are missing from a study; how many were queued.
    Safe to run twice: report_into_studies writes what is missing only."""
    from consults import report_objects

    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    ids = report_objects.versions_missing_objects(signed_after=now - REPORT_OBJECTS_RETRY_DAYS, signed_before=now - age)
    for pk in ids:
        report_into_studies.delay(pk)
    if ids:
        log.warning("queued again the report objects of %d signed version(s): %s", len(ids), ids)
    return len(ids)


@shared_task
def roll_up_consult_days() -> int:
    """The beat job keeping the figures' per-day sums of closed consults (consults.figures)."""
    from consults.figures import roll_up_consult_days as roll_up

    return roll_up()


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_result(self: Any, outbound_id: int) -> str:
    """A signed report to the HIS as ORU^R01 (consults.hl7): retried with backoff while the HIS
    is away or answers AE, until imaging.hl7.outbound gives up after HL7_SEND_RETRIES tries."""
    from consults import hl7
    from imaging.hl7 import outbound

    try:
        return outbound.deliver(outbound_id=outbound_id, build=hl7.build_oru)
    except outbound.SendFailed as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries * 10, 3600)) from None


@shared_task(acks_late=True)
def send_unsent_results(older_than_seconds: float | None = None) -> int:
    """The beat sweep: send the results whose task was never queued (the broker was away at
    commit) or was lost, once older than RETRY_AFTER_SECONDS; how many were sent now."""
    from consults import hl7
    from imaging.hl7 import outbound

    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    sent = 0
    for pk in outbound.unsent(age):
        try:
            sent += outbound.deliver(outbound_id=pk, build=hl7.build_oru) == "sent"
        except outbound.SendFailed:
            continue  # still pending: the next sweep tries again, until the retries are spent
    return sent
