"""Celery tasks of the referrals: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _

from alliance import notice_mail
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
    """Mail the notices not mailed yet (alliance/notice_mail.py); how many mails went out."""
    return notice_mail.mail_notices(ReferralNotification, notification_ids, compose=_compose)


def case_link(referral_id: int) -> str:
    try:
        path = reverse("referrals:detail", args=[referral_id])
    except NoReverseMatch:  # the pages are not mounted (an API-only deployment)
        path = f"/referrals/{referral_id}/"
    return settings.SITE_URL + path


def _compose(n: ReferralNotification) -> tuple[str, str]:
    subject = _("[Referral #%(id)s] %(what)s") % {"id": n.referral_id, "what": n.label}
    body = _("%(what)s: referral #%(id)s.\n\nOpen the case: %(link)s\n") % {
        "what": n.label,
        "id": n.referral_id,
        "link": case_link(n.referral_id),
    }
    return subject, body


@shared_task(acks_late=True)
def send_unsent_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep of the referral notices whose mail was never sent (alliance/notice_mail.py)."""
    return notice_mail.sweep_unsent(
        ReferralNotification,
        mail=send_notification_emails,
        older_than_seconds=older_than_seconds,
        what="referral notice(s)",
    )
