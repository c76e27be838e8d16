"""The e-mail side of in-app notices, the same for every app that keeps them (consults,
referrals, screening): mail each notice once to a user with an address, and a sweep that
mails those whose task never reached the broker. Each app's notice model has `user`,
`created_at` and `emailed_at`; the app says how one of its notices reads as a mail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import models, transaction
from django.utils import timezone, translation

log = logging.getLogger(__name__)

# Unsent notices older than this are given up (logged): a mail a day late helps nobody.
EMAIL_GIVE_UP_AFTER = timedelta(days=1)
SWEEP_BATCH = 500

# A notice as (subject, body), in the site's language.
Compose = Callable[[Any], tuple[str, str]]


def mail_notices(
    model: type[models.Model], ids: Sequence[int], *, compose: Compose, related: Sequence[str] = ()
) -> int:
    """One e-mail per notice not mailed yet to a user with an address; each notice is then
    marked mailed. A notice another run is mailing (its row locked) is skipped, so two runs
    do not both mail it; a run that fails mails its notices again on retry (at-least-once).
    How many mails went out."""
    sent = 0
    with transaction.atomic(), translation.override(settings.LANGUAGE_CODE):
        rows: list[Any] = list(
            model._default_manager.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=ids, emailed_at=None)
            .select_related("user", *related)
        )
        for notice in rows:
            if notice.user.email:
                subject, body = compose(notice)
                sent += send_mail(subject, body, None, [notice.user.email])
        model._default_manager.filter(pk__in=[n.pk for n in rows]).update(emailed_at=timezone.now())
    return sent


def sweep_unsent(
    model: type[models.Model], *, mail: Callable[[list[int]], int], older_than_seconds: float | None, what: str
) -> int:
    """The beat sweep: mail the notices whose e-mail task was never queued (the broker was
    away at commit) or was lost, once they are older than RETRY_AFTER_SECONDS (younger ones
    may still be on their way); older than EMAIL_GIVE_UP_AFTER they are given up and logged.
    `what` names the notices in the log. How many mails went out."""
    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    unsent = model._default_manager.filter(emailed_at=None, created_at__lt=now - age)
    stale = unsent.filter(created_at__lt=now - EMAIL_GIVE_UP_AFTER).update(emailed_at=now)
    if stale:
        log.error("gave up mailing %d %s older than %s", stale, what, EMAIL_GIVE_UP_AFTER)
    ids = list(unsent.order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH])
    if not ids:
        return 0
    log.warning("mailing %d %s whose e-mail was not sent when they were made", len(ids), what)
    return int(mail(ids))
