"""The outbox of HL7 messages to the hospitals' systems: queued in the transaction of what they
report, delivered over MLLP by a Celery task (the caller's app builds the text), done once the
HIS acknowledges them with AA (or CA). An AE, a refused connection or a timeout leaves the row
pending and the task retries with backoff; an AR (the HIS will never take it) or the last retry
leaves it failed with the reason. A row is locked while it is sent, so it is never sent twice
at once; a retry sends the same text with the same MSH-10, so the HIS can spot a repeat."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from alliance import audit
from alliance.models import AuditEvent
from imaging.hl7 import mllp
from imaging.hl7.messages import ack_code
from imaging.hl7.models import HisEndpoint, OutboundMessage

State = OutboundMessage.State
ACCEPTED = {"AA", "CA"}
REJECTED = {"AR", "CR"}


class SendFailed(Exception):
    """The message is not acknowledged yet and may be on another try (network, timeout, AE)."""


def result_endpoint_for(institution_id: int) -> HisEndpoint | None:
    """Where the results of an institution's cases go: its active HIS that takes results."""
    rows = HisEndpoint.objects.filter(institution_id=institution_id, active=True, port__isnull=False).exclude(host="")
    return rows.order_by("pk").first()


def queue(
    *, endpoint: HisEndpoint, key: str, kind: str, consult_id: int, version_id: int, patient: str
) -> OutboundMessage:
    """The outbox row of one message (the same key: the row made before). Call it inside the
    transaction of what the message reports, and send the row on commit."""
    row, _created = OutboundMessage.objects.get_or_create(
        key=key,
        defaults={
            "endpoint": endpoint,
            "kind": kind,
            "consult_id": consult_id,
            "version_id": version_id,
            "patient": patient[:200],
        },
    )
    return row


def deliver(*, outbound_id: int, build: Callable[[OutboundMessage], tuple[str, str]]) -> str:
    """Send one pending row (building its text first, once); the row's state afterwards.
    Raises SendFailed when another try may succeed."""
    with transaction.atomic():
        row = (
            OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(pk=outbound_id, state=State.PENDING)
            .first()
        )
        if row is None:
            return "skipped"  # done already, or another worker is sending it now
        if not row.message:
            row.message, row.control_id = build(row)
        row.attempts += 1
        row.last_attempt_at = timezone.now()
        error = _attempt(row)
        if error and row.attempts > settings.HL7_SEND_RETRIES:
            row.state = State.FAILED
        row.save()
        _audit(row, error)
    if error and row.state == State.PENDING:
        raise SendFailed(error)
    return str(row.state)


def _attempt(row: OutboundMessage) -> str:
    """One send and the reading of its ACK: "" when accepted, else why not (the row says how)."""
    endpoint = row.endpoint
    try:
        reply = mllp.send(
            endpoint.host,
            int(endpoint.port or 0),
            row.message,
            encoding=settings.HL7_ENCODING,
            timeout=settings.HL7_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError) as exc:
        row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        return row.last_error
    row.ack_code, row.ack_text = ack_code(reply)
    row.ack_text = row.ack_text[:1000]
    if row.ack_code in ACCEPTED:
        row.state, row.sent_at, row.last_error = State.SENT, timezone.now(), ""
        return ""
    row.last_error = f"ACK {row.ack_code or '(none)'}: {row.ack_text}"[:1000]
    if row.ack_code in REJECTED:
        row.state = State.FAILED
    return row.last_error


def _audit(row: OutboundMessage, error: str) -> None:
    audit.record(
        actor=audit.SYSTEM,
        action="hl7.send",
        object_type="hl7",
        object_id=row.control_id,
        patient=row.patient,
        source=f"{row.endpoint.host}:{row.endpoint.port}",
        outcome=AuditEvent.Outcome.FAILURE if error else AuditEvent.Outcome.SUCCESS,
        detail={
            "kind": row.kind,
            "key": row.key,
            "endpoint": row.endpoint_id,
            "ack": row.ack_code,
            "error": error[:200],
        },
    )


# Longer than the task's longest wait between two tries (consults.tasks.send_result).
RETRY_LOST_AFTER = timedelta(hours=2)


def unsent(older_than: timedelta) -> list[int]:
    """Pending rows whose task a broker outage or a lost worker dropped: never tried and older
    than `older_than`, or tried last longer ago than any retry waits."""
    now = timezone.now()
    never = Q(last_attempt_at__isnull=True, created_at__lt=now - older_than)
    rows = OutboundMessage.objects.filter(never | Q(last_attempt_at__lt=now - RETRY_LOST_AFTER), state=State.PENDING)
    return list(rows.order_by("created_at").values_list("pk", flat=True)[:500])
