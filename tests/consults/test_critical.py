"""Critical results (危急值): flag, notify, read back, escalate, and the refusals of each step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from consults import clock, critical, selectors, tasks
from consults.models import CriticalFinding, CriticalResult, Notification, Status
from consults.services import IllegalTransition
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
def time(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(clock, "now", fake)
    return fake


@pytest.fixture
def dissection(world: Any) -> CriticalFinding:
    return critical.critical_finding_create(
        alliance=world.alliance,
        modality="CT",
        name="主动脉夹层 (Aortic dissection)",
        actor=_p(world.alliance_admin).actor,
    )


def _p(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


def _flag(world: Any, consult: Any, **kwargs: Any) -> CriticalResult:
    return critical.critical_flag(consult=consult, by=_p(world.specialist), **kwargs)


def _actions(consult: Any) -> list[str]:
    events = AuditEvent.objects.filter(object_type="consult", object_id=str(consult.pk), action__contains="critical")
    return list(events.order_by("id").values_list("action", flat=True))


# --- flag ---------------------------------------------------------------------------------


def test_reader_flags_a_listed_finding_while_writing_and_the_requesting_clinicians_are_told(
    world: Any, dissection: CriticalFinding, time: Clock, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.LANGUAGE_CODE = "en"  # the language of the e-mail
    world.owner.user.email = "owner@clinic-a.example"
    world.owner.user.save()
    consult = walk(world, Status.IN_PROGRESS)
    with django_capture_on_commit_callbacks(execute=True):
        result = _flag(world, consult, finding=dissection)
    assert (result.text, result.modality, result.flagged_at) == ("主动脉夹层 (Aortic dissection)", "CT", T0)
    told = set(Notification.objects.filter(consult=consult, verb="critical").values_list("user_id", flat=True))
    assert told == {world.owner.user_id, world.colleague.user_id}
    assert [m.to for m in mail.outbox] == [["owner@clinic-a.example"]]
    assert "Critical result" in mail.outbox[0].subject
    assert _actions(consult) == ["consult.critical_flag", "consult.critical_notify"]


def test_reader_flags_free_text_on_a_signed_report(world: Any, time: Clock) -> None:
    consult = walk(world, Status.COMPLETED)
    result = _flag(world, consult, text="  右侧  大量气胸  ")
    assert result.text == "右侧 大量气胸" and result.finding is None


def test_flag_needs_a_finding_or_a_text(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    with pytest.raises(ValidationError) as exc:
        _flag(world, consult, text="   ")
    assert "text" in exc.value.message_dict
    assert not CriticalResult.objects.exists()


def test_finding_of_another_modality_or_inactive_is_refused(world: Any, dissection: CriticalFinding) -> None:
    pneumothorax = critical.critical_finding_create(
        alliance=world.alliance, modality="DX", name="气胸", actor=_p(world.alliance_admin).actor
    )
    consult = walk(world, Status.IN_PROGRESS)
    with pytest.raises(ValidationError):
        _flag(world, consult, finding=pneumothorax)
    dissection.active = False
    dissection.save()
    with pytest.raises(ValidationError):
        _flag(world, consult, finding=dissection)
    assert not CriticalResult.objects.exists()


@pytest.mark.parametrize("who", ["outsider_specialist", "owner", "hosp_admin", "stranger"])
def test_only_the_reader_of_the_case_flags(world: Any, who: str) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    with pytest.raises(AccessDenied):
        critical.critical_flag(consult=consult, by=_p(getattr(world, who)), text="气胸")
    assert not CriticalResult.objects.exists()


def test_no_flag_before_the_reading_starts(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    with pytest.raises(AccessDenied):
        _flag(world, consult, text="气胸")


# --- acknowledge --------------------------------------------------------------------------


def test_colleague_of_the_requester_reads_back_and_who_and_when_are_kept(world: Any, time: Clock) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="主动脉夹层 (Aortic dissection)")
    time.at(minutes=7)
    done = critical.critical_acknowledge(result=result, by=_p(world.colleague), read_back=" aortic  DISSECTION ")
    assert (done.acknowledged_by, done.acknowledged_at, done.read_back) == (
        world.colleague,
        T0 + timedelta(minutes=7),
        "aortic DISSECTION",
    )
    assert Notification.objects.filter(consult=consult, verb="critical_ack", user=world.specialist.user).exists()
    assert _actions(consult)[-1] == "consult.critical_ack"
    assert not selectors.critical_results_to_acknowledge(_p(world.owner)).exists()


def test_read_back_of_another_finding_is_refused(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="主动脉夹层")
    with pytest.raises(ValidationError) as exc:
        critical.critical_acknowledge(result=result, by=_p(world.owner), read_back="气胸")
    assert "read_back" in exc.value.message_dict
    result.refresh_from_db()
    assert result.acknowledged_at is None


@pytest.mark.parametrize("who", ["specialist", "hosp_admin", "stranger", "outsider_specialist", "alliance_admin"])
def test_acknowledging_from_the_wrong_side_is_refused(world: Any, who: str) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="气胸")
    with pytest.raises(AccessDenied):
        critical.critical_acknowledge(result=result, by=_p(getattr(world, who)), read_back="气胸")
    result.refresh_from_db()
    assert result.acknowledged_at is None
    assert "consult.critical_ack" not in _actions(consult)


def test_acknowledging_twice_is_refused_and_keeps_the_first(world: Any, time: Clock) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="气胸")
    critical.critical_acknowledge(result=result, by=_p(world.owner), read_back="气胸")
    time.at(minutes=3)
    with pytest.raises(IllegalTransition):
        critical.critical_acknowledge(result=result, by=_p(world.colleague), read_back="气胸")
    result.refresh_from_db()
    assert (result.acknowledged_by, result.acknowledged_at) == (world.owner, T0)


def test_home_list_holds_the_requesting_sides_waiting_flags_only(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="气胸")
    assert list(selectors.critical_results_to_acknowledge(_p(world.owner))) == [result]
    assert list(selectors.critical_results_to_acknowledge(_p(world.colleague))) == [result]
    assert list(selectors.critical_results_to_acknowledge(_p(world.inst_admin_a))) == [result]
    for who in ("specialist", "stranger", "hosp_admin", "alliance_admin"):
        assert not selectors.critical_results_to_acknowledge(_p(getattr(world, who))).exists()


# --- escalate -----------------------------------------------------------------------------


def test_unacknowledged_flag_escalates_once_to_the_requesting_institution_admin(
    world: Any, time: Clock, settings: Any
) -> None:
    settings.CRITICAL_ESCALATE_MINUTES = 15
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="气胸")
    assert tasks.escalate_critical_results(now=(T0 + timedelta(minutes=14, seconds=59)).isoformat()) == 0
    assert tasks.escalate_critical_results(now=(T0 + timedelta(minutes=15)).isoformat()) == 1
    assert tasks.escalate_critical_results(now=(T0 + timedelta(minutes=16)).isoformat()) == 0
    result.refresh_from_db()
    assert result.escalated_at == T0 + timedelta(minutes=15)
    escalated = Notification.objects.filter(consult=consult, verb="critical_escalate")
    assert list(escalated.values_list("user_id", flat=True)) == [world.inst_admin_a.user_id]
    assert _actions(consult).count("consult.critical_escalate") == 1


def test_requesting_institution_admin_told_of_an_escalation_may_read_back(world: Any, time: Clock) -> None:
    result = _flag(world, walk(world, Status.IN_PROGRESS), text="气胸")
    critical.critical_escalate_due(now=T0 + timedelta(hours=1))
    done = critical.critical_acknowledge(result=result, by=_p(world.inst_admin_a), read_back="气胸")
    assert done.acknowledged_by == world.inst_admin_a


def test_acknowledged_flag_never_escalates(world: Any, time: Clock) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    result = _flag(world, consult, text="气胸")
    critical.critical_acknowledge(result=result, by=_p(world.owner), read_back="气胸")
    assert tasks.escalate_critical_results(now=(T0 + timedelta(hours=2)).isoformat()) == 0
    assert not Notification.objects.filter(verb="critical_escalate").exists()


def test_escalation_follows_the_setting(world: Any, time: Clock, settings: Any) -> None:
    settings.CRITICAL_ESCALATE_MINUTES = 5
    _flag(world, walk(world, Status.IN_PROGRESS), text="气胸")
    assert critical.critical_escalate_due(now=T0 + timedelta(minutes=5)) == 1


# --- the alliance's list ------------------------------------------------------------------


def test_alliance_admin_adds_renames_and_deactivates_a_finding(world: Any) -> None:
    admin = _p(world.alliance_admin)
    finding = critical.critical_finding_save(by=admin, modality=" ct ", name="主动脉夹层")
    assert (finding.modality, finding.active) == ("CT", True)
    critical.critical_finding_save(by=admin, finding=finding, modality="CT", name="急性主动脉夹层", active=False)
    finding.refresh_from_db()
    assert (finding.name, finding.active) == ("急性主动脉夹层", False)
    with pytest.raises(ValidationError):
        critical.critical_finding_save(by=admin, modality="CT", name="急性主动脉夹层")
    audited = AuditEvent.objects.filter(object_type="critical_finding", object_id=str(finding.pk))
    assert set(audited.values_list("action", flat=True)) == {
        "consult.critical_finding_create",
        "consult.critical_finding_update",
    }


@pytest.mark.parametrize("who", ["owner", "specialist", "inst_admin_a", "hosp_admin"])
def test_only_the_alliance_admin_keeps_the_list(world: Any, who: str) -> None:
    with pytest.raises(AccessDenied):
        critical.critical_finding_save(by=_p(getattr(world, who)), modality="CT", name="气胸")
