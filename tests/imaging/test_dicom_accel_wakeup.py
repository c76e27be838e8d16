"""imaging/dicom/accel/wakeup.py: pynetdicom's reactors woken by their work.

Like the module, these tests use pynetdicom alone: real associations with a plain pynetdicom
server whose accepted associations get the wakers (wakeup.install_on_open), plus the pieces on
their own. No timing thresholds: where a wait must end because of work, the bound on the wait
is made an hour, so a wait that did not end shows as a thread still alive.
"""

from __future__ import annotations

import socket
import threading
import time
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from imaging.dicom.accel import wakeup
from tests.imaging import dicomgen

HOUR = 3600.0


class _Stored:
    def __init__(self) -> None:
        self.stored: list[Any] = []

    def on_store(self, event: Any) -> int:
        self.stored.append(event.dataset)
        return 0x0000


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    """A plain pynetdicom storage and verification server whose associations get the wakers."""
    received = _Stored()
    ae = AE(ae_title="STORE_SCP")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_supported_context(Verification)
    handlers = [(evt.EVT_CONN_OPEN, wakeup.install_on_open), (evt.EVT_C_STORE, received.on_store)]
    srv = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    yield srv, received
    srv.shutdown()
    wakeup.disable()


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
    return scu.associate("127.0.0.1", server.server_address[1], ae_title="STORE_SCP")


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
    assert [ds.SOPInstanceUID for ds in services.stored] == [ds.SOPInstanceUID for ds in series]
    assert assoc.is_released


def test_an_association_aborted_by_the_peer_ends_on_the_server(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    assoc = _associate(srv)
    accepted = _accepted(srv)[0]
    assoc.abort()
    accepted.join(timeout=30)
    assert not accepted.is_alive()
    assert accepted.is_aborted


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


def test_disable_gives_pynetdicom_its_time_module_back() -> None:
    from pynetdicom import association, dul

    wakeup._enable()
    assert isinstance(association.time, wakeup._Time) and isinstance(dul.time, wakeup._Time)  # type: ignore[attr-defined]
    wakeup.disable()
    assert association.time is time and dul.time is time  # type: ignore[attr-defined]
