"""imaging/dicom/wakeup.py: pynetdicom's reactors woken by their work, and bulk PDU reads.

Real associations against the real server (whose accepted associations get the wakers), plus
the pieces on their own. No timing thresholds: where a wait must end because of work, the
bound on the wait is made an hour, so a wait that did not end shows as a thread still alive.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from imaging.dicom import wakeup
from tests.imaging import dicomgen
from tests.imaging.test_dicom_handlers import running_server

HOUR = 3600.0
server = running_server  # the real server with fake services, as the handler tests use it


def _accepted(server: Any) -> list[Association]:
    return list(server.active_associations)


def _associate(server: Any, storage: bool = False, *, max_pdu: int | None = None) -> Association:
    """An association of clinic A's CT with the server: verification, plus CT storage if asked."""
    scu = AE(ae_title="CT_CLINA")
    if max_pdu is not None:
        scu.maximum_pdu_size = max_pdu
    if storage:
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    scu.add_requested_context(Verification)
    return scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")


def test_a_series_stored_on_one_association_arrives_whole_and_in_order(server) -> None:  # type: ignore[no-untyped-def]
    srv, services = server
    series = dicomgen.make_ct_series(20, 64, 64)
    assoc = _associate(srv, True)
    assert assoc.is_established
    accepted = _accepted(srv)
    assert len(accepted) == 1
    assert getattr(accepted[0], wakeup._ATTR) is not None  # the server's associations get the wakers
    assert getattr(accepted[0].dul, wakeup._ATTR) is not None
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in series]
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert statuses == [0x0000] * 20
    assert [i.sop_instance_uid for i in services.stored] == [str(ds.SOPInstanceUID) for ds in series]
    assert assoc.is_released


def test_an_association_aborted_by_the_peer_ends_on_the_server(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    assoc = _associate(srv)
    accepted = _accepted(srv)[0]
    assoc.abort()
    accepted.join(timeout=30)
    assert not accepted.is_alive()
    assert accepted.is_aborted


def test_a_large_pdu_is_read_whole_in_bulk(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A 2 MiB instance in one association with 1 MiB PDUs: every byte arrives."""
    srv, services = server
    ds = dicomgen.make_ct_series(1, 1024, 1024)[0]
    assoc = _associate(srv, True, max_pdu=0)  # unlimited: the server's 1 MiB decides
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    (received,) = services.stored
    data = received.part10() if received.path is None else received.path.read_bytes()
    assert ds.PixelData in data


def test_bulk_recv_returns_what_was_read_when_the_peer_closes() -> None:
    left, right = socket.socketpair()
    wrapper = SimpleNamespace(socket=left, recv=None)
    wakeup._read_in_bulk(wrapper)
    right.sendall(b"abcdef")
    right.close()
    assert wrapper.recv(4) == bytearray(b"abcd")
    assert wrapper.recv(10) == bytearray(b"ef")  # as pynetdicom's own recv: short, then the caller sees EOF
    left.close()


def _fake_association() -> Any:
    dul = SimpleNamespace(to_user_queue=Queue(), to_provider_queue=Queue(), socket=None, ident=1)  # started
    dul.kill_dul = lambda: None
    dul.stop_dul = lambda: True
    return SimpleNamespace(dimse=SimpleNamespace(msg_queue=Queue()), dul=dul, kill=lambda: None)


def _wait_in_thread(waiter: Any) -> threading.Thread:
    thread = threading.Thread(target=waiter.wait, args=(0.001,), daemon=True)
    thread.start()
    return thread


def test_the_association_reactor_wakes_when_a_message_is_queued(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wakeup, "MAX_WAIT", HOUR)
    assoc = _fake_association()
    waker = wakeup._AssociationWaker(assoc)
    thread = _wait_in_thread(waker)
    assoc.dimse.msg_queue.put((1, "C-STORE-RQ"))
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_association_reactor_does_not_wait_while_a_message_is_still_queued(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """It takes one message per turn: two queued at once must not leave the second waiting."""
    monkeypatch.setattr(wakeup, "MAX_WAIT", HOUR)
    assoc = _fake_association()
    waker = wakeup._AssociationWaker(assoc)
    assoc.dimse.msg_queue.put((1, "first"))
    assoc.dimse.msg_queue.put((1, "second"))
    waker.wait(0.001)  # consumes the wake-up of the puts
    assoc.dimse.msg_queue.get()
    thread = _wait_in_thread(waker)
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.parametrize("wake", ["release", "kill"])
def test_the_association_reactor_wakes_for_a_release_or_its_kill(monkeypatch, wake: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wakeup, "MAX_WAIT", HOUR)
    assoc = _fake_association()
    waker = wakeup._AssociationWaker(assoc)
    thread = _wait_in_thread(waker)
    if wake == "release":
        assoc.dul.to_user_queue.put("A-RELEASE-RQ")
    else:
        assoc.kill()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.parametrize("wake", ["send", "data", "kill"])
def test_the_dul_reactor_wakes_for_a_pdu_to_send_data_to_read_or_its_kill(monkeypatch, wake: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wakeup, "MAX_WAIT", HOUR)
    left, right = socket.socketpair()
    try:
        assoc = _fake_association()
        assoc.dul.socket = SimpleNamespace(socket=left)
        waker = wakeup._DulWaker(assoc.dul)
        thread = _wait_in_thread(waker)
        if wake == "send":
            assoc.dul.to_provider_queue.put("P-DATA")
        elif wake == "data":
            right.sendall(b"\x04")
        else:
            assoc.dul.kill_dul()
        thread.join(timeout=30)
        assert not thread.is_alive()
        waker.close()
    finally:
        left.close()
        right.close()


def test_other_sleeps_in_pynetdicom_still_sleep(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Only the reactor loops' sleeps wait for work; any other caller in a thread with a
    waker sleeps as asked (here: it must not block on a waker's wait)."""
    calls: list[float] = []
    monkeypatch.setattr(wakeup.time, "sleep", calls.append)

    class Waiter:
        loop = wakeup._ASSOCIATION_LOOP

        def wait(self, seconds: float) -> None:
            raise AssertionError("a sleep outside the reactor loop waited for work")

    thread = threading.current_thread()
    monkeypatch.setattr(thread, wakeup._ATTR, Waiter(), raising=False)
    wakeup._Time.sleep(0.01)
    assert calls == [0.01]


def test_a_c_move_sub_association_gets_the_dul_waker_only() -> None:
    """On associations we request, the sender thread reads the responses; the reactor polls."""
    scu = AE(ae_title="PACS")
    scu.add_requested_context(Verification)
    peer = AE(ae_title="DEST")
    peer.add_supported_context(Verification)
    dest = peer.start_server(("127.0.0.1", 0), block=False)
    try:
        assoc = scu.associate(
            "127.0.0.1", dest.server_address[1], evt_handlers=[(evt.EVT_CONN_OPEN, wakeup.install_on_open)]
        )
        assert assoc.is_established
        try:
            assert getattr(assoc.dul, wakeup._ATTR) is not None
            assert getattr(assoc, wakeup._ATTR, None) is None
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            assoc.release()
    finally:
        dest.shutdown()


def test_the_dul_eventfd_is_closed_when_the_association_ends(server) -> None:  # type: ignore[no-untyped-def]
    """One descriptor per association: it must not wait for the garbage collector."""
    srv, _ = server
    assoc = _associate(srv)
    accepted = _accepted(srv)[0]
    waker = getattr(accepted.dul, wakeup._ATTR)
    assert waker.is_open
    assoc.release()
    accepted.join(timeout=30)
    accepted.dul.join(timeout=30)
    assert not accepted.dul.is_alive()
    assert not waker.is_open


def test_a_pdu_header_claiming_gigabytes_takes_memory_only_for_what_arrives(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The length is the peer's word, read before any association exists: a claimed 1 TiB
    must not be allocated up front (it would fail here with MemoryError)."""
    monkeypatch.setattr(wakeup, "FIRST_READ_BYTES", 1024)
    left, right = socket.socketpair()
    try:
        wrapper = SimpleNamespace(socket=left, recv=None)
        wakeup._read_in_bulk(wrapper)
        sent = bytes(range(256)) * 20  # 5,120 bytes: the buffer grows from 1 KiB, doubling
        right.sendall(sent)
        right.close()
        assert wrapper.recv(1 << 40) == bytearray(sent)
    finally:
        left.close()
