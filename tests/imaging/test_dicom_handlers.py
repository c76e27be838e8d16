"""The DIMSE handlers with faked pynetdicom events and fake services (no database, no sockets),
plus one in-process association against the real pynetdicom server."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE, A_RELEASE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imaging.dicom import accel
from imaging.dicom.handlers import (
    Decision,
    Handlers,
    Peer,
    RejectReason,
    move_contexts,
    set_no_delay,
)
from imaging.dicom.identifiers import Destination, QueryRequest, ReceivedInstance, Retrieval, StoredObject
from imaging.dicom.scp import build_ae, make_server
from imaging.dicom.status import DimseFailure, Status


class FakeServices:
    def __init__(self, *, accept: bool = True, fail: DimseFailure | Exception | None = None) -> None:
        self.accept = accept
        self.fail = fail
        self.stored: list[ReceivedInstance] = []
        self.queries: list[QueryRequest] = []
        self.ended: list[Peer] = []
        self.matches: list[Dataset] = []
        self.retrieval = Retrieval(objects=[])
        self.releasing: list[Peer] = []
        self.hold_release: threading.Event | None = None
        self.store_threads_ended = 0
        self.refused: list[tuple[str, str, str]] = []

    def authorize_association(self, peer: Peer) -> Decision:
        if self.fail is not None and not isinstance(self.fail, DimseFailure):
            raise self.fail
        if not self.accept:
            return Decision(reject=RejectReason.CALLING_AE_NOT_RECOGNIZED)
        return Decision(principal="device-1")

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail

    def store(self, peer: Peer, instance: ReceivedInstance) -> None:
        self._maybe_fail()
        self.stored.append(instance)

    def find(self, peer: Peer, query: QueryRequest) -> Iterable[Dataset]:
        self.queries.append(query)
        self._maybe_fail()
        return iter(self.matches)

    def retrieve(self, peer: Peer, query: QueryRequest, move_destination: str | None) -> Retrieval:
        self.queries.append(query)
        self._maybe_fail()
        return self.retrieval

    def association_releasing(self, peer: Peer) -> None:
        self.releasing.append(peer)
        if self.hold_release is not None:
            self.hold_release.wait(3600)

    def association_ended(self, peer: Peer) -> None:
        self.ended.append(peer)

    def store_refused(self, peer: Peer, sop_instance_uid: str, code: str, reason: str) -> None:
        self.refused.append((sop_instance_uid, code, reason))

    def store_thread_ended(self) -> None:
        self.store_threads_ended += 1


class FakeAcse:
    def __init__(self) -> None:
        self.rejected: tuple[int, int, int] | None = None

    def send_reject(self, result: int, source: int, diagnostic: int) -> None:
        self.rejected = (result, source, diagnostic)

    def send_release(self, is_response: bool = False) -> None:
        self.released = is_response


class Assoc:
    """Hashable, weak-referenceable stand-in for pynetdicom's Association."""

    def __init__(self) -> None:
        primitive = SimpleNamespace(calling_ae_title="CT_CLINA ", called_ae_title="CLINA")
        self.requestor = SimpleNamespace(primitive=primitive, address="127.0.0.1", port=40000)
        self.acceptor = SimpleNamespace(ae_title="CLOUDPACS")
        self.acse = FakeAcse()
        self.killed = False
        self.accepted_contexts: list[Any] = []

    def kill(self) -> None:
        self.killed = True

    def send_c_store(self, dataset: Any, **kwargs: Any) -> Any:
        raise AssertionError("the handlers only yield; pynetdicom sends")


def accepted(services: FakeServices) -> tuple[Handlers, Assoc]:
    handlers = Handlers(services)
    assoc = Assoc()
    handlers.on_requested(SimpleNamespace(assoc=assoc))
    return handlers, assoc


def query_request(sop_class: str) -> C_FIND | C_MOVE | C_GET:
    """The request primitive pynetdicom would hand over for this query/retrieve SOP class."""
    operation = UID(sop_class).name.rsplit(" ", 1)[-1]  # "... Information Model - FIND"
    request = {"FIND": C_FIND, "MOVE": C_MOVE, "GET": C_GET}[operation]()
    request.AffectedSOPClassUID = sop_class
    return request


def query_event(assoc: Assoc, sop_class: str, identifier: Dataset | None, **extra: Any) -> Any:
    return SimpleNamespace(
        assoc=assoc,
        identifier=identifier,
        request=query_request(sop_class),
        is_cancelled=False,
        **extra,
    )


def study_identifier(**values: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = values.pop("level", "STUDY")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_unknown_peer_is_rejected_with_the_calling_ae_diagnostic() -> None:
    handlers = Handlers(FakeServices(accept=False))
    assoc = Assoc()
    handlers.on_requested(SimpleNamespace(assoc=assoc))
    assert assoc.acse.rejected == (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
    assert assoc.killed


def test_accepted_peer_is_remembered_and_answers_as_the_called_ae() -> None:
    handlers, assoc = accepted(FakeServices())
    peer = handlers.peer(SimpleNamespace(assoc=assoc))
    assert (peer.calling_ae, peer.called_ae, peer.host) == ("CT_CLINA", "CLINA", "127.0.0.1")
    assert peer.principal == "device-1"
    assert assoc.acceptor.ae_title == "CLINA"
    assert assoc.acse.rejected is None


def test_a_failing_decision_rejects_transiently() -> None:
    handlers = Handlers(FakeServices(fail=RuntimeError("database down")))
    assoc = Assoc()
    handlers.on_requested(SimpleNamespace(assoc=assoc))
    assert assoc.acse.rejected == (0x02, 0x03, 0x01)


def _acse_received(assoc: Assoc, primitive: Any) -> Any:
    return SimpleNamespace(assoc=assoc, primitive=primitive)


def test_a_release_request_lets_the_services_finish_and_a_failure_there_does_not_stop_it() -> None:
    services = FakeServices()
    handlers, assoc = accepted(services)
    response = A_RELEASE()
    response.result = "affirmative"
    handlers.on_acse_received(_acse_received(assoc, response))  # our own release's answer: nothing to do
    handlers.on_acse_received(_acse_received(assoc, A_ASSOCIATE()))
    assert services.releasing == []
    handlers.on_acse_received(_acse_received(assoc, A_RELEASE()))
    assert [p.calling_ae for p in services.releasing] == ["CT_CLINA"]
    failing = FakeServices()
    failing.association_releasing = lambda peer: 1 / 0  # type: ignore[method-assign]
    handlers, assoc = accepted(failing)
    handlers.on_acse_received(_acse_received(assoc, A_RELEASE()))  # logged, not raised


def test_end_of_association_tells_the_services_once() -> None:
    services = FakeServices()
    handlers, assoc = accepted(services)
    handlers.on_ended(SimpleNamespace(assoc=assoc))
    handlers.on_ended(SimpleNamespace(assoc=assoc))
    assert len(services.ended) == 1


def store_event(assoc: Assoc) -> Any:
    request = C_STORE()
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.3.4"
    return SimpleNamespace(
        assoc=assoc,
        request=request,
        context=SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian),
        encoded_dataset=lambda: b"encoded",
    )


def test_store_passes_the_encoded_instance_and_answers_success() -> None:
    services = FakeServices()
    handlers, assoc = accepted(services)
    assert handlers.on_store(store_event(assoc)) == Status.SUCCESS
    (instance,) = services.stored
    assert (instance.sop_instance_uid, instance.transfer_syntax_uid, instance.part10()) == (
        "1.2.3.4",
        ExplicitVRLittleEndian,
        b"encoded",
    )


def test_store_received_into_a_file_passes_its_path() -> None:
    services = FakeServices()
    handlers, assoc = accepted(services)
    event = store_event(assoc)
    event.dataset_path = Path("/data/tmp/tmpabc.dcm")
    handlers.on_store(event)
    assert services.stored[0].path == Path("/data/tmp/tmpabc.dcm")


def test_refused_store_answers_its_status_with_the_reason() -> None:
    services = FakeServices(fail=DimseFailure(0xA900, "PatientID (0010,0020) is missing " + "x" * 80))
    handlers, assoc = accepted(services)
    answer = handlers.on_store(store_event(assoc))
    assert answer.Status == 0xA900
    assert answer.ErrorComment.startswith("PatientID (0010,0020) is missing") and len(answer.ErrorComment) == 64


@pytest.mark.parametrize(
    ("reason", "comment"),
    [
        ("PatientID '1\\2' is invalid", "PatientID '1/2' is invalid"),  # a backslash would make two values
        ("line one\nline\ttwo\x00", "line one line two?"),
        ("Wang^Fang=王^芳", "Wang^Fang=?^?"),  # the command set is in the default repertoire
        ("", None),
    ],
)
def test_a_refusal_reason_becomes_one_valid_error_comment(reason: str, comment: str | None) -> None:
    handlers, assoc = accepted(FakeServices(fail=DimseFailure(0xA900, reason)))
    answer = handlers.on_store(store_event(assoc))
    assert answer.Status == 0xA900
    assert answer.get("ErrorComment") == comment
    if comment is not None:
        assert isinstance(answer.ErrorComment, str)  # one value, not pydicom's MultiValue


def test_unexpected_store_error_is_a_processing_failure() -> None:
    handlers, assoc = accepted(FakeServices(fail=OSError("disk full")))
    assert handlers.on_store(store_event(assoc)).Status == Status.PROCESSING_FAILURE


def test_find_yields_each_match_as_pending() -> None:
    services = FakeServices()
    services.matches = [Dataset(), Dataset()]
    handlers, assoc = accepted(services)
    identifier = study_identifier(PatientName="DOE*", StudyInstanceUID=["1.2.3", "1.2.4"], StudyDate="")
    answers = list(handlers.on_find(query_event(assoc, StudyRootQueryRetrieveInformationModelFind, identifier)))
    assert [status for status, _ in answers] == [Status.PENDING, Status.PENDING]
    query = services.queries[0]
    assert (query.root, query.level) == ("STUDY", "STUDY")
    assert query.criteria == {"PatientName": "DOE*", "StudyInstanceUID": "1.2.3\\1.2.4", "StudyDate": ""}
    assert query.keywords == ["StudyDate", "PatientName", "StudyInstanceUID"]


@pytest.mark.parametrize(
    ("sop_class", "level"),
    [(StudyRootQueryRetrieveInformationModelFind, "PATIENT"), (PatientRootQueryRetrieveInformationModelFind, "FRAME")],
)
def test_find_with_a_level_the_model_lacks_fails_with_a900(sop_class: str, level: str) -> None:
    services = FakeServices()
    handlers, assoc = accepted(services)
    ((status, identifier),) = handlers.on_find(query_event(assoc, sop_class, study_identifier(level=level)))
    assert status.Status == 0xA900 and identifier is None
    assert services.queries == []


def test_find_stops_when_the_peer_cancels() -> None:
    services = FakeServices()
    services.matches = [Dataset(), Dataset()]
    handlers, assoc = accepted(services)
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelFind, study_identifier())
    answers = handlers.on_find(event)
    assert next(answers)[0] == Status.PENDING
    event.is_cancelled = True
    assert next(answers) == (Status.CANCEL, None)


def test_refused_find_answers_the_services_status() -> None:
    handlers, assoc = accepted(FakeServices(fail=DimseFailure(0xA900, "StudyDate='20241399': a date is YYYYMMDD")))
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelFind, study_identifier(StudyDate=""))
    ((status, _),) = handlers.on_find(event)
    assert (status.Status, status.ErrorComment) == (0xA900, "StudyDate='20241399': a date is YYYYMMDD")


def stored_ct(transfer_syntax: str = ExplicitVRLittleEndian) -> tuple[StoredObject, bytes]:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "1001"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    obj = StoredObject(CTImageStorage, ds.SOPInstanceUID, transfer_syntax, lambda: io.BytesIO(data))
    return obj, data


def test_move_yields_the_destination_with_contexts_then_each_instance() -> None:
    services = FakeServices()
    objects = [stored_ct()[0], stored_ct()[0]]
    services.retrieval = Retrieval(objects=objects, destination=Destination("WS_CLINA", "10.0.0.5", 104))
    handlers, assoc = accepted(services)
    event = query_event(
        assoc,
        StudyRootQueryRetrieveInformationModelMove,
        study_identifier(StudyInstanceUID="1.2.3"),
        move_destination="WS_CLINA ",
    )
    answers = list(handlers.on_move(event))
    host, port, options = answers[0]
    assert (host, port) == ("10.0.0.5", 104)
    assert [cx.abstract_syntax for cx in options["contexts"]] == [CTImageStorage]
    assert answers[1] == 2
    assert [(s, ds.SOPInstanceUID) for s, ds in answers[2:]] == [(Status.PENDING, o.sop_instance_uid) for o in objects]


def test_move_to_an_unknown_destination_lets_pynetdicom_answer_a801() -> None:
    handlers, assoc = accepted(FakeServices(fail=DimseFailure(Status.MOVE_DESTINATION_UNKNOWN, "no such device")))
    event = query_event(
        assoc, StudyRootQueryRetrieveInformationModelMove, study_identifier(StudyInstanceUID="1"), move_destination="X"
    )
    assert list(handlers.on_move(event)) == [(None, None)]


def test_get_yields_the_count_then_each_instance() -> None:
    services = FakeServices()
    services.retrieval = Retrieval(objects=[stored_ct()[0]])
    handlers, assoc = accepted(services)
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelGet, study_identifier(StudyInstanceUID="1"))
    answers = list(handlers.on_get(event))
    assert answers[0] == 1 and answers[1][0] == Status.PENDING


def test_refused_get_answers_one_failed_sub_operation_with_the_reason() -> None:
    handlers, assoc = accepted(FakeServices(fail=DimseFailure(0xA900, "a STUDY retrieve needs StudyInstanceUID")))
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelGet, study_identifier())
    count, (status, _) = handlers.on_get(event)
    assert count == 1 and status.Status == 0xA900


def test_move_contexts_offer_each_stored_syntax_once_with_native_fallbacks() -> None:
    objects = [stored_ct()[0], stored_ct()[0], stored_ct(JPEG2000Lossless)[0]]
    contexts = move_contexts(objects)
    assert [(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in contexts] == [
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, JPEG2000Lossless),
    ]
    assert len(contexts[0].transfer_syntax) == 2 and contexts[1].transfer_syntax == [JPEG2000Lossless]


def test_get_yields_the_decoded_instance_on_pynetdicom_s_own_path() -> None:
    services = FakeServices()
    obj, _ = stored_ct()
    services.retrieval = Retrieval(objects=[obj])
    handlers, assoc = accepted(services)
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelGet, study_identifier(StudyInstanceUID="1"))
    _, (_, dataset) = handlers.on_get(event)
    assert isinstance(dataset, Dataset) and not isinstance(dataset, accel.StoredFile)
    assert (dataset.SOPInstanceUID, dataset.PatientID) == (obj.sop_instance_uid, "1001")


def test_get_yields_the_stored_file_when_accelerated(accelerated) -> None:  # type: ignore[no-untyped-def]
    services = FakeServices()
    obj, _ = stored_ct()
    services.retrieval = Retrieval(objects=[obj])
    handlers, assoc = accepted(services)
    event = query_event(assoc, StudyRootQueryRetrieveInformationModelGet, study_identifier(StudyInstanceUID="1"))
    _, (_, dataset) = handlers.on_get(event)
    assert isinstance(dataset, accel.StoredFile) and dataset.stored is obj


def test_set_no_delay_turns_off_nagle() -> None:
    with socket.socket() as sock:
        set_no_delay(SimpleNamespace(assoc=SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=sock)))))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def received_data_set(event: Any) -> bytes:
    """The data set an SCU in this process received: in memory, or in a file after its meta
    (when accel is installed, as for the server, pynetdicom in this process receives so)."""
    path = event.dataset_path
    if path is None:
        return bytes(event.encoded_dataset(False))
    # pynetdicom closes and removes such a file after the handler on its service-class path
    # only, not on a C-GET requestor's (Association._c_store_scp): done here.
    event.request._dataset_file.close()
    data = path.read_bytes()
    path.unlink()
    return data[144 + int.from_bytes(data[140:144], "little") :]


@pytest.fixture
def running_server(dimse_path):  # type: ignore[no-untyped-def]
    """The real server with fake services, on each DIMSE path."""
    services = FakeServices()
    server = make_server(build_ae(), "127.0.0.1", 0, services)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, services
    server.shutdown()


def test_real_association_is_echoed_and_a_rejected_one_gets_its_reason(running_server) -> None:  # type: ignore[no-untyped-def]
    server, services = running_server
    port = server.server_address[1]
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title="CLINA")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    services.accept = False
    rejected = scu.associate("127.0.0.1", port, ae_title="CLINA")
    assert rejected.is_rejected
    assert rejected.acceptor.primitive.diagnostic == RejectReason.CALLING_AE_NOT_RECOGNIZED
    assert evt.EVT_C_STORE in server.get_events()


def test_the_release_is_confirmed_only_after_the_services_finished_the_association(running_server) -> None:  # type: ignore[no-untyped-def]
    server, services = running_server
    services.hold_release = threading.Event()
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")
    assert assoc.is_established
    releasing = threading.Thread(target=assoc.release)
    releasing.start()
    try:
        for _ in range(3600 * 20):  # until the server got the A-RELEASE-RQ (an hour at most)
            if services.releasing:
                break
            threading.Event().wait(0.05)
        assert [p.calling_ae for p in services.releasing] == ["CT_CLINA"]
        releasing.join(0.5)
        assert releasing.is_alive()  # no A-RELEASE-RP while the services are not done
    finally:
        services.hold_release.set()
    releasing.join(3600)
    assert not releasing.is_alive()
    assert assoc.is_released


def test_transfer_syntax_the_store_does_not_accept_is_refused_at_association(running_server) -> None:  # type: ignore[no-untyped-def]
    server, _ = running_server
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.4.94")  # JPIP referenced: pixels elsewhere
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")
    try:
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [ExplicitVRLittleEndian]
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [CTImageStorage]
    finally:
        assoc.release()


def test_c_get_sends_the_stored_bytes_and_converts_only_for_a_peer_that_needs_it(running_server) -> None:  # type: ignore[no-untyped-def]
    from pynetdicom.presentation import build_role

    server, services = running_server
    obj, data = stored_ct()
    services.retrieval = Retrieval(objects=[obj])
    received: dict[str, Any] = {}
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        scu = AE(ae_title="CT_CLINA")
        scu.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        scu.add_requested_context(CTImageStorage, syntax)
        handlers = [
            (evt.EVT_C_STORE, lambda event, syntax=syntax: received.update({syntax: received_data_set(event)}) or 0)
        ]
        assoc = scu.associate(
            "127.0.0.1",
            server.server_address[1],
            ae_title="CLINA",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=handlers,
        )
        assert assoc.is_established
        try:
            statuses = [
                s.Status
                for s, _ in assoc.send_c_get(
                    study_identifier(StudyInstanceUID="1"), StudyRootQueryRetrieveInformationModelGet
                )
            ]
        finally:
            assoc.release()
        assert statuses[-1] == 0x0000

    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000), after the preamble and its header
    assert received[ExplicitVRLittleEndian] == data[144 + group_length :]  # the data set as stored, byte for byte
    assert received[ImplicitVRLittleEndian] != received[ExplicitVRLittleEndian]
    converted = read_dataset(io.BytesIO(received[ImplicitVRLittleEndian]), is_implicit_VR=True, is_little_endian=True)
    assert converted.SOPInstanceUID == obj.sop_instance_uid and converted.PatientID == "1001"
