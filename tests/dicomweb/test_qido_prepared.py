"""QIDO-RS's routine searches (only identifiers matched, first page, default fields) are sent
as statements prepared once per PostgreSQL session; what they find is decided by the values
of each execution, the caller's access included, never by the one that prepared them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alliance import audit
from alliance.access import resolve_principal
from imaging import access, grants
from imaging.query import by_identifiers
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
