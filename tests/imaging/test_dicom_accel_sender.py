"""imaging/dicom/accel/sender.py and the run around it (imaging/dicom/scu.py): routing's C-STOREs
written to the socket. The request's command set is compared with pynetdicom's, and runs go to
a pynetdicom storage SCP in this process that answers as told (warnings, a refusal with a
comment, an abort, a syntax it does not take)."""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from imaging.dicom import scu
from imaging.dicom.accel import sender
from imaging.dicom.identifiers import StoredObject
from tests.imaging import dicomgen


@pytest.mark.parametrize("message_id", [1, 2, 65535])
@pytest.mark.parametrize("instance", ["1.2", "1.2.3", "2.25.329800735698586629295641978511506172918"])
def test_the_request_s_command_set_is_what_pynetdicom_encodes(message_id: int, instance: str) -> None:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = instance
    request.Priority = 0x0000
    request._dataset_path = (Path("unused"), 0)  # a data set follows, as pynetdicom marks it
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    theirs = encode(message.command_set, True, True)
    assert sender.store_request_command(CTImageStorage, instance, message_id) == theirs


@pytest.fixture
def peer() -> Iterator[SimpleNamespace]:
    """A storage SCP answering each C-STORE with the next of `answers` (then Success); an
    answer "abort" aborts the association instead."""
    state = SimpleNamespace(answers=[], received=[], released=0, aborted=0, port=0)

    def on_store(event: evt.Event) -> Any:
        state.received.append(str(event.request.AffectedSOPInstanceUID))
        answer = state.answers.pop(0) if state.answers else 0x0000
        if answer == "abort":
            event.assoc.abort()
            return 0x0000
        if answer == "slow":  # past the sender's timeout
            threading.Event().wait(3)
            return 0x0000
        return answer

    def on_released(event: evt.Event) -> None:
        state.released += 1

    def on_aborted(event: evt.Event) -> None:
        state.aborted += 1

    ae = AE(ae_title="STORESCP")
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ae.add_supported_context(CTImageStorage, [syntax])
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.4", [ExplicitVRLittleEndian])  # MR, uncompressed only
    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_RELEASED, on_released), (evt.EVT_ABORTED, on_aborted)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    state.port = server.server_address[1]
    yield state
    server.shutdown()


def _objects(folder: Path, count: int) -> list[StoredObject]:
    objects = []
    for i, ds in enumerate(dicomgen.make_ct_series(count, 16, 16)):
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        objects.append(StoredObject(CTImageStorage, str(ds.SOPInstanceUID), ExplicitVRLittleEndian, path.open, path))
    return objects


def _jpeg_ls() -> StoredObject:
    path = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    ds = dcmread(path, stop_before_pixels=True)
    uid, syntax = str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
    return StoredObject(str(ds.SOPClassUID), uid, syntax, lambda: path.open("rb"), path)


def _send(peer: Any, objects: list[StoredObject]) -> scu.Outcome:
    return scu.send(scu.PeerAE("STORESCP", "127.0.0.1", peer.port, "CLINA", timeout=20), objects, accelerate=True)


def _released(peer: Any) -> None:
    """Wait until the peer saw the association end (released or aborted)."""
    for _ in range(200):
        if peer.released or peer.aborted:
            return
        threading.Event().wait(0.05)


def test_warnings_and_a_refusal_with_its_comment_reach_the_outcome(peer: Any, tmp_path: Path) -> None:
    objects = _objects(tmp_path, 6)
    refusal = Dataset()
    refusal.Status = 0xA900
    refusal.ErrorComment = "the data set does not match"
    peer.answers = [0x0000, 0xB000, refusal, 0x0000]
    outcome = _send(peer, objects)
    _released(peer)
    assert outcome.sent == [o.sop_instance_uid for i, o in enumerate(objects) if i != 2]
    assert outcome.refused == {objects[2].sop_instance_uid: (0xA900, "the data set does not match")}
    assert (peer.released, peer.aborted) == (1, 0)


def test_a_run_with_a_conversion_gives_the_association_back_whole_for_its_release(peer: Any, tmp_path: Path) -> None:
    objects = _objects(tmp_path, 2)
    run = [objects[0], _jpeg_ls(), objects[1]]  # the peer takes no JPEG-LS: decoded, sent by pynetdicom
    outcome = _send(peer, run)
    _released(peer)
    assert outcome.complete and outcome.sent == [o.sop_instance_uid for o in run]
    assert (peer.released, peer.aborted) == (1, 0)  # not left to the network timeout's abort


def test_a_peer_that_aborts_stops_the_run_as_transient(peer: Any, tmp_path: Path) -> None:
    objects = _objects(tmp_path, 5)
    peer.answers = [0x0000, "abort"]
    outcome = _send(peer, objects)
    assert outcome.sent == [objects[0].sop_instance_uid]
    assert outcome.transient and objects[1].sop_instance_uid in outcome.reason
    assert peer.received == [o.sop_instance_uid for o in objects[:2]]


@pytest.mark.parametrize("logging_on", [False, True], ids=["pynetdicom logger quiet", "pynetdicom logger at INFO"])
def test_pynetdicom_s_dimse_log_lines_are_left_out_of_a_run_only_when_they_would_be_dropped(
    peer: Any, logging_on: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Unbound for the sender's run (a C-STORE response no longer decoded for an INFO line nobody
    keeps), bound again when it gives the association back; kept while the logger listens."""
    caplog.set_level(logging.INFO if logging_on else logging.WARNING, logger="pynetdicom")
    ae = AE(ae_title="CLINA")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", peer.port, ae_title="STORESCP")
    assert assoc.is_established
    try:

        def bound() -> list[bool]:
            return [
                any(h is handler for h, _ in assoc.get_handlers(event)) for event, handler in sender._DIMSE_LOG_LINES
            ]

        assert bound() == [True, True]  # pynetdicom's default (_config.LOG_HANDLER_LEVEL "standard")
        fast = sender.StoredSender(assoc, 10)
        assert bound() == ([True, True] if logging_on else [False, False])
        fast.close()
        assert bound() == [True, True]
    finally:
        assoc.release()


def test_a_run_with_the_pynetdicom_logger_at_info_still_logs_each_response(
    peer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pynetdicom")
    outcome = _send(peer, _objects(tmp_path, 2))
    assert outcome.complete
    assert sum("Received Store Response" in r.getMessage() for r in caplog.records) == 2


def _response_pdv(status: Any, message_id: int, *, control: int = 0x03) -> bytes:
    """A P-DATA-TF body (after its 6-byte header) with one PDV: a C-STORE-RSP as pynetdicom encodes it."""
    from pynetdicom.dimse_messages import C_STORE_RSP

    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = CTImageStorage
    response.AffectedSOPInstanceUID = "1.2.3.4"
    response.Status = status.Status
    for keyword in ("ErrorComment", "OffendingElement"):
        if keyword in status:
            setattr(response, keyword, getattr(status, keyword))
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    command = encode(message.command_set, True, True)
    return struct.pack(">LBB", len(command) + 2, 1, control) + command


def _status(code: int, **optional: Any) -> Dataset:
    status = Dataset()
    status.Status = code
    for keyword, value in optional.items():
        setattr(status, keyword, value)
    return status


@pytest.mark.parametrize(
    "status",
    [
        _status(0x0000),
        _status(0xB000, ErrorComment="coerced"),
        _status(0xA900, ErrorComment="the data set does not match", OffendingElement=[0x00100010, 0x00100020]),
        _status(0xC211, ErrorComment="x" * 64),
    ],
    ids=["success", "warning", "refusal with offending elements", "a 64-character comment"],
)
def test_a_response_read_off_the_socket_gives_what_pynetdicom_decodes(status: Dataset) -> None:
    read = sender.store_response(_response_pdv(status, 7), 7)
    assert read is not None
    assert {k: read.get(k) for k in ("Status", "ErrorComment", "OffendingElement")} == {
        k: status.get(k) for k in ("Status", "ErrorComment", "OffendingElement")
    }


def test_anything_but_the_expected_response_in_one_pdv_is_left_to_pynetdicom() -> None:
    body = _response_pdv(_status(0x0000), 7)
    assert sender.store_response(body, 8) is None  # the answer to another request
    assert sender.store_response(_response_pdv(_status(0x0000), 7, control=0x01), 7) is None  # more to come
    assert sender.store_response(_response_pdv(_status(0x0000), 7, control=0x02), 7) is None  # a data set
    assert sender.store_response(body + body, 7) is None  # two PDVs
    assert sender.store_response(body[:-3], 7) is None  # cut short
    request = sender.store_request_command(CTImageStorage, "1.2.3", 7)
    assert sender.store_response(struct.pack(">LBB", len(request) + 2, 1, 0x03) + request, 7) is None  # a request


def test_the_sender_reads_the_responses_itself_while_nobody_listens(
    peer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pynetdicom's logger quiet, no response passes through pynetdicom's DIMSE provider,
    and the statuses, the refusal's comment and the release come out as on pynetdicom's path."""
    from pynetdicom.dimse import DIMSEServiceProvider

    caplog.set_level(logging.WARNING, logger="pynetdicom")
    decoded = []
    receive = DIMSEServiceProvider.receive_primitive

    def counted(self: Any, primitive: Any) -> None:
        if self.assoc.is_requestor:  # the sender's side, not the peer's in this process
            decoded.append(primitive)
        receive(self, primitive)

    monkeypatch.setattr(DIMSEServiceProvider, "receive_primitive", counted)
    objects = _objects(tmp_path, 5)
    peer.answers = [0x0000, 0xB000, _status(0xA900, ErrorComment="the data set does not match")]
    outcome = _send(peer, objects)
    _released(peer)
    assert outcome.sent == [o.sop_instance_uid for i, o in enumerate(objects) if i != 2]
    assert outcome.refused == {objects[2].sop_instance_uid: (0xA900, "the data set does not match")}
    assert (peer.released, peer.aborted) == (1, 0)
    assert decoded == []


def test_a_peer_that_does_not_answer_in_time_stops_the_run_and_the_association_is_aborted(
    peer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    objects = _objects(tmp_path, 3)
    peer.answers = [0x0000, "slow"]
    outcome = scu.send(scu.PeerAE("STORESCP", "127.0.0.1", peer.port, "CLINA", timeout=1), objects, accelerate=True)
    _released(peer)
    assert outcome.sent == [objects[0].sop_instance_uid]
    assert not outcome.complete and "no answer" in outcome.reason
    assert peer.aborted == 1


def test_acknowledged_instances_are_reported_at_most_once_a_second(
    peer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing's sent marks cost a commit each: a quick run reports once, at its end; with
    the interval at zero, every acknowledgement is reported as it comes."""
    objects = _objects(tmp_path, 6)
    peer_ae = scu.PeerAE("STORESCP", "127.0.0.1", peer.port, "CLINA", timeout=20)
    reports: list[list[str]] = []
    assert scu.send(peer_ae, objects, on_sent=reports.append, accelerate=True).complete
    assert reports == [[o.sop_instance_uid for o in objects]]
    monkeypatch.setattr(scu, "_REPORT_SECONDS", 0.0)
    reports.clear()
    assert scu.send(peer_ae, objects, on_sent=reports.append, accelerate=True).complete
    assert reports == [[o.sop_instance_uid] for o in objects]


def test_a_connection_lost_while_sending_gives_the_socket_back_before_the_abort(
    peer: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DUL reads the socket again before the run aborts the association, so that the abort
    ends it at once (in Sta13 the DUL waits for the connection to close, which it must see)."""
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    objects = _objects(tmp_path, 4)
    send = sender.StoredSender._send_data_set
    calls = []

    def broken_on_the_second(self: Any, *args: Any) -> None:
        calls.append(self.reading)
        if len(calls) == 2:
            raise ConnectionResetError("connection reset by peer")
        send(self, *args)

    monkeypatch.setattr(sender.StoredSender, "_send_data_set", broken_on_the_second)
    from pynetdicom.association import Association

    abort = Association._abort_blocking  # what assoc.abort is bound to (Association.__init__)
    held_at_abort = []

    def noted_abort(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.is_requestor:
            held_at_abort.append("_is_transport_event" in vars(self.dul))
        abort(self, *args, **kwargs)

    monkeypatch.setattr(Association, "_abort_blocking", noted_abort)
    outcome = _send(peer, objects)
    _released(peer)
    assert calls == [True, True]  # the responses were read by the sender itself until then
    assert outcome.sent == [objects[0].sop_instance_uid]
    assert not outcome.complete and "connection lost" in outcome.reason
    assert held_at_abort == [False]
    assert peer.aborted == 1
