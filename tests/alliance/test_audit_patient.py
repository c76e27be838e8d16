"""Issue 16, item 8: "who looked at patient X". The audit page filters by Patient ID and name
(over what pages, the API and the DICOM server record), by study or accession number, doctor
and institution; it shows readable columns; bad filters name the field; the CSV is ISO 8601
with the zone."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.urls import reverse

from alliance import audit
from alliance.models import AuditEvent
from tests.conftest import client_for
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def looked(alliance_world: Any) -> Any:
    """Clinic A's Wang Fang (P-1001) was seen by a page, by DICOM (its Patient ID), and by
    another doctor; Li Si (P-2002) by someone else."""
    w = alliance_world
    wang = StudyFactory(
        institution=w.clin_a, accession_number="ACC-9", patient__patient_id="P-1001", patient__name="WANG^FANG=王^芳"
    )
    li = StudyFactory(institution=w.clin_a, patient__patient_id="P-2002", patient__name="LI^SI=李^四")
    w.owner.user.first_name, w.owner.user.last_name = "Mei", "Chen"
    w.owner.user.save()
    owner, colleague = audit.Actor.for_user(w.owner.user), audit.Actor.for_user(w.colleague.user)
    audit.record(
        actor=owner,
        action="study.view",
        object_type="study",
        object_id=wang.study_uid,
        patient=str(wang.patient_id),
        basis="own-institution",
        detail={"via": "viewer"},
    )
    audit.record(actor=colleague, action="dicom.find", object_type="study", object_id=wang.study_uid, patient="P-1001")
    audit.record(
        actor=colleague, action="study.view", object_type="study", object_id=li.study_uid, patient=str(li.patient_id)
    )
    w.wang, w.li = wang, li
    return w


def shown(client: Any, **filters: str) -> list[AuditEvent]:
    response = client.get(reverse("audit_log"), filters, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return [e for e in response.context["page_obj"].object_list if e.action != "audit.view"]


def test_by_patient_id_finds_page_api_and_dicom_reads_of_that_patient(looked: Any) -> None:
    events = shown(client_for(looked.alliance_admin), patient_id="p-1001")
    assert {(e.action, e.actor_name) for e in events} == {("study.view", "owner"), ("dicom.find", "colleague")}


@pytest.mark.parametrize("name", ["王芳", "wang fang", "FANG"])
def test_by_patient_name_in_any_script(looked: Any, name: str) -> None:
    events = shown(client_for(looked.alliance_admin), patient_name=name)
    assert {e.object_id for e in events} == {looked.wang.study_uid}


def test_by_accession_number_doctor_name_and_institution(looked: Any) -> None:
    admin = client_for(looked.alliance_admin)
    assert {e.object_id for e in shown(admin, study="ACC-9")} == {looked.wang.study_uid}
    assert {e.actor_name for e in shown(admin, actor="Chen")} == {"owner"}
    assert shown(admin, institution=str(looked.clin_b.pk)) == []


def test_a_name_that_matches_nobody_finds_nothing(looked: Any) -> None:
    assert shown(client_for(looked.alliance_admin), patient_name="Nobody Here") == []


@pytest.mark.parametrize(
    ("filters", "field"),
    [({"date_from": "2026-13-45"}, "From"), ({"institution": "999999"}, "Institution"), ({"outcome": "x"}, "Outcome")],
)
def test_a_bad_filter_gets_a_message_naming_the_field(looked: Any, filters: dict[str, str], field: str) -> None:
    admin = client_for(looked.alliance_admin)
    page = admin.get(reverse("audit_log"), filters, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert f"These filters are not valid: {field}." in page
    export = admin.get(reverse("audit_csv"), filters, HTTP_ACCEPT_LANGUAGE="en")
    assert export.status_code == 400 and field in export.content.decode()


def test_columns_are_readable_detail_as_text_and_institutions_by_name(looked: Any) -> None:
    page = client_for(looked.alliance_admin).get(
        reverse("audit_log"), {"patient_id": "P-1001"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    html = page.content.decode()
    assert "via: viewer" in html and "{&#x27;via&#x27;" not in html
    assert "Clinic A" in html
    assert "P-1001 王芳 (WANG FANG)" in html  # the patient as people know them, not the index key
    assert "Times in Asia/Shanghai." in html


def test_the_csv_gives_iso_8601_times_with_the_zone_and_institution_names(looked: Any) -> None:
    export = client_for(looked.alliance_admin).get(reverse("audit_csv"), {"patient_id": "P-1001"})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert {row["action"] for row in rows} == {"study.view", "dicom.find"}
    assert all(row["time"].endswith("+08:00") for row in rows)
    assert {row["actor_institution"] for row in rows} == {"Clinic A"}
    assert {row["patient_label"] for row in rows} == {"P-1001 王芳 (WANG FANG)", "P-1001"}


def test_the_filtered_page_takes_a_fixed_number_of_queries(looked: Any, django_assert_max_num_queries: Any) -> None:
    admin = client_for(looked.alliance_admin)
    for n in range(30):
        audit.record(
            actor=audit.Actor.for_user(looked.owner.user), action="study.view", patient="P-1001", object_id=str(n)
        )
    with django_assert_max_num_queries(14):
        admin.get(reverse("audit_log"), {"patient_id": "P-1001", "actor": "owner"})


def test_summary_turns_a_detail_into_short_text() -> None:
    assert audit.summary({"from": "requested", "to": "accepted", "reason": ""}) == "from: requested; to: accepted"
    assert audit.summary({"grantees": ["user:1", "group:2"]}) == "grantees: user:1, group:2"
    assert len(audit.summary({"x": "y" * 500})) == 160


def test_the_patient_filter_uses_the_index(looked: Any) -> None:
    """The patient column's index answers the filter (PostgreSQL's plan names it)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL plans only")
    events = AuditEvent.objects.filter(patient__in=["1", "P-1001"])
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        plan = events.explain()
        cursor.execute("SET enable_seqscan = on")
    assert "patient" in plan and "Index" in plan


def test_a_c_find_is_audited_under_the_patient_key_the_pages_use(looked: Any) -> None:
    from alliance import services
    from imaging.dicom.handlers import Peer
    from imaging.dicom.identifiers import QueryRequest
    from imaging.dimse_services import DjangoServices

    device = services.device_create(institution=looked.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM)
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(root="study", level="STUDY", criteria={"PatientID": "P-1001"}, keywords=["PatientID"])
    assert len(list(DjangoServices(check_host=False).find(peer, query))) == 1
    event = AuditEvent.objects.get(action="dicom.find", actor_name="WS_A")
    assert event.patient == str(looked.wang.patient_id)
    found = shown(client_for(looked.alliance_admin), patient_name="王芳")
    assert event.pk in {e.pk for e in found}
