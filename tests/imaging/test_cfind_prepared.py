"""C-FIND by identifiers goes as statements prepared once per PostgreSQL session, at every
level (the patient level's counts included), and answers what the device may see at each
execution; other matching goes as text."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alliance import audit, services
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from tests.dicomweb.conftest import store
from tests.imaging.dicomgen import make_ct_series

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("unprepared"),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's"),
]


@pytest.fixture
def peers(alliance_world: Any) -> tuple[Peer, Peer, Any]:
    datasets = make_ct_series(3, 16, 16, patient_id="P-88", patient_name="Li^Na")
    store(datasets, alliance_world.clin_a)
    own = services.device_create(
        institution=alliance_world.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM
    )
    other = services.device_create(
        institution=alliance_world.clin_b, ae_title="WS_B", host="*", port=104, by=audit.SYSTEM
    )
    return (
        Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=own),
        Peer("WS_B", "CLINB", "127.0.0.1", 4101, principal=other),
        datasets[0],
    )


def _find(peer: Peer, level: str, criteria: dict[str, str], keyword: str) -> tuple[list[str], list[str]]:
    """The values of `keyword` in the answers, and the texts sent."""
    query = QueryRequest(root="study", level=level, criteria=criteria, keywords=[keyword, *criteria])
    with CaptureQueriesContext(connection) as captured:
        found = [str(ds.get(keyword, "")) for ds in DjangoServices(check_host=False).find(peer, query)]
    return found, [q["sql"] for q in captured.captured_queries]


LEVELS = [
    ("PATIENT", "NumberOfPatientRelatedInstances", ["3"]),
    ("STUDY", "NumberOfStudyRelatedInstances", ["3"]),
    ("SERIES", "Modality", ["CT"]),
    ("IMAGE", "InstanceNumber", ["1", "2", "3"]),
]


@pytest.mark.parametrize(("level", "keyword", "count"), LEVELS)
def test_a_find_by_patient_id_is_prepared_then_executed_at_every_level(
    peers: Any, level: str, keyword: str, count: list[str]
) -> None:
    own, other, _ = peers
    found, first = _find(own, level, {"PatientID": "P-88"}, keyword)
    assert sorted(found) == count
    assert any(sql.startswith("PREPARE ") and "imaging_" in sql for sql in first)
    found, again = _find(own, level, {"PatientID": "P-88"}, keyword)
    assert sorted(found) == count
    assert not any(sql.startswith("PREPARE ") and "imaging_" in sql for sql in again)
    assert _find(other, level, {"PatientID": "P-88"}, keyword)[0] == [], "another clinic's device, same statement"


def test_a_find_by_study_uid_is_prepared_and_a_wild_card_is_not(peers: Any) -> None:
    own, _, first = peers
    found, sent = _find(own, "STUDY", {"StudyInstanceUID": str(first.StudyInstanceUID)}, "PatientID")
    assert found == ["P-88"] and any(sql.startswith("PREPARE ") and "imaging_study" in sql for sql in sent)
    found, sent = _find(own, "STUDY", {"PatientID": "P-8*"}, "PatientID")
    assert found == ["P-88"]
    assert not any(sql.startswith(("PREPARE ", "EXECUTE ")) and "imaging_" in sql for sql in sent)
