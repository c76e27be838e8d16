"""Background work of the audit trail: the counts of refused reads, and the ATNA export."""

from __future__ import annotations

from celery import shared_task

from alliance import atna, audit


@shared_task(name="alliance.tasks.summarize_denied_reads")
def summarize_denied_reads() -> int:
    """One audit event with the count for each minute of repeated refused reads that is over."""
    return audit.summarize_denials()


@shared_task(name="alliance.tasks.send_atna")
def send_atna() -> int:
    """Send the audit events the ATNA collector has not had yet (none lost while it is away)."""
    return atna.send_pending()
