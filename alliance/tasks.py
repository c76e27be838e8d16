"""Celery tasks of the membership app and the audit trail: thin, by id, safe to run twice."""

from __future__ import annotations

import smtplib

from celery import shared_task
from django.core.mail import send_mail
from django.utils import translation
from django.utils.translation import gettext as _

from alliance import access, atna, audit
from alliance.models import Doctor, Institution, Pool, PrivilegeChange


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
    admin account clinical access was asked for, approved or refused. Returns mails sent."""
    change = PrivilegeChange.objects.select_related("subject__user", "requested_by__user", "decided_by__user").get(
        pk=change_id
    )
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
    return sent


@shared_task(name="alliance.tasks.summarize_denied_reads")
def summarize_denied_reads() -> int:
    """One audit event with the count for each minute of repeated refused reads that is over."""
    return audit.summarize_denials()


@shared_task(name="alliance.tasks.send_atna")
def send_atna() -> int:
    """Send the audit events the ATNA collector has not had yet (none lost while it is away)."""
    return atna.send_pending()
