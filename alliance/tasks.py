"""Celery tasks of the membership app and the audit trail: thin, by id, safe to run twice."""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from alliance import access, atna, audit, notice_mail
from alliance.models import Doctor, Institution, Pool, PrivilegeChange

log = logging.getLogger(__name__)


def _institutions_concerned(change: PrivilegeChange) -> set[int]:
    ids = {change.subject.institution_id}
    if change.kind == PrivilegeChange.Kind.MOVE and change.payload.get("institution"):
        ids.add(int(change.payload["institution"]))
    if change.kind == PrivilegeChange.Kind.POOL and change.payload.get("pool"):
        ids.update(Pool.objects.filter(pk=change.payload["pool"]).values_list("institution_id", flat=True))
    return ids


@shared_task(
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=8,
)
def privilege_change_notice(change_id: int) -> int:
    """Tell the admins of the institutions concerned, and the doctor, that a change giving an
    admin account clinical access was asked for, approved or refused. Returns mails sent.

    Once per state: the change's row is held while it is mailed and then marked with the state
    mailed (notified_state), so a second run, or the sweep, sends nothing; a run that fails
    leaves it unmarked for the retry or the sweep."""
    with transaction.atomic():
        change = (
            PrivilegeChange.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("subject__user", "requested_by__user", "decided_by__user")
            .filter(pk=change_id)
            .exclude(notified_state=F("state"))
            .first()
        )
        if change is None:
            return 0
        admins: set[Doctor] = set()
        for institution_id in _institutions_concerned(change):
            admins.update(access.institution_admins_of(institution_id))
        admins.add(change.subject)
        sent = 0
        with translation.override("zh-hans"):
            subject = _("Privilege change for %(name)s: %(state)s") % {
                "name": change.subject.display_name,
                "state": change.get_state_display(),
            }
            body = _(
                "%(asker)s asked to change %(name)s (%(inst)s): %(kind)s %(payload)s.\n"
                "State: %(state)s.\nA second admin decides it on the console's privilege changes page."
            ) % {
                "asker": change.requested_by.display_name,
                "name": change.subject.display_name,
                "inst": Institution.objects.get(pk=change.subject.institution_id).name,
                "kind": change.get_kind_display(),
                "payload": change.payload,
                "state": change.get_state_display(),
            }
        for doctor in admins:
            if doctor.user.email:
                sent += send_mail(subject, body, None, [doctor.user.email])
        PrivilegeChange.objects.filter(pk=change.pk).update(notified_state=change.state)
    return sent


@shared_task(acks_late=True)
def send_unsent_privilege_notices(older_than_seconds: float | None = None) -> int:
    """The beat sweep: mail the privilege change notices whose task never reached the broker
    (or was lost), once their last step is older than RETRY_AFTER_SECONDS; older than
    notice_mail.EMAIL_GIVE_UP_AFTER they are given up and logged. How many mails went out."""
    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    unsent = PrivilegeChange.objects.exclude(notified_state=F("state")).annotate(
        last_step=Coalesce("decided_at", "requested_at")
    )
    stale = unsent.filter(last_step__lt=now - notice_mail.EMAIL_GIVE_UP_AFTER)
    given_up = PrivilegeChange.objects.filter(pk__in=stale.values("pk")).update(notified_state=F("state"))
    if given_up:
        log.error(
            "gave up mailing %d privilege change notice(s) older than %s", given_up, notice_mail.EMAIL_GIVE_UP_AFTER
        )
    due = unsent.filter(last_step__lt=now - age).order_by("last_step")
    ids = list(due.values_list("pk", flat=True)[: notice_mail.SWEEP_BATCH])
    if ids:
        log.warning("mailing %d privilege change notice(s) whose task was lost", len(ids))
    sent = 0
    for pk in ids:
        try:
            sent += privilege_change_notice(pk)
        except Exception:  # noqa: BLE001 - the mail server away: the next sweep tries again
            log.exception("could not mail the notice of privilege change %s", pk)
    return sent


@shared_task(name="alliance.tasks.summarize_denied_reads")
def summarize_denied_reads() -> int:
    """One audit event with the count for each minute of repeated refused reads that is over."""
    return audit.summarize_denials()


@shared_task(name="alliance.tasks.send_atna")
def send_atna() -> int:
    """Send the audit events the ATNA collector has not had yet (none lost while it is away)."""
    return atna.send_pending()


@shared_task(name="alliance.tasks.empty_atna_outbox")
def empty_atna_outbox() -> int:
    """Without a collector: forget the outbox's event ids (the audit trail keeps the events)."""
    return atna.empty_outbox()
