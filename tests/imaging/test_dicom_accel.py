"""imaging/dicom/accel/__init__.py: one install() for every reach into pynetdicom's internals,
on the pynetdicom version it was written for only; and what it installs for C-MOVE and C-GET."""

from __future__ import annotations

import logging
import queue
import re
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, acse, pdu_items, pdu_primitives, presentation, service_class, transport
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_items import PresentationContextItemRQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler

from imaging.dicom import accel
from imaging.dicom.accel import associations, retrieve
from imaging.dicom.identifiers import StoredObject
from imaging.dicom.scp import build_ae, make_server
from tests.imaging import dicomgen
from tests.imaging.test_dicom_handlers import FakeServices, stored_ct

ROOT = Path(__file__).resolve().parents[2]
_PATCHED = [
    (DIMSEMessage, "decode_msg"),
    (DIMSEServiceProvider, "send_msg"),
    (DULServiceProvider, "_decode_pdu"),
    (service_class, "encode"),
    (DULServiceProvider, "_read_pdu_data"),
    (RequestHandler, "_create_association"),
    (Association, "send_c_store"),
    (transport, "deepcopy"),
    (presentation, "set_uid"),
    (pdu_items, "set_uid"),
    (pdu_primitives, "set_uid"),
    (PresentationContext, "add_transfer_syntax"),
    (PresentationContextItemRQ, "to_primitive"),
    (acse, "negotiate_as_acceptor"),
    (A_ASSOCIATE_AC, "from_primitive"),
    (tempfile, "tempdir"),
    (_config, "STORE_RECV_CHUNKED_DATASET"),
    (_config, "STORE_SEND_CHUNKED_DATASET"),
    (_config, "LOG_HANDLER_LEVEL"),
]


def _snapshot() -> list[Any]:
    return [getattr(owner, name) for owner, name in _PATCHED]


def test_it_was_written_for_the_pynetdicom_that_requirements_pin() -> None:
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    assert pins["pynetdicom"] == accel.WRITTEN_FOR


def test_install_changes_pynetdicom_and_uninstall_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)  # pynetdicom's own default
    before = _snapshot()
    assert accel.install(tmp_path)
    try:
        assert accel.installed()
        during = _snapshot()
        assert [name for (_, name), a, b in zip(_PATCHED, before, during, strict=True) if a == b] == []
        assert accel.install(tmp_path)  # a second call changes nothing more
    finally:
        accel.uninstall()
    assert not accel.installed()
    assert _snapshot() == before


def test_another_pynetdicom_version_gets_one_log_line_and_pynetdicom_s_own_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    before = _snapshot()
    with caplog.at_level(logging.INFO, logger="imaging.dicom"):
        assert not accel.install(tmp_path)
    try:
        assert not accel.installed()
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "pynetdicom 3.1.0" in caplog.text and accel.WRITTEN_FOR in caplog.text
        after = _snapshot()
        changed = {name for (_, name), a, b in zip(_PATCHED, before, after, strict=True) if a != b}
        assert changed <= {"STORE_RECV_CHUNKED_DATASET", "STORE_SEND_CHUNKED_DATASET", "LOG_HANDLER_LEVEL"}
        assert _config.STORE_RECV_CHUNKED_DATASET is False  # data sets received in memory
    finally:
        accel.uninstall()
    assert _snapshot() == before


def test_accelerate_off_keeps_pynetdicom_s_own_path_and_its_logging_with_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="imaging.dicom"):
        assert not accel.install(tmp_path, enabled=False, debug=True)
    try:
        assert "DICOM_ACCELERATE=0" in caplog.text
        assert DULServiceProvider._read_pdu_data is not accel.direct.read_pdu_data
        assert _config.LOG_HANDLER_LEVEL == "standard"
        assert accel.requested_association_handlers() == []
    finally:
        accel.uninstall()


def test_with_debug_the_accelerated_path_serves_and_logs_each_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    accel.install(tmp_path, debug=True)
    services = _Threads()
    server = make_server(build_ae(), "127.0.0.1", 0, services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scu = AE(ae_title="CT_CLINA")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        series = dicomgen.make_ct_series(2, 32, 32)
        with caplog.at_level(logging.DEBUG, logger="imaging.dicom"):
            assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")
            try:
                assert [assoc.send_c_store(ds).Status for ds in series] == [0x0000, 0x0000]
            finally:
                assoc.release()
    finally:
        server.shutdown()
        accel.uninstall()
    assert all(isinstance(thread, DULServiceProvider) for thread in services.threads)  # the reading thread
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "C-STORE" in r.getMessage()]
    assert [str(ds.SOPInstanceUID) in line for line, ds in zip(logged, series, strict=True)] == [True, True]


class _Threads(FakeServices):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[threading.Thread] = []

    def store(self, peer: Any, instance: Any) -> None:
        self.threads.append(threading.current_thread())
        super().store(peer, instance)


# --- C-MOVE and C-GET: the stored bytes ------------------------------------------------------


def _sender(monkeypatch: pytest.MonkeyPatch, accepted_syntax: str) -> tuple[Any, list[Any]]:
    """An association accepting CT in one syntax, whose pynetdicom send_c_store only notes."""
    sent: list[Any] = []

    def send_c_store(self: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(Path(dataset).read_bytes() if isinstance(dataset, Path) else dataset)
        return SimpleNamespace(Status=0)

    monkeypatch.setattr(retrieve, "original_send_c_store", send_c_store)
    context = SimpleNamespace(abstract_syntax=CTImageStorage, transfer_syntax=[accepted_syntax])
    return SimpleNamespace(accepted_contexts=[context]), sent


def test_a_retrieved_instance_goes_out_as_the_stored_file_when_the_peer_accepts_its_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj, data = stored_ct()
    (tmp_path / "stored.dcm").write_bytes(data)
    on_disk = StoredObject(
        obj.sop_class_uid, obj.sop_instance_uid, obj.transfer_syntax_uid, obj.open, tmp_path / "stored.dcm"
    )
    assoc, sent = _sender(monkeypatch, ExplicitVRLittleEndian)
    other = Dataset()  # anything else goes through untouched
    retrieve.send_c_store(assoc, accel.StoredFile(on_disk), msg_id=2)
    retrieve.send_c_store(assoc, accel.StoredFile(obj), msg_id=3)  # object storage: a temporary copy
    retrieve.send_c_store(assoc, other, msg_id=4)
    assert sent == [data, data, other]


def test_a_retrieved_instance_is_decoded_for_a_peer_that_did_not_accept_its_syntax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obj, _ = stored_ct()
    assoc, sent = _sender(monkeypatch, ImplicitVRLittleEndian)
    retrieve.send_c_store(assoc, accel.StoredFile(obj), msg_id=2)
    (decoded,) = sent
    assert not isinstance(decoded, accel.StoredFile)
    assert (decoded.SOPInstanceUID, decoded.PatientID) == (obj.sop_instance_uid, "1001")


def test_a_response_taken_by_the_reactor_goes_back_to_its_sender() -> None:
    served: list[Any] = []
    dimse = SimpleNamespace(msg_queue=queue.Queue())
    assoc = SimpleNamespace(dimse=dimse, _serve_request=lambda msg, cx: served.append(msg))
    associations.keep_responses_for_their_sender(assoc)
    response, request = SimpleNamespace(is_valid_request=False), SimpleNamespace(is_valid_request=True)
    assoc._serve_request(response, 3)
    assoc._serve_request(request, 1)
    assert dimse.msg_queue.get_nowait() == (3, response)
    assert served == [request]


def test_stored_path_copies_an_object_store_instance_to_a_temporary_file() -> None:
    obj, data = stored_ct()
    with retrieve.stored_path(obj) as path:
        assert path.read_bytes() == data
    assert not path.exists()
