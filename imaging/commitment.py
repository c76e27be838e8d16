"""Storage commitment, push model (PS3.4 annex J): a device asks whether we keep what it sent.

We commit only to instances that are indexed, visible to the device (its institution's or
granted to it, as for C-FIND) and whose file is in storage; every other one is listed as
failed with reason 0x0112 (no such object instance), or 0x0119 when we hold it under another
SOP class. The report goes out on the request's association while it is open; otherwise
imaging.tasks.deliver_commitment sends it on an association of its own to the device's host
and port, retried with backoff.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from alliance import audit
from alliance.access import Principal
from alliance.models import Device
from imaging import access, storage
from imaging.dicom.procedures import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT,
    CommitmentReport,
    CommitmentRequest,
    Failure,
    Reference,
)
from imaging.models import Instance, StorageCommitment

MAX_ATTEMPTS = 8
# How long a worker holds a report it sends: longer than an association's three 30 s timeouts.
HOLD = timedelta(seconds=300)
# A retry that comes this much before its due time (clocks of two hosts) is still taken.
CLOCK_SLACK = timedelta(seconds=5)
SWEEP_BATCH = 500

State = StorageCommitment.State


@transaction.atomic
def commitment_check(*, device: Device, request: CommitmentRequest, source: str = "") -> StorageCommitment:
    """What we commit to of the request's instances, recorded with the report we owe."""
    visible = access.studies_visible_to(Principal.for_device(device))
    uids = {ref.sop_instance_uid for ref in request.references}
    held = dict(
        (uid, (sop_class, key))
        for uid, sop_class, key in Instance.objects.filter(sop_uid__in=uids, series__study__in=visible).values_list(
            "sop_uid", "sop_class_uid", "storage_key"
        )
    )
    committed: list[list[str]] = []
    failed: list[list[str | int]] = []
    for ref in request.references:
        found = held.get(ref.sop_instance_uid)
        reason = _failure(ref, found)
        if reason is None:
            committed.append([ref.sop_class_uid, ref.sop_instance_uid])
        else:
            failed.append([ref.sop_class_uid, ref.sop_instance_uid, reason])
    row = StorageCommitment.objects.create(
        institution_id=device.institution_id,
        device=device,
        transaction_uid=request.transaction_uid,
        committed=committed,
        failed=failed,
    )
    audit.record(
        actor=audit.Actor.for_device(device),
        action="storage.commit",
        object_type="storage_commitment",
        object_id=row.pk,
        source=source,
        detail={"transaction": request.transaction_uid, "committed": len(committed), "failed": len(failed)},
    )
    return row


def _failure(ref: Reference, found: tuple[str, str] | None) -> int | None:
    if found is None:
        return NO_SUCH_OBJECT
    sop_class, key = found
    if sop_class != ref.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    if not storage.dicom_storage().exists(key):  # indexed, but its file is not there: not durable
        return NO_SUCH_OBJECT
    return None


def report_of(row: StorageCommitment, retrieve_ae: str) -> CommitmentReport:
    return CommitmentReport(
        transaction_uid=row.transaction_uid,
        committed=tuple(Reference(c, i) for c, i in row.committed),
        failed=tuple(Failure(Reference(c, i), int(r)) for c, i, r in row.failed),
        retrieve_ae=retrieve_ae,
        commitment_id=row.pk,
    )


def backoff(attempts: int) -> int:
    """Seconds before the attempt after `attempts` failed ones: 10, 20, 40 ... up to 300."""
    return min(300, 5 * 2**attempts)


@transaction.atomic
def commitment_claim(*, commitment_id: int, now: datetime | None = None) -> StorageCommitment | None:
    """Hold the report for one delivery attempt, or None: it is gone, delivered or given up,
    another worker holds it now, or its next attempt is not due yet (a second message for it)."""
    now = now or timezone.now()
    row = (
        StorageCommitment.objects.select_for_update(skip_locked=True)
        .select_related("device", "institution")
        .filter(pk=commitment_id)
        .first()
    )
    if row is None or row.state != State.PENDING:
        return None
    if row.sending_until is not None and row.sending_until > now:
        return None
    if row.next_attempt_at is not None and row.next_attempt_at > now + CLOCK_SLACK:
        return None
    row.sending_until = now + HOLD
    row.save(update_fields=["sending_until"])
    return row


@transaction.atomic
def commitment_delivered(*, commitment_id: int, attempts: int = 1) -> None:
    StorageCommitment.objects.filter(pk=commitment_id).exclude(state=State.DELIVERED).update(
        state=State.DELIVERED,
        delivered_at=timezone.now(),
        attempts=attempts,
        last_error="",
        sending_until=None,
        next_attempt_at=None,
    )


@transaction.atomic
def commitment_attempt_failed(*, commitment_id: int, error: str, final: bool = False) -> StorageCommitment:
    """One more failed delivery, the next due after the backoff; after MAX_ATTEMPTS (or a
    final one) the report is given up."""
    row = StorageCommitment.objects.select_for_update().get(pk=commitment_id)
    row.attempts += 1
    row.last_error = error[:255]
    row.sending_until = None
    row.next_attempt_at = timezone.now() + timedelta(seconds=backoff(row.attempts))
    if final or row.attempts >= MAX_ATTEMPTS:
        row.state = State.FAILED
        row.next_attempt_at = None
    row.save(update_fields=["attempts", "last_error", "state", "sending_until", "next_attempt_at"])
    return row


@transaction.atomic
def owed_again(*, now: datetime | None = None) -> list[int]:
    """Reports still pending RETRY_AFTER_SECONDS after they were due (requested, or their
    retry's time) and held by no worker: their task never reached the broker or was lost.
    Their ids, oldest first, each marked due now, so that the next sweep leaves them alone
    for another RETRY_AFTER_SECONDS while the message it queues waits for a worker."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RETRY_AFTER_SECONDS)
    owed = (
        StorageCommitment.objects.select_for_update(skip_locked=True)
        .filter(state=State.PENDING)
        .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
        .alias(due=Coalesce("next_attempt_at", "requested_at"))
        .filter(due__lt=cutoff)
        .order_by("requested_at", "pk")
    )
    ids = list(owed.values_list("pk", flat=True)[:SWEEP_BATCH])
    StorageCommitment.objects.filter(pk__in=ids).update(next_attempt_at=now)
    return ids
