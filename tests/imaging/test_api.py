"""/api/v1/ studies, series and instances: the same access rules as the pages, audited,
paginated, and a constant number of queries per list."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from alliance import audit, services
from alliance.models import AuditEvent
from imaging import grants
from tests import factories

SEE = ("owner", "colleague", "inst_admin_a")
BLIND = ("specialist", "outsider_specialist", "stranger", "alliance_admin", "hosp_admin")


def api_for(doctor) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    token = services.token_create(doctor=doctor, by=audit.SYSTEM)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def study_a(alliance_world):  # type: ignore[no-untyped-def]
    return factories.StudyFactory(
        institution=alliance_world.clin_a,
        patient__name="WANG^FANG=王^芳",
        patient__patient_id="CLA-0001",
        patient__sex="M",
        series=2,
        series__instances=3,
    )


def uids(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return [row["study_uid"] for row in response.json()["results"]]


def test_own_institution_lists_and_reads_the_study(alliance_world, study_a):  # type: ignore[no-untyped-def]
    for persona in SEE:
        client = api_for(getattr(alliance_world, persona))
        assert uids(client.get("/api/v1/studies/")) == [study_a.study_uid], persona
        detail = client.get(f"/api/v1/studies/{study_a.study_uid}/").json()
        assert detail["patient"] == {
            "patient_id": "CLA-0001",
            "issuer": "CLINA",
            "name": "WANG^FANG=王^芳",
            "birth_date": None,
            "sex": "M",
        }
        assert detail["institution"]["ae_title"] == "CLINA"
        assert detail["access_basis"] == "own-institution"
        assert detail["modalities"] == ["CT"]


def test_others_get_empty_lists_and_404s(alliance_world, study_a):  # type: ignore[no-untyped-def]
    series_uid = study_a.series.first().series_uid
    for persona in BLIND:
        client = api_for(getattr(alliance_world, persona))
        assert uids(client.get("/api/v1/studies/")) == [], persona
        for url in (
            f"/api/v1/studies/{study_a.study_uid}/",
            f"/api/v1/studies/{study_a.study_uid}/series/",
            f"/api/v1/series/{series_uid}/instances/",
        ):
            response = client.get(url)
            assert response.status_code == 404, (persona, url)
            assert response.json()["error"]["code"] == "not_found"


def test_missing_and_forbidden_answer_alike(alliance_world, study_a):  # type: ignore[no-untyped-def]
    client = api_for(alliance_world.stranger)
    forbidden = client.get(f"/api/v1/studies/{study_a.study_uid}/")
    missing = client.get("/api/v1/studies/1.2.3.404/")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json() == missing.json()


def test_anonymous_and_deactivated_are_refused(alliance_world, study_a):  # type: ignore[no-untyped-def]
    assert APIClient().get("/api/v1/studies/").status_code in (401, 403)
    client = api_for(alliance_world.owner)
    services.doctor_set_active(doctor=alliance_world.owner, active=False, by=audit.SYSTEM)
    assert client.get("/api/v1/studies/").status_code in (401, 403)


def test_pool_grant_opens_study_series_and_instances_to_specialist(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:5", by=audit.SYSTEM
    )
    client = api_for(alliance_world.specialist)
    listed = client.get("/api/v1/studies/").json()["results"]
    assert [(r["study_uid"], r["access_basis"]) for r in listed] == [(study_a.study_uid, "consult:5")]
    series = client.get(f"/api/v1/studies/{study_a.study_uid}/series/").json()
    assert [(s["series_number"], s["num_instances"]) for s in series["results"]] == [(1, 3), (2, 3)]
    assert series["results"][0]["study_uid"] == study_a.study_uid
    first_series = series["results"][0]["series_uid"]
    instances = client.get(f"/api/v1/series/{first_series}/instances/").json()
    assert [i["instance_number"] for i in instances["results"]] == [1, 2, 3]
    assert instances["results"][0]["series_uid"] == first_series
    assert set(instances["results"][0]) >= {"sop_uid", "sop_class_uid", "transfer_syntax_uid", "rows", "size_bytes"}
    assert (
        api_for(alliance_world.outsider_specialist).get(f"/api/v1/series/{first_series}/instances/").status_code == 404
    )


def test_revoked_grant_closes_the_api_at_once(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:6", by=audit.SYSTEM
    )
    client = api_for(alliance_world.specialist)
    assert uids(client.get("/api/v1/studies/")) == [study_a.study_uid]
    grants.revoke_grants(basis="consult:6", by=audit.SYSTEM)
    assert uids(client.get("/api/v1/studies/")) == []
    assert client.get(f"/api/v1/studies/{study_a.study_uid}/").status_code == 404


def test_filters_match_the_list_page(alliance_world):  # type: ignore[no-untyped-def]
    a = factories.StudyFactory(
        institution=alliance_world.clin_a, patient__name="WANG^FANG=王^芳", study_date=date(2026, 1, 5), modalities="CT"
    )
    b = factories.StudyFactory(
        institution=alliance_world.clin_a,
        patient__name="LI^MING=李^明",
        study_date=date(2026, 2, 5),
        modalities="MR\\SR",
    )
    client = api_for(alliance_world.owner)
    cases = [
        ({"patient_name": "fang"}, [a]),
        ({"patient_name": "李明"}, [b]),
        ({"patient_id": b.patient.patient_id.lower()}, [b]),
        ({"modality": "SR"}, [b]),
        ({"date_from": "2026-01-01", "date_to": "2026-01-31"}, [a]),
        ({"accession": a.accession_number}, [a]),
        ({"institution": alliance_world.clin_a.pk}, [b, a]),
        ({"institution": alliance_world.clin_b.pk}, []),
        ({}, [b, a]),
    ]
    for params, expected in cases:
        assert uids(client.get("/api/v1/studies/", params)) == [s.study_uid for s in expected], params


def test_bad_filter_names_the_field(alliance_world):  # type: ignore[no-untyped-def]
    response = api_for(alliance_world.owner).get("/api/v1/studies/", {"date_from": "yesterday"})
    assert response.status_code == 400
    assert "date_from" in response.json()["error"]["fields"]


def test_list_is_paginated(alliance_world):  # type: ignore[no-untyped-def]
    for day in range(1, 6):
        factories.StudyFactory(institution=alliance_world.clin_a, study_date=date(2026, 4, day), series=0)
    client = api_for(alliance_world.owner)
    page = client.get("/api/v1/studies/", {"limit": 2, "offset": 2}).json()
    assert page["count"] == 5
    assert [r["study_date"] for r in page["results"]] == ["2026-04-03", "2026-04-02"]
    assert "offset=4" in page["next"]


def test_every_answer_is_audited_with_its_basis(alliance_world, study_a):  # type: ignore[no-untyped-def]
    client = api_for(alliance_world.owner)
    series_uid = study_a.series.first().series_uid
    client.get("/api/v1/studies/")
    client.get(f"/api/v1/studies/{study_a.study_uid}/")
    client.get(f"/api/v1/studies/{study_a.study_uid}/series/")
    client.get(f"/api/v1/series/{series_uid}/instances/")
    events = AuditEvent.objects.filter(
        actor_name="owner", action__in=["study.list", "study.view", "series.list", "instance.list"]
    )
    assert sorted((e.action, e.object_id) for e in events) == sorted(
        [
            ("study.list", study_a.study_uid),
            ("study.view", study_a.study_uid),
            ("series.list", study_a.study_uid),
            ("instance.list", series_uid),
        ]
    )
    assert {e.basis for e in events} == {"own-institution"}
    assert {e.patient for e in events} == {str(study_a.patient_id)}


def test_refused_requests_write_no_read_event(alliance_world, study_a):  # type: ignore[no-untyped-def]
    api_for(alliance_world.stranger).get(f"/api/v1/studies/{study_a.study_uid}/")
    assert not AuditEvent.objects.filter(action="study.view").exists()


def count_queries(client, url: str) -> int:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_study_list_costs_the_same_queries_for_3_or_30_studies(  # type: ignore[no-untyped-def]
    alliance_world, django_assert_max_num_queries
):
    def add(n: int) -> None:
        for i in range(n):
            factories.StudyFactory(institution=alliance_world.hosp, series=0)
            shared = factories.StudyFactory(institution=alliance_world.clin_a, series=0)
            grants.grant_study(
                study=shared, grantee=grants.Grantee.pool(alliance_world.pool), basis=f"consult:{i}", by=audit.SYSTEM
            )

    client = api_for(alliance_world.specialist)  # on the pool's desk: its own studies and the pool's
    add(2)
    few = count_queries(client, "/api/v1/studies/")
    add(14)
    with django_assert_max_num_queries(few):
        assert len(client.get("/api/v1/studies/").json()["results"]) == 32


def test_series_and_instance_lists_cost_constant_queries(  # type: ignore[no-untyped-def]
    alliance_world, django_assert_max_num_queries
):
    small = factories.StudyFactory(institution=alliance_world.clin_a, series=1, series__instances=1)
    large = factories.StudyFactory(institution=alliance_world.clin_a, series=8, series__instances=20)
    client = api_for(alliance_world.owner)
    few_series = count_queries(client, f"/api/v1/studies/{small.study_uid}/series/")
    few_instances = count_queries(client, f"/api/v1/series/{small.series.first().series_uid}/instances/")
    large_series_uid = large.series.first().series_uid
    with django_assert_max_num_queries(few_series):
        assert len(client.get(f"/api/v1/studies/{large.study_uid}/series/").json()["results"]) == 8
    with django_assert_max_num_queries(few_instances):
        assert len(client.get(f"/api/v1/series/{large_series_uid}/instances/").json()["results"]) == 20
