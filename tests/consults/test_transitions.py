"""Every move of the workflow: allowed for the right persona, refused for every other, and
an illegal move changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from consults import services
from consults.models import ConsultTransition, Notification, ReportVersion, Status
from tests.consults.conftest import walk
from tests.factories import StudyFactory

PERSONAS = [
    "owner",
    "colleague",
    "inst_admin_a",
    "specialist",
    "outsider_specialist",
    "hosp_admin",
    "stranger",
    "alliance_admin",
]


def _do(action: str, consult: Any, user: Any, world: Any) -> Any:
    by = resolve_principal(user)
    calls = {
        "request": lambda: services.consult_request(consult=consult, by=by),
        "claim": lambda: services.consult_claim(consult=consult, by=by),
        "reject": lambda: services.consult_reject(consult=consult, by=by, reason="Not our specialty."),
        "release": lambda: services.consult_release(consult=consult, by=by, reason="Going off shift."),
        "start_report": lambda: services.consult_start_report(consult=consult, by=by),
        "save_draft": lambda: services.consult_save_draft(
            consult=consult, by=by, findings="Findings.", impression="Impression."
        ),
        "hold": lambda: services.consult_hold(consult=consult, by=by, question="Prior imaging?"),
        "answer": lambda: services.consult_answer(consult=consult, by=by, answer="None."),
        "sign": lambda: services.consult_sign(consult=consult, by=by, impression="Benign."),
        "addendum": lambda: services.consult_addendum(consult=consult, by=by, text="Compare with 2025 film."),
        "cancel": lambda: services.consult_cancel(consult=consult, by=by, reason="Patient transferred."),
        "fail": lambda: services.consult_fail(consult=consult, by=by, reason="Images unreadable."),
        "second_opinion": lambda: services.consult_second_opinion(
            consult=consult, by=by, specialist=world.outsider_specialist
        ),
    }
    return calls[action]()


# (action, the state it starts from, named specialist?, who may do it, the state after)
CASES = [
    ("request", Status.DRAFT, False, {"owner"}, Status.REQUESTED),
    ("claim", Status.REQUESTED, False, {"specialist"}, Status.ACCEPTED),
    ("claim", Status.REQUESTED, True, {"specialist"}, Status.ACCEPTED),
    ("reject", Status.REQUESTED, False, {"hosp_admin"}, Status.REJECTED),
    ("reject", Status.REQUESTED, True, {"specialist", "hosp_admin"}, Status.REJECTED),
    ("release", Status.ACCEPTED, False, {"specialist", "hosp_admin"}, Status.REQUESTED),
    ("start_report", Status.ACCEPTED, False, {"specialist"}, Status.IN_PROGRESS),
    ("save_draft", Status.IN_PROGRESS, False, {"specialist"}, Status.IN_PROGRESS),
    ("hold", Status.IN_PROGRESS, False, {"specialist"}, Status.ON_HOLD),
    ("answer", Status.ON_HOLD, False, {"owner"}, Status.IN_PROGRESS),
    ("sign", Status.IN_PROGRESS, False, {"specialist"}, Status.COMPLETED),
    ("addendum", Status.COMPLETED, False, {"specialist"}, Status.COMPLETED),
    ("cancel", Status.DRAFT, False, {"owner"}, Status.CANCELLED),
    ("cancel", Status.REQUESTED, False, {"owner"}, Status.CANCELLED),
    ("cancel", Status.ACCEPTED, False, {"owner"}, Status.CANCELLED),
    ("fail", Status.IN_PROGRESS, False, {"specialist"}, Status.FAILED),
    ("second_opinion", Status.COMPLETED, False, {"owner"}, Status.COMPLETED),
]


def _ident(case: tuple[Any, ...]) -> str:
    return f"{case[0]}-from-{case[1]}{'-named' if case[2] else ''}"


@pytest.mark.parametrize("case", CASES, ids=_ident)
def test_each_move_is_refused_for_every_other_persona_and_changes_nothing(world: Any, case: tuple[Any, ...]) -> None:
    action, start, named, allowed, _after = case
    consult = walk(world, start, named=named)
    for persona in PERSONAS:
        if persona in allowed:
            continue
        log_before, audit_before = ConsultTransition.objects.count(), AuditEvent.objects.count()
        with pytest.raises(AccessDenied):
            _do(action, consult, getattr(world, persona).user, world)
        consult.refresh_from_db()
        assert consult.status == start, persona
        assert ConsultTransition.objects.count() == log_before
        assert AuditEvent.objects.count() == audit_before


@pytest.mark.parametrize("case", CASES, ids=_ident)
def test_each_move_is_allowed_for_the_right_persona_logged_and_audited(world: Any, case: tuple[Any, ...]) -> None:
    action, start, named, allowed, after = case
    for persona in sorted(allowed):
        consult = walk(world, start, named=named)
        _do(action, consult, getattr(world, persona).user, world)
        consult.refresh_from_db()
        assert consult.status == after
        if action != "save_draft":
            last = consult.transitions.last()
            assert (last.action, last.from_status, last.to_status) == (action, start, after)
            assert last.by == getattr(world, persona).user
            assert AuditEvent.objects.filter(action=f"consult.{action}", object_id=str(consult.pk)).count() == 1


@pytest.mark.parametrize(
    ("action", "start"),
    [
        ("sign", Status.ACCEPTED),
        ("claim", Status.ACCEPTED),
        ("answer", Status.IN_PROGRESS),
        ("cancel", Status.COMPLETED),
    ],
)
def test_an_illegal_move_is_refused_with_a_clear_message_and_changes_nothing(
    world: Any, action: str, start: str
) -> None:
    consult = walk(world, start)
    who = {"sign": "specialist", "claim": "specialist", "answer": "owner", "cancel": "owner"}[action]
    before = ConsultTransition.objects.count()
    with pytest.raises(services.IllegalTransition, match=f"#{consult.pk}"):
        _do(action, consult, getattr(world, who).user, world)
    consult.refresh_from_db()
    assert consult.status == start
    assert ConsultTransition.objects.count() == before


def test_reasons_are_required_and_the_error_names_the_field(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    with pytest.raises(ValidationError) as err:
        services.consult_cancel(consult=consult, by=resolve_principal(world.owner.user), reason="  ")
    assert "reason" in err.value.message_dict
    consult.refresh_from_db()
    assert consult.status == Status.REQUESTED


def test_a_request_may_attach_only_the_requesters_own_institutions_studies(world: Any) -> None:
    with pytest.raises(ValidationError) as err:
        services.consult_create(
            by=resolve_principal(world.owner.user),
            studies=[StudyFactory(institution=world.clin_b)],
            question="?",
            pool=world.pool,
        )
    assert "studies" in err.value.message_dict


def test_signed_version_is_immutable_in_the_service_and_in_the_database(world: Any) -> None:
    from django.db import DatabaseError, transaction

    consult = walk(world, Status.COMPLETED)
    version = ReportVersion.objects.get(report__consult=consult)
    with pytest.raises(services.IllegalTransition):
        services.consult_save_draft(
            consult=consult, by=resolve_principal(world.specialist.user), findings="x", impression="y"
        )
    with pytest.raises(DatabaseError), transaction.atomic():
        ReportVersion.objects.filter(pk=version.pk).update(findings="tampered")
    version.refresh_from_db()
    assert version.findings == "右上肺结节，直径8毫米。"


def test_addendum_adds_a_version_and_the_original_stays_readable(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    services.consult_addendum(
        consult=consult, by=resolve_principal(world.specialist.user), text="Compare with the 2025 film."
    )
    v1, v2 = ReportVersion.objects.filter(report__consult=consult).order_by("number")
    assert (v1.number, v1.addendum, v1.impression) == (1, "", "Nodule 8 mm.")
    assert (v2.number, v2.addendum, v2.impression) == (2, "Compare with the 2025 film.", "Nodule 8 mm.")
    assert v2.is_signed


def test_second_opinion_is_a_new_linked_consult_sent_elsewhere(world: Any) -> None:
    first = walk(world, Status.COMPLETED)
    second = services.consult_second_opinion(
        consult=first, by=resolve_principal(world.owner.user), specialist=world.outsider_specialist
    )
    assert second.second_opinion_of == first
    assert second.status == Status.REQUESTED
    assert set(second.studies.all()) == set(first.studies.all())
    with pytest.raises(ValidationError):
        services.consult_second_opinion(
            consult=first, by=resolve_principal(world.owner.user), specialist=world.specialist
        )


def test_request_notifies_the_pool_and_sign_notifies_the_requester(
    world: Any, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    world.owner.user.email = "owner@clinic-a.example"
    world.owner.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.COMPLETED)
    assert Notification.objects.filter(user=world.specialist.user, consult=consult, verb="request").exists()
    assert Notification.objects.filter(user=world.owner.user, consult=consult, verb="sign").exists()
    assert any(f"#{consult.pk}" in m.subject for m in mailoutbox if m.to == ["owner@clinic-a.example"])
