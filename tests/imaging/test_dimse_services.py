"""imaging/dimse_services.py: what a C-STORE that could not be stored answers (PS3.4 B.2.3)."""

from __future__ import annotations

import errno

import pytest
from django.db import InterfaceError, OperationalError

from alliance import audit, services
from imaging import dimse_services
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import ReceivedInstance
from imaging.dicom.status import DimseFailure, Status
from imaging.dimse_services import DjangoServices
from imaging.received import IngestError, storage_failed

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
