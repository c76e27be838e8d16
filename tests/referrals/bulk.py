"""Many referrals at once, for the list scale test and bench/referrals_bench.py.

Rows are inserted with bulk_create (the services would take many minutes for 10,000): what
the services leave behind in each state, spread over the last 90 days, between several
clinics and one hospital, with one attached study each.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from referrals.models import URGENCY_RANK, Referral, Status, Urgency

# Of every 20 referrals: 6 waiting, 1 on hold, 4 with an appointment, 2 in care, 5 completed, 2 closed otherwise.
STATES = (
    [Status.REQUESTED] * 6
    + [Status.ON_HOLD]
    + [Status.ACCEPTED] * 4
    + [Status.IN_PROGRESS] * 2
    + [Status.COMPLETED] * 5
    + [Status.REJECTED, Status.CANCELLED]
)
URGENCIES = [Urgency.ROUTINE, Urgency.ROUTINE, Urgency.URGENT, Urgency.EMERGENCY]


def bulk_referrals(*, referrers: list[Any], to_institution: Any, studies: list[Any], count: int) -> list[Referral]:
    """`count` up referrals from the referrers' clinics to `to_institution`, in every state."""
    now = timezone.now()
    rows = []
    for i in range(count):
        referrer, study = referrers[i % len(referrers)], studies[i % len(studies)]
        status, urgency = STATES[i % len(STATES)], URGENCIES[i % len(URGENCIES)]
        created = now - timedelta(minutes=(i * 13) % (90 * 24 * 60))
        answered = status not in (Status.REQUESTED,)
        booked = status in (Status.ACCEPTED, Status.IN_PROGRESS, Status.COMPLETED)
        rows.append(
            Referral(
                referrer=referrer,
                from_institution_id=referrer.institution_id,
                to_institution=to_institution,
                direction="up",
                urgency=urgency,
                urgency_rank=URGENCY_RANK[urgency],
                patient_id=study.patient_id,
                reason=f"Bulk referral {i}: chest pain, please assess.",
                summary="Bulk summary.",
                status=status,
                created_at=created,
                requested_at=created + timedelta(minutes=5),
                answered_at=created + timedelta(hours=2) if answered else None,
                appointment_at=now + timedelta(hours=(i % 240) - 48) if booked else None,
                department="Cardiology" if booked else "",
                proposed_date=(now + timedelta(days=3)).date() if status == Status.ON_HOLD else None,
                arrived_at=created + timedelta(days=1) if status in (Status.IN_PROGRESS, Status.COMPLETED) else None,
                feedback="Bulk discharge summary." if status == Status.COMPLETED else "",
                completed_at=created + timedelta(days=3) if status == Status.COMPLETED else None,
                closed_reason="Bulk reason." if status in (Status.REJECTED, Status.CANCELLED) else "",
            )
        )
    created_rows = Referral.objects.bulk_create(rows, batch_size=2000)
    through = Referral.studies.through
    through.objects.bulk_create(
        [through(referral_id=r.pk, study_id=studies[i % len(studies)].pk) for i, r in enumerate(created_rows)],
        batch_size=5000,
    )
    return created_rows
