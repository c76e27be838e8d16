"""imaging/dicom/accel/fastpath.py: C-STORE's file meta and response encoded by hand.

The encoders are compared byte for byte with what pydicom and pynetdicom produce; the patched
decoding and sending run under real associations against the real server, C-STORE mixed with
other messages, in large PDUs and in PDUs small enough to split the command set.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from imaging.dicom import accel
from imaging.dicom.accel import fastpath
from imaging.dicom.accel.negotiation import add_transfer_syntax, copy_contexts, set_uid_remembered
from imaging.dicom.identifiers import ReceivedInstance
from imaging.dicom.scp import build_ae, make_server
from imaging.dicom.status import DimseFailure
from tests.imaging import dicomgen
from tests.imaging.test_dicom_handlers import FakeServices
from tests.processes import until

UIDS = [
    "1.2",  # even
    "1.2.3",  # odd: padded with NUL
    "1.2.840.10008.5.1.4.1.1.2",
    "2.25.329800735698586629295641978511506172918",
    "1.2.826.0.1.3680043.8.498." + "1" * 38,  # 64 characters, the longest a UI may be
]


@pytest.mark.parametrize("sop_instance_uid", UIDS)
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless])
def test_file_meta_is_what_pynetdicom_writes_through_pydicom(sop_instance_uid: str, transfer_syntax: str) -> None:
    for sop_class in (CTImageStorage, MRImageStorage, "1.2.3"):
        theirs = BytesIO()
        theirs.write(b"\x00" * 128 + b"DICM")
        meta = create_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=sop_instance_uid, transfer_syntax=transfer_syntax
        )
        write_file_meta_info(theirs, meta)  # type: ignore[arg-type]
        assert fastpath.file_meta(sop_class, sop_instance_uid, transfer_syntax) == theirs.getvalue()


def _pynetdicom_response(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))  # type: ignore[arg-type]


def _response(status: int, comment: str | None = None, *, instance: str = UIDS[3], message_id: int = 7) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment
    return rsp


@pytest.mark.parametrize("instance", UIDS)
@pytest.mark.parametrize(
    ("status", "comment"),
    [
        (0x0000, None),
        (0xB000, None),
        (0xA700, "out of resources"),  # even length
        (0xA900, "no SOP Instance UID"),  # odd: padded with a space
        (0xC000, ""),
        (0x0122, "x" * 64),
    ],
)
def test_store_response_is_what_pynetdicom_encodes(instance: str, status: int, comment: str | None) -> None:
    for message_id in (1, 7, 65535):
        rsp = _response(status, comment, instance=instance, message_id=message_id)
        assert fastpath.store_response(rsp) == _pynetdicom_response(rsp)


def test_store_response_leaves_what_it_does_not_write_to_pynetdicom() -> None:
    with_element = _response(0xA900, "bad")
    with_element.OffendingElement = [0x00100020]
    assert fastpath.store_response(with_element) is None
    request = _response(0x0000)
    request.MessageIDBeingRespondedTo = None
    assert fastpath.store_response(request) is None


class _KeepingServices(FakeServices):
    """Keeps each received file's bytes while it exists (pynetdicom deletes it after the handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[bytes] = []

    def store(self, peer: Any, instance: ReceivedInstance) -> None:
        if instance.path is None:
            raise AssertionError("the data set was not received into a file")
        self.files.append(instance.path.read_bytes())
        super().store(peer, instance)


@pytest.fixture
def fast_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The real server, accelerated (accel.install, undone after), receiving into files in
    tmp_path, with a small maximum PDU when a test asks for one."""
    accel.install(tmp_path)
    started = []

    def start(max_pdu: int | None = None, services: _KeepingServices | None = None) -> tuple[Any, _KeepingServices]:
        services = services or _KeepingServices()
        ae = build_ae()
        if max_pdu is not None:
            ae.maximum_pdu_size = max_pdu
        server = make_server(ae, "127.0.0.1", 0, services)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server, services

    yield start
    for server in started:
        server.shutdown()
    accel.uninstall()


def _associate(server: Any, max_pdu: int = 16382) -> Any:
    scu = AE(ae_title="CT_CLINA")
    scu.maximum_pdu_size = max_pdu
    scu.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    scu.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    scu.add_requested_context(Verification)
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="CLINA")
    assert assoc.is_established
    return assoc


def _expected_file(ds: Dataset) -> bytes:
    """pynetdicom's own file for a received data set: its file meta, then the data set as sent."""
    out = BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        out,  # type: ignore[arg-type]
        create_file_meta(
            sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=ExplicitVRLittleEndian
        ),
    )
    out.write(bytes(encode(ds, False, True)))  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("server_max_pdu", [None, 4096, 128])  # 128: the command set spans several PDUs
def test_stores_mixed_with_other_messages_arrive_as_pynetdicom_would_write_them(fast_server, server_max_pdu) -> None:  # type: ignore[no-untyped-def]
    server, services = fast_server(server_max_pdu)
    series = dicomgen.make_ct_series(6, 64, 64)
    match = Dataset()
    match.PatientID = "P1001"
    services.matches = [match]
    assoc = _associate(server, server_max_pdu or 16382)  # 128: our responses fall back to pynetdicom
    try:
        statuses = []
        for i, ds in enumerate(series):
            statuses.append(assoc.send_c_store(ds).Status)
            if i % 2 == 0:
                assert assoc.send_c_echo().Status == 0x0000
            if i == 3:
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.PatientID = "*"
                found = [
                    status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                ]
                assert found == [0xFF00, 0x0000]
    finally:
        assoc.release()
    assert statuses == [0x0000] * 6
    assert services.files == [_expected_file(ds) for ds in series]
    assert len(services.queries) == 1
    assert [dcmread(BytesIO(f)).SOPInstanceUID for f in services.files] == [ds.SOPInstanceUID for ds in series]
    assert list(Path(tempfile.gettempdir()).glob("rx-*")) == []  # pynetdicom removed each after its handler


def test_a_refusal_reaches_the_sender_with_its_status_and_comment(fast_server) -> None:  # type: ignore[no-untyped-def]
    server, services = fast_server()
    services.fail = DimseFailure(0xA900, "the data set has no Patient ID")
    assoc = _associate(server)
    try:
        rsp = assoc.send_c_store(dicomgen.make_ct_series(1, 32, 32)[0])
    finally:
        assoc.release()
    assert rsp.Status == 0xA900
    assert rsp.ErrorComment == "the data set has no Patient ID"


def test_received_file_names_do_not_collide_and_an_existing_name_is_never_opened(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cs = Dataset()
    cs.AffectedSOPClassUID = CTImageStorage
    cs.AffectedSOPInstanceUID = generate_uid()
    context = type("Cx", (), {"transfer_syntax": [ExplicitVRLittleEndian]})()
    assoc = type("Assoc", (), {"_accepted_cx": {1: context}})()
    paths = []
    for _ in range(3):
        message = DIMSEMessage()
        message.command_set = cs
        fastpath._received_file(message, assoc, 1)
        message._data_set_file.close()  # type: ignore[union-attr]
        paths.append(message._data_set_path)
    assert len(set(paths)) == 3
    assert all(
        p.read_bytes() == fastpath.file_meta(CTImageStorage, cs.AffectedSOPInstanceUID, ExplicitVRLittleEndian)
        for p in paths
    )
    monkeypatch.setattr(fastpath, "_names", iter([0]))  # a name already taken: refused, not overwritten
    taken = Path(tmp_path) / f"rx-{fastpath._TOKEN}-{os.getpid()}-0.dcm"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        _open_with(cs, assoc)
    assert taken.read_bytes() == b"someone else's"


def _open_with(cs: Dataset, assoc: Any) -> None:
    message = DIMSEMessage()
    message.command_set = cs
    fastpath._received_file(message, assoc, 1)


def test_each_association_gets_its_own_copy_of_the_supported_contexts() -> None:
    contexts = build_ae().supported_contexts
    copies = copy_contexts(contexts)
    assert [vars(cx) for cx in copies] == [vars(cx) for cx in contexts]
    copies[0].transfer_syntax = [ImplicitVRLittleEndian]  # what negotiation may do to a copy
    copies[1].result = 0
    assert len(contexts[0].transfer_syntax) > 1
    assert contexts[1].result is None
    other = {"a": [1, [2]]}  # anything else is deep-copied as before
    copied = copy_contexts(other)
    assert copied == other
    assert copied["a"][1] is not other["a"][1]


def test_the_server_copies_contexts_for_the_associations_it_accepts(fast_server) -> None:  # type: ignore[no-untyped-def]
    server, _ = fast_server()
    assoc = _associate(server)
    try:
        accepted = list(server.active_associations)
        assert len(accepted) == 1
        theirs = accepted[0].acceptor.supported_contexts
        assert [cx.abstract_syntax for cx in theirs] == [cx.abstract_syntax for cx in server.contexts]
        assert all(a is not b for a, b in zip(theirs, server.contexts, strict=True))
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_negotiation_remembers_uids_as_pynetdicom_makes_them_and_refuses_bad_ones_every_time() -> None:
    from pynetdicom import utils

    for value in (CTImageStorage, "1.2.3", b"1.2.840.10008.1.2\x00", "", None):
        assert set_uid_remembered(value, "x") == utils.set_uid(value, "x")
    assert set_uid_remembered("1.2.3", "x") is set_uid_remembered("1.2.3", "x")
    for _ in range(2):
        with pytest.raises(ValueError, match="Invalid"):
            set_uid_remembered("1.2.3" * 20, "x")  # longer than 64 characters
        with pytest.raises(ValueError, match="empty"):
            set_uid_remembered("", "x", allow_empty=False)
    with pytest.raises(TypeError):
        set_uid_remembered(["1.2.3"], "x")  # unhashable: pynetdicom's own refusal


def test_transfer_syntaxes_are_added_as_pynetdicom_adds_them_with_the_same_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pynetdicom.presentation import PresentationContext

    values: list[Any] = [
        "1.2.840.10008.1.2.1",
        b"1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",  # already there: not added twice
        "1.2.840.10008.5.1.4.1.1.2",  # a SOP class, not a transfer syntax
        "1.2.826.0.1.3680043.8.498.1",  # private
        "1.2.840.10008.1.2.01",  # not conformant
        None,
        42,  # neither str nor bytes
    ]

    def added(add: Any) -> tuple[list[str], list[tuple[int, str]]]:
        caplog.clear()
        cx = PresentationContext()
        for _ in range(2):  # the second time from what was remembered
            for value in values:
                add(cx, value)
            with pytest.raises(ValueError, match="invalid UID"):
                add(cx, "1.2.3" * 20)  # longer than 64 characters: refused every time
        return list(cx.transfer_syntax), [(r.levelno, r.getMessage()) for r in caplog.records]

    assert PresentationContext.add_transfer_syntax is not add_transfer_syntax  # pynetdicom's own, to compare
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        assert added(add_transfer_syntax) == added(PresentationContext.add_transfer_syntax)
    syntaxes, logged = added(add_transfer_syntax)
    assert syntaxes[:2] == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"] and len(syntaxes) == 5
    assert any("non-conformant" in message for _, message in logged)


def test_a_server_makes_negotiation_remember_uids(fast_server) -> None:  # type: ignore[no-untyped-def]
    from pynetdicom import pdu_items, pdu_primitives, presentation

    server, _ = fast_server()
    assert presentation.set_uid is pdu_items.set_uid is pdu_primitives.set_uid is set_uid_remembered
    assert presentation.PresentationContext.add_transfer_syntax is add_transfer_syntax
    assoc = _associate(server)
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def _p_data_tf(*values: tuple[int, bytes]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list.extend(values)  # type: ignore[arg-type]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def test_p_data_is_taken_apart_as_pynetdicom_decodes_it() -> None:
    cases = [
        [(1, b"\x03" + b"c" * 40)],
        [(1, b"\x02" + bytes(range(256)) * 100)],
        [(3, b"\x01abc"), (3, b"\x03de"), (5, b"\x00" + b"x" * 1000), (5, b"\x02y")],
    ]
    for values in cases:
        encoded = _p_data_tf(*values)
        pdu = P_DATA_TF()
        pdu.decode(encoded)
        theirs = pdu.to_primitive().presentation_data_value_list
        ours = fastpath.p_data_values(bytearray(encoded))
        assert ours is not None
        assert [(cx, bytes(v)) for cx, v in ours] == [(cx, bytes(v)) for cx, v in theirs] == values
        mine = fastpath.ReceivedPData(ours).to_primitive().presentation_data_value_list
        assert [(cx, bytes(v)) for cx, v in mine] == values


def test_a_p_data_that_does_not_parse_is_left_to_pynetdicom() -> None:
    good = bytearray(_p_data_tf((1, b"\x03abcd")))
    assert fastpath.p_data_values(good) is not None
    assert fastpath.p_data_values(bytearray(b"\x01" + bytes(good[1:]))) is None  # another PDU type
    assert fastpath.p_data_values(good[:-1]) is None  # shorter than its length says
    assert fastpath.p_data_values(good + b"\x00") is None  # longer
    bad_item = bytearray(good)
    bad_item[6:10] = (1000).to_bytes(4, "big")  # an item longer than the PDU
    assert fastpath.p_data_values(bad_item) is None
    tiny_item = bytearray(good)
    tiny_item[6:10] = (1).to_bytes(4, "big")  # an item without its value
    assert fastpath.p_data_values(tiny_item) is None
    empty = bytearray(b"\x04\x00\x00\x00\x00\x00")
    assert fastpath.p_data_values(empty) is None


def test_processes_sharing_a_socket_take_turns_by_their_open_associations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two servers on one shared socket, as dicom_server --processes 2 runs them (here as
    threads): each new association goes to the one with fewer open, and closed ones count out."""
    from imaging.dicom.scp import AcceptLoad, listening_socket

    monkeypatch.setattr(AcceptLoad, "DEFER_SECONDS", 1.0)  # the idle one surely wakes first, even on a loaded box
    sock = listening_socket("127.0.0.1", 0)
    load = AcceptLoad(2)
    servers = [
        make_server(build_ae(), "127.0.0.1", 0, FakeServices(), listening=sock, load=load, slot=i) for i in range(2)
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    scu = AE(ae_title="CT_CLINA")
    scu.add_requested_context(Verification)
    port = sock.getsockname()[1]
    assocs = []
    try:
        for _ in range(4):
            assoc = scu.associate("127.0.0.1", port, ae_title="CLINA")
            assert assoc.is_established
            assocs.append(assoc)
        assert sorted(load.counts) == [2, 2]
        assert sorted(len(s.active_associations) for s in servers) == [2, 2]
    finally:
        for assoc in assocs:
            assoc.release()
    for server in servers:
        for assoc in server.active_associations:
            assoc.join(3600)
    assert list(load.counts) == [0, 0]
    for server in servers:
        server.shutdown()
    assert sock.fileno() == -1  # closed by the servers, and never shut down under another process


def test_a_connection_closed_before_any_association_counts_out_at_once() -> None:
    """A port probe (connect, close) is counted out when its connection closes, not when its
    association gives up waiting for an A-ASSOCIATE-RQ (the ACSE timeout): counted meanwhile,
    it drew the next associations to the other processes."""
    from imaging.dicom.scp import AcceptLoad, listening_socket

    sock = listening_socket("127.0.0.1", 0)
    load = AcceptLoad(1)
    ae = build_ae()
    ae.acse_timeout = 600  # what the probe's association would wait otherwise
    server = make_server(ae, "127.0.0.1", 0, FakeServices(), listening=sock, load=load, slot=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = socket.create_connection(sock.getsockname())
        probe.close()
        assert until(lambda: load.counts[0] == 0), list(load.counts)
        scu = AE(ae_title="CT_CLINA")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", sock.getsockname()[1], ae_title="CLINA")
        assert assoc.is_established
        assert list(load.counts) == [1]  # an association counts while it is open
        assoc.release()
        assert until(lambda: load.counts[0] == 0)
    finally:
        server.shutdown()


def test_a_busier_process_lets_the_other_take_the_connection(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The busier process waits until the other has taken the connection (its count rose),
    however long the other takes to run, up to DEFER_SECONDS; the idle one never waits."""
    from imaging.dicom import scp

    load = scp.AcceptLoad(2)
    clock = [0.0]
    waits: list[float] = []
    other_accepts_after = [7]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds
        if len(waits) == other_accepts_after[0]:
            load.started(1)  # the other process accepts, 7 ms late

    monkeypatch.setattr(scp.time, "sleep", sleep)
    monkeypatch.setattr(scp.time, "monotonic", lambda: clock[0])
    load.wait_turn(0)  # both idle: no waiting
    assert waits == []
    load.started(0)
    load.wait_turn(1)  # the other is busier
    assert waits == []
    load.wait_turn(0)  # this one is busier: waits until the other has it
    assert waits == [scp.AcceptLoad.POLL_SECONDS] * 7
    load.started(0)  # the other never takes the next one: this one takes it after DEFER_SECONDS
    other_accepts_after[0] = 0
    waits.clear()
    load.wait_turn(0)
    assert sum(waits) == pytest.approx(scp.AcceptLoad.DEFER_SECONDS, abs=scp.AcceptLoad.POLL_SECONDS)
    load.ended(0)
    load.ended(0)
    waits.clear()
    load.wait_turn(0)
    assert waits == []


def test_on_pynetdicom_s_path_a_data_set_is_written_one_fragment_past_the_limit_then_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is then larger than the limit, which ingest refuses as too large (0xA700)."""
    monkeypatch.setattr(fastpath, "max_bytes", 4)
    message = DIMSEMessage()
    path = tmp_path / "rx.dcm"
    message._data_set_file = open(path, "xb", buffering=0)  # type: ignore[assignment]  # noqa: SIM115
    message._data_set_path = path
    for fragment in (b"abc", b"def", b"ghi"):
        fastpath._write_received(message, fragment)
    assert message._data_set_file.closed  # type: ignore[union-attr]
    assert path.read_bytes() == b"abcdef"


def test_on_pynetdicom_s_path_a_failed_write_removes_the_file(tmp_path: Path) -> None:
    """ingest then cannot read it and refuses it as a storage failure (0xA700)."""

    class FullDisk(io.RawIOBase):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    message = DIMSEMessage()
    path = tmp_path / "rx.dcm"
    path.write_bytes(b"meta")
    message._data_set_file = FullDisk()  # type: ignore[assignment]
    message._data_set_path = path
    fastpath._write_received(message, b"abc")
    fastpath._write_received(message, b"def")  # dropped
    assert not path.exists()


def _request(
    calling: str = "CT_CLINA", *, roles: bool = False, extra: str | None = None, password: str | None = None
) -> bytes:
    """An A-ASSOCIATE-RQ as a modality encodes it: every storage SOP class in three transfer
    syntaxes (as storescu proposes them), one SOP class the server does not support and one
    context in a transfer syntax it does not take; SCP/SCU role selection for CT if asked."""
    from pynetdicom import StoragePresentationContexts, build_context
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
    )

    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.2"]
    contexts = [build_context(cx.abstract_syntax, syntaxes) for cx in StoragePresentationContexts]
    contexts += [build_context("1.2.826.0.1.3680043.8.498.999"), build_context(MRImageStorage, ["1.2.3.4.5"])]
    if extra is not None:
        contexts.append(build_context(extra))
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = "CLINA"
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.276.0.7230010.3.0.3.6.7"
    items: list[Any] = [length, implementation]
    if password is not None:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 2  # username and passcode
        identity.primary_field = f"{calling}-user".encode()
        identity.secondary_field = password.encode()
        items.append(identity)
    if roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = CTImageStorage
        role.scu_role, role.scp_role = True, True
        items.append(role)
    primitive.user_information = items
    return bytes(A_ASSOCIATE_RQ(primitive).encode())


def _read_pdu(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection after {data[:6]!r}")
        data += chunk
    return data


def _accept_bytes(server: Any, request: bytes) -> bytes:
    """The A-ASSOCIATE-AC the server answers `request` with (then released)."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as sock:
        sock.sendall(request)
        answer = _read_pdu(sock)
        assert answer[:1] == b"\x02", answer[:16]
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        assert _read_pdu(sock)[:1] == b"\x06"  # A-RELEASE-RP
    return answer


def test_a_request_seen_before_is_answered_from_memory_with_the_bytes_pynetdicom_answers(tmp_path: Path) -> None:
    from imaging.dicom.accel import negotiation

    requests = [_request(), _request(roles=True), _request("CT_CLINB", extra="1.2.840.10008.1.1")]
    plain = make_server(build_ae(), "127.0.0.1", 0, FakeServices())  # pynetdicom's own path
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        theirs = [_accept_bytes(plain, request) for request in requests]
    finally:
        plain.shutdown()
    accel.install(tmp_path)
    try:
        server = make_server(build_ae(), "127.0.0.1", 0, FakeServices())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for _ in range(3):  # the first time decoded and negotiated, then remembered
                assert [_accept_bytes(server, request) for request in requests] == theirs
            assert len(negotiation._requests) == len(negotiation._negotiated) == 3
            accepted = [cx for cx in theirs[0][74:].split(b"\x21\x00")[1:] if cx[4:5] == b"\x00"]
            assert len(accepted) > 100  # nearly every storage class was accepted
            assoc = _associate(server)  # an association of pynetdicom's own still works beside
            try:
                assert assoc.send_c_echo().Status == 0x0000
            finally:
                assoc.release()
        finally:
            server.shutdown()
    finally:
        accel.uninstall()
    assert not negotiation._requests and not negotiation._negotiated


def test_requests_are_remembered_up_to_a_limit_and_a_bad_one_is_refused_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imaging.dicom.accel import negotiation

    monkeypatch.setattr(negotiation, "REMEMBERED_REQUESTS", 2)
    try:
        first = negotiation.remembered_request(_request("A1"))
        assert negotiation.remembered_request(bytearray(_request("A1"))) is first
        negotiation.remembered_request(_request("A2"))
        negotiation.remembered_request(_request("A3"))  # A1 is the least recent: dropped
        assert len(negotiation._requests) == 2
        assert negotiation.remembered_request(_request("A1")) is not first
        broken = _request("A4")[:80]
        for _ in range(2):
            with pytest.raises(Exception):  # noqa: B017 - pynetdicom's own error, whatever it is
                negotiation.remembered_request(broken)
        assert len(negotiation._requests) == 2
        with_password = _request("A5", password="Demo-pass-2026!")
        decoded = negotiation.remembered_request(with_password)
        assert decoded.variable_items[-1].user_identity.primary_field == b"A5-user"
        assert negotiation.remembered_request(with_password) is not decoded  # never kept
        assert all(b"Demo-pass" not in key for _, key in negotiation._requests)
    finally:
        negotiation.forget()
