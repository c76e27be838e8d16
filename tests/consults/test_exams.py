"""A consult that asks for an exam (issue 18 item 2): the reader or the requester asks the
requesting clinic to perform it, it goes on the clinic's modality worklist linked to the case,
the case page shows its state, and the study that comes with its accession number joins the
case, opened to the case's reader."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from alliance import audit
from alliance import services as alliance_services
from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from consults import access, services
from consults.models import ConsultTransition, Notification, Status
from imaging import access as imaging_access
from imaging import tasks, worklist
from imaging.dicom.procedures import PerformedStep, ScheduledRef
from imaging.models import Instance, ScheduledStep, StudyUserGrant
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import store_ct_study

pytestmark = pytest.mark.django_db

PATIENT_ID = "P-7701"


def principal(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


@pytest.fixture
def case(world: Any) -> Any:
    """Clinic A's CT read by the hospital's specialist (in progress), clinic A with a CT station."""
    alliance_services.device_create(
        institution=world.clin_a, ae_title="CT_CLINA", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    study = store_ct_study(world.clin_a, patient_id=PATIENT_ID, patient_name="Li^Ming=李^明")
    return walk(world, Status.IN_PROGRESS, study=study)


def local(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def tomorrow() -> Any:
    return (timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)


def order(world: Any, consult: Any, by: Any = None, **values: Any) -> ScheduledStep:
    fields = {"modality": "CT", "scheduled_at": tomorrow(), "procedure_description": "CT chest, thin slices"}
    return services.consult_order_exam(consult=consult, by=principal(by or world.specialist), **(fields | values))


def arrive(world: Any, step: ScheduledStep, **attributes: Any) -> Any:
    """The clinic's modality sends the study with the step's accession number; the follow-up runs."""
    study = store_ct_study(
        world.clin_a, slices=2, patient_id=PATIENT_ID, accession_number=step.accession_number, **attributes
    )
    tasks.render_instances(list(Instance.objects.filter(series__study=study).values_list("pk", flat=True)))
    return study


def test_the_reader_asks_the_clinic_for_an_exam_and_it_goes_on_the_clinics_worklist(world: Any, case: Any) -> None:
    client = client_for(world.specialist)
    page = client.get(f"/consults/{case.pk}/")
    assert b'id="order-exam"' in page.content
    form = client.get(f"/consults/{case.pk}/exam/")
    assert form.status_code == 200 and b"CT_CLINA" in form.content  # the clinic's stations to choose from
    response = client.post(
        f"/consults/{case.pk}/exam/",
        {
            "modality": "CT",
            "scheduled_at": local(tomorrow()),
            "station_ae": "CT_CLINA",
            "procedure_description": "CT chest, thin slices",
        },
    )
    assert response.status_code == 302 and response["Location"] == f"/consults/{case.pk}/#exams"
    step = ScheduledStep.objects.get()
    assert (step.institution_id, step.source, step.consult_id) == (world.clin_a.pk, "consult", case.pk)
    assert (step.patient.patient_id, step.patient.issuer_id, step.patient_name) == (
        PATIENT_ID,
        world.clin_a.pk,
        "Li^Ming=李^明",
    )
    assert (step.modality, step.station_ae, step.status) == ("CT", "CT_CLINA", "scheduled")
    assert step.accession_number and len(step.accession_number) <= 16
    logged = ConsultTransition.objects.get(consult=case, action="order_exam")
    assert step.accession_number in logged.reason and logged.to_status == Status.IN_PROGRESS
    assert Notification.objects.filter(consult=case, verb="order_exam", user=world.owner.user).exists()
    assert AuditEvent.objects.filter(action="worklist.schedule", object_id=str(step.pk)).exists()
    assert AuditEvent.objects.filter(action="consult.order_exam", object_id=str(case.pk), actor_name="specialist")
    shown = client.get(f"/consults/{case.pk}/").content.decode()
    assert f'id="exam-{step.pk}"' in shown and "cs-status-scheduled" in shown and step.accession_number in shown
    # the clinic finds it on its own worklist, where its modality will
    day = timezone.localdate(step.scheduled_at).isoformat()
    worklist_page = client_for(world.owner).get("/imaging/worklist/", {"day": day})
    assert step.accession_number.encode() in worklist_page.content


def test_the_requester_may_ask_too_before_anyone_claimed_the_case(world: Any) -> None:
    consult = walk(world, Status.REQUESTED, study=store_ct_study(world.clin_a, patient_id=PATIENT_ID))
    assert access.may_order_exam(principal(world.owner), consult)
    step = order(world, consult, by=world.owner, modality="DX", procedure_description="Chest PA")
    assert (step.consult_id, step.modality, step.station_ae) == (consult.pk, "DX", "")


@pytest.mark.parametrize(
    ("persona", "refused"),
    [
        ("colleague", 403),  # sees the case, but did not request it
        ("hosp_admin", 403),  # the receiving desk's admin: not the reader
        ("outsider_specialist", 404),
        ("stranger", 404),
        ("alliance_admin", 404),
    ],
)
def test_nobody_else_asks_for_an_exam(world: Any, case: Any, persona: str, refused: int) -> None:
    doctor = getattr(world, persona)
    client = client_for(doctor)
    assert client.get(f"/consults/{case.pk}/exam/").status_code == refused
    posted = client.post(f"/consults/{case.pk}/exam/", {"modality": "CT", "scheduled_at": local(tomorrow())})
    assert posted.status_code == refused
    assert not access.may_order_exam(principal(doctor), case)
    with pytest.raises(AccessDenied):
        order(world, case, by=doctor)
    assert not ScheduledStep.objects.exists()


def test_no_exam_is_asked_on_a_closed_case_or_of_a_clinic_without_a_worklist(world: Any, case: Any) -> None:
    signed = walk(world, Status.COMPLETED)
    assert not access.may_order_exam(principal(world.specialist), signed)
    assert not access.may_order_exam(principal(world.owner), signed)
    assert client_for(world.specialist).get(f"/consults/{signed.pk}/exam/").status_code == 403
    assert b'id="order-exam"' not in client_for(world.specialist).get(f"/consults/{signed.pk}/").content
    modules = [m for m in world.clin_a.modules if m != "image_store"]
    alliance_services.institution_update(institution=world.clin_a, modules=modules, by=audit.SYSTEM)
    case.requesting_institution.refresh_from_db()
    assert not access.may_order_exam(principal(world.specialist), case)
    with pytest.raises(AccessDenied):
        order(world, case)
    assert not ScheduledStep.objects.exists()


def test_a_station_of_another_clinic_or_a_bad_value_is_refused_naming_the_field(world: Any, case: Any) -> None:
    alliance_services.device_create(
        institution=world.clin_b, ae_title="CT_CLINB", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    with pytest.raises(ValidationError) as station:
        order(world, case, station_ae="CT_CLINB")
    assert "station_ae" in station.value.message_dict
    with pytest.raises(ValidationError) as modality:
        order(world, case, modality="c t!")
    assert "modality" in modality.value.message_dict
    page = client_for(world.specialist).post(
        f"/consults/{case.pk}/exam/", {"modality": "CT", "scheduled_at": "not a time", "station_ae": "CT_CLINB"}
    )
    assert page.status_code == 200
    assert set(page.context["form"].errors) == {"scheduled_at", "station_ae"}
    assert not ScheduledStep.objects.exists()


def test_the_case_page_follows_the_exam_until_its_study_joins_the_case(world: Any, case: Any) -> None:
    step = order(world, case)
    device = audit.Actor("device", "1", "CT_CLINA", world.clin_a.pk)
    started = PerformedStep(status="IN PROGRESS", scheduled=(ScheduledRef(accession_number=step.accession_number),))
    worklist.mpps_started(
        by=device, institution=world.clin_a, device_ae="CT_CLINA", sop_uid="1.2.826.0.1.77", performed=started
    )
    specialist = client_for(world.specialist)
    assert "cs-status-in-progress cs-exam-status" in specialist.get(f"/consults/{case.pk}/").content.decode()
    reader = principal(world.specialist)

    study = arrive(world, step)

    step.refresh_from_db()
    assert (step.status, step.study_id) == ("completed", study.pk)
    assert case.studies.filter(pk=study.pk).exists()
    assert imaging_access.studies_visible_to(reader).filter(pk=study.pk).exists()  # the reader opens it
    assert StudyUserGrant.objects.filter(content_object=study, basis=case.basis, user=world.specialist.user).exists()
    assert not imaging_access.studies_visible_to(principal(world.outsider_specialist)).filter(pk=study.pk).exists()
    assert ConsultTransition.objects.filter(consult=case, action="exam_arrived").count() == 1
    told = Notification.objects.filter(consult=case, verb="exam_arrived").values_list("user_id", flat=True)
    assert set(told) == {world.owner.user_id, world.specialist.user_id}
    shown = specialist.get(f"/consults/{case.pk}/").content.decode()
    assert "cs-status-completed cs-exam-status" in shown and f"/viewer/study/{study.study_uid}/" in shown
    assert AuditEvent.objects.filter(action="grant.extend", object_id=study.study_uid, basis=case.basis).exists()

    services.consult_exam_arrived(step=step)  # told again: nothing more
    assert case.studies.count() == 2
    assert ConsultTransition.objects.filter(consult=case, action="exam_arrived").count() == 1


def test_a_study_that_comes_after_the_modality_reported_the_exam_done_still_joins_the_case(
    world: Any, case: Any
) -> None:
    step = order(world, case)
    device = audit.Actor("device", "1", "CT_CLINA", world.clin_a.pk)
    done = PerformedStep(status="IN PROGRESS", scheduled=(ScheduledRef(accession_number=step.accession_number),))
    worklist.mpps_started(
        by=device, institution=world.clin_a, device_ae="CT_CLINA", sop_uid="1.2.826.0.1.78", performed=done
    )
    worklist.mpps_updated(
        by=device, institution=world.clin_a, sop_uid="1.2.826.0.1.78", performed=PerformedStep(status="COMPLETED")
    )
    step.refresh_from_db()
    assert (step.status, step.study_id) == ("completed", None)

    study = arrive(world, step)

    step.refresh_from_db()
    assert step.study_id == study.pk and step.changes.filter(to_status="completed").count() == 1
    assert case.studies.filter(pk=study.pk).exists()


def test_the_study_of_a_cancelled_case_stays_the_clinics_own(world: Any) -> None:
    consult = walk(world, Status.REQUESTED, study=store_ct_study(world.clin_a, patient_id=PATIENT_ID))
    step = order(world, consult, by=world.owner)
    services.consult_cancel(consult=consult, by=principal(world.owner), reason="The patient went elsewhere.")

    study = arrive(world, step)

    step.refresh_from_db()
    assert (step.status, step.study_id) == ("completed", study.pk)  # the clinic's worklist is done with it
    assert not consult.studies.filter(pk=study.pk).exists()
    assert not imaging_access.studies_visible_to(principal(world.specialist)).filter(pk=study.pk).exists()


def test_the_api_shows_the_case_exams_with_their_state_and_study(world: Any, case: Any) -> None:
    step = order(world, case)
    url = f"/api/v1/consults/{case.pk}/"
    exams = client_for(world.owner).get(url).json()["exams"]
    assert [(e["accession_number"], e["modality"], e["status"], e["study_uid"]) for e in exams] == [
        (step.accession_number, "CT", "scheduled", None)
    ]
    study = arrive(world, step)
    exams = client_for(world.specialist).get(url).json()["exams"]
    assert [(e["status"], e["study_uid"]) for e in exams] == [("completed", study.study_uid)]
    assert client_for(world.stranger).get(url).status_code == 404
