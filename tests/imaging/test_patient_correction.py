"""Issue 16, item 9 (the part done): an admin of the issuing institution corrects a patient's
name, birth date and sex with a reason; the pages, the REST API, QIDO-RS and C-FIND answer
the corrected values; a later store does not undo it; nobody else may; it is audited."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from alliance import audit, services
from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from imaging import maintenance
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from imaging.models import Patient
from tests.conftest import client_for
from tests.dicomweb.conftest import store, token_client
from tests.imaging.dicomgen import make_ct_series

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(alliance_world: Any) -> Any:
    datasets = make_ct_series(2, 16, 16, patient_id="P-77", patient_name="Wong^Fang")
    store(datasets, alliance_world.clin_a)
    alliance_world.patient = Patient.objects.get(patient_id="P-77")
    alliance_world.study_uid = str(datasets[0].StudyInstanceUID)
    alliance_world.more = make_ct_series(1, 16, 16, patient_id="P-77", patient_name="Wong^Fang")
    return alliance_world


def correct(world: Any, doctor: Any, **fields: Any) -> Any:
    values = {
        "name": "WANG^FANG=王^芳",
        "birth_date": date(1961, 5, 4),
        "sex": "F",
        "reason": "Misspelt at registration.",
    }
    return maintenance.patient_correct(by=resolve_principal(doctor.user), patient=world.patient, **(values | fields))


def test_the_issuing_admin_corrects_and_every_door_answers_the_correction(stored: Any) -> None:
    correct(stored, stored.inst_admin_a)
    page = client_for(stored.owner).get(f"/imaging/studies/{stored.study_uid}/").content.decode()
    assert "王芳 (WANG FANG)" in page and "1961-05-04" in page
    api = token_client(stored.owner)
    assert api.get(f"/api/v1/studies/{stored.study_uid}/").json()["patient"]["name"] == "WANG^FANG=王^芳"
    qido = api.get(f"/dicomweb/studies?StudyInstanceUID={stored.study_uid}", HTTP_ACCEPT="application/dicom+json")
    assert qido.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "WANG^FANG"
    device = services.device_create(institution=stored.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM)
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(
        root="study", level="STUDY", criteria={"PatientID": "P-77"}, keywords=["PatientName", "PatientBirthDate"]
    )
    (found,) = DjangoServices(check_host=False).find(peer, query)
    assert (str(found.PatientName), found.PatientBirthDate) == ("WANG^FANG=王^芳", "19610504")


def test_a_later_store_with_the_old_values_does_not_undo_the_correction(stored: Any) -> None:
    correct(stored, stored.inst_admin_a)
    store(stored.more, stored.clin_a)
    stored.patient.refresh_from_db()
    assert stored.patient.name == "WANG^FANG=王^芳"


@pytest.mark.parametrize("persona", ["owner", "hosp_admin", "alliance_admin", "specialist"])
def test_only_an_admin_of_the_issuing_institution_corrects(stored: Any, persona: str) -> None:
    with pytest.raises(AccessDenied):
        correct(stored, getattr(stored, persona))
    assert client_for(getattr(stored, persona)).get(f"/imaging/patients/{stored.patient.pk}/correct/").status_code in (
        403,
        404,
    )


def test_a_reason_is_required_and_the_correction_is_audited(stored: Any) -> None:
    with pytest.raises(ValidationError):
        correct(stored, stored.inst_admin_a, reason=" ")
    correct(stored, stored.inst_admin_a)
    event = AuditEvent.objects.get(action="patient.correct")
    assert (
        event.detail["name"] == ["Wong^Fang", "WANG^FANG=王^芳"]
        and event.detail["reason"] == "Misspelt at registration."
    )
    assert event.patient == str(stored.patient.pk)


def test_the_page_corrects_and_says_what_the_files_keep(stored: Any) -> None:
    admin = client_for(stored.inst_admin_a)
    url = f"/imaging/patients/{stored.patient.pk}/correct/"
    page = admin.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "still carry the original values" in page
    study = admin.get(f"/imaging/studies/{stored.study_uid}/").content.decode()
    assert 'id="correct-patient"' in study
    refused = admin.post(url, {"name": "X^Y", "sex": "F", "reason": ""})
    assert refused.status_code == 200 and "reason" in refused.context["form"].errors
    done = admin.post(url, {"name": "WANG^FANG=王^芳", "birth_date": "1961-05-04", "sex": "F", "reason": "Typo."})
    assert done.status_code == 302
    stored.patient.refresh_from_db()
    assert (stored.patient.name, stored.patient.sex) == ("WANG^FANG=王^芳", "F")


# --- soft delete and retention ------------------------------------------------------------


def test_a_deleted_study_is_gone_from_every_door_at_once(stored: Any) -> None:
    from imaging.models import Study

    admin = client_for(stored.inst_admin_a)
    assert 'id="delete-study"' in admin.get(f"/imaging/studies/{stored.study_uid}/").content.decode()
    refused = admin.post(f"/imaging/studies/{stored.study_uid}/delete/", {"reason": ""})
    assert refused.status_code == 302 and Study.objects.get(study_uid=stored.study_uid).deleted_at is None
    assert admin.post(f"/imaging/studies/{stored.study_uid}/delete/", {"reason": "Wrong patient."}).status_code == 302
    assert client_for(stored.owner).get(f"/imaging/studies/{stored.study_uid}/").status_code == 404
    api = token_client(stored.owner)
    assert api.get(f"/api/v1/studies/{stored.study_uid}/").status_code == 404
    qido = api.get(f"/dicomweb/studies?StudyInstanceUID={stored.study_uid}", HTTP_ACCEPT="application/dicom+json")
    assert qido.status_code == 204 or qido.json() == []
    device = services.device_create(institution=stored.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM)
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(root="study", level="STUDY", criteria={"PatientID": "P-77"}, keywords=[])
    assert list(DjangoServices(check_host=False).find(peer, query)) == []
    event = AuditEvent.objects.get(action="study.delete")
    assert event.detail["reason"] == "Wrong patient."


def test_only_the_owning_admin_deletes(stored: Any) -> None:
    for persona in ("owner", "hosp_admin", "alliance_admin"):
        answer = client_for(getattr(stored, persona)).post(
            f"/imaging/studies/{stored.study_uid}/delete/", {"reason": "x"}
        )
        assert answer.status_code in (403, 404), persona


def test_the_retention_job_removes_rows_and_files_after_30_days_and_storage_stays_consistent(
    stored: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    from imaging import storage
    from imaging.models import Instance, Study

    study = Study.objects.get(study_uid=stored.study_uid)
    keys = list(Instance.objects.filter(series__study=study).values_list("storage_key", flat=True))
    maintenance.study_delete(by=resolve_principal(stored.inst_admin_a.user), study=study, reason="Duplicate.")
    assert maintenance.purge_deleted_studies(now=timezone.now() + timedelta(days=29)) == 0
    assert all(storage.dicom_storage().exists(k) for k in keys)  # kept during retention
    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.purge_deleted_studies(now=timezone.now() + timedelta(days=31)) == 1
    assert not Study.objects.filter(pk=study.pk).exists() and not Instance.objects.filter(storage_key__in=keys).exists()
    assert not any(storage.dicom_storage().exists(k) for k in keys)
    assert AuditEvent.objects.filter(action="study.purge", object_id=stored.study_uid).exists()
    out = StringIO()
    call_command("dicom_storage_check", "--older-than", "1", stdout=out)  # exits 1 if anything is wrong
