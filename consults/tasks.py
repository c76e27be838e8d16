"""Celery tasks of the consults: thin wrappers that load by id and call one service."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from consults import services
from consults.models import Notification

log = logging.getLogger(__name__)


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
    """One e-mail per notice to a user with an address. Re-running sends again (mail is at-least-once)."""
    sent = 0
    rows = Notification.objects.filter(pk__in=notification_ids).select_related("user", "consult")
    with translation.override(settings.LANGUAGE_CODE):
        for n in rows:
            if not n.user.email:
                continue
            link = settings.SITE_URL + reverse("consults:detail", args=[n.consult_id])
            subject = _("[Consult #%(id)s] %(what)s") % {"id": n.consult_id, "what": n.label}
            body = _("%(what)s: consult #%(id)s.\n\nOpen the case: %(link)s\n") % {
                "what": n.label,
                "id": n.consult_id,
                "link": link,
            }
            sent += send_mail(subject, body, None, [n.user.email])
    return sent
