"""QIDO-RS's routine searches (only identifiers matched, first page, default fields) are sent
as statements prepared once per PostgreSQL session; what they find is decided by the values
of each execution, the caller's access included, never by the one that prepared them."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alliance import audit
from alliance.access import resolve_principal
from imaging import access, grants
from imaging.dicomweb import qido
from imaging.dicomweb.qido import INSTANCE_DEFAULTS, SERIES_DEFAULTS, STUDY_DEFAULTS, parse_search
from imaging.models import Study, StudyUserGrant
from imaging.query import Level, by_identifiers
from tests.dicomweb.conftest import BASE

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's"),
    pytest.mark.usefixtures("unprepared"),
]


def _search(client, path: str, params: dict[str, str]) -> tuple[int, list[str], str]:  # type: ignore[no-untyped-def]
    """Status, the studies' UIDs, and the text the search's query went as."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"{BASE}{path}", params, HTTP_ACCEPT="application/dicom+json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        statements = dict(cursor.fetchall())
    [sent] = [
        q["sql"]
        for q in captured.captured_queries
        if '"imaging_study"."study_uid"' in q["sql"] + statements.get(_statement(q["sql"]), "")
    ]
    found = [d["0020000D"]["Value"][0] for d in response.json()] if response.status_code == 200 else []
    return response.status_code, found, sent


def _statement(sent: str) -> str:
    """The name a text was executed as ("" when it went as plain SQL)."""
    return sent.rsplit("EXECUTE ", 1)[1].split("(", 1)[0].strip() if "EXECUTE " in sent else ""


def test_a_search_by_patient_id_is_prepared_once_then_executed(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    status, found, first = _search(owner_client, "/studies", {"PatientID": "P1001"})
    assert (status, found) == (200, [ct.study])
    assert first.startswith("PREPARE ") and _statement(first)
    status, found, again = _search(owner_client, "/studies", {"PatientID": "NOPE"})
    assert (status, found) == (204, [])
    assert again.startswith("EXECUTE ") and _statement(again) == _statement(first)
    status, found, _ = _search(owner_client, "/studies", {"PatientID": "P1001"})
    assert found == [ct.study]


def test_series_and_instances_of_a_study_are_prepared_too(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    for path in (f"/studies/{ct.study}/series", f"/studies/{ct.study}/series/{ct.series}/instances"):
        status, found, sent = _search(owner_client, path, {})
        assert status == 200 and set(found) == {ct.study} and _statement(sent), path


def test_a_grant_made_after_the_statement_was_prepared_is_seen_and_its_revocation_too(  # type: ignore[no-untyped-def]
    alliance_world, stranger_client, ct
) -> None:
    assert _search(stranger_client, "/studies", {"StudyInstanceUID": ct.study})[:2] == (204, [])
    study = access.get_study_for(resolve_principal(alliance_world.owner.user), ct.study)
    grants.grant_study(
        study=study, grantee=grants.Grantee.institution(alliance_world.clin_b), basis="consult:1", by=audit.SYSTEM
    )
    status, found, sent = _search(stranger_client, "/studies", {"StudyInstanceUID": ct.study})
    assert (status, found) == (200, [ct.study])
    assert sent.startswith("EXECUTE "), "the same statement, executed with the values of now"
    assert grants.revoke_grants(basis="consult:1", by=audit.SYSTEM) == 1
    assert _search(stranger_client, "/studies", {"StudyInstanceUID": ct.study})[:2] == (204, [])


@pytest.mark.parametrize(
    "params",
    [
        {"StudyDate": "20260301-20260331"},
        {"PatientID": "P10*"},
        {"PatientName": "Doe^Jane"},
        {"PatientID": "P1001", "offset": "0", "limit": "10"},
        {"PatientID": "P1001", "offset": "1"},
        {"PatientID": "P1001", "includefield": "StudyDescription"},
    ],
)
def test_other_searches_go_as_text(owner_client, ct, params) -> None:  # type: ignore[no-untyped-def]
    status, _, sent = _search(owner_client, "/studies", params)
    assert status in (200, 204)
    assert not _statement(sent) and not sent.startswith("PREPARE")


def test_only_single_identifier_values_are_routine() -> None:
    assert by_identifiers({"PatientID": "2024-00123"})
    assert by_identifiers({"StudyInstanceUID": "1.2.3", "AccessionNumber": "A7", "PatientName": "*"})
    assert not by_identifiers({})
    assert not by_identifiers({"PatientID": ""})
    assert not by_identifiers({"PatientID": "P1*"})
    assert not by_identifiers({"PatientID": "P?01"})
    assert not by_identifiers({"StudyInstanceUID": "1.2.3\\1.2.4"})
    assert not by_identifiers({"PatientID": "P1001", "Modality": "CT"})
    assert not by_identifiers({"PatientID": "P1001", "StudyDate": "20260301"})


# --- routine searches compiled once (qido._routine_statement) --------------------------------


def _principals(world: Any) -> list[Any]:
    return [
        world.owner,
        world.colleague,
        world.inst_admin_a,
        world.specialist,
        world.outsider_specialist,
        world.stranger,
        world.alliance_admin,
    ]


def _routine_searches(ct: Any) -> list[Any]:
    return [
        parse_search(QueryDict("PatientID=P1001"), Level.STUDY, {}, STUDY_DEFAULTS),
        parse_search(QueryDict("PatientID= P1001 &AccessionNumber=A-1"), Level.STUDY, {}, STUDY_DEFAULTS),
        parse_search(QueryDict("PatientName=*"), Level.STUDY, {"StudyInstanceUID": ct.study}, STUDY_DEFAULTS),
        parse_search(QueryDict(""), Level.SERIES, {"StudyInstanceUID": ct.study}, SERIES_DEFAULTS),
        parse_search(
            QueryDict(""),
            Level.IMAGE,
            {"StudyInstanceUID": ct.study, "SeriesInstanceUID": ct.series},
            INSTANCE_DEFAULTS,
        ),
        parse_search(QueryDict(f"SOPInstanceUID={ct.sops[1]}"), Level.IMAGE, {}, INSTANCE_DEFAULTS),
    ]


@pytest.fixture
def granted(alliance_world: Any, ct: Any) -> Any:
    """ct shared three ways: with clinic B until tomorrow, with the reading desk, and with one
    specialist of the hospital by a user grant."""
    study = Study.objects.get(study_uid=ct.study)
    grants.grant_study(
        study=study,
        grantee=grants.Grantee.institution(alliance_world.clin_b),
        basis="consult:1",
        by=audit.SYSTEM,
        expires_at=timezone.now() + dt.timedelta(days=1),
    )
    grants.grant_study(
        study=study, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:2", by=audit.SYSTEM
    )
    StudyUserGrant.objects.create(
        user=alliance_world.outsider_specialist.user,
        permission=Permission.objects.get(codename="read_study"),
        content_object=study,
        basis="consult:3",
    )
    return alliance_world


def test_a_kept_query_is_the_orm_s_own_for_every_principal_and_routine_search(granted: Any, ct: Any) -> None:
    """The statement filled from the kept shape is, text and parameters, what the ORM compiles
    for that principal and search at that moment: for each persona, own institution, institution
    grant (with an expiry), desk and user grants, and none."""
    moment = timezone.now()
    with mock.patch("django.utils.timezone.now", return_value=moment):
        for doctor in _principals(granted):
            principal = resolve_principal(doctor.user)
            for search in _routine_searches(ct):
                assert search.routine
                kept = qido._routine_statement(search, principal)
                again = qido._routine_statement(search, principal)  # from the kept shape
                window = qido._window(search, access.studies_visible_to(principal))
                sql, params = window.query.get_compiler(using=window.db).as_sql()
                assert kept == again == (sql, list(params)), (doctor.user.username, search)


def test_the_kept_query_finds_what_the_orm_finds(granted: Any, ct: Any) -> None:
    for doctor in _principals(granted):
        principal = resolve_principal(doctor.user)
        for search in _routine_searches(ct):
            sql, values = qido._routine_statement(search, principal)
            with connection.cursor() as cursor:
                cursor.execute(sql, values)
                kept = cursor.fetchall()
            assert kept == list(qido._window(search, access.studies_visible_to(principal))), doctor.user.username
    seen = {
        doctor.user.username: bool(qido.run(_routine_searches(ct)[0], resolve_principal(doctor.user), "")[0])
        for doctor in _principals(granted)
    }
    assert seen == {
        "owner": True,
        "colleague": True,
        "admin_a": True,
        "specialist": True,
        "outsider_specialist": True,
        "stranger": True,
        "alliance_admin": False,
    }


def test_an_expiry_passes_between_two_searches_of_a_kept_shape(granted: Any, stranger_client: Any, ct: Any) -> None:
    assert _search(stranger_client, "/studies", {"PatientID": "P1001"})[:2] == (200, [ct.study])
    later = timezone.now() + dt.timedelta(days=2)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert _search(stranger_client, "/studies", {"PatientID": "P1001"})[:2] == (204, [])


def test_a_shape_whose_values_cannot_be_placed_is_not_kept(
    owner_client: Any, ct: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qido, "_COMPILED", {})
    monkeypatch.setattr(qido, "_stand_in", lambda number: "P10*")  # a value the ORM writes otherwise
    assert _search(owner_client, "/studies", {"PatientID": "P1001"})[:2] == (200, [ct.study])
    assert list(qido._COMPILED.values()) == [None]
    assert _search(owner_client, "/studies", {"PatientID": "NOPE"})[:2] == (204, [])
