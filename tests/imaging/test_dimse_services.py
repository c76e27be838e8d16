"""imaging/dimse_services.py: what a C-STORE that could not be stored answers (PS3.4 B.2.3)."""

from __future__ import annotations

import errno

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.test.utils import CaptureQueriesContext

from alliance import audit, services
from alliance.models import AuditEvent
from imaging import dimse_services
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest, ReceivedInstance
from imaging.dicom.status import DimseFailure, Status
from imaging.dimse_services import DjangoServices
from imaging.received import IngestError, storage_failed
from tests.dicomweb.conftest import store
from tests.imaging.dicomgen import make_ct_series

pytestmark = pytest.mark.django_db


def _store_failing_with(clinic, monkeypatch, error: Exception) -> DimseFailure:  # type: ignore[no-untyped-def]
    device = services.device_create(institution=clinic, ae_title="CT_A", host="*", port=104, by=audit.SYSTEM)

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(dimse_services, "ingest_bytes", failing)
    peer = Peer("CT_A", "CLINA", "127.0.0.1", 4100, principal=device)
    instance = ReceivedInstance("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", lambda: b"DICM")
    with pytest.raises(DimseFailure) as failed:
        DjangoServices(check_host=False).store(peer, instance)
    return failed.value


@pytest.mark.parametrize(
    "error",
    [
        InterfaceError("connection already closed"),
        OperationalError("server closed the connection unexpectedly"),
        RuntimeError("anything else"),
    ],
    ids=["lost-connection", "database-gone", "unexpected"],
)
def test_a_store_that_fails_for_the_database_or_anything_else_is_refused_out_of_resources(
    clinic, monkeypatch, error: Exception
) -> None:  # type: ignore[no-untyped-def]
    """0x0110 (processing failure) is no C-STORE status; 0xA700 tells the sender to try again."""
    assert _store_failing_with(clinic, monkeypatch, error).status == Status.OUT_OF_RESOURCES


def test_a_full_store_is_refused_out_of_resources_and_is_507_over_http(clinic, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    full = storage_failed("the file could not be stored (%(error)s)", OSError(errno.ENOSPC, "No space left on device"))
    assert (full.code, full.dicom_status, full.http_status) == ("out-of-space", 0xA700, 507)
    over_quota = storage_failed("the file could not be stored (%(error)s)", OSError(errno.EDQUOT, "Disk quota"))
    assert over_quota.code == "out-of-space"
    failure = _store_failing_with(clinic, monkeypatch, full)
    assert (failure.status, failure.reason) == (0xA700, full.reason)


def test_other_refusals_keep_their_status(clinic, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    conflict = IngestError("uid-conflict", "SOP Instance UID %(uid)s is already in use", uid="1.2.3")
    assert _store_failing_with(clinic, monkeypatch, conflict).status == 0xA900


@pytest.mark.django_db(transaction=True)  # the failed store lets its connection go; the event is committed
def test_a_store_that_fails_unexpectedly_is_audited_as_a_failed_store(clinic, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from alliance.models import AuditEvent

    _store_failing_with(clinic, monkeypatch, RuntimeError("anything else"))

    event = AuditEvent.objects.get(action="instance.store")
    assert (event.object_id, event.outcome) == ("1.2.3.4", AuditEvent.Outcome.FAILURE)
    assert event.detail["code"] == "storage-failed" and "RuntimeError" in event.detail["reason"]


@pytest.mark.django_db(transaction=True)
def test_a_find_is_audited_before_its_answers_without_waiting_for_the_disk(alliance_world) -> None:  # type: ignore[no-untyped-def]
    """C-FIND's events are a read's, as QIDO-RS's: written before the first answer goes out,
    in one statement committed asynchronously (alliance.audit.record_many(read=True)); a find
    that matches nothing is audited the same way."""
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    datasets = make_ct_series(2, 8, 8, patient_id="P-77", patient_name="Wang^Fang")
    store(datasets, alliance_world.clin_a)
    device = services.device_create(
        institution=alliance_world.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM
    )
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    for patient_id, matches in (("P-77", 1), ("P-NONE", 0)):
        query = QueryRequest(root="study", level="STUDY", criteria={"PatientID": patient_id}, keywords=["PatientID"])
        answers = DjangoServices(check_host=False).find(peer, query)
        with CaptureQueriesContext(connection) as captured:
            first = next(answers, None)
        assert (first is not None) == bool(matches)
        [audited] = [q["sql"] for q in captured.captured_queries if "'dicom.find'" in q["sql"]]
        assert audited.startswith("SET LOCAL synchronous_commit TO OFF; ")
        assert list(answers) == []
    found = AuditEvent.objects.filter(action="dicom.find", actor_name="WS_A").order_by("id")
    assert [(e.object_id, e.detail["matches"]) for e in found] == [(datasets[0].StudyInstanceUID, 1), ("", 0)]
