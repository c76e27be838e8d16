"""Celery tasks of the screening programmes: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import notice_mail
from consults.screening.models import ScreeningNotification

log = logging.getLogger(__name__)

# Unsent notices older than this are given up (logged): a reminder a day late helps nobody.
EMAIL_GIVE_UP_AFTER = timedelta(days=1)
SWEEP_BATCH = 500
# A signed reading whose SR is still not in its study after this long is left to the people
# (its task failed for good, logged each time): the sweep stops asking.
READING_SR_RETRY_DAYS = timedelta(days=7)


@shared_task(acks_late=True)
def remind_due(now: str | None = None) -> int:
    """The beat job: reminders to the clinics before and after a screening CT's due date.
    `now` (ISO 8601) lets an operator or a test run it for a given moment."""
    from consults.screening import services  # services import this module

    moment = datetime.fromisoformat(now) if now else None
    count = services.rounds_remind(now=moment)
    if count:
        log.info("screening reminders: %d", count)
    return count


@shared_task(acks_late=True)
def match_scans() -> int:
    """The beat job: tag each open round's scan once the participant's study has arrived."""
    from consults.screening import services

    count = services.rounds_match()
    if count:
        log.info("screening scans matched: %d", count)
    return count


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def write_reading_sr(reading_id: int) -> str:
    """A signed reading into its study as DICOM SR. Safe twice: the second run finds it stored."""
    from consults.screening import report_sr
    from consults.screening.models import Reading

    reading = Reading.objects.select_related("round__study__institution", "reader__institution").get(pk=reading_id)
    return report_sr.write_reading_sr(reading=reading)


@shared_task(acks_late=True)
def write_missing_reading_srs(older_than_seconds: float | None = None) -> int:
    """The beat sweep: queue write_reading_sr again for every reading signed in the last
    READING_SR_RETRY_DAYS, and at least RETRY_AFTER_SECONDS ago (a younger one's task may still
    be on its way), that has no SR in its study yet (the broker was away at the signature's
    commit, or the task failed for good); how many were queued. Safe to run twice."""
    from consults.screening.models import Reading

    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    missing = Reading.objects.filter(
        signed_at__gte=now - READING_SR_RETRY_DAYS, signed_at__lt=now - age, sr_sop_uid=""
    ).order_by("signed_at")
    ids = list(missing.values_list("pk", flat=True)[:SWEEP_BATCH])
    for pk in ids:
        write_reading_sr.delay(pk)
    if ids:
        log.warning("queued again the SR of %d signed screening reading(s): %s", len(ids), ids)
    return len(ids)


@shared_task(
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def send_notification_emails(notification_ids: list[int]) -> int:
    """Mail the notices not mailed yet (alliance/notice_mail.py); how many mails went out."""
    return notice_mail.mail_notices(
        ScreeningNotification, notification_ids, compose=_compose, related=("round", "participant__programme")
    )


def participant_link(participant_id: int) -> str:
    try:
        path = reverse("screening:participant", args=[participant_id])
    except NoReverseMatch:  # the pages are not mounted (an API-only deployment)
        path = f"/screening/participants/{participant_id}/"
    return settings.SITE_URL + path


def _compose(n: ScreeningNotification) -> tuple[str, str]:
    """The mail names the programme, the participant's number and the due date, not the patient."""
    subject = _("[Screening] %(what)s") % {"what": n.label}
    body = _("%(what)s: participant #%(id)s of %(programme)s.\n\nOpen: %(link)s\n") % {
        "what": n.label,
        "id": n.participant_id,
        "programme": n.participant.programme.name,
        "link": participant_link(n.participant_id),
    }
    if n.round is not None:
        body += _("Due: %(due)s\n") % {"due": n.round.due_date.isoformat()}
    return subject, body


@shared_task(acks_late=True)
def send_unsent_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep of the screening notices whose mail was never sent (alliance/notice_mail.py)."""
    return notice_mail.sweep_unsent(
        ScreeningNotification,
        mail=send_notification_emails,
        older_than_seconds=older_than_seconds,
        what="screening notice(s)",
    )
