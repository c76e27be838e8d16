"""Worklist orders over FHIR (issue 18 item 2): POST /fhir/ServiceRequest puts an exam on the
performing institution's modality worklist, answered 201 with Location and the resource (which
validates as R4), the same accession number again finds the same step, reading it back shows
the step, and whoever may not schedule for that institution is refused as by the REST API."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.test import Client

from alliance import audit, services
from alliance.models import AuditEvent
from imaging.fhir.common import DCM, accession_system, patient_system
from imaging.models import ScheduledStep
from tests import factories
from tests.fhir.test_fhir_api import FHIR_JSON, valid

pytestmark = pytest.mark.django_db

START = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).replace(
    hour=9, minute=30, second=0, microsecond=0
)


def ae_system() -> str:
    return f"{settings.FHIR_SYSTEM_BASE}/ae-title"


def order(**changes: Any) -> dict[str, Any]:
    """A HIS's order of a chest CT at clinic A, on its station CT_CLINA, for its patient P-3001."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "system": accession_system("CLINA"),
                "value": "ACC-3001",
            }
        ],
        "requisition": {"value": "RP-3001"},
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p",
                "identifier": [{"system": patient_system("CLINA"), "value": "P-3001"}],
                "name": [{"family": "Li", "given": ["Ming"]}],
                "birthDate": "1958-07-01",
                "gender": "male",
            }
        ],
        "subject": {"reference": "#p"},
        "code": {"coding": [{"system": DCM, "code": "CT"}], "text": "CT chest"},
        "occurrenceDateTime": START.isoformat(),
        "performer": [
            {"type": "Organization", "identifier": {"system": ae_system(), "value": "CLINA"}},
            {"type": "Device", "identifier": {"system": ae_system(), "value": "CT_CLINA"}},
        ],
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


@pytest.fixture
def world(alliance_world: Any) -> Any:
    services.device_create(
        institution=alliance_world.clin_a, ae_title="CT_CLINA", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    return alliance_world


def fhir_client(doctor: Any) -> Client:
    """A HIS calling with the doctor's API token."""
    key = services.token_create(doctor=doctor, by=audit.SYSTEM).key
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT=FHIR_JSON)


def post(client: Client, body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.post("/fhir/ServiceRequest", data, content_type=FHIR_JSON)
    assert response["Content-Type"].startswith(FHIR_JSON), response.content[:300]
    return response


def issues(response: Any) -> list[tuple[str, str]]:
    outcome = valid(response.json())
    assert outcome["resourceType"] == "OperationOutcome"
    return [(i["code"], (i.get("expression") or [""])[0]) for i in outcome["issue"]]


def test_an_order_goes_on_the_worklist_and_reads_back_as_the_step(world: Any) -> None:
    client = fhir_client(world.owner)

    response = post(client, order())

    assert response.status_code == 201, response.content
    created = valid(response.json())
    step = ScheduledStep.objects.get()
    assert created["id"] == f"worklist-{step.pk}"
    assert response["Location"] == f"http://testserver/fhir/ServiceRequest/worklist-{step.pk}"
    assert (step.institution_id, step.source, step.station_ae) == (world.clin_a.pk, "fhir", "CT_CLINA")
    assert (step.patient.issuer_id, step.patient.patient_id) == (world.clin_a.pk, "P-3001")
    assert (step.patient_name, step.birth_date, step.sex) == ("Li^Ming", date(1958, 7, 1), "M")
    assert (step.modality, step.procedure_description) == ("CT", "CT chest")
    assert (step.accession_number, step.requested_procedure_id) == ("ACC-3001", "RP-3001")
    assert step.scheduled_at == START
    assert AuditEvent.objects.filter(action="worklist.schedule", object_id=str(step.pk), actor_name="owner").exists()

    read = client.get(response["Location"].removeprefix("http://testserver"))
    assert read.status_code == 200
    shown = valid(read.json())
    assert shown == created
    assert (shown["status"], shown["code"]["coding"][0]["code"], shown["code"]["text"]) == ("active", "CT", "CT chest")
    assert shown["identifier"][0]["value"] == "ACC-3001" and shown["requisition"]["value"] == "RP-3001"
    assert shown["subject"]["identifier"]["value"] == "P-3001" and shown["subject"]["display"]
    assert [p["identifier"]["value"] for p in shown["performer"]] == ["CLINA", "CT_CLINA"]
    assert shown["occurrenceDateTime"].startswith(START.astimezone(ZoneInfo(settings.TIME_ZONE)).date().isoformat())
    assert AuditEvent.objects.filter(action="worklist.view", object_id=str(step.pk), detail={"via": "fhir"}).exists()

    found = client.get("/fhir/ServiceRequest", {"patient.identifier": f"{patient_system('CLINA')}|P-3001"}).json()
    assert f"worklist-{step.pk}" in [e["resource"]["id"] for e in valid(found)["entry"]]


def test_the_same_accession_number_again_returns_the_same_step(world: Any) -> None:
    client = fhir_client(world.owner)
    first = post(client, order())
    again = post(client, order(occurrenceDateTime=(START + timedelta(hours=3)).isoformat()))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again["Location"] == first["Location"]
    assert ScheduledStep.objects.count() == 1
    assert ScheduledStep.objects.get().scheduled_at == START  # the step as the first order made it

    other_patient = order(contained=None, subject={"identifier": {"system": patient_system("CLINA"), "value": "P-9"}})
    refused = post(client, other_patient)
    assert refused.status_code == 422
    assert issues(refused) == [("business-rule", "ServiceRequest.identifier")]
    assert ScheduledStep.objects.count() == 1


@pytest.mark.parametrize("persona", ["stranger", "specialist", "alliance_admin"])
def test_whoever_may_not_schedule_at_the_performer_is_refused(world: Any, persona: str) -> None:
    """The REST API's rule: a clinician, for their own institution; clinic B's stranger and the
    hospital's specialist are clinicians of other institutions, the alliance admin none."""
    response = post(fhir_client(getattr(world, persona)), order())

    assert response.status_code == 403
    assert issues(response) == [("forbidden", "")]
    assert not ScheduledStep.objects.exists()


def test_another_institutions_step_is_a_404_and_found_by_no_search(world: Any) -> None:
    created = post(fhir_client(world.owner), order()).json()
    stranger = fhir_client(world.stranger)

    refused = stranger.get(f"/fhir/ServiceRequest/{created['id']}")
    missing = stranger.get("/fhir/ServiceRequest/worklist-999999")
    found = stranger.get("/fhir/ServiceRequest", {"patient.identifier": f"{patient_system('CLINA')}|P-3001"})

    assert refused.status_code == missing.status_code == 404 and refused.json() == missing.json()
    assert AuditEvent.objects.filter(actor_name="stranger", outcome="denied", object_type="scheduled_step").exists()
    assert found.status_code == 200 and (found.json()["total"], found.json().get("entry", [])) == (0, [])
    assert b"P-3001" not in refused.content


def test_a_modality_as_text_and_the_clinics_own_patient_without_a_contained_patient(world: Any) -> None:
    factories.store_ct_study(world.clin_a, patient_id="P-4001", patient_name="Wang^Fang=王^芳")
    body = order(
        identifier=None,
        requisition=None,
        contained=None,
        subject={"identifier": {"system": patient_system("CLINA"), "value": "P-4001"}},
        code={"text": "DX"},
        performer=[{"identifier": {"system": ae_system(), "value": "CLINA"}}],
    )
    response = post(fhir_client(world.owner), body)

    assert response.status_code == 201, response.content
    step = ScheduledStep.objects.get()
    assert (step.modality, step.station_ae, step.patient_name) == ("DX", "", "Wang^Fang=王^芳")
    assert step.accession_number  # one was made
    assert step.requested_procedure_id == step.accession_number  # no requisition: the accession number


def test_a_patient_of_another_institution_is_ordered_without_its_stored_details(world: Any) -> None:
    factories.store_ct_study(world.clin_b, patient_id="P-5001", patient_name="Secret^Name")
    body = order(contained=None, subject={"identifier": {"system": patient_system("CLINB"), "value": "P-5001"}})
    response = post(fhir_client(world.owner), body)

    assert response.status_code == 201
    assert b"Secret" not in response.content
    assert ScheduledStep.objects.get().patient_name == ""


def station(value: str) -> list[dict[str, Any]]:
    return [
        {"type": "Organization", "identifier": {"system": ae_system(), "value": "CLINA"}},
        {"type": "Device", "identifier": {"system": ae_system(), "value": value}},
    ]


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ("{not json", 400, [("invalid", "")]),
        ({"resourceType": "Patient"}, 400, [("invalid", "ServiceRequest")]),
        (order(status=None), 400, [("required", "ServiceRequest.status")]),
        (order(colour="blue"), 400, [("structure", "ServiceRequest.colour")]),
        (order(occurrenceDateTime="tomorrow"), 400, [("value", "ServiceRequest.occurrenceDateTime")]),
        (order(occurrenceDateTime="2030-01-02"), 422, [("value", "ServiceRequest.occurrenceDateTime")]),
        (order(occurrenceDateTime=None), 422, [("required", "ServiceRequest.occurrenceDateTime")]),
        (order(status="draft"), 422, [("processing", "ServiceRequest.status")]),
        (order(intent="proposal"), 422, [("processing", "ServiceRequest.intent")]),
        (order(code=None), 422, [("required", "ServiceRequest.code")]),
        (order(code={"text": "chest, please"}), 422, [("required", "ServiceRequest.code")]),
        (order(performer=None), 422, [("required", "ServiceRequest.performer")]),
        (order(performer=station("CT_CLINB")), 422, [("not-found", "ServiceRequest.performer[1]")]),
        (
            order(performer=[{"type": "Organization", "identifier": {"system": ae_system(), "value": "NOPE"}}]),
            422,
            [("not-found", "ServiceRequest.performer[0]")],
        ),
        (
            order(contained=None, subject={"identifier": {"system": "urn:his:mrn", "value": "P-3001"}}),
            422,
            [("required", "ServiceRequest.subject.identifier")],
        ),
        (
            order(contained=None, subject={"identifier": {"system": patient_system("NOPE"), "value": "P-3001"}}),
            422,
            [("processing", "ServiceRequest.subject.identifier")],
        ),
        (order(subject={"reference": "Patient/12"}), 422, [("processing", "ServiceRequest.subject")]),
        (order(requisition={"value": "R" * 17}), 422, [("processing", "ServiceRequest.requisition")]),
        (
            order(
                identifier=[
                    {
                        "type": {
                            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                        },
                        "value": "A" * 17,
                    }
                ]
            ),
            422,
            [("business-rule", "ServiceRequest.identifier")],
        ),
    ],
)
def test_a_bad_order_is_refused_naming_the_problem(
    world: Any, body: Any, status: int, expected: list[tuple[str, str]]
) -> None:
    services.device_create(institution=world.clin_b, ae_title="CT_CLINB", host="127.0.0.1", port=104, by=audit.SYSTEM)
    response = post(fhir_client(world.owner), body)

    assert response.status_code == status, response.content
    assert issues(response) == expected
    assert not ScheduledStep.objects.exists()


def test_the_capability_statement_says_service_requests_are_created() -> None:
    statement = valid(Client().get("/fhir/metadata").json())
    kinds = {r["type"]: [i["code"] for i in r["interaction"]] for r in statement["rest"][0]["resource"]}
    assert kinds["ServiceRequest"] == ["read", "search-type", "create"]
    assert kinds["ImagingStudy"] == ["read", "search-type"]
