"""QIDO-RS (PS3.18 10.6) through the Django test client: matching, paging, access, bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import AuditEvent
from imaging import access, grants
from tests.dicomweb.conftest import BASE, store
from tests.imaging.dicomgen import make_ct_series

DICOM_JSON = "application/dicom+json"


def uids(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [d["0020000D"]["Value"][0] for d in response.json()] if response.status_code == 200 else []


@pytest.fixture
def three_studies(alliance_world, ct):  # type: ignore[no-untyped-def]
    """ct (P1001, 2026-03-14) plus two more of clinic A: P2002 in April, P3003 in May."""
    for pid, name, day in (("P2002", "Smith^John", dt.date(2026, 4, 2)), ("P3003", "Wang^Li", dt.date(2026, 5, 9))):
        store(make_ct_series(1, 16, 16, patient_id=pid, patient_name=name, study_date=day), alliance_world.clin_a)
    return ct


def test_search_by_patient_id_answers_dicom_json_without_charset(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{BASE}/studies", {"PatientID": "P1001"}, HTTP_ACCEPT=DICOM_JSON)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == DICOM_JSON
    [study] = response.json()
    assert study["0020000D"] == {"vr": "UI", "Value": [ct.study]}
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert study["00201208"] == {"vr": "IS", "Value": [3]}
    assert study["00081190"]["Value"] == [f"{settings.SITE_URL}{ct.url}"]


def test_attribute_may_be_named_by_tag(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    assert uids(owner_client.get(f"{BASE}/studies", {"00100020": "P1001"})) == [ct.study]


def test_wildcard_and_fuzzy_person_name_matching(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    assert uids(owner_client.get(f"{BASE}/studies", {"PatientName": "doe*"})) == [ct.study]
    assert owner_client.get(f"{BASE}/studies", {"PatientName": "jane"}).status_code == 204
    fuzzy = owner_client.get(f"{BASE}/studies", {"PatientName": "jane", "fuzzymatching": "true"})
    assert uids(fuzzy) == [ct.study]


def test_nothing_matching_is_204_with_no_body(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{BASE}/studies", {"PatientID": "NOPE"})
    assert response.status_code == 204
    assert response.content == b""


def test_date_ranges_and_uid_lists(owner_client, three_studies) -> None:  # type: ignore[no-untyped-def]
    march_april = uids(owner_client.get(f"{BASE}/studies", {"StudyDate": "20260301-20260430"}))
    assert len(march_april) == 2 and three_studies.study in march_april
    assert len(uids(owner_client.get(f"{BASE}/studies", {"StudyDate": "20260501-"}))) == 1
    everything = uids(owner_client.get(f"{BASE}/studies"))
    listed = owner_client.get(f"{BASE}/studies", {"StudyInstanceUID": ",".join(everything[:2])})
    assert sorted(uids(listed)) == sorted(everything[:2])


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"StudyDate": "2026-03-01-2026-03-31"}, "StudyDate"),
        ({"StudyDate": "20261399"}, "StudyDate"),
        ({"NoSuchKey": "1"}, "NoSuchKey"),
        ({"OperatorsName": "x"}, "OperatorsName"),
        ({"ReferencedSeriesSequence.SeriesInstanceUID": "1"}, "sequence"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NotAnAttribute"}, "NotAnAttribute"),
        ({"PatientID": ["A", "B"]}, "more than once"),
    ],
)
def test_bad_queries_are_400_with_a_reason(owner_client, ct, params, reason) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{BASE}/studies", params)
    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]


def test_limit_and_offset_page_through_results(owner_client, three_studies) -> None:  # type: ignore[no-untyped-def]
    everything = uids(owner_client.get(f"{BASE}/studies"))
    assert len(everything) == 3
    assert uids(owner_client.get(f"{BASE}/studies", {"limit": 2})) == everything[:2]
    assert uids(owner_client.get(f"{BASE}/studies", {"limit": 2, "offset": 2})) == everything[2:]
    assert owner_client.get(f"{BASE}/studies", {"offset": 3}).status_code == 204


def test_a_huge_limit_is_capped_with_a_warning(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{BASE}/studies", {"limit": 10**9})
    assert response.status_code == 200
    assert response.headers["Warning"].startswith("299 ")
    assert "maximum" in response.headers["Warning"]


def test_includefield_adds_attributes_and_all_adds_every_indexed_one(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    default = owner_client.get(f"{BASE}/studies").json()[0]
    assert "00100021" not in default
    one = owner_client.get(f"{BASE}/studies", {"includefield": "IssuerOfPatientID"}).json()[0]
    assert one["00100021"] == {"vr": "LO", "Value": ["CLINA"]}
    everything = owner_client.get(f"{BASE}/studies", {"includefield": "all"}).json()[0]
    assert {"00100021", "00081030", "00200010"} <= set(everything)


def test_series_and_instance_searches_under_a_study(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    [series] = owner_client.get(f"{ct.url}/series").json()
    assert series["0020000E"]["Value"] == [ct.series]
    assert series["00201209"]["Value"] == [3]
    instances = owner_client.get(f"{ct.url}/series/{ct.series}/instances").json()
    assert [i["00080018"]["Value"][0] for i in instances] == ct.sops
    assert instances[0]["00081190"]["Value"] == [f"{settings.SITE_URL}{ct.instance_url}"]
    assert len(owner_client.get(f"{ct.url}/instances").json()) == 3


def test_all_series_and_all_instances_carry_study_attributes(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    [series] = owner_client.get(f"{BASE}/series", {"Modality": "CT"}).json()
    assert series["0020000D"]["Value"] == [ct.study] and series["00100020"]["Value"] == ["P1001"]
    [instance] = owner_client.get(f"{BASE}/instances", {"SOPInstanceUID": ct.sops[1]}).json()
    assert instance["00200013"]["Value"] == [2] and instance["00100020"]["Value"] == ["P1001"]


def test_another_clinic_finds_nothing_by_any_route_until_a_grant(alliance_world, stranger_client, ct) -> None:  # type: ignore[no-untyped-def]
    routes = [
        f"{BASE}/studies",
        f"{BASE}/series",
        f"{BASE}/instances",
        f"{ct.url}/series",
        f"{ct.url}/instances",
        f"{ct.url}/series/{ct.series}/instances",
    ]
    assert [stranger_client.get(route).status_code for route in routes] == [204] * len(routes)
    study = access.get_study_for(resolve_principal(alliance_world.owner.user), ct.study)
    grants.grant_study(
        study=study, grantee=grants.Grantee.institution(alliance_world.clin_b), basis="consult:1", by=audit.SYSTEM
    )
    assert [stranger_client.get(route).status_code for route in routes] == [200] * len(routes)


def test_alliance_admin_sees_no_studies(alliance_world, ct) -> None:  # type: ignore[no-untyped-def]
    from tests.dicomweb.conftest import token_client

    assert token_client(alliance_world.alliance_admin).get(f"{BASE}/studies").status_code == 204


def test_anonymous_is_401_and_session_works(alliance_world, client, ct) -> None:  # type: ignore[no-untyped-def]
    assert client.get(f"{BASE}/studies").status_code == 401
    client.force_login(alliance_world.colleague.user)
    assert uids(client.get(f"{BASE}/studies")) == [ct.study]


def test_bearer_token_is_accepted(alliance_world, ct) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    from alliance import services

    token = services.token_create(doctor=alliance_world.owner, by=audit.SYSTEM)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    assert uids(client.get(f"{BASE}/studies")) == [ct.study]


def test_unsupported_accept_is_406(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    assert owner_client.get(f"{BASE}/studies", HTTP_ACCEPT="application/dicom+xml").status_code == 406
    assert owner_client.get(f"{BASE}/studies", HTTP_ACCEPT="application/json").status_code == 200


def test_one_audit_event_per_search_names_the_studies(alliance_world, owner_client, three_studies) -> None:  # type: ignore[no-untyped-def]
    before = AuditEvent.objects.count()
    owner_client.get(f"{BASE}/studies")
    [event] = AuditEvent.objects.order_by("-pk")[: AuditEvent.objects.count() - before]
    assert event.action == "dicomweb.search.study"
    assert len(event.detail["studies"]) == 3
    assert event.basis == "own-institution"
    assert event.actor_id == str(alliance_world.owner.user.pk)


def test_study_search_query_count_does_not_grow_with_results(
    owner_client, three_studies, django_assert_max_num_queries
) -> None:  # type: ignore[no-untyped-def]
    # the token with its doctor, the search, the audit event: nothing per result row
    with django_assert_max_num_queries(3):
        assert owner_client.get(f"{BASE}/studies", {"includefield": "all"}).status_code == 200


def test_an_external_viewer_origin_may_call_dicomweb(settings, owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    settings.CORS_ALLOWED_ORIGINS = ["https://viewer.example.org"]
    preflight = owner_client.options(
        f"{BASE}/studies",
        HTTP_ORIGIN="https://viewer.example.org",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    response = owner_client.get(f"{BASE}/studies", HTTP_ORIGIN="https://viewer.example.org")
    assert response.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    other = owner_client.get(f"{BASE}/studies", HTTP_ORIGIN="https://elsewhere.example.org")
    assert "Access-Control-Allow-Origin" not in other.headers
