"""The worklist, MPPS and storage commitment handlers with faked pynetdicom events and fake
services, and the commitment report over a real in-process association on each DIMSE path."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND, N_ACTION, N_CREATE, N_SET
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel

from imaging.dicom.handlers import Handlers, Peer
from imaging.dicom.procedures import (
    MPPS,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    WORKLIST_FIND,
    CommitmentReport,
    CommitmentRequest,
    Failure,
    PerformedStep,
    Reference,
    WorklistQuery,
)
from imaging.dicom.scp import build_ae, make_server
from imaging.dicom.status import MPPS_MAY_NO_LONGER_BE_UPDATED, DimseFailure, Status
from tests.imaging.test_dicom_handlers import Assoc, FakeServices


class WorkflowServices(FakeServices):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worklist_queries: list[WorklistQuery] = []
        self.created: list[tuple[str, PerformedStep]] = []
        self.set: list[tuple[str, PerformedStep]] = []
        self.reports: list[tuple[CommitmentReport, bool]] = []
        self.reported = threading.Event()

    def worklist(self, peer: Peer, query: WorklistQuery) -> Iterable[Dataset]:
        self.worklist_queries.append(query)
        self._maybe_fail()
        return iter(self.matches)

    def mpps_create(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> str:
        self._maybe_fail()
        self.created.append((sop_instance_uid, step))
        return sop_instance_uid or "1.2.826.0.1.3680043.10.77"

    def mpps_set(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> None:
        self._maybe_fail()
        self.set.append((sop_instance_uid, step))

    def commitment_requested(self, peer: Peer, request: CommitmentRequest) -> CommitmentReport:
        self._maybe_fail()
        committed = request.references[:1]
        failed = tuple(Failure(ref) for ref in request.references[1:])
        return CommitmentReport(request.transaction_uid, committed, failed, retrieve_ae="CLINA", commitment_id=7)

    def commitment_reported(self, peer: Peer, report: CommitmentReport, delivered: bool) -> None:
        self.reports.append((report, delivered))
        self.reported.set()


def accepted(services: WorkflowServices) -> tuple[Handlers, Assoc]:
    handlers = Handlers(services)
    assoc = Assoc()
    handlers.on_requested(SimpleNamespace(assoc=assoc))
    return handlers, assoc


def mpps_attributes(status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    item = Dataset()
    item.AccessionNumber = "A1"
    item.ScheduledProcedureStepID = "SPS1"
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.Modality = "CT"
    return ds


def n_create(assoc: Assoc, attributes: Dataset | None, uid: str | None = None, sop_class: str = MPPS) -> Any:
    request = N_CREATE()
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = uid
    return SimpleNamespace(assoc=assoc, request=request, attribute_list=attributes)


def test_worklist_find_answers_a_pending_response_per_match() -> None:
    services = WorkflowServices()
    services.matches = [Dataset(), Dataset()]
    handlers, assoc = accepted(services)
    request = C_FIND()
    request.AffectedSOPClassUID = WORKLIST_FIND
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.ScheduledProcedureStepSequence = [Dataset()]
    identifier.ScheduledProcedureStepSequence[0].Modality = "CT"
    event = SimpleNamespace(assoc=assoc, request=request, identifier=identifier, is_cancelled=False)
    answers = list(handlers.on_find(event))
    assert [status for status, _ in answers] == [Status.PENDING, Status.PENDING]
    assert services.worklist_queries[0].step_criteria == {"Modality": "CT"}
    assert services.queries == []  # not a query of the image index


def test_worklist_find_refused_by_the_services_answers_its_status() -> None:
    services = WorkflowServices(fail=DimseFailure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "bad date"))
    handlers, assoc = accepted(services)
    request = C_FIND()
    request.AffectedSOPClassUID = WORKLIST_FIND
    event = SimpleNamespace(assoc=assoc, request=request, identifier=Dataset(), is_cancelled=False)
    ((status, identifier),) = list(handlers.on_find(event))
    assert (status.Status, status.ErrorComment, identifier) == (0xA900, "bad date", None)


def test_mpps_n_create_without_an_instance_uid_is_answered_with_the_one_made() -> None:
    services = WorkflowServices()
    handlers, assoc = accepted(services)
    status, reply = handlers.on_n_create(n_create(assoc, mpps_attributes()))
    assert status == Status.SUCCESS
    assert reply.AffectedSOPInstanceUID == "1.2.826.0.1.3680043.10.77"
    ((uid, step),) = services.created
    assert uid == "" and step.scheduled[0].accession_number == "A1" and step.modality == "CT"


@pytest.mark.parametrize(
    ("attributes", "sop_class", "expected"),
    [
        (mpps_attributes("COMPLETED"), MPPS, Status.INVALID_ATTRIBUTE_VALUE),
        (None, MPPS, Status.MISSING_ATTRIBUTE),
        (mpps_attributes(), "1.2.840.10008.3.1.2.3.4", Status.NO_SUCH_SOP_CLASS),
    ],
)
def test_a_malformed_mpps_n_create_is_refused_with_its_status(attributes, sop_class, expected) -> None:  # type: ignore[no-untyped-def]
    services = WorkflowServices()
    handlers, assoc = accepted(services)
    status, _reply = handlers.on_n_create(n_create(assoc, attributes, "1.2.3", sop_class))
    assert status.Status == expected
    assert services.created == []


def test_an_n_set_on_a_finished_mpps_answers_0110_with_error_id_a710() -> None:
    services = WorkflowServices(
        fail=DimseFailure(Status.PROCESSING_FAILURE, "finished", error_id=MPPS_MAY_NO_LONGER_BE_UPDATED)
    )
    handlers, assoc = accepted(services)
    request = N_SET()
    request.RequestedSOPClassUID = MPPS
    request.RequestedSOPInstanceUID = "1.2.3"
    modifications = Dataset()
    modifications.PerformedProcedureStepStatus = "COMPLETED"
    status, _ = handlers.on_n_set(SimpleNamespace(assoc=assoc, request=request, modification_list=modifications))
    assert (status.Status, status.ErrorID) == (0x0110, 0xA710)


def n_action(assoc: Assoc, action_type: int = 1, instance: str = STORAGE_COMMITMENT_INSTANCE) -> Any:
    request = N_ACTION()
    request.RequestedSOPClassUID = STORAGE_COMMITMENT
    request.RequestedSOPInstanceUID = instance
    request.ActionTypeID = action_type
    info = Dataset()
    info.TransactionUID = "1.2.3.4"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5"
    info.ReferencedSOPSequence = [ref]
    return SimpleNamespace(assoc=assoc, request=request, action_information=info)


@pytest.mark.parametrize(
    ("action_type", "instance", "expected"),
    [(2, STORAGE_COMMITMENT_INSTANCE, Status.NO_SUCH_ACTION), (1, "1.2.3", Status.NO_SUCH_SOP_INSTANCE)],
)
def test_a_malformed_commitment_request_is_refused_and_no_report_follows(action_type, instance, expected) -> None:  # type: ignore[no-untyped-def]
    services = WorkflowServices()
    handlers, assoc = accepted(services)
    status, _ = handlers.on_n_action(n_action(assoc, action_type, instance))
    assert status.Status == expected
    assert not services.reported.wait(0.2)


# --- a real association ----------------------------------------------------------------------


@pytest.fixture
def running(dimse_path) -> Iterator[tuple[int, WorkflowServices]]:  # type: ignore[no-untyped-def]
    services = WorkflowServices()
    server = make_server(build_ae(), "127.0.0.1", 0, services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], services
    server.shutdown()


def commitment_request(n: int = 2) -> Dataset:
    info = Dataset()
    info.TransactionUID = generate_uid()
    items = []
    for _ in range(n):
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = generate_uid()
        items.append(ref)
    info.ReferencedSOPSequence = items
    return info


@pytest.mark.parametrize("attempt", range(5))
def test_the_commitment_report_follows_its_response_on_the_same_association(running, attempt) -> None:  # type: ignore[no-untyped-def]
    """PS3.4 J.3.3: the N-EVENT-REPORT comes after the N-ACTION response (it went out before it
    while pynetdicom marked its reactor paused for the handler); five rounds on each path."""
    port, services = running
    received: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        received.append((event.request.EventTypeID, event.event_information))
        arrived.set()
        return 0x0000, None

    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(StorageCommitmentPushModel)
    assoc = scu.associate("127.0.0.1", port, ae_title="CLINA", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    request = commitment_request()
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    assert arrived.wait(10)
    assert services.reported.wait(10)
    assoc.release()
    ((event_type, info),) = received
    assert event_type == 2 and info.TransactionUID == request.TransactionUID
    assert len(info.ReferencedSOPSequence) == 1 and info.FailedSOPSequence[0].FailureReason == 0x0112
    ((report, delivered),) = services.reports
    assert delivered and report.commitment_id == 7


def test_a_report_the_requester_does_not_take_is_left_for_an_association_of_its_own(running) -> None:  # type: ignore[no-untyped-def]
    port, services = running
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(StorageCommitmentPushModel)
    assoc = scu.associate("127.0.0.1", port, ae_title="CLINA")  # no N-EVENT-REPORT handler: 0x0110
    status, _ = assoc.send_n_action(commitment_request(1), 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    assert services.reported.wait(10)
    assoc.release()
    ((report, delivered),) = services.reports
    assert not delivered and len(report.committed) == 1 and not report.failed


def test_an_mpps_round_over_a_real_association(running) -> None:  # type: ignore[no-untyped-def]
    port, services = running
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(ModalityPerformedProcedureStep)
    assoc = scu.associate("127.0.0.1", port, ae_title="CLINA")
    uid = generate_uid()
    status, _ = assoc.send_n_create(mpps_attributes(), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assoc.release()
    assert status.Status == 0x0000
    assert [u for u, _ in services.created] == [uid] and services.set[0][1].status == "COMPLETED"


def test_references_and_reports_as_the_event_information_says_them() -> None:
    ref = Reference(CTImageStorage, "1.2.3")
    report = CommitmentReport("1.2.9", committed=(ref,), failed=())
    info = report.event_information()
    assert report.event_type == 1 and "FailedSOPSequence" not in info
    assert info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3"
