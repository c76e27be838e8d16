"""referrals.services: every move by every persona, the direction rules, bad input per field,
the grants each move opens or closes, notifications, the cross-reference and the reminder."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from alliance import audit
from alliance.access import AccessDenied, settings_of
from alliance.models import AuditEvent
from alliance.services import institution_update
from imaging import access as imaging_access
from imaging.models import Patient, PatientLink, StudyGroupGrant
from imaging.selectors import linked_studies
from referrals import services, tasks
from referrals.models import TRANSITIONS, Referral, ReferralNotification, ReferralTransition, Status
from tests import factories
from tests.factories import StudyFactory
from tests.referrals.conftest import principal, tomorrow_at_nine, walk

pytestmark = pytest.mark.django_db

PERSONAS = [
    "owner",
    "colleague",
    "inst_admin_a",
    "hosp_admin",
    "desk",
    "receiver",
    "specialist",
    "stranger",
    "alliance_admin",
]


def call(action: str, referral: Referral, by: Any) -> Referral:
    """The move with valid arguments (what varies here is who makes it and when)."""
    in3 = timezone.localdate() + timedelta(days=3)
    calls = {
        "request": lambda: services.referral_request(referral=referral, by=by),
        "accept": lambda: services.referral_accept(
            referral=referral, by=by, appointment_at=tomorrow_at_nine(), department="Thoracic surgery"
        ),
        "propose": lambda: services.referral_propose(referral=referral, by=by, date=in3),
        "agree": lambda: services.referral_agree(referral=referral, by=by),
        "reject": lambda: services.referral_reject(referral=referral, by=by, reason="No beds."),
        "arrive": lambda: services.referral_arrive(referral=referral, by=by),
        "no_show": lambda: services.referral_no_show(referral=referral, by=by, reason="Did not come."),
        "complete": lambda: services.referral_complete(referral=referral, by=by, summary="Discharged."),
        "cancel": lambda: services.referral_cancel(referral=referral, by=by, reason="Changed plans."),
    }
    return calls[action]()


# (action, state it starts from, the personas who may make it there)
MOVES = [
    ("request", Status.DRAFT, {"owner"}),
    ("accept", Status.REQUESTED, {"desk", "hosp_admin"}),
    ("propose", Status.REQUESTED, {"desk", "hosp_admin"}),
    ("agree", Status.ON_HOLD, {"owner"}),
    ("reject", Status.REQUESTED, {"desk", "hosp_admin"}),
    ("arrive", Status.ACCEPTED, {"desk", "hosp_admin"}),
    ("no_show", Status.ACCEPTED, {"desk", "hosp_admin"}),
    ("complete", Status.IN_PROGRESS, {"receiver"}),  # the doctor named for the appointment
    ("cancel", Status.DRAFT, {"owner"}),
    ("cancel", Status.REQUESTED, {"owner"}),
    ("cancel", Status.ACCEPTED, {"owner"}),
    ("cancel", Status.ON_HOLD, {"owner"}),
]


def test_the_table_covers_the_issue() -> None:
    assert set(TRANSITIONS) == {a for a, _s, _p in MOVES} | {"create"}
    for action, source, _parties in MOVES:
        assert source in TRANSITIONS[action].sources


@pytest.mark.parametrize(("action", "source", "allowed"), MOVES, ids=[f"{a}-from-{s}" for a, s, _p in MOVES])
def test_each_move_by_every_persona(world, action, source, allowed) -> None:  # type: ignore[no-untyped-def]
    """Everyone else is refused with nothing changed; each allowed persona makes the move."""
    referral = walk(world, source)
    logged = ReferralTransition.objects.filter(referral=referral).count()
    for name in PERSONAS:
        if name in allowed:
            continue
        with pytest.raises(AccessDenied):
            call(action, referral, principal(getattr(world, name)))
        referral.refresh_from_db()
        assert referral.status == source, name
    assert ReferralTransition.objects.filter(referral=referral).count() == logged
    for name in sorted(allowed):
        fresh = walk(world, source)
        call(action, fresh, principal(getattr(world, name)))
        fresh.refresh_from_db()
        assert fresh.status == TRANSITIONS[action].target
        last = fresh.transitions.last()
        assert (last.action, last.from_status, last.to_status, last.by_id) == (
            action,
            source,
            fresh.status,
            getattr(world, name).user_id,
        )
        assert AuditEvent.objects.filter(action=f"referral.{action}", object_id=str(fresh.pk)).count() == 1


def test_without_a_named_doctor_the_desk_completes(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.IN_PROGRESS, named=False)
    with pytest.raises(AccessDenied):
        call("complete", referral, principal(world.receiver))
    call("complete", referral, principal(world.desk))
    referral.refresh_from_db()
    assert referral.status == Status.COMPLETED


WALKABLE = [s for s in Status.values]
ALLOWED_BY = {"request": "owner", "agree": "owner", "cancel": "owner"}  # the rest: the desk


@pytest.mark.parametrize("state", WALKABLE)
def test_a_move_out_of_turn_is_refused_and_changes_nothing(world, state) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, state, named=False)  # no named doctor: the desk is also the receiver
    for action, move in TRANSITIONS.items():
        if action == "create" or state in move.sources:
            continue
        with pytest.raises(services.IllegalTransition, match=f"#{referral.pk}"):
            call(action, referral, principal(getattr(world, ALLOWED_BY.get(action, "desk"))))
        referral.refresh_from_db()
        assert referral.status == state


# --- direction rules ----------------------------------------------------------------------


def test_direction_must_match_the_levels(world) -> None:  # type: ignore[no-untyped-def]
    owner = principal(world.owner)
    study = StudyFactory(institution=world.clin_a)
    base = {"studies": [study], "reason": "r", "urgency": "routine"}
    with pytest.raises(ValidationError) as e:
        services.referral_create(by=owner, direction="down", to_institution=world.hosp, **base)
    assert "direction" in e.value.message_dict
    with pytest.raises(ValidationError) as e:
        services.referral_create(by=owner, direction="up", to_institution=world.clin_b, **base)
    assert "direction" in e.value.message_dict
    assert services.referral_create(by=owner, direction="same", to_institution=world.clin_b, **base).direction == "same"
    assert services.referral_create(by=owner, direction="up", to_institution=world.hosp, **base).direction == "up"
    hosp_study = StudyFactory(institution=world.hosp)
    down = services.referral_create(
        by=principal(world.specialist),
        studies=[hosp_study],
        direction="down",
        to_institution=world.clin_a,
        reason="Rehabilitation close to home.",
    )
    assert down.direction == "down"
    with pytest.raises(ValidationError) as e:
        services.referral_create(
            by=principal(world.specialist),
            studies=[hosp_study],
            direction="up",
            to_institution=world.clin_a,
            reason="x",
        )
    assert "direction" in e.value.message_dict


def test_a_secondary_hospital_sits_between(world) -> None:  # type: ignore[no-untyped-def]
    county = factories.make_institution(alliance=world.alliance, level="secondary", name="County", ae_title="COUNTY")
    owner = principal(world.owner)
    base = {"studies": [StudyFactory(institution=world.clin_a)], "reason": "r"}
    assert services.referral_create(by=owner, direction="up", to_institution=county, **base).direction == "up"
    doc = factories.make_doctor(institution=county, username="county_doc")
    county_study = StudyFactory(institution=county)
    r = services.referral_create(
        by=principal(doc), studies=[county_study], direction="up", to_institution=world.hosp, reason="r"
    )
    assert r.direction == "up"
    with pytest.raises(ValidationError, match="direction"):
        services.referral_create(
            by=principal(doc), studies=[county_study], direction="same", to_institution=world.hosp, reason="r"
        )


# --- bad input: each refused naming the field, nothing half-saved -------------------------


def _create(world: Any, **override: Any) -> Referral:
    fields = {
        "studies": [StudyFactory(institution=world.clin_a)],
        "direction": "up",
        "to_institution": world.hosp,
        "reason": "Suspected cancer.",
        "urgency": "urgent",
        **override,
    }
    return services.referral_create(by=principal(world.owner), **fields)


@pytest.mark.parametrize(
    ("field", "override"),
    [
        ("urgency", {"urgency": "whenever"}),
        ("direction", {"direction": "sideways"}),
        ("to_institution", {"to_institution": None}),
        ("reason", {"reason": "   "}),
        ("wished_date", {"wished_date": "2020-01-01"}),
        ("wished_date", {"wished_date": "not a date"}),
        ("patient", {"studies": []}),
        ("patient_id", {"studies": [], "patient_data": {"patient_id": "", "name": "Wang^Fang"}}),
        ("name", {"studies": [], "patient_data": {"patient_id": "T1", "name": ""}}),
        ("sex", {"studies": [], "patient_data": {"patient_id": "T1", "name": "Wang^Fang", "sex": "X"}}),
        ("birth_date", {"studies": [], "patient_data": {"patient_id": "T1", "name": "W", "birth_date": "13/13/13"}}),
    ],
)
def test_bad_input_names_the_field(world, field, override) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as e:
        _create(world, **override)
    assert field in e.value.message_dict
    assert Referral.objects.count() == 0


def test_a_receiving_institution_outside_the_alliance_switched_off_or_inactive_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    elsewhere = factories.make_institution(level="tertiary", name="Elsewhere", ae_title="ELSE")
    off = factories.make_institution(alliance=world.alliance, level="tertiary", name="Off", ae_title="OFFREF")
    institution_update(institution=off, modules=["image_store", "consults"], by=audit.SYSTEM)
    closed = factories.make_institution(alliance=world.alliance, level="tertiary", name="Closed", ae_title="CLOSED")
    closed.active = False
    closed.save()
    for target in (elsewhere, off, closed, world.clin_a):
        with pytest.raises(ValidationError) as e:
            _create(world, to_institution=target, direction="up" if target.level == "tertiary" else "same")
        assert "to_institution" in e.value.message_dict, target
    assert Referral.objects.count() == 0


def test_studies_of_another_institution_or_two_patients_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    theirs = StudyFactory(institution=world.clin_b)
    with pytest.raises(ValidationError) as e:
        _create(world, studies=[theirs])
    assert "studies" in e.value.message_dict
    two = [StudyFactory(institution=world.clin_a), StudyFactory(institution=world.clin_a)]
    with pytest.raises(ValidationError) as e:
        _create(world, studies=two)
    assert "studies" in e.value.message_dict
    assert Referral.objects.count() == 0


def test_a_typed_patient_is_registered_under_the_referring_institution_and_nothing_is_half_saved(world) -> None:  # type: ignore[no-untyped-def]
    data = {"patient_id": "T-77", "name": "Wang^Fang=王^芳", "birth_date": "1960-05-01", "sex": "F"}
    with pytest.raises(ValidationError):
        _create(world, studies=[], patient_data=data, reason="")
    assert not Patient.objects.filter(patient_id="T-77").exists()
    referral = _create(world, studies=[], patient_data=data)
    patient = referral.patient
    assert (patient.issuer, patient.patient_id, patient.sex, str(patient.birth_date)) == (
        world.clin_a,
        "T-77",
        "F",
        "1960-05-01",
    )
    assert referral.studies.count() == 0
    assert AuditEvent.objects.filter(action="patient.register", object_id=str(patient.pk)).exists()


@pytest.mark.parametrize(
    ("action", "kwargs", "field"),
    [
        ("accept", {"appointment_at": "yesterday", "department": "Surgery"}, "appointment_at"),
        ("accept", {"appointment_at": None, "department": "Surgery"}, "appointment_at"),
        ("accept", {"past": True, "department": "Surgery"}, "appointment_at"),
        ("accept", {"department": " "}, "department"),
        ("accept", {"department": "Surgery", "stranger_doctor": True}, "doctor"),
        ("propose", {"date": None}, "date"),
        ("propose", {"date": "2020-01-01"}, "date"),
        ("reject", {"reason": ""}, "reason"),
    ],
)
def test_desk_input_is_checked_per_field(world, action, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    desk = principal(world.desk)
    kwargs = dict(kwargs)
    if action == "accept":
        if kwargs.pop("past", False):
            kwargs["appointment_at"] = timezone.now() - timedelta(hours=1)
        kwargs.setdefault("appointment_at", tomorrow_at_nine())
        if kwargs.pop("stranger_doctor", False):
            kwargs["doctor"] = world.stranger
        service = services.referral_accept
    else:
        service = getattr(services, f"referral_{action}")
    with pytest.raises(ValidationError) as e:
        service(referral=referral, by=desk, **kwargs)
    assert field in e.value.message_dict
    referral.refresh_from_db()
    assert referral.status == Status.REQUESTED and referral.appointment_at is None


@pytest.mark.parametrize(
    ("state", "action", "by", "field"),
    [
        (Status.ACCEPTED, "no_show", "desk", "reason"),
        (Status.IN_PROGRESS, "complete", "receiver", "summary"),
        (Status.REQUESTED, "cancel", "owner", "reason"),
    ],
)
def test_closing_needs_its_text(world, state, action, by, field) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, state)
    kwargs = {"summary": ""} if field == "summary" else {"reason": " "}
    with pytest.raises(ValidationError) as e:
        getattr(services, f"referral_{action}")(referral=referral, by=principal(getattr(world, by)), **kwargs)
    assert field in e.value.message_dict
    referral.refresh_from_db()
    assert referral.status == state


# --- access that each move opens, widens, narrows and closes -------------------------------


def sees(world: Any, who: str, study: Any) -> bool:
    return imaging_access.studies_visible_to(principal(getattr(world, who))).filter(pk=study.pk).exists()


def test_request_opens_exactly_the_attached_studies_to_the_receiving_institution(world) -> None:  # type: ignore[no-untyped-def]
    attached = StudyFactory(institution=world.clin_a)
    other = StudyFactory(institution=world.clin_a, patient=attached.patient)
    referral = walk(world, Status.DRAFT, study=attached)
    assert not sees(world, "desk", attached)
    services.referral_request(referral=referral, by=principal(world.owner))
    for who in ("desk", "hosp_admin", "receiver", "specialist"):
        assert sees(world, who, attached), who
        assert not sees(world, who, other), who
    assert not sees(world, "stranger", attached)
    grant = StudyGroupGrant.objects.get(basis=referral.basis)
    assert grant.group_id == world.hosp.group_id and grant.permission.codename == "read_study"


def test_arrival_widens_to_the_patients_last_twelve_months_at_the_referring_institution(world) -> None:  # type: ignore[no-untyped-def]
    attached = StudyFactory(institution=world.clin_a)
    today = timezone.localdate()
    recent = StudyFactory(institution=world.clin_a, patient=attached.patient, study_date=today - timedelta(days=200))
    old = StudyFactory(institution=world.clin_a, patient=attached.patient, study_date=today - timedelta(days=400))
    someone_else = StudyFactory(institution=world.clin_a)
    referral = walk(world, Status.ACCEPTED, study=attached)
    assert not sees(world, "desk", recent)
    services.referral_arrive(referral=referral, by=principal(world.desk))
    assert sees(world, "desk", recent) and sees(world, "receiver", recent)
    assert not sees(world, "desk", old) and not sees(world, "desk", someone_else)
    assert set(StudyGroupGrant.objects.filter(basis=referral.basis).values_list("content_object_id", flat=True)) == {
        attached.pk,
        recent.pk,
    }
    assert AuditEvent.objects.filter(action="grant.create", object_id=recent.study_uid, basis=referral.basis).exists()


def test_completion_narrows_access_to_the_alliance_setting(world) -> None:  # type: ignore[no-untyped-def]
    row = settings_of(world.alliance.pk)
    row.referral_access_days = 30
    row.save()
    study = StudyFactory(institution=world.clin_a)
    referral = walk(world, Status.COMPLETED, study=study)
    grant = StudyGroupGrant.objects.get(basis=referral.basis)
    expected = referral.completed_at + timedelta(days=30)
    assert grant.expires_at == expected and grant.revoked_at is None
    assert sees(world, "desk", study)
    assert AuditEvent.objects.filter(action="grant.close", object_id=referral.basis).exists()


def test_with_no_days_of_access_after_completion_the_receiver_loses_the_study(world) -> None:  # type: ignore[no-untyped-def]
    row = settings_of(world.alliance.pk)
    row.referral_access_days = 0
    row.save()
    study = StudyFactory(institution=world.clin_a)
    walk(world, Status.COMPLETED, study=study)
    assert not sees(world, "desk", study)
    assert sees(world, "owner", study)  # the referring clinic keeps its own study


@pytest.mark.parametrize("state", [Status.REJECTED, Status.CANCELLED, Status.FAILED])
def test_reject_cancel_and_no_show_revoke_access(world, state) -> None:  # type: ignore[no-untyped-def]
    study = StudyFactory(institution=world.clin_a)
    referral = walk(world, state, study=study)
    assert not sees(world, "desk", study) and not sees(world, "hosp_admin", study)
    assert StudyGroupGrant.objects.filter(basis=referral.basis, revoked_at__isnull=True).count() == 0


def test_cancelling_after_acceptance_revokes_the_widened_access_too(world) -> None:  # type: ignore[no-untyped-def]
    study = StudyFactory(institution=world.clin_a)
    referral = walk(world, Status.ACCEPTED, study=study)
    services.referral_cancel(referral=referral, by=principal(world.owner), reason="Went elsewhere.")
    assert not sees(world, "desk", study)


# --- notifications --------------------------------------------------------------------------


def test_moves_notify_the_other_side_in_app_and_by_email(world, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    for doctor in (world.desk, world.hosp_admin, world.owner, world.receiver):
        doctor.user.email = f"{doctor.user.username}@example.org"
        doctor.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        referral = walk(world, Status.DRAFT)
        services.referral_request(referral=referral, by=principal(world.owner))
    told = set(ReferralNotification.objects.filter(verb="request").values_list("user__username", flat=True))
    assert told == {"desk", "admin_hosp"}
    assert sorted(m.to[0] for m in mail.outbox) == ["admin_hosp@example.org", "desk@example.org"]
    assert all(f"#{referral.pk}" in m.subject for m in mail.outbox)
    assert not ReferralNotification.objects.filter(emailed_at__isnull=True).exists()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.referral_accept(
            referral=referral,
            by=principal(world.desk),
            appointment_at=tomorrow_at_nine(),
            department="Thoracic surgery",
            doctor=world.receiver,
        )
    assert {m.to[0] for m in mail.outbox} == {"owner@example.org", "receiver@example.org"}
    assert not ReferralNotification.objects.filter(verb="accept", user=world.desk.user).exists()


def test_the_referrer_hears_of_the_summary_and_can_mark_it_read(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.COMPLETED)
    unread = ReferralNotification.objects.filter(user=world.owner.user, verb="complete", read_at__isnull=True)
    assert unread.count() == 1
    assert services.notifications_mark_read(user=world.owner.user, referral=referral) >= 1
    assert unread.count() == 0


def test_unsent_notices_are_mailed_by_the_sweep(world) -> None:  # type: ignore[no-untyped-def]
    world.desk.user.email = "desk@example.org"
    world.desk.user.save()
    walk(world, Status.REQUESTED)  # no on_commit in a test transaction: the e-mail task never ran
    ReferralNotification.objects.update(created_at=timezone.now() - timedelta(minutes=10))
    assert tasks.send_unsent_emails(older_than_seconds=60) == 1
    assert [m.to for m in mail.outbox] == [["desk@example.org"]]
    assert tasks.send_unsent_emails(older_than_seconds=60) == 0


def test_the_desk_is_reminded_once_of_a_request_waiting_more_than_a_day(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    fresh = walk(world, Status.REQUESTED)
    Referral.objects.filter(pk=referral.pk).update(requested_at=timezone.now() - timedelta(hours=25))
    assert tasks.remind_waiting() == 1
    assert tasks.remind_waiting() == 0
    reminded = ReferralNotification.objects.filter(verb="remind")
    assert set(reminded.values_list("referral_id", flat=True)) == {referral.pk}
    assert set(reminded.values_list("user__username", flat=True)) == {"desk", "admin_hosp"}
    assert not ReferralNotification.objects.filter(verb="remind", referral=fresh).exists()


# --- the thread ------------------------------------------------------------------------------


def test_both_sides_write_in_the_thread_and_outsiders_do_not(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.REQUESTED)
    services.referral_message(referral=referral, by=principal(world.owner), body="Any questions?")
    services.referral_message(referral=referral, by=principal(world.desk), body="Please bring prior films.")
    assert [m.body for m in referral.messages.all()] == ["Any questions?", "Please bring prior films."]
    assert ReferralNotification.objects.filter(verb="message", user=world.owner.user).count() == 1
    for outsider in ("stranger", "specialist", "colleague"):
        with pytest.raises(AccessDenied):
            services.referral_message(referral=referral, by=principal(getattr(world, outsider)), body="hi")
    with pytest.raises(ValidationError, match="body"):
        services.referral_message(referral=referral, by=principal(world.owner), body=" ")


# --- the cross-reference ------------------------------------------------------------------


def test_arrival_with_the_hospitals_id_links_the_patients_and_never_merges_them(world) -> None:  # type: ignore[no-untyped-def]
    study = StudyFactory(institution=world.clin_a)
    source = study.patient
    hosp_patient = factories.PatientFactory(issuer=world.hosp, patient_id="H-900", name="WANG^FANG")
    hosp_study = StudyFactory(institution=world.hosp, patient=hosp_patient)
    before = {p.pk: (p.issuer_id, p.patient_id, p.name) for p in Patient.objects.all()}
    referral = walk(world, Status.ACCEPTED, study=study)
    services.referral_arrive(referral=referral, by=principal(world.desk), patient_id="H-900")
    referral.refresh_from_db()
    assert referral.receiving_patient == hosp_patient
    assert {p.pk: (p.issuer_id, p.patient_id, p.name) for p in Patient.objects.all()} == before
    link = PatientLink.objects.get()
    assert (link.patient, link.linked, link.basis) == (source, hosp_patient, referral.basis)
    study.refresh_from_db()
    hosp_study.refresh_from_db()
    assert (study.patient, hosp_study.patient) == (source, hosp_patient)
    # The hospital finds both sides' studies under either patient; clinic B sees neither.
    for patient in (source, hosp_patient):
        assert set(linked_studies(principal(world.desk), patient)) == {study, hosp_study}
    assert set(linked_studies(principal(world.owner), hosp_patient)) == {study}
    assert not linked_studies(principal(world.stranger), source).exists()
    assert AuditEvent.objects.filter(action="patient.link").count() == 1


def test_an_unknown_hospital_id_is_registered_from_the_referral_patient(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.ACCEPTED)
    count = Patient.objects.count()
    services.referral_arrive(referral=referral, by=principal(world.desk), patient_id="H-1")
    referral.refresh_from_db()
    new = referral.receiving_patient
    assert Patient.objects.count() == count + 1
    assert (new.issuer, new.patient_id, new.name) == (world.hosp, "H-1", referral.patient.name)
    assert PatientLink.objects.filter(patient=referral.patient, linked=new).exists()


# --- follow-ups ------------------------------------------------------------------------------


def test_a_completed_up_referral_is_referred_back_down_prefilled(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.ACCEPTED)
    services.referral_arrive(referral=referral, by=principal(world.desk), patient_id="H-5")
    referral.refresh_from_db()
    hosp_ct = StudyFactory(institution=world.hosp, patient=referral.receiving_patient)
    services.referral_complete(referral=referral, by=principal(world.receiver), summary="Lobectomy; follow up.")
    referral.refresh_from_db()
    initial = services.refer_back_initial(referral)
    assert initial["patient"] == referral.receiving_patient
    assert initial["studies"] == [hosp_ct]
    assert (initial["summary"], initial["based_on"], initial["to_institution"], initial["direction"]) == (
        "Lobectomy; follow up.",
        referral,
        world.clin_a,
        "down",
    )
    back = services.referral_create(by=principal(world.receiver), reason="Rehabilitation.", send=True, **initial)
    assert (back.status, back.direction, back.based_on, back.from_institution) == (
        Status.REQUESTED,
        "down",
        referral,
        world.hosp,
    )
    assert sees(world, "owner", hosp_ct)  # the clinic now sees the hospital's CT
    assert list(referral.follow_ups.all()) == [back]


def test_only_the_receiving_side_may_follow_up_a_referral(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.COMPLETED)
    with pytest.raises(ValidationError) as e:
        _create(world, based_on=referral)
    assert "based_on" in e.value.message_dict


def test_a_signed_consult_is_referred_prefilled_with_its_recommendation(world) -> None:  # type: ignore[no-untyped-def]
    from consults import services as consult_services
    from tests.consults.conftest import walk as walk_consult

    consult = walk_consult(world, "in-progress")
    consult_services.consult_sign(
        consult=consult,
        by=principal(world.specialist),
        findings="右上肺结节。",
        impression="Nodule 8 mm.",
        recommendation="尽快转诊至胸外科",
    )
    consult.refresh_from_db()
    initial = services.from_consult_initial(consult)
    assert initial["reason"] == "尽快转诊至胸外科" and initial["consult"] == consult
    assert initial["studies"] == list(consult.studies.all())
    referral = services.referral_create(
        by=principal(world.owner), direction="up", to_institution=world.hosp, urgency="urgent", **initial
    )
    assert referral.consult == consult and list(consult.referrals.all()) == [referral]


# --- the module switch and the desk --------------------------------------------------------


def test_with_the_module_off_the_desk_cannot_act_and_nothing_can_be_sent_there(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.DRAFT)
    modules = [m for m in world.hosp.modules if m != "referrals"]
    institution_update(institution=world.hosp, modules=modules, by=audit.SYSTEM)
    with pytest.raises(ValidationError) as e:
        services.referral_request(referral=referral, by=principal(world.owner))
    assert "to_institution" in e.value.message_dict
    institution_update(institution=world.hosp, modules=[*modules, "referrals"], by=audit.SYSTEM)
    services.referral_request(referral=referral, by=principal(world.owner))
    institution_update(institution=world.hosp, modules=modules, by=audit.SYSTEM)
    with pytest.raises(AccessDenied):
        call("accept", referral, principal(world.desk))


def test_the_institution_admin_names_the_desk(world) -> None:  # type: ignore[no-untyped-def]
    admin = principal(world.hosp_admin)
    services.desk_add(institution=world.hosp, doctor=world.specialist, by=admin)
    referral = walk(world, Status.REQUESTED)
    call("propose", referral, principal(world.specialist))
    with pytest.raises(ValidationError, match="doctor"):
        services.desk_add(institution=world.hosp, doctor=world.owner, by=admin)
    with pytest.raises(AccessDenied):
        services.desk_add(institution=world.hosp, doctor=world.receiver, by=principal(world.desk))
    assert services.desk_remove(institution=world.hosp, doctor=world.specialist, by=admin) == 1
    other = walk(world, Status.REQUESTED)
    with pytest.raises(AccessDenied):
        call("propose", other, principal(world.specialist))


def test_the_reminder_and_the_mail_sweep_are_on_the_beat(settings) -> None:  # type: ignore[no-untyped-def]
    tasks_on_beat = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"referrals.tasks.remind_waiting", "referrals.tasks.send_unsent_emails"} <= tasks_on_beat


def test_a_request_put_on_hold_is_not_reminded(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.ON_HOLD)
    Referral.objects.filter(pk=referral.pk).update(requested_at=timezone.now() - timedelta(days=3))
    assert tasks.remind_waiting() == 0


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_desk_members_answering_at_the_same_moment_have_exactly_one_winner(world) -> None:  # type: ignore[no-untyped-def]
    """One accepts, the other declines: the row lock orders them, the second sees the first's
    state and is refused (neither move is possible after the other)."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("the row lock is tested on PostgreSQL")
    referral = walk(world, Status.REQUESTED)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(name: str, action: str) -> None:
        try:
            barrier.wait(timeout=10)
            call(action, referral, principal(getattr(world, name)))
            outcomes[action] = "won"
        except services.IllegalTransition:
            outcomes[action] = "refused"
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=("desk", "accept")),
        threading.Thread(target=run, args=("hosp_admin", "reject")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["refused", "won"]
    referral.refresh_from_db()
    winner = next(a for a, o in outcomes.items() if o == "won")
    assert referral.status == TRANSITIONS[winner].target
    assert referral.transitions.filter(action__in=["accept", "reject"]).count() == 1
