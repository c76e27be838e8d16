"""Deadlines with a controlled clock: reminders at 50% and 80%, release and widening at the
claim timeout or the deadline, and on-hold time does not count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alliance import signals as alliance_signals
from alliance.access import resolve_principal
from alliance.models import PoolMembership
from consults import access as consults_access
from consults import clock, services
from consults.models import Notification, Status
from imaging import access
from tests.consults.conftest import walk

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, **delta: float) -> datetime:
        self.now = T0 + timedelta(**delta)
        return self.now


@pytest.fixture
def time(world: Any, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Consults run on this clock; desk members joined before it (the world's) and join on it."""
    fake = Clock()
    monkeypatch.setattr(clock, "now", fake)
    monkeypatch.setattr(alliance_signals, "_now", fake)
    PoolMembership.objects.update(since=T0 - timedelta(days=365))
    return fake


def _verbs(user: Any) -> list[str]:
    return list(Notification.objects.filter(user=user).order_by("id").values_list("verb", flat=True))


def test_owner_is_reminded_at_half_and_four_fifths_of_the_time_once(world: Any, time: Clock) -> None:
    walk(world, Status.IN_PROGRESS)  # routine: 24 h
    assert services.consult_check_deadlines(now=time.at(hours=11, minutes=59)) == {}
    assert services.consult_check_deadlines(now=time.at(hours=12)) == {"remind_50": 1}
    assert services.consult_check_deadlines(now=time.at(hours=13)) == {}
    assert services.consult_check_deadlines(now=time.at(hours=19, minutes=12)) == {"remind_80": 1}
    assert _verbs(world.specialist.user)[-2:] == ["remind_50", "remind_80"]


def test_on_hold_time_does_not_count(world: Any, time: Clock) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    time.at(hours=2)
    services.consult_hold(consult=consult, by=resolve_principal(world.specialist.user), question="Prior CT?")
    assert services.consult_check_deadlines(now=time.at(hours=30)) == {}  # paused: nothing happens
    services.consult_answer(consult=consult, by=resolve_principal(world.owner.user), answer="None.")  # 28 h on hold
    consult.refresh_from_db()
    assert consult.paused_seconds == 28 * 3600
    assert consult.due_at == T0 + timedelta(hours=24 + 28)
    assert services.consult_check_deadlines(now=time.at(hours=39, minutes=59)) == {}
    assert services.consult_check_deadlines(now=time.at(hours=40)) == {"remind_50": 1}


def test_unclaimed_named_request_is_widened_to_the_pool_at_claim_timeout(world: Any, time: Clock) -> None:
    from tests.factories import make_doctor

    colleague = make_doctor(institution=world.hosp, roles=["specialist"], username="pool_colleague")
    world.pool.members.add(colleague)
    consult = walk(world, Status.REQUESTED, named=True)  # routine: claim timeout 4 h
    study = consult.studies.get()
    assert not access.studies_visible_to(resolve_principal(colleague.user)).filter(pk=study.pk).exists()
    assert services.consult_check_deadlines(now=time.at(hours=4)) == {"widen": 1}
    assert consults_access.may_claim(resolve_principal(colleague.user), consult.__class__.objects.get(pk=consult.pk))
    assert access.studies_visible_to(resolve_principal(colleague.user)).filter(pk=study.pk).exists()
    assert "widen" in _verbs(world.hosp_admin.user)
    assert services.consult_check_deadlines(now=time.at(hours=5)) == {}


def test_stalled_claim_is_released_at_claim_timeout_and_admin_told(world: Any, time: Clock) -> None:
    consult = walk(world, Status.ACCEPTED)
    assert services.consult_check_deadlines(now=time.at(hours=3, minutes=59)) == {}
    assert services.consult_check_deadlines(now=time.at(hours=4)) == {"widen": 1}
    consult.refresh_from_db()
    assert consult.status == Status.REQUESTED and consult.owner is None
    last = consult.transitions.last()
    assert (last.action, last.by, last.reason) == ("release", None, "claim timeout")
    assert "widen" in _verbs(world.hosp_admin.user)
    assert "release" in _verbs(world.specialist.user)


def test_breach_of_an_unclaimed_case_tells_the_admin_once(world: Any, time: Clock) -> None:
    consult = walk(world, Status.REQUESTED, priority="stat")  # 1 h, claim timeout 10 min
    assert services.consult_check_deadlines(now=time.at(minutes=10)) == {"widen": 1}
    assert services.consult_check_deadlines(now=time.at(minutes=60)) == {"breach": 1}
    assert services.consult_check_deadlines(now=time.at(minutes=61)) == {}
    consult.refresh_from_db()
    assert consult.breached_at == T0 + timedelta(minutes=60)
    assert _verbs(world.hosp_admin.user).count("breach") == 1
