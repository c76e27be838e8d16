"""Celery tasks of the referrals: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from referrals.models import ReferralNotification

log = logging.getLogger(__name__)

# Unsent notices older than this are given up (logged): a mail a day late helps nobody.
EMAIL_GIVE_UP_AFTER = timedelta(days=1)
SWEEP_BATCH = 500


@shared_task(acks_late=True)
def remind_waiting(now: str | None = None) -> int:
    """The beat job: the desk hears once of each request waiting more than 24 h.
    `now` (ISO 8601) lets an operator or a test run it for a given moment."""
    from referrals import services  # services import this module

    moment = datetime.fromisoformat(now) if now else None
    count = services.referral_remind_waiting(now=moment)
    if count:
        log.info("referral reminders: %d", count)
    return count


@shared_task(
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def send_notification_emails(notification_ids: list[int]) -> int:
    """One e-mail per notice not mailed yet to a user with an address; each is then marked
    mailed. A notice another run is mailing (row locked) is skipped (at-least-once)."""
    sent = 0
    with transaction.atomic(), translation.override(settings.LANGUAGE_CODE):
        rows = list(
            ReferralNotification.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=notification_ids, emailed_at=None)
            .select_related("user")
        )
        for n in rows:
            if n.user.email:
                sent += _mail(n)
        ReferralNotification.objects.filter(pk__in=[n.pk for n in rows]).update(emailed_at=timezone.now())
    return sent


def case_link(referral_id: int) -> str:
    try:
        path = reverse("referrals:detail", args=[referral_id])
    except NoReverseMatch:  # the pages are not mounted (an API-only deployment)
        path = f"/referrals/{referral_id}/"
    return settings.SITE_URL + path


def _mail(n: ReferralNotification) -> int:
    subject = _("[Referral #%(id)s] %(what)s") % {"id": n.referral_id, "what": n.label}
    body = _("%(what)s: referral #%(id)s.\n\nOpen the case: %(link)s\n") % {
        "what": n.label,
        "id": n.referral_id,
        "link": case_link(n.referral_id),
    }
    return send_mail(subject, body, None, [n.user.email])


@shared_task(acks_late=True)
def send_unsent_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep: mail the notices whose e-mail task was never queued (the broker was
    away at commit) or was lost, once older than RETRY_AFTER_SECONDS; how many went out."""
    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    unsent = ReferralNotification.objects.filter(emailed_at=None, created_at__lt=now - age)
    stale = unsent.filter(created_at__lt=now - EMAIL_GIVE_UP_AFTER).update(emailed_at=now)
    if stale:
        log.error("gave up mailing %d referral notice(s) older than %s", stale, EMAIL_GIVE_UP_AFTER)
    ids = list(unsent.order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH])
    if not ids:
        return 0
    log.warning("mailing %d referral notice(s) whose e-mail was not sent when they were made", len(ids))
    return int(send_notification_emails(ids))
