"""imaging/dicom/accel/direct.py: C-STORE served on the association's reading thread.

The command parser is checked against pynetdicom's own encoding; the direct store against a
real server and pynetdicom as the peer (where the handler ran, what arrived, what the peer
was told), and, for what a well-behaved peer never sends, against a stand-in association
fed PDUs by hand.
"""

from __future__ import annotations

import errno
import io
import os
import queue
import socket
import struct
import sys
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from imaging.dicom.accel import direct, fastpath
from imaging.dicom.handlers import status_dataset
from imaging.dicom.identifiers import ReceivedInstance
from imaging.dicom.status import DimseFailure
from tests.imaging import dicomgen
from tests.imaging.test_dicom_accel_fastpath import (  # noqa: F401 - a fixture
    _associate,
    _expected_file,
    _KeepingServices,
    fast_server,
)

SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.12345"


def _store_command(message_id: int = 7, **extra: Any) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = SOP_INSTANCE
    primitive.Priority = 2
    for name, value in extra.items():
        setattr(primitive, name, value)
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = b"".join(
        bytes(value[1:])
        for pdata in message.encode_msg(1, 0)
        for _, value in pdata.presentation_data_value_list
        if value[0] & 1
    )
    return command


def _echo_command() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return b"".join(bytes(v[1:]) for p in message.encode_msg(1, 0) for _, v in p.presentation_data_value_list)


def test_a_store_request_reads_as_pynetdicom_encodes_it() -> None:
    request = direct.store_request(_store_command(message_id=513))
    assert request == direct.StoreRequest(513, CTImageStorage, SOP_INSTANCE)
    moved = direct.store_request(_store_command(MoveOriginatorApplicationEntityTitle="WS_A", MoveOriginatorMessageID=4))
    assert moved == direct.StoreRequest(7, CTImageStorage, SOP_INSTANCE)


def test_anything_but_a_plain_store_request_is_left_to_pynetdicom() -> None:
    command = _store_command()
    assert direct.store_request(_echo_command()) is None
    assert direct.store_request(command[:-3]) is None  # cut short
    assert direct.store_request(command + struct.pack("<HHL", 0x0000, 0x0902, 2) + b"XY") is None  # a foreign element
    no_data = command.replace(struct.pack("<HHLH", 0, 0x0800, 2, 0x0001), struct.pack("<HHLH", 0, 0x0800, 2, 0x0101))
    assert no_data != command and direct.store_request(no_data) is None  # no data set follows
    bad_uid = command.replace(SOP_INSTANCE.encode(), SOP_INSTANCE.replace(".12345", ".0123").encode() + b"4")
    assert bad_uid != command and direct.store_request(bad_uid) is None  # a component with a leading zero


# --- against the real server ---------------------------------------------------------------


class _ThreadNoting(_KeepingServices):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[threading.Thread] = []

    def store(self, peer: Any, instance: ReceivedInstance) -> None:
        self.threads.append(threading.current_thread())
        super().store(peer, instance)


def _server_with(fast_server: Any, services: _KeepingServices) -> Any:  # noqa: F811
    server, _ = fast_server(services=services)
    return server


def test_a_series_is_stored_on_the_reading_thread_and_answered_as_pynetdicom_would(fast_server) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    services = _ThreadNoting()
    server = _server_with(fast_server, services)
    series = dicomgen.make_ct_series(5, 64, 64)
    assoc = _associate(server)
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in series]
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert statuses == [0x0000] * 5
    assert services.files == [_expected_file(ds) for ds in series]
    assert all(isinstance(thread, DULServiceProvider) for thread in services.threads), services.threads
    deadline = time.monotonic() + 10  # the reading thread ends just after the release
    while services.store_threads_ended == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert services.store_threads_ended == 1  # it let go of what it used for the stores
    assert list(Path(tempfile.gettempdir()).glob("rx-*")) == []


def test_someone_watching_the_pdus_gets_pynetdicom_s_own_path(fast_server) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    services = _ThreadNoting()
    server = _server_with(fast_server, services)
    seen: list[Any] = []
    server.bind(evt.EVT_PDU_RECV, lambda event: seen.append(event.pdu))
    series = dicomgen.make_ct_series(2, 32, 32)
    assoc = _associate(server)
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in series]
    finally:
        assoc.release()
    assert statuses == [0x0000, 0x0000]
    assert services.files == [_expected_file(ds) for ds in series]
    assert not any(isinstance(thread, DULServiceProvider) for thread in services.threads)
    assert any(isinstance(pdu, P_DATA_TF) for pdu in seen)


def test_a_failing_handler_is_answered_with_a_failure_status_and_its_reason(fast_server) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    services = _ThreadNoting()
    server = _server_with(fast_server, services)
    assoc = _associate(server)
    services.fail = RuntimeError("disk on fire")  # once associated (it would refuse the association)
    try:
        rsp = assoc.send_c_store(dicomgen.make_ct_series(1, 32, 32)[0])
        assert assoc.send_c_echo().Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert rsp.Status == 0x0110  # Handlers.store_status: processing failure, with its reason
    assert rsp.ErrorComment == "the instance could not be stored; try again"


def test_a_response_our_encoder_cannot_write_goes_out_through_pynetdicom_s(fast_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Whatever our encoding of a response trips over on the reading thread, the peer still
    gets its status (pynetdicom encodes it) and the association goes on."""

    def cannot_encode(*values: Any) -> bytes:
        raise ValueError("an encoder bug")

    monkeypatch.setattr(fastpath, "store_response_command", cannot_encode)
    services = _ThreadNoting()
    server = _server_with(fast_server, services)
    assoc = _associate(server)
    try:
        stored = assoc.send_c_store(dicomgen.make_ct_series(1, 32, 32)[0])
        services.fail = DimseFailure(0xA900, "refused")
        refused = assoc.send_c_store(dicomgen.make_ct_series(1, 32, 32)[0])
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert (stored.Status, refused.Status) == (0x0000, 0xA900)
    assert all(isinstance(thread, DULServiceProvider) for thread in services.threads)


# --- what a well-behaved peer never sends: a stand-in association ---------------------------


class _Socket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _stand_in(handler: Any) -> SimpleNamespace:
    """An association in Sta6 with one accepted CT context (ID 1), as DirectStore reads it."""
    dul = SimpleNamespace(
        state_machine=SimpleNamespace(current_state="Sta6"),
        event_queue=queue.Queue(),
        to_provider_queue=queue.Queue(),
        _recv_pdu=queue.Queue(),
        socket=_Socket(),
    )
    binding = (handler, None)
    assoc = SimpleNamespace(
        dul=dul,
        is_established=True,
        _sent_release=False,
        _is_paused=False,
        dimse=SimpleNamespace(message=None, msg_queue=queue.Queue(), maximum_pdu_size=16384),
        _accepted_cx={1: SimpleNamespace(transfer_syntax=[ExplicitVRLittleEndian])},
        acceptor=SimpleNamespace(accepted_common_extended={}),
        get_handlers=lambda event: binding if event == evt.EVT_C_STORE else [],
    )
    store = direct.DirectStore(assoc)
    store.handler, store.expected, store.thread_ended = handler, binding, lambda: None
    return SimpleNamespace(assoc=assoc, dul=dul, store=store)


def _body(*values: tuple[int, int, bytes]) -> bytearray:
    """A P-DATA-TF PDU's body: (context ID, control header, fragment) items."""
    return bytearray(b"".join(struct.pack(">LBB", len(data) + 2, cx, control) + data for cx, control, data in values))


@pytest.fixture
def rx_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    return tmp_path


def test_fragments_over_several_pdus_make_one_file_and_one_response(rx_folder: Path) -> None:
    received: list[bytes] = []
    side = _stand_in(lambda instance: received.append(instance.path.read_bytes()) or 0x0000)
    store = side.store
    assert store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x00, b"\x08\x00\x16\x00")))
    assert store.take(0x04, _body((1, 0x00, b"\x08\x00\x18\x00")))
    assert list(rx_folder.glob("rx-*"))  # being received
    assert store.take(0x04, _body((1, 0x02, b"\x00\x00")))
    meta = fastpath.file_meta(CTImageStorage, SOP_INSTANCE, ExplicitVRLittleEndian)
    assert received == [meta + b"\x08\x00\x16\x00\x08\x00\x18\x00\x00\x00"]
    response = fastpath.store_response_command(CTImageStorage, 7, 0x0000, None, SOP_INSTANCE)
    assert response is not None
    assert side.dul.socket.sent == [
        struct.pack(">BBLLBB", 0x04, 0, len(response) + 6, len(response) + 2, 1, 0x03) + response
    ]
    assert list(rx_folder.glob("rx-*")) == []
    assert side.dul.event_queue.empty()  # pynetdicom's state machine was never involved


def test_an_abort_in_the_middle_of_a_data_set_removes_its_file(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: pytest.fail("an unfinished data set was stored"))
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x00, b"\x08\x00")))
    assert len(list(rx_folder.glob("rx-*"))) == 1
    assert not side.store.take(0x07, bytearray(4))  # A-ABORT: pynetdicom's
    assert list(rx_folder.glob("rx-*")) == []
    assert side.dul.socket.sent == []


def test_a_command_where_data_should_follow_goes_to_pynetdicom_and_the_file_goes(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: pytest.fail("an unfinished data set was stored"))
    assert side.store.take(0x04, _body((1, 0x03, _store_command())))
    assert not side.store.take(0x04, _body((1, 0x03, _echo_command())))
    assert list(rx_folder.glob("rx-*")) == []
    assert side.store.message is None


def test_what_follows_a_served_store_in_the_same_pdu_is_queued_for_pynetdicom(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: 0x0000)
    echo = _echo_command()
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00"), (1, 0x03, echo)))
    assert len(side.dul.socket.sent) == 1  # the store's response
    assert side.dul.event_queue.get_nowait() == "Evt10"
    rest = side.dul._recv_pdu.get_nowait().to_primitive().presentation_data_value_list
    assert [(cx, bytes(value)) for cx, value in rest] == [(1, b"\x03" + echo)]


def test_a_busy_association_or_another_message_is_not_taken(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: 0x0000)
    side.assoc.dimse.message = object()  # pynetdicom is putting a message together
    assert not side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00")))
    side.assoc.dimse.message = None
    assert not side.store.take(0x04, _body((1, 0x03, _echo_command())))
    assert not side.store.take(0x04, _body((5, 0x03, _store_command()), (5, 0x02, b"\x08\x00")))  # no context 5
    assert list(rx_folder.glob("rx-*")) == []
    assert side.dul.socket.sent == []


def test_a_status_with_a_comment_is_answered_with_it(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: status_dataset(0xA900, "no Patient ID"))
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00")))
    response = fastpath.store_response_command(CTImageStorage, 7, 0xA900, "no Patient ID", SOP_INSTANCE)
    assert response is not None
    assert side.dul.socket.sent[0].endswith(response)


def test_a_handler_that_raises_is_answered_c211_as_pynetdicom_does(rx_folder: Path) -> None:
    def handler(instance: ReceivedInstance) -> int:
        raise OSError("gone")

    side = _stand_in(handler)
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00")))
    response = fastpath.store_response_command(CTImageStorage, 7, 0xC211, None, SOP_INSTANCE)
    assert response is not None
    assert side.dul.socket.sent[0].endswith(response)
    assert list(rx_folder.glob("rx-*")) == []


def _response_of(side: SimpleNamespace) -> tuple[int, str | None]:
    """(Status, Error Comment) of the one C-STORE response the stand-in sent."""
    (pdu,) = side.dul.socket.sent
    command = pdu[12:]  # PDU header (6), PDV item length (4), context ID and control header (2)
    ds = dcmread(io.BytesIO(command), force=True)  # implicit VR little endian (PS3.7 6.3.1)
    return int(ds.Status), ds.get("ErrorComment")


def test_a_data_set_over_the_limit_stops_being_written_and_is_refused_a700(rx_folder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fastpath, "max_bytes", 6)
    side = _stand_in(lambda instance: pytest.fail("a data set over the limit was stored"))
    noted: list[tuple[str, str, str]] = []
    side.store.refused = lambda *refusal: noted.append(refusal)
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x00, b"\x08\x00\x16\x00")))
    assert len(list(rx_folder.glob("rx-*"))) == 1
    assert side.store.take(0x04, _body((1, 0x00, b"\x08\x00\x18\x00")))  # 8 bytes: past the limit
    assert list(rx_folder.glob("rx-*")) == []  # no more written, and what was is gone
    assert side.store.take(0x04, _body((1, 0x00, b"\x00" * 100)))  # read and dropped
    assert side.store.take(0x04, _body((1, 0x02, b"\x00\x00")))
    status, comment = _response_of(side)
    assert status == 0xA700
    assert comment == "the data set is 110 bytes, over the limit of 6 bytes"
    assert noted == [(SOP_INSTANCE, "too-large", comment)]  # the services audit it
    assert side.dul.event_queue.empty()  # in step: pynetdicom never saw the rest


class _FullDisk:
    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_a_full_disk_while_writing_is_answered_a700_and_the_association_goes_on(rx_folder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fastpath, "open_received_file", lambda *uids: (_FullDisk(), rx_folder / "rx-full.dcm"))
    side = _stand_in(lambda instance: pytest.fail("a data set not written whole was stored"))
    noted: list[tuple[str, str, str]] = []
    side.store.refused = lambda *refusal: noted.append(refusal)
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x00, b"\x08\x00\x16\x00")))
    assert side.store.take(0x04, _body((1, 0x02, b"\x00\x00")))
    assert _response_of(side) == (0xA700, "cannot write the data set: No space left on device")
    assert noted == [(SOP_INSTANCE, "storage-failed", "cannot write the data set: No space left on device")]
    assert side.store.message is None


def test_a_file_that_cannot_be_opened_is_answered_a700(rx_folder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def cannot_open(*uids: str) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fastpath, "open_received_file", cannot_open)
    side = _stand_in(lambda instance: pytest.fail("a data set not written was stored"))
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00\x16\x00")))
    assert _response_of(side)[0] == 0xA700


def test_over_a_real_association_a_too_large_instance_is_refused_and_the_next_stored(fast_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    large = dicomgen.make_ct_series(1, 256, 256)[0]  # 128 KiB of pixels, over several 16 KiB PDUs
    small = dicomgen.make_ct_series(1, 16, 16)[0]
    monkeypatch.setattr(fastpath, "max_bytes", 64 * 1024)
    services = _ThreadNoting()
    server = _server_with(fast_server, services)
    assoc = _associate(server)
    try:
        refused = assoc.send_c_store(large)
        stored = assoc.send_c_store(small)
    finally:
        assoc.release()
    assert refused.Status == 0xA700 and "the limit of 65536 bytes" in refused.ErrorComment
    assert stored.Status == 0x0000
    assert [i.sop_instance_uid for i in services.stored] == [small.SOPInstanceUID]


def test_closing_drops_a_data_set_in_progress_and_tells_the_services(rx_folder: Path) -> None:
    side = _stand_in(lambda instance: 0x0000)
    ended: list[bool] = []
    side.store.thread_ended = lambda: ended.append(True)
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x02, b"\x08\x00")))
    assert side.store.take(0x04, _body((1, 0x03, _store_command(message_id=8)), (1, 0x00, b"\x08\x00")))
    side.store.close()
    assert ended == [True]
    assert list(rx_folder.glob("rx-*")) == []


# --- reading a PDU in bulk ------------------------------------------------------------------


def test_bulk_recv_returns_what_was_read_when_the_peer_closes() -> None:
    left, right = socket.socketpair()
    wrapper = SimpleNamespace(socket=left, recv=None)
    direct.read_in_bulk(wrapper)
    right.sendall(b"abcdef")
    right.close()
    assert wrapper.recv(4) == bytearray(b"abcd")
    assert wrapper.recv(10) == bytearray(b"ef")  # as pynetdicom's own recv: short, then the caller sees EOF
    left.close()


def test_a_pdu_header_claiming_gigabytes_takes_memory_only_for_what_arrives(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The length is the peer's word, read before any association exists: a claimed 1 TiB
    must not be allocated up front (it would fail here with MemoryError)."""
    monkeypatch.setattr(direct, "FIRST_READ_BYTES", 1024)
    left, right = socket.socketpair()
    try:
        wrapper = SimpleNamespace(socket=left, recv=None)
        direct.read_in_bulk(wrapper)
        sent = bytes(range(256)) * 20  # 5,120 bytes: the buffer grows from 1 KiB, doubling
        right.sendall(sent)
        right.close()
        assert wrapper.recv(1 << 40) == bytearray(sent)
    finally:
        left.close()


def test_a_large_pdu_is_read_whole_in_bulk(fast_server) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A 2 MiB instance in one association with 1 MiB PDUs: every byte arrives."""
    server, services = fast_server()
    ds = dicomgen.make_ct_series(1, 1024, 1024)[0]
    scu = AE(ae_title="CT_CLINA")
    scu.maximum_pdu_size = 0  # unlimited: the server's 1 MiB decides
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    (received,) = services.files
    assert ds.PixelData in received


def test_a_completed_data_set_is_on_its_way_to_the_disk_before_its_handler_runs(rx_folder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reading thread asks the system to start writing the file out (sync_file_range) once
    its last fragment is written, while the file is still open; the handler's fdatasync then
    waits only for what is still on its way."""
    calls: list[tuple[int, int, int, int, bool]] = []

    def sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> int:
        calls.append((os.fstat(fd).st_size, offset, nbytes, flags, any(rx_folder.glob("rx-*"))))
        return 0

    monkeypatch.setattr(fastpath, "_SYNC_FILE_RANGE", sync_file_range)
    seen: list[int] = []
    side = _stand_in(lambda instance: seen.append(len(calls)) or 0x0000)
    assert side.store.take(0x04, _body((1, 0x03, _store_command()), (1, 0x00, b"\x08\x00\x16\x00")))
    assert calls == []  # not before the data set is whole
    assert side.store.take(0x04, _body((1, 0x02, b"\x08\x00\x18\x00")))
    size = len(fastpath.file_meta(CTImageStorage, SOP_INSTANCE, ExplicitVRLittleEndian)) + 8
    assert calls == [(size, 0, 0, 2, True)]  # the whole file, SYNC_FILE_RANGE_WRITE, before it was closed
    assert seen == [1]  # and before the handler ran


def test_starting_the_writeback_of_a_real_file_leaves_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.dcm"
    data = os.urandom(256 * 1024)
    with path.open("wb", buffering=0) as out:
        out.write(data)
        fastpath.start_writeback(out.fileno())
    assert path.read_bytes() == data
    if sys.platform.startswith("linux"):
        assert fastpath._SYNC_FILE_RANGE is not None  # this system's C library has it
