"""Background work on stored images: thumbnails and previews after ingest, and the sweeps
that keep them and DATA_DIR/tmp in order."""

from __future__ import annotations

import atexit
import logging
import os
import smtplib
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from alliance import notice_mail
from alliance.celery import app as celery_app
from imaging import activity, commitment, grants, maintenance, reconcile, render, worklist
from imaging.dicom import notify
from imaging.models import BreakGlassReview, Instance, StorageCommitment

log = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry: the storage or the network was away, not the file bad."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # botocore comes with the S3 storage only
        return tuple(errors)
    return (*errors, BotoConnectionError, HTTPClientError)


_TRANSIENT = _transient_errors()
# Retried with backoff when the storage or the network was away; safe to run twice. Twelve
# tries, each waiting a random time up to 1, 2, 4 ... 120 s (jitter keeps a region's renders
# from retrying all at once): about 6 minutes on average, so that an object store away for a
# few minutes is ridden out by the task itself; beat's sweep (requeue_owed_renders) asks again
# for what outlasts it. Six tries up to 32 s each gave up within about half a minute (CI, stop 26).
_RENDER_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": _TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 120,
    "max_retries": 12,
}


@shared_task(**_RENDER_OPTIONS)
def render_instance(instance_id: int) -> bool:
    """Render and cache the thumbnail and preview; True when the instance is now rendered.

    Safe to run twice: renders are cached by key and the flag is only ever set to True.
    """
    instance = Instance.objects.filter(pk=instance_id).first()
    if instance is None or instance.unrenderable:
        return False
    if instance.rendered:  # asked again by the sweep (requeue_owed_renders) or a redelivery
        return True
    try:
        render.thumbnail(instance)
        render.preview(instance)
    except render.RenderError as exc:
        log.info("instance %s has no renderable frame: %s", instance.sop_uid, exc)
        Instance.objects.filter(pk=instance_id).update(unrenderable=True)
        return False
    except _TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001 - its file gone or unreadable: another try would fail alike
        log.warning("instance %s cannot be rendered: %s: %s", instance.sop_uid, type(exc).__name__, exc)
        Instance.objects.filter(pk=instance_id).update(unrenderable=True)  # the sweep stops asking
        return False
    Instance.objects.filter(pk=instance_id, rendered=False).update(rendered=True)
    return True


@shared_task(bind=True, **_RENDER_OPTIONS)
def render_instances(self: Any, instance_ids: list[int]) -> int:
    """The follow-up of a batch of newly stored instances: the worklist steps their studies
    complete, then render_instance for each; how many are now rendered.

    In a worker, each instance waits first while this node is taking in images (ingest
    first), RENDER_DEFER_SECONDS at most for the whole task; called in process (eagerly,
    or directly) it does not wait."""
    complete_worklist_steps(instance_ids)
    in_worker = not (self.request.called_directly or self.request.is_eager)
    budget = float(settings.RENDER_DEFER_SECONDS) if in_worker else 0.0
    rendered = 0
    for pk in instance_ids:
        if budget > 0:
            budget -= activity.wait_for_lull(budget)
        rendered += render_instance(pk)
    return rendered


def complete_worklist_steps(instance_ids: list[int]) -> None:
    """Off the C-STORE path (ingest hands the ids here after its commit): a study that came
    with a scheduled step's accession number completes the step (imaging.worklist)."""
    try:
        worklist.complete_from_instances(instance_ids)
    except _TRANSIENT:
        raise
    except Exception:  # the renders still go on; the sweep's next batch of these asks again
        log.exception("could not match %d stored instance(s) to the worklist", len(instance_ids))


SWEEP_BATCH = 2000


@shared_task(acks_late=True)
def requeue_owed_renders(older_than_seconds: float | None = None) -> int:
    """The beat sweep: queue again the renders still owed RETRY_AFTER_SECONDS after their
    instance was stored (the request died with the broker or with a killed DICOM server
    process, or its task failed for good), oldest first; how many were queued."""
    age = settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    owed = Instance.objects.filter(rendered=False, unrenderable=False, received_at__lt=cutoff)
    ids = list(owed.order_by("received_at").values_list("pk", flat=True)[:SWEEP_BATCH])
    for start in range(0, len(ids), MAX_BATCH):
        render_instances.delay(ids[start : start + MAX_BATCH])
    if ids:
        log.warning("queued again the rendering of %d instance(s) stored before %s", len(ids), cutoff)
    return len(ids)


@shared_task
def remove_stale_temp_files() -> int:
    """The beat job clearing DATA_DIR/tmp of what dead processes left (reconcile.remove_stale_temp)."""
    return reconcile.remove_stale_temp(older_than=timedelta(seconds=settings.TEMP_MAX_AGE_SECONDS))


# --- batching the render requests of ingest ---------------------------------------------
# One Celery message per stored instance would cost the receiving thread about a
# millisecond each (a C-STORE of a 500-slice CT waits on every one). Ingest hands the ids
# here instead; a thread sends them as one task per BATCH_SECONDS. The pages render on
# demand too, so ids lost with a crashed process cost latency, not images.

BATCH_SECONDS = 0.5
MAX_BATCH = 200


def _send_batch(instance_ids: list[int]) -> None:
    """Queue render_instances on the project's Celery app by name: a shared task resolves its
    app per thread, and the batcher's thread must not fall back to another app's broker."""
    celery_app.send_task("imaging.tasks.render_instances", args=[instance_ids])


def _ready_to_send() -> None:
    """What the first send on a thread would do first (Celery's result backend is made per
    thread, its transport imported and connected on first use, ~15 ms in all): done by
    warm_up, before the first store, rather than by it."""
    celery_app.backend  # noqa: B018  # the property makes this thread's backend
    celery_app.amqp.send_task_message  # noqa: B018  # made on first use, with its event dispatcher
    with celery_app.producer_or_acquire() as producer:
        producer.connection.default_channel  # noqa: B018  # imports the transport and connects


class _Batcher:
    def __init__(
        self, send: Callable[[list[int]], Any] = _send_batch, ready: Callable[[], Any] = _ready_to_send
    ) -> None:
        self.send = send
        self.ready = ready
        self.lock = threading.Lock()
        self.pending: list[int] = []
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, *instance_ids: int) -> None:
        with self.lock:
            self.pending.extend(instance_ids)
            self._start()
        self.wake.set()

    def warm_up(self) -> None:
        with self.lock:
            self._start()

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="render-batcher", daemon=True)
            self.thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        try:
            self.ready()
        except Exception:  # the broker is away: the first send tries again, and says so if it fails
            log.info("could not connect to the broker ahead of the first render request", exc_info=True)
        while True:
            self.wake.wait()
            self.wake.clear()
            threading.Event().wait(BATCH_SECONDS)  # let the batch fill
            self.flush()

    def flush(self) -> None:
        with self.lock:
            ids, self.pending = self.pending, []
        for start in range(0, len(ids), MAX_BATCH):
            batch = ids[start : start + MAX_BATCH]
            try:
                self.send(batch)
            except Exception:  # the broker is away: the pages still render on demand
                log.exception("could not queue the rendering of %d instances", len(batch))


_batcher = _Batcher()


def _after_fork() -> None:
    """Threads do not survive a fork (dicom_server --processes): start afresh in the child."""
    global _batcher
    _batcher = _Batcher()


os.register_at_fork(after_in_child=_after_fork)


def schedule_render(instance_id: int) -> None:
    """Have the thumbnail and preview of a newly stored instance rendered in the background."""
    schedule_renders([instance_id])


def schedule_renders(instance_ids: list[int]) -> None:
    """schedule_render for several instances (the spool's indexer commits runs of them)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:  # tests and single-process runs: now, in this thread
        render_instances.delay(list(instance_ids))
        return
    _batcher.add(*instance_ids)


def load() -> None:
    """Nothing: importing this module (Celery's app and its task machinery) is the point, for
    a server that forks (dicom_server) and should not import it while it serves."""


def warm_up() -> None:
    """Start the thread that queues render requests, ready to send, in a serving process
    (dicom_server's, after any fork): its first send then costs what the others do, not the
    ~20 ms of making Celery's backend and connecting the transport on the first store."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        _batcher.warm_up()


@shared_task
def roll_up_received_days() -> int:
    """The beat job keeping the figures' per-day sums of received studies (imaging.figures)."""
    from imaging.figures import roll_up_received_days as roll_up

    return roll_up()


@shared_task(
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def send_break_glass_email(review_id: int) -> int:
    """Tell the admins of the study's institution that someone broke the glass (at most once)."""
    review = BreakGlassReview.objects.select_related("study", "owner_institution", "user").filter(pk=review_id).first()
    if review is None:
        return 0
    # one transaction around the mail: a failed send leaves the review unmailed for the retry
    with transaction.atomic(), translation.override(settings.LANGUAGE_CODE):
        admins = grants.break_glass_emailed(review=review)
        if not admins:
            return 0
        link = settings.SITE_URL + reverse("imaging:break_glass_reviews")
        subject = _("Emergency access to a study of %(institution)s") % {"institution": review.owner_institution}
        body = _(
            "%(who)s opened a study of %(institution)s by emergency access until %(until)s.\n"
            "Reason: %(reason)s\n\nReview it: %(link)s\n"
        ) % {
            "who": review.user.get_full_name() or review.user.get_username(),
            "institution": review.owner_institution,
            "until": timezone.localtime(review.expires_at).strftime("%Y-%m-%d %H:%M"),
            "reason": review.reason,
            "link": link,
        }
        return send_mail(subject, body, None, [user.email for user in admins])


@shared_task(acks_late=True)
def send_unsent_break_glass_emails(older_than_seconds: float | None = None) -> int:
    """The beat sweep: mail the admins about the emergency accesses whose e-mail task never
    reached the broker (or was lost), once opened RETRY_AFTER_SECONDS ago; older than
    notice_mail.EMAIL_GIVE_UP_AFTER they are given up and logged (the reviews page still
    lists them). How many mails went out."""
    age = timedelta(seconds=settings.RETRY_AFTER_SECONDS if older_than_seconds is None else older_than_seconds)
    now = timezone.now()
    unsent = BreakGlassReview.objects.filter(emailed_at=None)
    given_up = unsent.filter(opened_at__lt=now - notice_mail.EMAIL_GIVE_UP_AFTER).update(emailed_at=now)
    if given_up:
        log.error("gave up mailing %d emergency access(es) older than %s", given_up, notice_mail.EMAIL_GIVE_UP_AFTER)
    due = unsent.filter(opened_at__lt=now - age).order_by("opened_at")
    ids = list(due.values_list("pk", flat=True)[: notice_mail.SWEEP_BATCH])
    if ids:
        log.warning("mailing %d emergency access(es) whose e-mail task was lost", len(ids))
    sent = 0
    for pk in ids:
        try:
            sent += send_break_glass_email(pk)
        except Exception:  # noqa: BLE001 - the mail server away: the next sweep tries again
            log.exception("could not mail the emergency access review %s", pk)
    return sent


@shared_task(acks_late=True)
def purge_deleted_studies() -> int:
    """The daily retention sweep of soft-deleted studies (imaging.maintenance)."""
    return maintenance.purge_deleted_studies()


# --- storage commitment reports that missed their association ---------------------------


@shared_task(bind=True, acks_late=True, max_retries=commitment.MAX_ATTEMPTS)
def deliver_commitment(self: Any, commitment_id: int) -> bool:
    """Send a storage commitment report on an association of its own to the device (PS3.4
    J.3.3), retried with backoff; True once delivered. Safe to run twice: the worker holds the
    report while it sends (commitment_claim), and a delivered one is not sent again."""
    row = commitment.commitment_claim(commitment_id=commitment_id)
    if row is None:
        return StorageCommitment.objects.filter(pk=commitment_id, state=StorageCommitment.State.DELIVERED).exists()
    device = row.device
    try:
        if device.host == "*":
            raise notify.NotDelivered(f"{device.ae_title} has no host to call (registered as '*')")
        notify.send_commitment_report(
            calling_ae=row.institution.ae_title,
            called_ae=device.ae_title,
            host=device.host,
            port=device.port,
            report=commitment.report_of(row, retrieve_ae=row.institution.ae_title),
        )
    except notify.NotDelivered as exc:
        row = commitment.commitment_attempt_failed(
            commitment_id=commitment_id, error=str(exc), final=device.host == "*"
        )
        if row.state == StorageCommitment.State.FAILED:
            log.error("storage commitment %s: report not delivered: %s", row.transaction_uid, exc)
            return False
        raise self.retry(countdown=commitment.backoff(row.attempts)) from exc
    commitment.commitment_delivered(commitment_id=commitment_id, attempts=row.attempts + 1)
    return True


@shared_task(acks_late=True)
def resend_owed_commitments() -> int:
    """The beat sweep: queue again the storage commitment reports still owed well past their
    due time (imaging.commitment.owed_again); how many were queued."""
    ids = commitment.owed_again()
    for pk in ids:
        deliver_commitment.delay(pk)
    if ids:
        log.warning("queued again %d storage commitment report(s) nobody was sending", len(ids))
    return len(ids)
