"""The screening pages through Django's test client: who sees what, what is audited, the forms'
errors, the module switch, the study page's button, the measurement taken from the viewer,
the referral of a positive result, the figures and the overdue list."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from alliance import audit
from alliance import services as alliance_services
from alliance.models import AuditEvent
from consults.screening.models import Participant, Reading, Round
from tests.conftest import client_for
from tests.dicomweb.conftest import token_client
from tests.factories import PASSWORD, store_ct_study
from tests.screening.conftest import PATIENT_ID, enrol, nodule, read, scan, sign

pytestmark = pytest.mark.django_db


def _denied(name: str) -> bool:
    return AuditEvent.objects.filter(outcome=AuditEvent.Outcome.DENIED, actor_name=name).exists()


# --- programmes ---------------------------------------------------------------------------


def test_the_alliance_admin_creates_a_programme_on_its_page(world: Any) -> None:
    admin = client_for(world.alliance_admin)
    assert admin.get("/screening/new/").status_code == 200
    response = admin.post(
        "/screening/new/",
        {
            "name": "Second round",
            "reading_pool": world.pool.pk,
            "institutions": [world.clin_a.pk],
            "window_days": "45",
            "active": "on",
        },
    )
    assert response.status_code == 302
    assert client_for(world.owner).get("/screening/").content.decode().count("Second round") == 1
    assert client_for(world.owner).get("/screening/new/").status_code == 403


def test_a_programme_form_error_names_the_field(world: Any) -> None:
    page = client_for(world.alliance_admin).post(
        "/screening/new/", {"name": "", "reading_pool": world.pool.pk, "window_days": "30"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert page.status_code == 200
    form = page.context["form"]
    assert "name" in form.errors and "institutions" in form.errors


def test_the_admin_sees_the_programme_but_no_participant(world: Any) -> None:
    enrol(world)
    page = client_for(world.alliance_admin).get(f"/screening/{world.programme.pk}/").content.decode()
    assert "Clinic A" in page and "Wang Fang" not in page and PATIENT_ID not in page
    participant = Participant.objects.get()
    assert client_for(world.alliance_admin).get(f"/screening/participants/{participant.pk}/").status_code == 404


# --- enrolment and the lists ----------------------------------------------------------------


def test_a_clinician_enrols_on_the_page_and_finds_the_baseline_on_the_invitation_list(world: Any) -> None:
    owner = client_for(world.owner)
    response = owner.post(
        f"/screening/{world.programme.pk}/enrol/",
        {
            "patient_id": "LDCT-777",
            "name": "Li^Lei",
            "birth_date": "1958-05-01",
            "sex": "M",
            "consent_by": "本人",
            "consent_at": "2026-03-01T09:30",
            "consent_method": "verbal",
            "consent_note": "witness: nurse Zhao",
        },
    )
    assert response.status_code == 302
    participant = Participant.objects.get()
    assert participant.consent_method == "verbal" and participant.consent_note == "witness: nurse Zhao"
    listing = owner.get(f"/screening/{world.programme.pk}/").content.decode()
    assert "LDCT-777" in listing and 'id="invitation-list"' in listing
    assert AuditEvent.objects.filter(action="screening.invitations", object_id=str(participant.pk)).exists()


def test_an_enrolment_without_consent_names_the_field_and_saves_nothing(world: Any) -> None:
    page = client_for(world.owner).post(
        f"/screening/{world.programme.pk}/enrol/",
        {"patient_id": "LDCT-777", "consent_at": "2026-03-01T09:30", "consent_method": "verbal"},
    )
    assert page.status_code == 200 and "consent_by" in page.context["form"].errors
    assert not Participant.objects.exists()


def test_only_participating_clinicians_enrol(world: Any) -> None:
    for who in ("specialist", "alliance_admin", "hosp_admin"):
        assert client_for(getattr(world, who)).get(f"/screening/{world.programme.pk}/enrol/").status_code in (403, 404)


def test_recording_an_invitation(world: Any) -> None:
    participant = enrol(world)
    round_ = participant.rounds.get()
    response = client_for(world.owner).post(f"/screening/rounds/{round_.pk}/invite/", {"note": "phone"})
    assert response.status_code == 302
    round_.refresh_from_db()
    assert round_.invited_by == world.owner and round_.invitation_note == "phone"
    assert client_for(world.stranger).post(f"/screening/rounds/{round_.pk}/invite/", {"note": "x"}).status_code == 404


def test_the_overdue_list(world: Any) -> None:
    participant = enrol(world)
    Round.objects.filter(participant=participant).update(due_date=timezone.localdate() - dt.timedelta(days=40))
    page = client_for(world.owner).get(f"/screening/{world.programme.pk}/overdue/", HTTP_ACCEPT_LANGUAGE="en")
    assert PATIENT_ID in page.content.decode() and "40 days past due" in page.content.decode()
    assert (
        PATIENT_ID not in client_for(world.stranger).get(f"/screening/{world.programme.pk}/overdue/").content.decode()
    )
    assert client_for(world.specialist).get(f"/screening/{world.programme.pk}/overdue/").status_code == 404


# --- the participant ------------------------------------------------------------------------


def test_the_participant_page_is_the_clinics_and_after_the_scan_the_readers(world: Any) -> None:
    participant = enrol(world)
    url = f"/screening/participants/{participant.pk}/"
    page = client_for(world.owner).get(url)
    assert page.status_code == 200 and "本人" in page.content.decode()
    event = AuditEvent.objects.get(action="screening.participant.view")
    assert event.patient == str(participant.patient_id) and event.basis == "own-institution"
    assert client_for(world.stranger).get(url).status_code == 404 and _denied("stranger")
    assert client_for(world.specialist).get(url).status_code == 404
    scan(world, participant)
    assert client_for(world.specialist).get(url).status_code == 200
    assert client_for(world.outsider_specialist).get(url).status_code == 404


def test_the_study_page_offers_to_tag_the_study_and_the_tag_page_tags_it(world: Any) -> None:
    participant = enrol(world)
    study = store_ct_study(world.clin_a, patient_id=PATIENT_ID)
    owner = client_for(world.owner)
    page = owner.get(f"/imaging/studies/{study.study_uid}/").content.decode()
    assert 'id="study-action-screening-tag"' in page
    assert (
        'id="study-action-screening-tag"'
        not in client_for(world.colleague)
        .get(f"/imaging/studies/{store_ct_study(world.clin_a, patient_id='NOT-ENROLLED').study_uid}/")
        .content.decode()
    )
    round_ = participant.rounds.get()
    assert owner.get(f"/screening/studies/{study.study_uid}/").status_code == 200
    assert owner.post(f"/screening/rounds/{round_.pk}/tag/", {"study": study.study_uid}).status_code == 302
    round_.refresh_from_db()
    assert round_.study == study and round_.match == Round.Match.MANUAL
    cases = owner.get(f"/imaging/studies/{study.study_uid}/").content.decode()
    assert 'data-case-kind="screening"' in cases and 'id="study-action-screening-tag"' not in cases
    assert (
        'id="study-action-screening-read"'
        in client_for(world.specialist).get(f"/imaging/studies/{study.study_uid}/").content.decode()
    )


# --- reading ----------------------------------------------------------------------------------


def _nodule_post(**fields: str) -> dict[str, str]:
    data = {"nodules-TOTAL_FORMS": "1", "nodules-INITIAL_FORMS": "0", "nodules-MIN_NUM_FORMS": "0"}
    data["nodules-MAX_NUM_FORMS"] = "20"
    row = {"lobe": "RUL", "kind": "solid", "long_axis": "", "short_axis": "8.0", "image_number": "2"} | fields
    return data | {f"nodules-0-{k}": v for k, v in row.items()}


def test_the_reader_takes_a_size_from_a_length_saved_in_the_viewer(world: Any) -> None:
    round_ = scan(world, enrol(world))
    images = list(round_.study.series.get(modality="CT").instances.order_by("instance_number"))
    api = token_client(world.specialist)
    saved = api.post(
        f"/api/v1/studies/{round_.study.study_uid}/key-objects/",
        {
            "key_images": [],
            "measurements": [
                {"kind": "length", "sop_uid": images[1].sop_uid, "points": [[1, 1], [10, 1]], "length": 9.4}
            ],
        },
        format="json",
    )
    assert saved.status_code == 201, saved.content
    specialist = client_for(world.specialist)
    form_page = specialist.get(f"/screening/rounds/{round_.pk}/read/").content.decode()
    assert "9.4 mm" in form_page
    key = f"{images[1].sop_uid}#1"
    response = specialist.post(f"/screening/rounds/{round_.pk}/read/", _nodule_post(long_from=key))
    assert response.status_code == 302, response.context and response.context["formset"].errors
    saved_nodule = Reading.objects.get().nodules.get()
    assert saved_nodule.long_axis_mm == Decimal("9.4") and saved_nodule.sop_uid == images[1].sop_uid
    assert saved_nodule.mean_mm == Decimal("8.7") and Reading.objects.get().category == "4A"


def test_a_ct_without_nodules_is_negative(world: Any) -> None:
    round_ = scan(world, enrol(world))
    blank = _nodule_post(lobe="", kind="", short_axis="", image_number="")
    assert client_for(world.specialist).post(f"/screening/rounds/{round_.pk}/read/", blank).status_code == 302
    assert Reading.objects.get().category == "1" and not Reading.objects.get().nodules.exists()


def test_a_form_error_is_shown_on_its_nodule_field(world: Any) -> None:
    round_ = scan(world, enrol(world))
    page = client_for(world.specialist).post(
        f"/screening/rounds/{round_.pk}/read/", _nodule_post(long_axis="5.0", short_axis="7.0")
    )
    assert page.status_code == 200
    assert "short_axis" in page.context["formset"].forms[0].errors
    assert not Reading.objects.exists()


def test_the_reader_signs_with_the_password_and_the_clinic_sees_the_category_and_due_date(world: Any) -> None:
    round_ = scan(world, enrol(world), study_date=dt.date(2026, 3, 14))
    read(world, round_, nodule(long="9.0", short="8.0"))
    specialist = client_for(world.specialist)
    confirm = specialist.get(f"/screening/rounds/{round_.pk}/sign/").content.decode()
    assert "2026-06-14" in confirm
    wrong = specialist.post(f"/screening/rounds/{round_.pk}/sign/", {"password": "nope"})
    assert wrong.status_code == 200 and not Reading.objects.get().is_signed
    assert specialist.post(f"/screening/rounds/{round_.pk}/sign/", {"password": PASSWORD}).status_code == 302
    page = client_for(world.owner).get(f"/screening/participants/{round_.participant_id}/").content.decode()
    assert "Lung-RADS 4A" in page and "2026-06-14" in page
    assert client_for(world.owner).get(f"/screening/rounds/{round_.pk}/read/").status_code == 404


def test_the_reading_form_shows_the_previous_ct_and_carries_its_nodules(world: Any) -> None:
    participant = enrol(world)
    first = scan(world, participant, study_date=dt.date(2026, 3, 14))
    sign(world, read(world, first, nodule(long="7.0", short="6.0")))
    second = scan(world, participant, study_date=dt.date(2026, 9, 14))
    page = client_for(world.specialist).get(f"/screening/rounds/{second.pk}/read/")
    assert 'id="previous"' in page.content.decode()
    formset = page.context["formset"]
    assert len(formset.forms) == 1 and formset.forms[0].initial["prior"] is not None
    added = client_for(world.specialist).post(
        f"/screening/rounds/{second.pk}/read/",
        {
            "nodules-TOTAL_FORMS": "1",
            "nodules-INITIAL_FORMS": "1",
            "nodules-0-prior": str(formset.forms[0].initial["prior"]),
            "nodules-0-lobe": "RUL",
            "nodules-0-kind": "solid",
            "add": "1",
        },
    )
    assert len(added.context["formset"].forms) == 2  # "Add a nodule": a blank row after the one there is


# --- referral of a positive result ------------------------------------------------------------------


def test_a_positive_result_is_referred_through_the_referral_form_and_counted(world: Any) -> None:
    round_ = scan(world, enrol(world))
    reading = sign(world, read(world, round_, nodule(long="16", short="15")))
    owner = client_for(world.owner)
    page = owner.get(f"/screening/participants/{round_.participant_id}/").content.decode()
    assert f'id="refer-{reading.pk}"' in page
    form = owner.get(f"/referrals/new/?screening={reading.pk}")
    assert form.status_code == 200 and "Lung-RADS 4B" in form.content.decode()
    posted = owner.post(
        f"/referrals/new/?screening={reading.pk}",
        {
            "direction": "up",
            "to_institution": world.hosp.pk,
            "urgency": "urgent",
            "reason": form.context["form"].initial["reason"],
            "summary": form.context["form"].initial["summary"],
            "studies": [round_.study_id],
            "send": "1",
        },
    )
    assert posted.status_code == 302, posted.context and posted.context["form"].errors
    from referrals.models import Referral

    referral = Referral.objects.get()
    assert list(referral.studies.all()) == [round_.study] and "4B" in referral.reason
    figures = client_for(world.alliance_admin).get(f"/screening/{world.programme.pk}/figures/")
    assert figures.context["figures"].referrals == 1
    assert client_for(world.stranger).get(f"/referrals/new/?screening={reading.pk}").status_code == 404


def test_a_negative_result_offers_no_referral(world: Any) -> None:
    round_ = scan(world, enrol(world))
    reading = sign(world, read(world, round_, nodule(long="4", short="3")))
    assert (
        f'id="refer-{reading.pk}"'
        not in client_for(world.owner).get(f"/screening/participants/{round_.participant_id}/").content.decode()
    )
    assert client_for(world.owner).get(f"/referrals/new/?screening={reading.pk}").status_code == 404


# --- figures -----------------------------------------------------------------------------------


def test_the_figures_count_enrolment_scans_categories_and_adherence(world: Any) -> None:
    first = enrol(world)
    sign(world, read(world, scan(world, first), nodule(long="9", short="8")))  # 4A
    late = enrol(world, patient_id="LDCT-002")
    Round.objects.filter(participant=late).update(due_date=timezone.localdate() - dt.timedelta(days=90))
    scan(world, late)  # done 90 days after its due date: late
    gone = enrol(world, patient_id="LDCT-003")
    Round.objects.filter(participant=gone).update(due_date=timezone.localdate() - dt.timedelta(days=31))
    page = client_for(world.alliance_admin).get(f"/screening/{world.programme.pk}/figures/")
    f = page.context["figures"]
    assert (f.enrolled, f.scanned, f.scans, f.read, f.positive) == (3, 2, 2, 1, 1)
    assert dict((c, n) for c, _label, n in f.categories)["4A"] == 1
    assert (f.on_time, f.late, f.overdue) == (1, 1, 1)
    assert PATIENT_ID not in page.content.decode()
    assert client_for(world.inst_admin_a).get(f"/screening/{world.programme.pk}/figures/").status_code == 200
    assert client_for(world.owner).get(f"/screening/{world.programme.pk}/figures/").status_code == 404


# --- the module switch and the language -----------------------------------------------------------


def test_switched_off_screening_is_absent_from_the_pages(world: Any) -> None:
    participant = enrol(world)
    owner = client_for(world.owner)
    assert 'id="nav-screening"' in owner.get("/").content.decode()
    modules = [m for m in alliance_services.ALL_MODULES if m != "screening"]
    alliance_services.institution_update(institution=world.clin_a, modules=modules, by=audit.SYSTEM)
    assert 'id="nav-screening"' not in owner.get("/").content.decode()
    for url in ("/screening/", f"/screening/participants/{participant.pk}/", f"/screening/{world.programme.pk}/"):
        response = owner.get(url)
        assert response.status_code == 404 and "module_off.html" in [t.name for t in response.templates], url


def test_the_pages_speak_chinese(world: Any) -> None:
    participant = enrol(world)
    page = client_for(world.owner).get(f"/screening/participants/{participant.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    text = page.content.decode()
    assert "筛查" in text and "知情同意" in text


def test_a_clinics_institution_admin_finds_its_clinics_figures(world: Any) -> None:
    enrol(world)
    client = client_for(world.inst_admin_a)
    assert 'id="nav-screening"' in client.get("/").content.decode()
    assert 'id="figures-link"' in client.get(f"/screening/{world.programme.pk}/").content.decode()
    figures = client.get(f"/screening/{world.programme.pk}/figures/").context
    assert figures["figures"].enrolled == 1 and not figures["whole"]
