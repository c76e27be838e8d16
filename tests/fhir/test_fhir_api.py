"""The read-only FHIR R4 API (/fhir/): every resource it emits validates as R4 (fhir.resources'
R4B models, which R4's resources here match), searches by the patient's identifier and by date
page through a searchset Bundle, and what a persona sees is what the pages show them."""

from __future__ import annotations

import base64
import datetime as dt
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client, RequestFactory
from fhir.resources.R4B import get_fhir_model_class

from alliance import audit, services
from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import fhir
from consults import services as consult_services
from consults.models import Status
from imaging.fhir.common import patient_system
from referrals import services as referral_services
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import store_ct_study

FHIR_JSON = "application/fhir+json"
pytestmark = pytest.mark.django_db

REQUEST_STATUSES = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
TASK_STATUSES = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource, after fhir.resources has parsed it as its type (a Bundle with every entry)."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for entry in resource.get("entry", []):
        valid(entry["resource"])
    if resource["resourceType"] == "ServiceRequest":
        assert resource["status"] in REQUEST_STATUSES
    if resource["resourceType"] == "Task":
        assert resource["status"] in TASK_STATUSES
    return resource


def get(client: Client, url: str, **params: Any) -> Any:
    response = client.get(url, params, HTTP_ACCEPT=FHIR_JSON)
    assert response["Content-Type"].startswith(FHIR_JSON), response.content[:300]
    return response


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.fixture
def case(alliance_world: Any) -> SimpleNamespace:
    """Clinic A's patient with a CT study read in a signed consult, and referred up with it."""
    w = alliance_world
    study = store_ct_study(
        w.clin_a, patient_id="P-1001", patient_name="Huang^Yongqiang=黄^永强", study_date=dt.date(2024, 3, 15)
    )
    consult = walk(w, Status.COMPLETED, study=study)
    referral = referral_services.referral_create(
        by=resolve_principal(w.owner.user),
        studies=[study],
        direction="up",
        to_institution=w.hosp,
        reason="Suspected lung cancer",
        urgency="urgent",
    )
    referral_services.referral_request(referral=referral, by=resolve_principal(w.owner.user))
    return SimpleNamespace(world=w, study=study, patient=study.patient, consult=consult, referral=referral)


def test_the_capability_statement_is_open_and_names_every_resource() -> None:
    response = get(Client(), "/fhir/metadata")

    assert response.status_code == 200
    statement = valid(response.json())
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert types == {"AuditEvent", "Binary", "DiagnosticReport", "ImagingStudy", "Patient", "ServiceRequest", "Task"}
    assert statement["fhirVersion"] == "4.0.1"


def test_owner_reads_the_imaging_study_and_the_read_is_audited(case: Any) -> None:
    response = get(client_for(case.world.owner), f"/fhir/ImagingStudy/{case.study.study_uid}")

    assert response.status_code == 200
    study = valid(response.json())
    assert study["subject"]["reference"] == f"Patient/{case.patient.pk}"
    assert study["subject"]["identifier"]["system"] == patient_system("CLINA")
    assert study["started"].startswith("2024-03-15")
    assert study["series"][0]["modality"]["code"] == "CT"
    assert study["contained"][0]["address"].endswith("/dicomweb")
    event = AuditEvent.objects.filter(action="study.view", object_id=case.study.study_uid).latest("pk")
    assert (event.actor_name, event.basis, event.detail) == ("owner", "own-institution", {"via": "fhir"})


def test_a_stranger_gets_the_same_404_as_for_a_missing_study(case: Any) -> None:
    stranger = client_for(case.world.stranger)
    refused = get(stranger, f"/fhir/ImagingStudy/{case.study.study_uid}")
    missing = get(stranger, "/fhir/ImagingStudy/1.2.3.4")

    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()
    assert valid(refused.json())["issue"][0]["code"] == "not-found"
    assert AuditEvent.objects.filter(actor_name="stranger", outcome="denied", object_type="study").exists()


@pytest.mark.parametrize(
    "name", ["patient.identifier", "subject:Patient.identifier", "patient:Patient.identifier", "subject.identifier"]
)
def test_imaging_studies_are_searched_by_the_patients_identifier(case: Any, name: str) -> None:
    store_ct_study(case.world.clin_a, patient_id="P-2002")  # another patient of the same clinic
    client = client_for(case.world.owner)

    found = get(client, "/fhir/ImagingStudy", **{name: f"{patient_system('CLINA')}|P-1001"}).json()
    elsewhere = get(client, "/fhir/ImagingStudy", **{name: f"{patient_system('CLINB')}|P-1001"}).json()

    assert valid(found)["type"] == "searchset"
    assert (found["total"], ids(found)) == (1, [case.study.study_uid])
    assert elsewhere["total"] == 0


def test_imaging_studies_are_searched_by_date_with_prefixes(case: Any) -> None:
    store_ct_study(case.world.clin_a, patient_id="P-1001", study_date=dt.date(2023, 1, 1))
    client = client_for(case.world.owner)

    def total(*started: str) -> int:
        return int(get(client, "/fhir/ImagingStudy?" + urlencode([("started", s) for s in started])).json()["total"])

    assert total("ge2024-01-01") == 1
    assert total("le2023-12-31") == 1
    assert total("ge2023-01-01", "le2024-12-31") == 2
    assert total("2024-03") == 1
    assert total("gt2024-03-15") == 0
    assert total("lt2024-03-15T10:00:00+08:00") == 1


def test_count_pages_through_the_searchset_with_next_links(case: Any) -> None:
    for n in range(3):
        store_ct_study(case.world.clin_a, patient_id="P-1001", study_date=dt.date(2022, 1, n + 1))
    client = client_for(case.world.owner)

    first = valid(get(client, "/fhir/ImagingStudy", _count="3").json())
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = valid(get(client, following).json())

    assert (first["total"], len(first["entry"]), len(second["entry"])) == (4, 3, 1)
    assert set(ids(first)).isdisjoint(ids(second))
    assert not [link for link in second["link"] if link["relation"] == "next"]


def test_the_search_costs_a_fixed_number_of_queries(case: Any, django_assert_max_num_queries: Any) -> None:
    for n in range(5):
        store_ct_study(case.world.clin_a, patient_id=f"P-30{n}")
    client = client_for(case.world.owner)
    client.get("/fhir/ImagingStudy")  # the session's first request loads what later ones keep

    with django_assert_max_num_queries(14):
        bundle = get(client, "/fhir/ImagingStudy").json()
    assert bundle["total"] == 6


def test_patient_per_issuer(case: Any) -> None:
    client = client_for(case.world.owner)

    patient = valid(get(client, f"/fhir/Patient/{case.patient.pk}").json())
    found = valid(get(client, "/fhir/Patient", identifier=f"{patient_system('CLINA')}|P-1001").json())

    assert patient["identifier"][0] | {"assigner": None} == {
        "use": "usual",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": patient_system("CLINA"),
        "value": "P-1001",
        "assigner": None,
    }
    assert [n["text"] for n in patient["name"]] == ["Huang Yongqiang", "黄永强"]
    assert ids(found) == [str(case.patient.pk)]
    assert get(client_for(case.world.stranger), f"/fhir/Patient/{case.patient.pk}").status_code == 404


def test_the_consult_as_service_request_task_and_signed_report(case: Any) -> None:
    client = client_for(case.world.specialist)
    key = f"consult-{case.consult.pk}"

    request = valid(get(client, f"/fhir/ServiceRequest/{key}").json())
    task = valid(get(client, f"/fhir/Task/{key}").json())
    report = valid(get(client, f"/fhir/DiagnosticReport/{key}").json())

    assert (request["status"], request["intent"], request["priority"]) == ("completed", "order", "routine")
    assert request["supportingInfo"] == [{"reference": f"ImagingStudy/{case.study.study_uid}"}]
    assert (task["status"], task["focus"]["reference"]) == ("completed", f"ServiceRequest/{key}")
    assert task["output"][0]["valueReference"] == {"reference": f"DiagnosticReport/{key}"}
    assert (report["status"], report["conclusion"]) == ("final", "Nodule 8 mm.")
    pdf_form, text_form = report["presentedForm"]
    assert pdf_form["url"].endswith(f"/fhir/Binary/{key}")
    assert "右上肺结节" in base64.b64decode(text_form["data"]).decode()
    assert AuditEvent.objects.filter(action="consult.view", object_id=str(case.consult.pk), actor_name="specialist")


def test_the_report_pdf_is_a_binary(case: Any) -> None:
    client = client_for(case.world.owner)
    url = f"/fhir/Binary/consult-{case.consult.pk}"

    raw = client.get(url, HTTP_ACCEPT="application/pdf")
    wrapped = valid(get(client, url).json())

    assert raw.status_code == 200 and raw["Content-Type"] == "application/pdf"
    assert raw.content.startswith(b"%PDF")
    assert base64.b64decode(wrapped["data"]).startswith(b"%PDF")
    assert AuditEvent.objects.filter(action="consult.report_pdf", object_id=str(case.consult.pk)).count() == 2


def test_a_report_not_signed_yet_is_no_diagnostic_report(case: Any) -> None:
    open_case = walk(case.world, Status.IN_PROGRESS, study=case.study)
    client = client_for(case.world.owner)

    assert get(client, f"/fhir/DiagnosticReport/consult-{open_case.pk}").status_code == 404
    reports = valid(get(client, "/fhir/DiagnosticReport", patient=f"Patient/{case.patient.pk}").json())
    assert ids(reports) == [f"consult-{case.consult.pk}"]
    tasks = valid(get(client, "/fhir/Task", **{"patient.identifier": "P-1001"}).json())
    assert {e["resource"]["status"] for e in tasks["entry"]} == {"completed", "in-progress", "requested"}


def test_the_referral_as_service_request_and_task_on_both_sides(case: Any) -> None:
    key = f"referral-{case.referral.pk}"
    for persona in (case.world.owner, case.world.hosp_admin):
        client = client_for(persona)
        request = valid(get(client, f"/fhir/ServiceRequest/{key}").json())
        task = valid(get(client, f"/fhir/Task/{key}").json())
        assert (request["priority"], request["status"], task["status"]) == ("urgent", "active", "requested")
        assert request["performer"] == [{"display": "Lead Hospital"}]
    requests = valid(get(client_for(case.world.hosp_admin), "/fhir/ServiceRequest").json())
    assert key in ids(requests)


def test_another_clinic_finds_nothing(case: Any) -> None:
    stranger = client_for(case.world.stranger)
    for resource in ("ImagingStudy", "Patient", "ServiceRequest", "Task", "DiagnosticReport", "AuditEvent"):
        bundle = valid(get(stranger, f"/fhir/{resource}").json())
        assert (resource, bundle["total"]) == (resource, 0)


def test_audit_events_are_for_the_alliance_admin(case: Any) -> None:
    admin = client_for(case.world.alliance_admin)
    get(client_for(case.world.owner), f"/fhir/ImagingStudy/{case.study.study_uid}")

    bundle = valid(get(admin, "/fhir/AuditEvent", patient=f"Patient/{case.patient.pk}", date="ge2000-01-01").json())
    one = valid(get(admin, f"/fhir/AuditEvent/{bundle['entry'][0]['resource']['id']}").json())
    reads = valid(get(admin, "/fhir/AuditEvent", action="R", _count="200").json())

    assert bundle["total"] > 0
    assert {"reference": f"Patient/{case.patient.pk}"} in [e["what"] for e in one["entity"]]
    assert "study.view" in [r["resource"]["subtype"][-1]["code"] for r in reads["entry"]]
    assert get(client_for(case.world.owner), f"/fhir/AuditEvent/{one['id']}").status_code == 404
    assert AuditEvent.objects.filter(action="audit.view", actor_name="alliance_admin", detail__via="fhir").exists()


def test_a_token_reads_as_the_rest_api_does_and_nobody_reads_without_one(case: Any) -> None:
    issued = services.token_create(doctor=case.world.owner, by=audit.SYSTEM)
    url = f"/fhir/ImagingStudy/{case.study.study_uid}"

    with_token = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    without = Client().get(url)

    assert with_token.status_code == 200
    assert without.status_code == 401
    assert valid(without.json())["issue"][0]["code"] == "login"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("name=Huang", "name"),
        ("started=2024-13-01", "started"),
        ("started=sa2024", "started"),
        ("_count=abc", "_count"),
        ("patient=Practitioner/3", "patient"),
        ("_format=xml", "_format"),
    ],
)
def test_a_bad_search_is_refused_naming_the_parameter(case: Any, query: str, parameter: str) -> None:
    response = get(client_for(case.world.owner), f"/fhir/ImagingStudy?{query}")

    assert response.status_code == 400
    issue = valid(response.json())["issue"][0]
    assert issue["expression"] == [parameter]


def test_a_module_switched_off_is_absent(case: Any) -> None:
    services.institution_update(institution=case.world.clin_a, by=audit.SYSTEM, modules=["image_store"])
    client = client_for(case.world.owner)

    # ServiceRequest stays for the worklist orders of the image store: the cases are gone from it
    found = get(client, "/fhir/ServiceRequest")
    assert (found.status_code, found.json()["total"]) == (200, 0)
    assert get(client, f"/fhir/ServiceRequest/consult-{case.consult.pk}").status_code == 404
    assert get(client, "/fhir/Task").status_code == 404
    assert get(client, f"/fhir/Task/consult-{case.consult.pk}").status_code == 404
    assert get(client, "/fhir/ImagingStudy").status_code == 200


def test_a_preliminary_report_under_two_level_signoff_is_a_task_in_progress(case: Any) -> None:
    consult = consult_services.consult_create(
        by=resolve_principal(case.world.owner.user),
        studies=[case.study],
        question="Second look?",
        history="",
        priority="urgent",
        pool=case.world.pool,
        specialist=None,
    )
    (row,) = fhir._hydrate([consult.pk])
    row.status = Status.PRELIMINARY

    task = valid(fhir.TaskProvider().resource(RequestFactory().get("/fhir/Task"), row))

    assert (task["status"], task["businessStatus"]) == ("in-progress", {"text": "preliminary"})
