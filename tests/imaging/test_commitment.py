"""Storage commitment reports nobody is sending (issue 18 item 3): a report whose task never
reached the broker (it was down when the request's association closed) is queued again by the
beat sweep once it is RETRY_AFTER_SECONDS overdue, and reaches the modality's own listener; a
report a worker holds, one whose retry is not overdue, a delivered or a given-up one is left
alone, and two messages for one report never send it twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from alliance import audit
from alliance import services as alliance_services
from imaging import commitment, tasks
from imaging.dicom import notify
from imaging.dicom.procedures import CommitmentRequest, Reference
from imaging.models import Instance, StorageCommitment
from tests import factories
from tests.processes import free_port

pytestmark = pytest.mark.django_db
State = StorageCommitment.State


class Modality:
    """A modality's storage commitment SCU, listening for N-EVENT-REPORTs on its own port."""

    def __init__(self, port: int) -> None:
        self.reports: list[str] = []
        self.arrived = threading.Event()
        ae = AE(ae_title="CT_CLINA")
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        self.reports.append(str(event.event_information.TransactionUID))
        self.arrived.set()
        return 0x0000, None


@pytest.fixture
def modality() -> Iterator[Modality]:
    listening = Modality(free_port())
    yield listening
    listening.server.shutdown()


@pytest.fixture
def device(clinic: Any, modality: Modality) -> Any:
    port = modality.server.server_address[1]
    return alliance_services.device_create(
        institution=clinic, ae_title="CT_CLINA", host="127.0.0.1", port=port, by=audit.SYSTEM
    )


def requested(device: Any, clinic: Any, uid: str = "1.2.826.0.1.3680043.9.7001") -> StorageCommitment:
    """A device's request, answered and recorded; its report not sent (the task never queued)."""
    study = factories.store_ct_study(clinic, slices=1)
    instance = Instance.objects.get(series__study=study)
    refs = (Reference(instance.sop_class_uid, instance.sop_uid),)
    return commitment.commitment_check(device=device, request=CommitmentRequest(uid, refs))


def overdue(row: StorageCommitment, settings: Any, **fields: Any) -> None:
    """Move the row back in time past the sweep's grace."""
    long_ago = timezone.now() - timedelta(seconds=settings.RETRY_AFTER_SECONDS + 1)
    StorageCommitment.objects.filter(pk=row.pk).update(requested_at=long_ago, **fields)


def test_a_report_whose_task_never_reached_the_broker_is_sent_by_the_sweep(
    device: Any, clinic: Any, modality: Modality, settings: Any
) -> None:
    row = requested(device, clinic)

    assert tasks.resend_owed_commitments() == 0  # not overdue yet: its task may be on its way
    overdue(row, settings)
    assert tasks.resend_owed_commitments() == 1  # queued again, and (eagerly) delivered

    assert modality.arrived.wait(30)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.sending_until, row.next_attempt_at) == (State.DELIVERED, 1, None, None)
    assert modality.reports == [row.transaction_uid]
    overdue(row, settings)
    assert tasks.resend_owed_commitments() == 0  # delivered: never again
    assert modality.reports == [row.transaction_uid]


def test_the_sweep_takes_only_what_nobody_is_sending_and_waits_again_after_queueing(
    device: Any, clinic: Any, settings: Any
) -> None:
    now = timezone.now()
    grace = timedelta(seconds=settings.RETRY_AFTER_SECONDS)
    lost = requested(device, clinic, "1.2.9.1")
    held = requested(device, clinic, "1.2.9.2")
    retry_soon = requested(device, clinic, "1.2.9.3")
    retry_lost = requested(device, clinic, "1.2.9.4")
    held_by_dead_worker = requested(device, clinic, "1.2.9.5")
    delivered = requested(device, clinic, "1.2.9.6")
    given_up = requested(device, clinic, "1.2.9.7")
    for row in (lost, held, retry_soon, retry_lost, held_by_dead_worker, delivered, given_up):
        overdue(row, settings)
    StorageCommitment.objects.filter(pk=held.pk).update(sending_until=now + timedelta(seconds=60))
    StorageCommitment.objects.filter(pk=retry_soon.pk).update(next_attempt_at=now - grace + timedelta(seconds=30))
    StorageCommitment.objects.filter(pk=retry_lost.pk).update(next_attempt_at=now - grace - timedelta(seconds=1))
    StorageCommitment.objects.filter(pk=held_by_dead_worker.pk).update(sending_until=now - timedelta(seconds=1))
    StorageCommitment.objects.filter(pk=delivered.pk).update(state=State.DELIVERED)
    StorageCommitment.objects.filter(pk=given_up.pk).update(state=State.FAILED)

    owed = commitment.owed_again(now=now)

    assert owed == [lost.pk, retry_lost.pk, held_by_dead_worker.pk]
    assert set(StorageCommitment.objects.filter(pk__in=owed).values_list("next_attempt_at", flat=True)) == {now}
    assert commitment.owed_again(now=now + timedelta(seconds=20)) == []  # their messages are on their way
    later = now + grace + timedelta(seconds=1)
    # still nobody sent them; the held one's hold has run out meanwhile (its worker died)
    assert set(commitment.owed_again(now=later)) == {*owed, retry_soon.pk, held.pk}


def test_two_messages_for_one_report_send_it_once(device: Any, clinic: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    row = requested(device, clinic)
    sent: list[str] = []
    monkeypatch.setattr(notify, "send_commitment_report", lambda **kw: sent.append(kw["report"].transaction_uid))

    held = commitment.commitment_claim(commitment_id=row.pk)
    assert held is not None and held.sending_until is not None
    assert tasks.deliver_commitment(row.pk) is False  # a second message while the first sends
    assert sent == []
    StorageCommitment.objects.filter(pk=row.pk).update(sending_until=None)  # the first one ended
    assert tasks.deliver_commitment(row.pk) is True
    assert tasks.deliver_commitment(row.pk) is True  # delivered already: not sent again
    assert sent == [row.transaction_uid]


def test_a_failed_attempt_is_due_after_its_backoff_and_a_message_before_then_waits(
    device: Any, clinic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = requested(device, clinic)
    failed = commitment.commitment_attempt_failed(commitment_id=row.pk, error="association rejected")
    assert (failed.state, failed.attempts, failed.sending_until) == (State.PENDING, 1, None)
    assert failed.next_attempt_at is not None
    due = failed.next_attempt_at - timezone.now()
    assert timedelta(seconds=commitment.backoff(1) - 5) < due <= timedelta(seconds=commitment.backoff(1))

    assert commitment.commitment_claim(commitment_id=row.pk) is None  # a duplicate message, early
    assert commitment.commitment_claim(commitment_id=row.pk, now=failed.next_attempt_at) is not None
    for _ in range(commitment.MAX_ATTEMPTS - 1):
        last = commitment.commitment_attempt_failed(commitment_id=row.pk, error="association rejected")
    assert (last.state, last.attempts, last.next_attempt_at) == (State.FAILED, commitment.MAX_ATTEMPTS, None)


def test_beat_runs_the_sweep_every_retry_sweep_seconds(settings: Any) -> None:
    (entry,) = [
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "imaging.tasks.resend_owed_commitments"
    ]
    assert entry["schedule"] == float(settings.RETRY_SWEEP_SECONDS)
