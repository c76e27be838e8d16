"""The consult pages: worklists, request form, case page, report editor, notifications."""

from __future__ import annotations

from typing import Any

import pytest

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import services
from consults.models import Consult, Notification, Status
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import PASSWORD, StudyFactory


def test_clinician_requests_a_consult_with_the_form(world: Any) -> None:
    study = StudyFactory(institution=world.clin_a)
    client = client_for(world.owner)
    page = client.get("/consults/new/", {"study": study.study_uid})
    assert page.status_code == 200
    assert study.patient.display_name in page.content.decode()  # as the site shows names, not the DICOM PN
    response = client.post(
        "/consults/new/",
        {"studies": [study.pk], "question": "Fracture?", "priority": "urgent", "pool": world.pool.pk, "send": "1"},
    )
    consult = Consult.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/consults/{consult.pk}/"
    assert consult.status == Status.REQUESTED and consult.priority == "urgent"


def test_the_study_page_offers_a_consult_to_the_owning_clinic_only(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    offers = {
        persona: f"/consults/new/?study={study.study_uid}"
        in client_for(getattr(world, persona)).get(f"/imaging/studies/{study.study_uid}/").content.decode()
        for persona in ("owner", "colleague", "specialist")
    }
    assert offers == {"owner": True, "colleague": True, "specialist": False}


def test_request_form_errors_name_the_field(world: Any) -> None:
    client = client_for(world.owner)
    response = client.post("/consults/new/", {"question": "", "priority": "stat", "send": "1"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert {"studies", "question", "pool"} <= set(errors)
    assert not Consult.objects.exists()


def test_request_form_offers_only_own_institutions_studies(world: Any) -> None:
    mine, theirs = StudyFactory(institution=world.clin_a), StudyFactory(institution=world.clin_b)
    page = client_for(world.owner).get("/consults/new/", {"find": "1", "q": "patient"}).content.decode()
    assert f'name="studies" value="{mine.pk}"' in page and f'name="studies" value="{theirs.pk}"' not in page
    assert mine.patient.display_name in page and theirs.patient.display_name not in page


def test_specialist_worklist_shows_unclaimed_with_counts_and_deadline_colour(world: Any) -> None:
    walk(world, Status.REQUESTED, priority="stat")
    walk(world, Status.ACCEPTED)
    page = client_for(world.specialist).get("/consults/")
    body = page.content.decode()
    assert page.status_code == 200
    assert dict(page.context["tabs"]) == {"unclaimed": 1, "mine": 1, "signed": 0}
    assert "cs-deadline-ok" in body and "cs-priority-stat" in body


def test_worklist_orders_by_priority_then_time_left(world: Any) -> None:
    routine = walk(world, Status.REQUESTED, priority="routine")
    stat = walk(world, Status.REQUESTED, priority="stat")
    urgent = walk(world, Status.REQUESTED, priority="urgent")
    rows = [c for c, _d in client_for(world.specialist).get("/consults/?tab=unclaimed").context["rows"]]
    assert rows == [stat, urgent, routine]


def test_clinician_worklist_lists_the_institutions_requests_by_status(world: Any) -> None:
    walk(world, Status.REQUESTED)
    walk(world, Status.ON_HOLD)
    page = client_for(world.colleague).get("/consults/?tab=questions")
    tabs = dict(page.context["tabs"])
    assert tabs["waiting"] == 1 and tabs["questions"] == 1 and tabs["drafts"] == 0
    assert len(page.context["rows"]) == 1


def test_case_page_shows_actions_for_this_user_only(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    spec = client_for(world.specialist).get(f"/consults/{consult.pk}/")
    assert spec.context["actions"] == ["claim"]
    owner = client_for(world.owner).get(f"/consults/{consult.pk}/")
    assert owner.context["actions"] == ["cancel"]
    assert client_for(world.stranger).get(f"/consults/{consult.pk}/").status_code == 404
    assert client_for(world.outsider_specialist).get(f"/consults/{consult.pk}/").status_code == 404


def test_claim_hold_answer_sign_through_the_pages(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    spec, owner = client_for(world.specialist), client_for(world.owner)
    assert spec.post(f"/consults/{consult.pk}/claim/").status_code == 302
    assert spec.post(f"/consults/{consult.pk}/start_report/")["Location"] == f"/consults/{consult.pk}/report/"
    spec.post(f"/consults/{consult.pk}/hold/", {"question": "Prior films?"})
    owner.post(f"/consults/{consult.pk}/answer/", {"answer": "None available."})
    editor = spec.get(f"/consults/{consult.pk}/report/")
    assert editor.status_code == 200
    response = spec.post(
        f"/consults/{consult.pk}/report/",
        {"findings": "右肺上叶结节。", "impression": "Benign nodule.", "recommendation": "", "sign": "1"},
    )
    assert response.status_code == 302 and response["Location"] == f"/consults/{consult.pk}/sign/"
    assert spec.post(response["Location"], {"password": PASSWORD}).status_code == 302
    consult.refresh_from_db()
    assert consult.status == Status.COMPLETED
    page = owner.get(f"/consults/{consult.pk}/").content.decode()
    assert "右肺上叶结节。" in page and "Prior films?" in page and "None available." in page


def test_sign_without_impression_names_the_field(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    response = client_for(world.specialist).post(
        f"/consults/{consult.pk}/report/", {"findings": "x", "impression": "", "sign": "1"}
    )
    assert response.status_code == 200
    assert "impression" in response.context["form"].errors
    consult.refresh_from_db()
    assert consult.status == Status.IN_PROGRESS


def test_illegal_action_on_the_page_shows_the_reason_and_changes_nothing(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    response = client_for(world.owner).post(f"/consults/{consult.pk}/cancel/", {"reason": ""}, follow=True)
    assert "Say why" in response.content.decode() or "说明" in response.content.decode()
    consult.refresh_from_db()
    assert consult.status == Status.REQUESTED


def test_bell_shows_unread_count_and_opening_marks_read(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    client = client_for(world.owner)
    home = client.get("/consults/").content.decode()
    assert 'class="cs-bell-count">1<' in home
    notice = Notification.objects.get(user=world.owner.user)
    assert client.get(f"/consults/notifications/{notice.pk}/")["Location"] == f"/consults/{consult.pk}/"
    notice.refresh_from_db()
    assert notice.read_at is not None


@pytest.mark.parametrize("persona", ["alliance_admin", "stranger"])
def test_people_outside_the_case_see_nothing_on_the_worklist(world: Any, persona: str) -> None:
    walk(world, Status.REQUESTED)
    response = client_for(getattr(world, persona)).get("/consults/")
    rows = response.context["rows"] if response.status_code == 200 else []
    assert rows == []


def test_every_page_names_a_cases_patients_once_each_in_the_audit_trail(world: Any) -> None:
    """Consult.audit_patient (alliance.audit.patients) for the worklist as for the case page:
    two studies of one patient are one patient, several are sorted."""
    first = StudyFactory(institution=world.clin_a)
    again = StudyFactory(institution=world.clin_a, patient=first.patient)
    consult = services.consult_create(
        by=resolve_principal(world.owner.user), studies=[first, again], question="?", pool=world.pool
    )
    services.consult_request(consult=consult, by=resolve_principal(world.owner.user))
    client_for(world.specialist).get("/consults/?tab=unclaimed")
    listed = AuditEvent.objects.get(action="consult.list", object_id=str(consult.pk))
    assert listed.patient == str(first.patient_id) == consult.audit_patient
    assert audit.patients([12, 3, 12]) == "12,3" and len(audit.patients(range(10**4, 10**5))) == 200


def _second_factor_drift(doctor: Any, *, device: bool) -> None:
    """An authenticator the doctor record's flag does not know of (one added in the Django
    admin): the identity check goes by the device, and so must the page that asks for it."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if device:
        TOTPDevice.objects.create(user=doctor.user, name="phone", confirmed=True)


@pytest.mark.parametrize("device", [True, False])
def test_the_sign_page_asks_for_what_the_identity_check_takes(world: Any, device: bool) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    spec = client_for(world.specialist)
    spec.post(f"/consults/{consult.pk}/report/", {"findings": "x", "impression": "Benign.", "sign": "1"})
    _second_factor_drift(world.specialist, device=device)
    page = spec.get(f"/consults/{consult.pk}/sign/").content.decode()
    assert ("身份验证器应用显示的验证码" in page) is device
    assert ('autocomplete="one-time-code"' in page) is device
    assert ("您的密码" in page) is not device
