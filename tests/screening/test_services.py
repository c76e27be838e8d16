"""The screening programme's writes (consults.screening.services): programmes, enrolment with
consent, the scan (matched by patient and window, or tagged), the structured reading and its
Lung-RADS category, signing (next CT due, grants closed, the clinic told), the follow-up's
comparison, withdrawal."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from alliance.access import AccessDenied
from alliance.models import AuditEvent
from consults.screening import selectors, services
from consults.screening.models import Participant, Round, ScreeningNotification
from consults.screening.services import ReadingInput
from imaging import access as imaging_access
from tests.factories import store_ct_study
from tests.screening.conftest import PATIENT_ID, enrol, nodule, principal, read, scan, sign

pytestmark = pytest.mark.django_db


# --- programmes ---------------------------------------------------------------------------


def test_only_the_alliance_admin_creates_a_programme(world: Any) -> None:
    with pytest.raises(AccessDenied):
        services.programme_create(
            by=principal(world.hosp_admin), name="Other", reading_pool=world.pool, institutions=[world.clin_a]
        )
    event = AuditEvent.objects.get(action="screening.programme.create")
    assert event.object_id == str(world.programme.pk) and event.actor_name == "alliance_admin"


def test_a_programme_needs_clinics_and_a_pool_of_its_alliance(world: Any) -> None:
    admin = principal(world.alliance_admin)
    with pytest.raises(ValidationError) as no_clinics:
        services.programme_create(by=admin, name="Empty", reading_pool=world.pool, institutions=[])
    assert "institutions" in no_clinics.value.message_dict
    with pytest.raises(ValidationError) as same_name:
        services.programme_create(
            by=admin, name=world.programme.name, reading_pool=world.pool, institutions=[world.clin_a]
        )
    assert "name" in same_name.value.message_dict


# --- enrolment ------------------------------------------------------------------------------


def test_enrolment_records_consent_and_opens_the_baseline_ct(world: Any) -> None:
    participant = enrol(world)
    assert participant.institution == world.clin_a and participant.enrolled_by == world.owner
    assert participant.patient.issuer == world.clin_a and participant.patient.patient_id == PATIENT_ID
    assert participant.consent_method == "written" and participant.consent_by.startswith("本人")
    baseline = participant.rounds.get()
    assert baseline.kind == Round.Kind.BASELINE and baseline.due_date == timezone.localdate()
    assert AuditEvent.objects.filter(action="screening.enrol", patient=str(participant.patient_id)).exists()


def test_a_patient_is_enrolled_once_per_programme(world: Any) -> None:
    enrol(world)
    with pytest.raises(ValidationError) as twice:
        enrol(world)
    assert "patient_id" in twice.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"),
    [("consent_by", " "), ("consent_method", "nodded"), ("consent_at", "yesterday")],
)
def test_consent_must_say_who_when_and_how(world: Any, field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {
        "consent_by": "本人",
        "consent_at": timezone.now(),
        "consent_method": "verbal",
        field: value,
    }
    with pytest.raises(ValidationError) as bad:
        services.participant_enrol(
            by=principal(world.owner), programme=world.programme, patient_data={"patient_id": "X1"}, **kwargs
        )
    assert field in bad.value.message_dict
    assert not Participant.objects.exists()


def test_consent_in_the_future_is_refused(world: Any) -> None:
    with pytest.raises(ValidationError) as bad:
        services.participant_enrol(
            by=principal(world.owner),
            programme=world.programme,
            patient_data={"patient_id": "X1"},
            consent_by="本人",
            consent_at=timezone.now() + dt.timedelta(days=1),
            consent_method="written",
        )
    assert "consent_at" in bad.value.message_dict


@pytest.mark.parametrize("who", ["specialist", "alliance_admin", "hosp_admin"])
def test_only_a_participating_clinic_enrols(world: Any, who: str) -> None:
    with pytest.raises(AccessDenied):
        services.participant_enrol(
            by=principal(getattr(world, who)),
            programme=world.programme,
            patient_data={"patient_id": "X1"},
            consent_by="本人",
            consent_at=timezone.now(),
            consent_method="written",
        )


def test_a_closed_programme_enrols_nobody(world: Any) -> None:
    world.programme.active = False
    world.programme.save()
    with pytest.raises(AccessDenied):
        enrol(world)


def test_a_clinic_enrols_only_its_own_patients(world: Any) -> None:
    other = store_ct_study(world.clin_b, patient_id="B-1").patient
    with pytest.raises(ValidationError) as bad:
        services.participant_enrol(
            by=principal(world.owner),
            programme=world.programme,
            patient=other,
            consent_by="本人",
            consent_at=timezone.now(),
            consent_method="written",
        )
    assert "patient_id" in bad.value.message_dict


# --- the scan -----------------------------------------------------------------------------------


def test_tagging_opens_the_scan_to_the_reading_pool_for_writing(world: Any) -> None:
    participant = enrol(world)
    round_ = scan(world, participant)
    assert round_.match == Round.Match.MANUAL and round_.scanned_on == timezone.localdate()
    spec = principal(world.specialist)
    assert imaging_access.studies_visible_to(spec).filter(pk=round_.study_id).exists()
    assert imaging_access.may_write_study(spec, round_.study)
    assert (
        not imaging_access.studies_visible_to(principal(world.outsider_specialist)).filter(pk=round_.study_id).exists()
    )
    assert imaging_access.basis_for(spec, round_.study) == round_.basis


def test_the_beat_job_matches_the_participants_ct_in_the_window(world: Any) -> None:
    participant = enrol(world)
    other = store_ct_study(world.clin_a, patient_id="SOMEONE-ELSE")
    too_early = store_ct_study(
        world.clin_a, patient_id=PATIENT_ID, study_date=timezone.localdate() - dt.timedelta(days=60)
    )
    assert services.rounds_match() == 0
    study = store_ct_study(world.clin_a, patient_id=PATIENT_ID, study_date=timezone.localdate())
    assert services.rounds_match() == 1
    round_ = participant.rounds.get()
    assert round_.study == study and round_.match == Round.Match.AUTO and round_.tagged_by is None
    assert services.rounds_match() == 0  # safe twice
    assert not Round.objects.filter(study__in=[other, too_early]).exists()
    assert AuditEvent.objects.filter(action="screening.match", actor_type="system").count() == 1


def test_the_match_finds_a_linked_identity_at_another_participating_clinic(world: Any) -> None:
    from imaging.patients import link_patients

    participant = enrol(world)
    at_b = store_ct_study(world.clin_b, patient_id="B-77", study_date=timezone.localdate())
    from alliance import audit

    link_patients(patient=participant.patient, linked=at_b.patient, basis="test", by=audit.SYSTEM)
    assert services.rounds_match() == 1
    assert participant.rounds.get().study == at_b


@pytest.mark.parametrize("case", ["other patient", "other clinic", "already tagged"])
def test_a_wrong_study_is_not_tagged(world: Any, case: str) -> None:
    participant = enrol(world)
    round_ = participant.rounds.get()
    if case == "other patient":
        study = store_ct_study(world.clin_a, patient_id="SOMEONE-ELSE")
    elif case == "other clinic":
        study = store_ct_study(world.clin_b, patient_id=PATIENT_ID)
    else:
        study = scan(world, participant).study
        round_ = Round.objects.create(
            participant=participant,
            number=2,
            kind="annual",
            due_date=timezone.localdate(),
            window_start=timezone.localdate(),
            opened_at=timezone.now(),
        )
    with pytest.raises(ValidationError) as bad:
        services.round_tag(round_=round_, study=study, by=principal(world.owner))
    assert "study" in bad.value.message_dict


def test_another_clinic_may_not_tag(world: Any) -> None:
    participant = enrol(world)
    study = store_ct_study(world.clin_b, patient_id=PATIENT_ID)
    with pytest.raises(AccessDenied):
        services.round_tag(round_=participant.rounds.get(), study=study, by=principal(world.stranger))


# --- reading ------------------------------------------------------------------------------------


def test_the_structured_reading_computes_the_category(world: Any) -> None:
    round_ = scan(world, enrol(world))
    reading = read(world, round_, nodule(long="9.0", short="8.0"), nodule("LLL", "ground_glass", "12", "10"))
    assert reading.category == "4A" and reading.reader == world.specialist
    first, second = reading.nodules.order_by("number")
    assert first.mean_mm == Decimal("8.5") and first.category == "4A" and first.change == "baseline"
    assert second.category == "2" and second.number == 2
    assert AuditEvent.objects.filter(action="screening.reading.save", detail__category="4A").exists()


def test_saving_again_replaces_the_findings(world: Any) -> None:
    round_ = scan(world, enrol(world))
    read(world, round_, nodule(long="9.0", short="8.0"))
    reading = read(world, round_, nodule(long="5.0", short="4.0"), significant=True, significant_text="Emphysema")
    assert reading.nodules.count() == 1 and reading.code == "2S"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (nodule(long="5", short="6"), "nodules-0-short_axis"),
        (nodule(kind="part_solid"), "nodules-0-solid"),
        (nodule(long="400", short="5"), "nodules-0-long_axis"),
        (nodule(kind="airway"), "nodules-0-airway_level"),
        (nodule(kind="cyst"), "nodules-0-cyst"),
        (nodule(kind="ground_glass", feature="calcified"), "nodules-0-feature"),
        (nodule(lobe="XYZ"), "nodules-0-lobe"),
    ],
)
def test_a_bad_nodule_is_refused_naming_its_field(world: Any, bad: Any, field: str) -> None:
    round_ = scan(world, enrol(world))
    with pytest.raises(ValidationError) as refused:
        read(world, round_, bad)
    assert field in refused.value.message_dict
    assert not hasattr(Round.objects.get(pk=round_.pk), "reading")  # nothing half-saved


def test_one_reader_holds_a_reading(world: Any) -> None:
    from tests import factories

    second = factories.make_doctor(institution=world.hosp, roles=["specialist"], username="second_reader")
    world.pool.members.add(second)
    from alliance.models import PoolMembership

    PoolMembership.objects.update_or_create(
        pool=world.pool, doctor=second, defaults={"since": timezone.now() - dt.timedelta(days=9)}
    )
    round_ = scan(world, enrol(world))
    read(world, round_, nodule())
    with pytest.raises(AccessDenied):
        services.reading_save(round_=round_, by=principal(second), data=ReadingInput(nodules=[nodule()]))


@pytest.mark.parametrize("who", ["outsider_specialist", "owner", "alliance_admin"])
def test_only_the_reading_pool_reads(world: Any, who: str) -> None:
    round_ = scan(world, enrol(world))
    with pytest.raises(AccessDenied):
        services.reading_save(round_=round_, by=principal(getattr(world, who)), data=ReadingInput())


# --- signing ------------------------------------------------------------------------------------


def test_signing_opens_the_next_ct_by_the_category_and_tells_the_clinic(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    round_ = scan(world, enrol(world), study_date=dt.date(2026, 3, 14))
    reading = read(world, round_, nodule(long="9.0", short="8.0"))
    with django_capture_on_commit_callbacks(execute=True):
        signed = sign(world, reading)
    assert signed.is_signed and signed.next_due == dt.date(2026, 6, 14)  # 4A: 3 months
    following = round_.participant.rounds.get(number=2)
    assert following.kind == Round.Kind.INTERVAL and following.due_date == dt.date(2026, 6, 14)
    assert ScreeningNotification.objects.filter(user=world.owner.user, verb="result").exists()
    assert ScreeningNotification.objects.filter(user=world.inst_admin_a.user, verb="result").exists()
    spec = principal(world.specialist)
    assert not imaging_access.may_write_study(spec, round_.study)  # write ends; reading stays a while
    assert imaging_access.studies_visible_to(spec).filter(pk=round_.study_id).exists()
    signed.refresh_from_db()
    assert signed.sr_sop_uid  # written into the study after commit
    with pytest.raises(AccessDenied):  # a signed reading is nobody's to change
        read(world, round_, nodule())
    assert not selectors.reading_worklist(spec).exists()


def test_a_negative_baseline_is_due_again_in_twelve_months(world: Any) -> None:
    round_ = scan(world, enrol(world), study_date=dt.date(2026, 3, 14))
    signed = sign(world, read(world, round_, nodule(long="4", short="3")))
    assert signed.category == "2" and signed.next_due == dt.date(2027, 3, 14)
    assert round_.participant.rounds.get(number=2).kind == Round.Kind.ANNUAL


def test_only_the_reader_signs(world: Any) -> None:
    round_ = scan(world, enrol(world))
    reading = read(world, round_, nodule())
    with pytest.raises(AccessDenied):
        services.reading_sign(reading=reading, by=principal(world.owner))


# --- the follow-up ------------------------------------------------------------------------------


def test_the_follow_up_compares_each_nodule_with_the_previous_ct(world: Any) -> None:
    participant = enrol(world)
    first = scan(world, participant, study_date=dt.date(2026, 3, 14))
    earlier = sign(world, read(world, first, nodule(long="8.0", short="7.0", volume=180)))
    assert earlier.category == "3"
    second = scan(world, participant, study_date=dt.date(2026, 9, 10))
    previous_nodule = earlier.nodules.get()
    grown = nodule(long="10.4", short="8.6", volume=360, prior=previous_nodule.pk)
    new = nodule("LLL", long="4.0", short="3.0")
    reading = read(world, second, grown, new)
    same, fresh = reading.nodules.order_by("number")
    assert same.number == previous_nodule.number == 1 and same.change == "growing" and same.category == "4B"
    assert fresh.number == 2 and fresh.change == "new" and fresh.category == "2"
    assert reading.category == "4B"
    growth = selectors.growth_of(same)
    assert growth is not None and growth.delta_mm == Decimal("2.0") and growth.days == 180 and growth.growing
    assert growth.doubling_days == pytest.approx(180.0)


def test_a_stable_category_3_nodule_steps_down_to_2_at_its_six_month_ct(world: Any) -> None:
    participant = enrol(world)
    earlier = sign(
        world, read(world, scan(world, participant, study_date=dt.date(2026, 3, 14)), nodule(long="7.5", short="6.5"))
    )
    second = scan(world, participant, study_date=dt.date(2026, 9, 14))
    reading = read(world, second, nodule(long="7.4", short="6.6", prior=earlier.nodules.get().pk))
    assert reading.category == "2" and reading.nodules.get().change == "stable"


def test_a_prior_nodule_must_be_of_the_previous_reading(world: Any) -> None:
    participant = enrol(world)
    round_ = scan(world, participant)
    with pytest.raises(ValidationError) as bad:
        read(world, round_, nodule(prior=12345))
    assert "nodules-0-prior" in bad.value.message_dict


# --- withdrawal ---------------------------------------------------------------------------------


def test_withdrawal_cancels_the_open_ct_and_keeps_the_record(world: Any) -> None:
    participant = enrol(world)
    with pytest.raises(ValidationError):
        services.participant_withdraw(participant=participant, by=principal(world.owner), reason=" ")
    services.participant_withdraw(participant=participant, by=principal(world.owner), reason="Moved away")
    participant.refresh_from_db()
    assert participant.state == Participant.State.WITHDRAWN
    assert participant.rounds.get().cancelled_at is not None
    assert services.rounds_match() == 0
    with pytest.raises(AccessDenied):
        services.participant_withdraw(participant=participant, by=principal(world.stranger), reason="x")
