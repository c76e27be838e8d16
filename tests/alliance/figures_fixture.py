"""A small alliance whose figures are worked out by hand (tests/alliance/test_figures.py).

Times are Asia/Shanghai; the range asked for is 2026-03-01 to 2026-04-30.

Consults (requested; signed after; on hold; deadline; breached):
  c1 clinic A  STAT     CT  03-02 10:00  +30 min                 60 min
  c2 clinic A  STAT     CT  03-05 10:00  +90 min                 60 min  breached
  c3 clinic A  STAT     MR  04-01 10:00  +60 min  10 min on hold 60 min   (turnaround 50)
  c4 clinic A  routine  DX  04-10 08:00  +600 min                24 h
  c5 clinic A  routine  CT  04-11 09:00  open (requested)
  c6 clinic A  urgent   CT  02-10 09:00  +60 min (before the range)
  c7 clinic B  routine  CT  03-20 09:00  open (requested)
  c8 clinic A  ASAP     CT  now - 2 h    accepted (open; after the range)
Studies (received; bytes): clinic A 01-15 4 GB, 03-03 2 GB and 1 GB, 04-02 0.5 GB;
clinic B 04-20 3 GB.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from consults.models import PRIORITY_RANK, Consult, ConsultTransition, Status
from imaging.models import Study
from tests.factories import StudyFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")
RANGE = {"date_from": "2026-03-01", "date_to": "2026-04-30"}
DEADLINES = {"stat": 3600, "asap": 7200, "urgent": 8 * 3600, "routine": 24 * 3600}


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def consult(
    w: Any,
    *,
    priority: str,
    modality: str,
    requested: datetime,
    minutes: int | None = None,
    paused: int = 0,
    breached: bool = False,
    requester: Any = None,
    status: str = Status.REQUESTED,
    owner: Any = None,
) -> Consult:
    requester = requester or w.owner
    completed = requested + timedelta(minutes=minutes) if minutes is not None else None
    row = Consult.objects.create(
        requester=requester,
        requesting_institution=requester.institution,
        question="?",
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],  # type: ignore[index]
        modality=modality,
        pool=w.pool,
        owner=owner or (w.specialist if completed else None),
        status=Status.COMPLETED if completed else status,
        created_at=requested,
        requested_at=requested,
        claimed_at=requested + timedelta(minutes=5) if completed or owner else None,
        completed_at=completed,
        deadline_seconds=DEADLINES[priority],
        due_at=requested + timedelta(seconds=DEADLINES[priority] + paused),
        paused_seconds=paused,
        breached_at=requested + timedelta(seconds=DEADLINES[priority]) if breached else None,
    )
    reader = (owner or w.specialist).user
    if completed or owner:
        log(row, "claim", reader, requested + timedelta(minutes=5))
    if completed:
        log(row, "sign", reader, completed)
    return row


def log(row: Consult, action: str, user: Any, moment: datetime) -> None:
    ConsultTransition.objects.create(consult=row, action=action, from_status="", to_status="", by=user, at=moment)


def study(institution: Any, received: datetime, size: int) -> Study:
    made = StudyFactory(institution=institution, series=0)
    Study.objects.filter(pk=made.pk).update(received_at=received, size_bytes=size)
    return made


def build(w: Any) -> SimpleNamespace:
    now = timezone.now()
    consults = SimpleNamespace(
        c1=consult(w, priority="stat", modality="CT", requested=at(3, 2, 10), minutes=30),
        c2=consult(w, priority="stat", modality="CT", requested=at(3, 5, 10), minutes=90, breached=True),
        c3=consult(w, priority="stat", modality="MR", requested=at(4, 1, 10), minutes=60, paused=600),
        c4=consult(w, priority="routine", modality="DX", requested=at(4, 10, 8), minutes=600),
        c5=consult(w, priority="routine", modality="CT", requested=at(4, 11, 9)),
        c6=consult(w, priority="urgent", modality="CT", requested=at(2, 10, 9), minutes=60),
        c7=consult(w, priority="routine", modality="CT", requested=at(3, 20, 9), requester=w.stranger),
        c8=consult(
            w,
            priority="asap",
            modality="CT",
            requested=now - timedelta(hours=2),
            status=Status.ACCEPTED,
            owner=w.outsider_specialist,
        ),
    )
    study(w.clin_a, at(1, 15, 12), 4 * 10**9)
    study(w.clin_a, at(3, 3, 12), 2 * 10**9)
    study(w.clin_a, at(3, 3, 13), 1 * 10**9)
    study(w.clin_a, at(4, 2, 12), 5 * 10**8)
    study(w.clin_b, at(4, 20, 12), 3 * 10**9)
    return consults
