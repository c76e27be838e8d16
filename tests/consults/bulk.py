"""Many open consults at once, for the worklist scale test and bench/worklist_bench.py.

Rows are inserted with bulk_create (the services would take minutes for 10,000); they
are what consult_request leaves behind: requested, pool-wide, with a running clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from consults import clock
from consults.models import PRIORITY_RANK, Consult, Priority, Status

PRIORITIES = [Priority.ROUTINE, Priority.URGENT, Priority.ASAP, Priority.STAT]


def bulk_open_consults(*, requester: Any, pool: Any, studies: list[Any], count: int, owners: list[Any] = ()) -> None:
    """`count` requested consults to `pool`; every seventh is claimed by one of `owners`."""
    now = clock.now()
    rows = []
    for i in range(count):
        priority = PRIORITIES[i % 4]
        owner = owners[i % len(owners)] if owners and i % 7 == 0 else None
        rows.append(
            Consult(
                requester=requester,
                requesting_institution_id=requester.institution_id,
                question=f"Bulk question {i}",
                priority=priority,
                priority_rank=PRIORITY_RANK[priority],
                pool=pool,
                owner=owner,
                status=Status.ACCEPTED if owner else Status.REQUESTED,
                created_at=now,
                requested_at=now - timedelta(minutes=i % 600),
                claimed_at=now if owner else None,
                deadline_seconds=24 * 3600,
                claim_timeout_seconds=4 * 3600,
                due_at=now + timedelta(minutes=30 + (i * 37) % 1400),
                claim_due_at=now + timedelta(hours=4),
                remind_50_at=now + timedelta(hours=12),
                remind_80_at=now + timedelta(hours=19),
            )
        )
    created = Consult.objects.bulk_create(rows, batch_size=2000)
    through = Consult.studies.through
    through.objects.bulk_create(
        [through(consult_id=c.pk, study_id=studies[i % len(studies)].pk) for i, c in enumerate(created)],
        batch_size=5000,
    )
