"""The worklist page and /api/v1/worklist/: who keeps which institution's worklist, forms and
bad input, confirmation before taking an exam off, and the reads in the audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from alliance import audit
from alliance import services as alliance_services
from alliance.models import AuditEvent
from imaging import worklist
from imaging.models import ScheduledStep
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def step_of(institution: Any, accession: str, **more: Any) -> ScheduledStep:
    fields = {
        "by": audit.SYSTEM,
        "institution": institution,
        "patient_id": f"P-{accession}",
        "issuer": institution,
        "patient_name": f"Zhang^{accession}",
        "birth_date": None,
        "sex": "M",
        "accession_number": accession,
        "modality": "CT",
        "scheduled_at": timezone.now() + timedelta(minutes=5),
        "station_ae": "",
        "procedure_description": "CT head",
        "source": "api",
        **more,
    }
    return worklist.schedule_step(**fields)


@pytest.fixture
def w(alliance_world: Any) -> Any:
    alliance_world.step_a = step_of(alliance_world.clin_a, "A-1")
    alliance_world.step_b = step_of(alliance_world.clin_b, "B-1")
    return alliance_world


def test_a_clinician_sees_todays_worklist_of_their_institution_only(w: Any) -> None:
    response = client_for(w.owner).get("/imaging/worklist/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "A-1" in body and "B-1" not in body and "Zhang" in body
    read = AuditEvent.objects.get(action="worklist.list", actor_name="owner")
    assert read.object_id == str(w.step_a.pk) and read.basis == "own-institution"


@pytest.mark.parametrize("persona", ["alliance_admin", "specialist"])
def test_who_keeps_no_worklist_of_clinic_a_does_not_see_it(w: Any, persona: str) -> None:
    client = client_for(getattr(w, persona))
    page = client.get("/imaging/worklist/")
    listed = client.get("/api/v1/worklist/")
    if persona == "alliance_admin":  # no clinical role: no worklist at all
        assert page.status_code == 403 and listed.json()["results"] == []
        assert client.post("/api/v1/worklist/", {}).status_code == 403
    else:  # the hospital's specialist keeps the hospital's worklist, not the clinic's
        assert page.status_code == 200 and "A-1" not in page.content.decode()
        assert listed.json()["results"] == []


def test_the_stranger_cannot_take_clinic_a_exam_off_and_is_audited(w: Any) -> None:
    client = client_for(w.stranger)
    assert client.get(f"/imaging/worklist/{w.step_a.pk}/discontinue/").status_code == 404
    assert client.post(f"/api/v1/worklist/{w.step_a.pk}/discontinue/", {}).status_code == 404
    w.step_a.refresh_from_db()
    assert w.step_a.status == "scheduled"
    assert AuditEvent.objects.filter(actor_name="stranger", outcome="denied", object_type="scheduled_step").exists()


def test_scheduling_on_the_page_makes_an_accession_number_and_offers_the_stations(w: Any) -> None:
    alliance_services.device_create(institution=w.clin_a, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    client = client_for(w.owner)
    form = client.get("/imaging/worklist/new/").content.decode()
    assert 'value="CT_A"' in form
    start = (timezone.localtime() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    data = {"patient_id": "P-77", "patient_name": "Li^Na", "sex": "F", "modality": "DX", "scheduled_at": start}
    response = client.post("/imaging/worklist/new/", {**data, "station_ae": "CT_A"})
    assert response.status_code == 302
    step = ScheduledStep.objects.get(patient__patient_id="P-77")
    assert (step.source, step.station_ae, step.modality, step.patient.issuer_id) == ("web", "CT_A", "DX", w.clin_a.pk)
    assert len(step.accession_number) == 12


def test_a_form_error_names_the_field_and_stores_nothing(w: Any) -> None:
    client = client_for(w.owner)
    response = client.post("/imaging/worklist/new/", {"patient_id": "P-78", "patient_name": "X", "modality": "CT"})
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"scheduled_at"}
    assert not ScheduledStep.objects.filter(patient__patient_id="P-78").exists()


def test_taking_an_exam_off_asks_first_then_keeps_it_discontinued(w: Any) -> None:
    client = client_for(w.owner)
    url = f"/imaging/worklist/{w.step_a.pk}/discontinue/"
    confirm = client.get(url)
    assert confirm.status_code == 200 and b'name="confirm"' in confirm.content
    w.step_a.refresh_from_db()
    assert w.step_a.status == "scheduled"
    assert client.post(url, {"confirm": "1", "reason": "ordered twice"}).status_code == 302
    w.step_a.refresh_from_db()
    assert w.step_a.status == "discontinued" and w.step_a.changes.last().reason == "ordered twice"


def test_api_schedules_lists_and_discontinues(w: Any) -> None:
    client = client_for(w.owner)
    start = (timezone.now() + timedelta(days=1)).isoformat()
    body = {"patient_id": "P-90", "issuer": "CLINB", "patient_name": "Wu^Di", "modality": "US", "scheduled_at": start}
    made = client.post("/api/v1/worklist/", body, content_type="application/json")
    assert made.status_code == 201, made.content
    data = made.json()
    assert (data["issuer"], data["source"], data["status"]) == ("CLINB", "api", "scheduled")
    listed = client.get("/api/v1/worklist/?status=all").json()["results"]
    assert {s["accession_number"] for s in listed} == {"A-1", data["accession_number"]}
    done = client.post(f"/api/v1/worklist/{data['id']}/discontinue/", {"reason": "no"}, content_type="application/json")
    assert done.json()["status"] == "discontinued"
    again = client.post(f"/api/v1/worklist/{data['id']}/discontinue/", {}, content_type="application/json")
    assert again.status_code == 400 and "status" in again.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "NOWHERE"}, "issuer"),
        ({"modality": "c t"}, "modality"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"station_ae": "BAD AE"}, "station_ae"),
        ({"patient_id": ""}, "patient_id"),
    ],
)
def test_api_bad_input_names_the_field_and_stores_nothing(w: Any, change: dict[str, str], field: str) -> None:
    body = {"patient_id": "P-91", "modality": "CT", "scheduled_at": timezone.now().isoformat(), **change}
    response = client_for(w.owner).post("/api/v1/worklist/", body, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not ScheduledStep.objects.filter(patient__patient_id="P-91").exists()


def test_api_list_costs_the_same_queries_for_many_steps(w: Any, django_assert_max_num_queries: Any) -> None:
    for n in range(30):
        step_of(w.clin_a, f"A-{n + 100}")
    client = client_for(w.owner)
    with django_assert_max_num_queries(14):
        assert len(client.get("/api/v1/worklist/").json()["results"]) == 31


def test_with_the_image_store_off_the_worklist_is_absent(w: Any) -> None:
    alliance_services.institution_update(institution=w.clin_a, modules=["consults", "referrals"], by=audit.SYSTEM)
    client = client_for(w.owner)
    assert client.get("/imaging/worklist/").status_code == 404
    assert b"nav-worklist" not in client.get("/").content
