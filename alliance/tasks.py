"""Background work of the audit trail: the counts of refused reads, and the ATNA export."""

from __future__ import annotations

from celery import shared_task

from alliance import audit


@shared_task(name="alliance.tasks.summarize_denied_reads")
def summarize_denied_reads() -> int:
    """One audit event with the count for each minute of repeated refused reads that is over."""
    return audit.summarize_denials()
