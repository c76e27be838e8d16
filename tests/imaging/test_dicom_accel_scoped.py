"""imaging/dicom/accel/scoped.py: the routing sender sends stored files as their bytes without
turning pynetdicom's process-wide switch on for every other pynetdicom user in the process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom import association as association_module

from imaging.dicom import accel, scu
from imaging.dicom.identifiers import StoredObject
from tests.imaging import dicomgen


def _switch_seen_here() -> bool:
    """STORE_SEND_CHUNKED_DATASET as pynetdicom's send_c_store reads it, on this thread."""
    return bool(association_module._config.STORE_SEND_CHUNKED_DATASET)


@pytest.fixture
def switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)  # pynetdicom's default


def test_the_switch_is_on_for_the_thread_in_the_block_only(switch_off: None) -> None:
    seen: dict[str, bool] = {}
    inside, looked = threading.Event(), threading.Event()

    def another_pynetdicom_user() -> None:
        inside.wait(10)
        seen["other thread"] = _switch_seen_here()
        looked.set()

    other = threading.Thread(target=another_pynetdicom_user)
    other.start()
    with accel.stored_bytes_sent() as as_stored:
        seen["sender"] = _switch_seen_here()
        with accel.stored_bytes_sent():
            seen["nested"] = _switch_seen_here()
        seen["after the nested block"] = _switch_seen_here()
        inside.set()
        assert looked.wait(10)
    other.join(10)
    seen["after"] = _switch_seen_here()
    assert as_stored
    assert seen == {
        "sender": True,
        "nested": True,
        "after the nested block": True,
        "other thread": False,
        "after": False,
    }
    assert _config.STORE_SEND_CHUNKED_DATASET is False  # pynetdicom's configuration was never changed


def test_the_rest_of_pynetdicom_s_configuration_shows_through_and_a_setting_made_reaches_it(
    switch_off: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with accel.stored_bytes_sent():
        pass  # the association module now reads its configuration through the thread's view
    monkeypatch.setattr(_config, "LOG_REQUEST_IDENTIFIERS", False)
    assert association_module._config.LOG_REQUEST_IDENTIFIERS is False
    monkeypatch.setattr(association_module._config, "LOG_REQUEST_IDENTIFIERS", True)
    assert _config.LOG_REQUEST_IDENTIFIERS is True
    _config.STORE_SEND_CHUNKED_DATASET = True  # a server that wants it for the process (accel.install)
    assert _switch_seen_here()


def test_another_pynetdicom_version_yields_false_and_changes_nothing(
    switch_off: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with accel.stored_bytes_sent() as as_stored:
        assert not as_stored
        assert not _switch_seen_here()


@pytest.fixture
def storage_peer() -> Iterator[SimpleNamespace]:
    """A pynetdicom storage SCP in this process: another pynetdicom user, looking at the switch
    from its own threads while the routing sender sends to it."""
    peer = SimpleNamespace(received=[], switch_seen=[])

    def on_store(event: evt.Event) -> int:
        peer.switch_seen.append((_switch_seen_here(), _config.STORE_SEND_CHUNKED_DATASET))
        peer.received.append(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="STORESCP")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    peer.port = server.server_address[1]
    yield peer
    server.shutdown()


def _stored(folder: Path, count: int) -> list[tuple[StoredObject, bytes]]:
    """Stored files, and each one's data set bytes (what travels)."""
    stored = []
    for i, ds in enumerate(dicomgen.make_ct_series(count, 32, 32)):
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        offset = accel.data_set_offset(data[:1024])
        assert offset is not None
        obj = StoredObject(CTImageStorage, str(ds.SOPInstanceUID), ExplicitVRLittleEndian, path.open, path=path)
        stored.append((obj, data[offset:]))
    return stored


@pytest.mark.parametrize("accelerate", [True, False], ids=["accelerated", "plain"])
def test_routing_sends_the_stored_bytes_and_leaves_the_switch_to_others(
    storage_peer: Any, tmp_path: Path, switch_off: None, accelerate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def decoded(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("send_c_store decoded the stored file: the switch was off for the sender")

    monkeypatch.setattr(association_module, "dcmread", decoded)  # what send_c_store does with it off
    stored = _stored(tmp_path, 3)
    during: list[bool] = []
    outcome = scu.send(
        scu.PeerAE("STORESCP", "127.0.0.1", storage_peer.port, "CLINA", timeout=30),
        [obj for obj, _ in stored],
        on_sent=lambda uids: during.append(_config.STORE_SEND_CHUNKED_DATASET),
        accelerate=accelerate,
    )
    assert outcome.complete and len(outcome.sent) == 3
    assert storage_peer.received == [data for _, data in stored]  # byte for byte
    assert storage_peer.switch_seen == [(False, False)] * 3  # the peer's threads: pynetdicom's setting
    assert during == [False]  # the sending thread, between its sends
    assert _config.STORE_SEND_CHUNKED_DATASET is False
