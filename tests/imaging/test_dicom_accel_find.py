"""imaging/dicom/accel/find.py: C-FIND responses encoded by hand.

Every identifier is compared byte for byte with pynetdicom's own encoding (pydicom's
write_dataset) in Implicit and Explicit VR Little Endian, and those the module leaves to
pydicom are checked to be left; the response's command set is compared with pynetdicom's;
then real associations on each DIMSE path carry a worklist's matches, and the bytes that
arrive are pynetdicom's in every transfer syntax the server accepts.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from datetime import date
from io import BytesIO
from pathlib import Path
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt, service_class
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import ModalityWorklistInformationFind

from imaging.dicom import accel
from imaging.dicom.accel import find
from imaging.dicom.handlers import Peer
from imaging.dicom.layout import Field, Layout, RowIdentifier
from imaging.dicom.procedures import WorklistQuery
from imaging.dicom.scp import build_ae, make_server
from tests.imaging.test_dicom_handlers import FakeServices

WORKLIST_UID = "1.2.840.10008.5.1.4.31"


def _element(ds: Dataset, tag: int, vr: str, value: Any) -> None:
    """As the worklist answers fill them (imaging/worklist_query.py): no check of the value."""
    ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)


def worklist_item(
    name: str = "Wang^Fang=王^芳", charset: str | None = "ISO_IR 192", description: str = "CT chest 胸部"
) -> Dataset:
    """A worklist answer as the MWL services give it: patient keys, the step's sequence."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    _element(ds, 0x00100010, "PN", name)
    _element(ds, 0x00100020, "LO", "P-0001")  # even
    _element(ds, 0x00100021, "LO", "CLINA")  # odd: padded with a space
    _element(ds, 0x00100030, "DA", None)  # no birth date: empty
    _element(ds, 0x00100040, "CS", "F")
    _element(ds, 0x00080050, "SH", "A-1")
    _element(ds, 0x0020000D, "UI", "2.25.700000001")  # odd: padded with NUL
    _element(ds, 0x00401001, "SH", "")
    _element(ds, 0x00321060, "LO", description)
    step = Dataset()
    _element(step, 0x00400001, "AE", "CT_A")
    _element(step, 0x00400002, "DA", "20300510")
    _element(step, 0x00400003, "TM", "090000")
    _element(step, 0x00080060, "CS", "CT")
    _element(step, 0x00400006, "PN", None)
    _element(step, 0x00400007, "LO", "Thorax, 1 mm")
    _element(step, 0x00400009, "SH", "SPS17")
    _element(step, 0x00400020, "CS", "SCHEDULED")
    _element(step, 0x00400008, "SQ", Sequence())  # asked for, nothing held: empty
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _nested() -> Dataset:
    ds = worklist_item()
    code = Dataset()
    code.CodeValue = "CT0001"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "CT Thorax 平扫"
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence([code])
    ds.RequestedProcedureCodeSequence = Sequence([code, Dataset()])  # an empty item too
    return ds


def _latin() -> Dataset:
    ds = worklist_item("Müller^Jürgen", "ISO_IR 100", "Thorax, Übersicht")
    ds.InstitutionName = "Hôpital Saint-Éloi"
    return ds


def _default_charset() -> Dataset:
    ds = worklist_item("Ødegaard^Åse", None, "Thorax, Øversikt")  # pydicom's default: ISO 8859-1
    return ds


def _item_with_its_own_charset() -> Dataset:
    ds = worklist_item("Li^Lei", None, "CT chest")
    ds.ScheduledProcedureStepSequence[0].SpecificCharacterSet = "ISO_IR 192"
    _element(ds.ScheduledProcedureStepSequence[0], 0x00400006, "PN", "张^医生")
    return ds


def _multi_valued() -> Dataset:
    ds = worklist_item()
    ds.ModalitiesInStudy = ["CT", "PT"]
    ds.OtherPatientIDs = ["X1", "Y22", "Z"]  # LO, values in the character set
    ds.ReferencedPatientPhotoSequence = Sequence()
    ds.SOPClassesInStudy = ["1.2.840.10008.5.1.4.1.1.2", "1.2.3"]
    _element(ds, 0x00081060, "PN", ["Li^Lei", "王^芳"])  # Name of Physician(s) Reading Study
    return ds


def _numbers() -> Dataset:
    ds = worklist_item()
    ds.NumberOfStudyRelatedInstances = "123"  # IS
    ds.PatientWeight = "72.5"  # DS
    ds.Rows = 512  # US
    ds.NumberOfWaveformSamples = 70000  # UL
    ds.RealWorldValueLastValueMapped = -5  # US or SS in the dictionary; set here as SS below
    ds["RealWorldValueLastValueMapped"].VR = "SS"
    ds.PatientSize = 1.5  # DS from a float
    _element(ds, 0x00189087, "FD", 1000.25)  # Diffusion b-value
    return ds


def _undefined_lengths() -> Dataset:
    ds = _nested()
    ds["ScheduledProcedureStepSequence"].is_undefined_length = True
    ds.ScheduledProcedureStepSequence[0].is_undefined_length_sequence_item = True
    ds.ReferencedStudySequence = Sequence()
    ds["ReferencedStudySequence"].is_undefined_length = True  # empty, yet delimited
    return ds


def _private_and_group_length() -> Dataset:
    ds = worklist_item()
    ds.add_new(0x00090010, "LO", "CLOUDPACS")
    ds.add_new(0x00091001, "LO", "private value")
    ds.add_new(0x00080000, "UL", 1234)  # a group length: never written
    ds.add_new(0x00100000, "UL", 99)
    return ds


def _long_text() -> Dataset:
    ds = worklist_item()
    ds.RequestedProcedureComments = "x" * 1001  # LT, odd
    ds.PatientComments = "注" * 333  # LT in UTF-8
    _element(ds, 0x00404001, "UT", "long " * 20_000)  # UT: a 4-byte length in explicit VR
    return ds


def _only_empty() -> Dataset:
    ds = Dataset()
    for tag, vr in ((0x00100010, "PN"), (0x00100020, "LO"), (0x0020000D, "UI"), (0x00080020, "DA")):
        _element(ds, tag, vr, "")
    ds.ScheduledProcedureStepSequence = Sequence([Dataset()])
    return ds


IDENTIFIERS = {
    "worklist answer": worklist_item,
    "nested sequences and an empty item": _nested,
    "ISO_IR 100": _latin,
    "default character set": _default_charset,
    "an item with its own character set": _item_with_its_own_charset,
    "multi-valued": _multi_valued,
    "numbers": _numbers,
    "undefined lengths": _undefined_lengths,
    "private and group length": _private_and_group_length,
    "long text": _long_text,
    "only empty values": _only_empty,
    "empty data set": Dataset,
}


@pytest.mark.parametrize("make", IDENTIFIERS.values(), ids=IDENTIFIERS.keys())
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_identifiers_are_written_as_pydicom_writes_them(make: Any, implicit: bool) -> None:
    theirs = encode(make(), implicit, True)
    ours = find.data_set_bytes(make(), implicit)
    assert theirs is not None
    assert ours == theirs
    assert find.encode(make(), implicit, True) == theirs


def test_each_of_many_worklist_answers_is_written_as_pydicom_writes_it() -> None:
    names = ["A^B", "Ab^C", "王^芳", "Wang^Fang=王^芳=wang^fang", "Smith^John^^Dr^", "O'Neil", "", "A=B=", "^^^"]
    for i in range(300):
        ds = worklist_item(names[i % len(names)])
        ds.AccessionNumber = "A" * (i % 16)  # every length, odd and even, empty included
        ds.StudyInstanceUID = "2.25." + "9" * (i % 59)
        description = "é" * (i % 7) if i % 2 else "描述" * (i % 5)
        ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription = description
        for implicit in (True, False):
            assert find.data_set_bytes(ds, implicit) == encode(ds, implicit, True), (i, implicit)


def _raw() -> Dataset:
    ds = decode(BytesIO(bytes(encode(worklist_item(), True, True))), True, True)  # elements not yet read
    return ds


def _iso_2022() -> Dataset:
    ds = worklist_item("Yamada^Tarou=山田^太郎", None, "CT")
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    return ds


def _binary() -> Dataset:
    ds = worklist_item()
    ds.add_new(0x00091002, "OB", b"\x01\x02\x03")
    return ds


def _ambiguous() -> Dataset:
    ds = worklist_item()
    ds.add_new(0x00283002, "US or SS", [256, 0, 16])  # LUT Descriptor
    return ds


def _date_object() -> Dataset:
    ds = worklist_item()
    _element(ds, 0x00100030, "DA", date(1980, 1, 2))
    return ds


def _several_numbers() -> Dataset:
    ds = worklist_item()
    ds.add_new(0x00280011, "US", [512, 256])
    return ds


LEFT_TO_PYDICOM = {
    "elements read from bytes": _raw,
    "code extensions": _iso_2022,
    "binary values": _binary,
    "an ambiguous VR": _ambiguous,
    "a date object": _date_object,
    "several binary numbers": _several_numbers,
}


@pytest.mark.parametrize("make", LEFT_TO_PYDICOM.values(), ids=LEFT_TO_PYDICOM.keys())
def test_what_it_does_not_write_is_left_to_pydicom_with_the_same_result(make: Any) -> None:
    for implicit in (True, False):
        assert find.data_set_bytes(make(), implicit) is None
        assert find.encode(make(), implicit, True) == encode(make(), implicit, True)


def test_big_endian_and_deflate_are_pydicom_s() -> None:
    for implicit, little, deflated in ((False, False, False), (False, True, True)):
        assert find.encode(worklist_item(), implicit, little, deflated) == encode(
            worklist_item(), implicit, little, deflated
        )


def test_a_value_too_long_for_explicit_vr_goes_to_pydicom_which_warns() -> None:
    ds = worklist_item()
    _element(ds, 0x00321060, "LO", "x" * 70_000)  # beyond a 2-byte length
    assert find.data_set_bytes(ds, False) is None
    with pytest.warns(UserWarning, match="exceeds the size of 64 kByte"):
        theirs = encode(ds, False, True)
    with pytest.warns(UserWarning, match="exceeds the size of 64 kByte"):
        assert find.encode(ds, False, True) == theirs
    assert find.data_set_bytes(ds, True) == encode(ds, True, True)  # implicit VR: a 4-byte length


def test_a_name_the_character_set_cannot_hold_is_replaced_as_pydicom_replaces_it() -> None:
    def name_outside() -> Dataset:
        return worklist_item("王^芳", None, "CT")  # not in ISO 8859-1 (a name encodes once: fresh ones)

    with pytest.warns(UserWarning, match="Failed to encode value"):
        theirs = encode(name_outside(), True, True)
    with pytest.warns(UserWarning, match="Failed to encode value"):
        assert find.data_set_bytes(name_outside(), True) == theirs


def test_a_code_string_outside_latin_1_fails_as_pydicom_fails() -> None:
    ds = worklist_item()
    _element(ds, 0x00080060, "CS", "ÇT€")
    assert find.data_set_bytes(ds, True) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert encode(ds, True, True) is None  # pynetdicom then answers 0xC312
        assert find.encode(ds, True, True) is None


# --- the response's command set ---------------------------------------------------------


def _response(status: int, identifier: bytes | None, message_id: int = 7, uid: str | None = WORKLIST_UID) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    if uid is not None:
        rsp.AffectedSOPClassUID = uid
    rsp.Status = status
    rsp.Identifier = None if identifier is None else BytesIO(identifier)
    return rsp


def _pynetdicom_pdus(primitive: C_FIND, max_pdu: int) -> list[list[tuple[int, bytes]]]:
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return [list(pdata.presentation_data_value_list) for pdata in message.encode_msg(5, max_pdu)]


IDENTIFIER = bytes(encode(worklist_item(), True, True))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "identifier"), [(0xFF00, IDENTIFIER), (0xFF01, b"\x08\x00\x50\x00\x00\x00\x00\x00"), (0x0000, None)]
)
@pytest.mark.parametrize("message_id", [1, 2, 255, 65535])
@pytest.mark.parametrize("uid", [WORKLIST_UID, "1.2.840.10008.5.1.4.1.2.2.1", "1.2", None])
def test_response_is_what_pynetdicom_sends_in_one_pdu(
    status: int, identifier: bytes | None, message_id: int, uid: str
) -> None:
    primitive = _response(status, identifier, message_id, uid)
    pdus = find.response_pdus(primitive, 5, 16384)
    assert pdus is not None and len(pdus) == 1  # command and identifier together
    theirs = _pynetdicom_pdus(primitive, 16384)  # the command and the identifier each in a PDU of its own
    assert pdus[0] == [pdv for pdu in theirs for pdv in pdu]
    encoded = find.p_data_tf(pdus[0])
    assert encoded == b"".join(bytes(P_DATA_TF(pdata).encode()) for pdata in find.response_pdata(pdus))


@pytest.mark.parametrize("max_pdu", [7, 64, 100, 255, 385])  # 385: command and identifier fit, not both
def test_a_response_too_large_for_one_pdu_is_fragmented_as_pynetdicom_fragments_it(max_pdu: int) -> None:
    for identifier in (IDENTIFIER, None):
        primitive = _response(0xFF00 if identifier else 0x0000, identifier)
        pdus = find.response_pdus(primitive, 5, max_pdu)
        assert pdus == _pynetdicom_pdus(primitive, max_pdu)
        assert all(len(find.p_data_tf(values)) - 6 <= max_pdu for values in pdus)


def test_the_limit_of_one_pdu_is_the_peer_s_maximum_length() -> None:
    fits = 12 + len(find.response_command(WORKLIST_UID, 7, 0xFF00, True)) + len(IDENTIFIER)
    assert len(find.response_pdus(_response(0xFF00, IDENTIFIER), 5, fits) or []) == 1
    assert len(find.p_data_tf(find.response_pdus(_response(0xFF00, IDENTIFIER), 5, fits)[0])) == fits + 6  # type: ignore[index]
    assert find.response_pdus(_response(0xFF00, IDENTIFIER), 5, fits - 1) == _pynetdicom_pdus(
        _response(0xFF00, IDENTIFIER), fits - 1
    )
    assert len(find.response_pdus(_response(0xFF00, IDENTIFIER), 5, 0) or []) == 1  # 0: no limit


def test_a_response_that_says_more_than_its_status_is_pynetdicom_s() -> None:
    commented = _response(0xC000, None)
    commented.ErrorComment = "no"
    assert find.response_pdus(commented, 5, 16384) is None
    offending = _response(0xA900, None)
    offending.OffendingElement = [0x00100010]
    assert find.response_pdus(offending, 5, 16384) is None
    assert find.response_pdus(_response(0xFF00, b""), 5, 16384) is None  # pynetdicom sends no data PDV


# --- on real associations, each DIMSE path -----------------------------------------------


def _row_layout() -> Layout:
    """A worklist answer laid out for rows (imaging.dicom.layout), as the MWL services give them."""
    step = (
        Field(0x00400001, "AE", lambda row: row[2]),  # Scheduled Station AE Title
        Field(0x00400007, "LO", lambda row: row[3]),  # Scheduled Procedure Step Description
    )
    return Layout(
        [
            Field(0x00100010, "PN", lambda row: row[0]),  # Patient's Name
            Field(0x0020000D, "UI", lambda row: row[1]),  # Study Instance UID
            Field(0x00380010, "LO"),  # Admission ID: asked, not held
            Field(0x00400100, "SQ", item=step),
        ]
    )


_ROWS = [("Wang^Fang=王^芳", "1.2.3", "CT_1", "胸部 CT"), ("", "1.2.34", "", "")]


class _WorklistServices(FakeServices):
    def worklist(self, peer: Peer, query: WorklistQuery) -> Iterable[Dataset | RowIdentifier]:
        self.queries.append(query)  # type: ignore[arg-type]
        return iter(self.matches)


@pytest.fixture
def worklist_server(dimse_path: bool) -> Iterator[tuple[Any, _WorklistServices]]:
    services = _WorklistServices()
    server = make_server(build_ae(), "127.0.0.1", 0, services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, services
    server.shutdown()


def _answers(server: Any, syntax: str, max_pdu: int) -> list[tuple[int, bytes]]:
    """(status, identifier bytes as they arrived) of each response to one MWL C-FIND."""
    received: list[tuple[int, bytes]] = []

    def keep(event: evt.Event) -> None:
        message = event.message
        if message.command_set.CommandField == 0x8020:
            received.append((int(message.command_set.Status), message.data_set.getvalue() if message.data_set else b""))

    scu = AE(ae_title="CT_CLINA")
    scu.maximum_pdu_size = max_pdu
    scu.add_requested_context(ModalityWorklistInformationFind, [syntax])
    assoc = scu.associate(
        "127.0.0.1", server.server_address[1], ae_title="CLINA", evt_handlers=[(evt.EVT_DIMSE_RECV, keep)]
    )
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        query.ScheduledProcedureStepSequence = Sequence([Dataset()])
        statuses = [status.Status for status, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    finally:
        assoc.release()
    assert statuses == [status for status, _ in received]
    return received


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize("max_pdu", [16382, 256])  # 256: the identifiers do not fit in one PDU
def test_matches_arrive_as_pynetdicom_encodes_them_on_each_path(worklist_server, syntax: str, max_pdu: int) -> None:  # type: ignore[no-untyped-def]
    server, services = worklist_server
    # (an empty identifier is pynetdicom's failure 0xC312 on either path)
    services.matches = [make() for make in IDENTIFIERS.values() if make not in (_long_text, Dataset)]
    services.matches += [_raw(), _iso_2022()]
    services.matches += [RowIdentifier(_row_layout(), row) for row in _ROWS]  # answered from rows
    answers = _answers(server, syntax, max_pdu)
    implicit = syntax == ImplicitVRLittleEndian
    little = syntax != ExplicitVRBigEndian
    deflated = syntax == DeflatedExplicitVRLittleEndian
    datasets = [m.dataset() if isinstance(m, RowIdentifier) else m for m in services.matches]
    expected = [encode(ds, implicit, little, deflated) for ds in datasets]
    assert answers == [(0xFF00, identifier) for identifier in expected] + [(0x0000, b"")]
    assert len(services.queries) == 1


def test_the_accelerated_path_encodes_and_sends_the_responses_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder and the responses go through find.py once installed (and not before), the
    responses written to the socket by the association's thread."""
    written: list[bytes | None] = []
    direct: list[bool] = []
    data_set_bytes, send_directly = find.data_set_bytes, find.send_directly

    def counting_bytes(ds: Dataset, implicit: bool) -> bytes | None:
        written.append(data_set_bytes(ds, implicit))
        return written[-1]

    def counting_sends(dul: Any, pdus: Any) -> bool:
        direct.append(send_directly(dul, pdus))
        return direct[-1]

    monkeypatch.setattr(find, "data_set_bytes", counting_bytes)
    monkeypatch.setattr(find, "send_directly", counting_sends)
    assert service_class.encode is encode
    assert accel.install(tmp_path)
    try:
        assert service_class.encode is find.encode
        services = _WorklistServices()
        services.matches = [worklist_item(), _nested()]
        server = make_server(build_ae(), "127.0.0.1", 0, services)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            answers = _answers(server, ImplicitVRLittleEndian, 16382)
            answers += _answers(server, ImplicitVRLittleEndian, 256)  # fragments, sent directly too
        finally:
            server.shutdown()
    finally:
        accel.uninstall()
    assert service_class.encode is encode
    assert [status for status, _ in answers] == [0xFF00, 0xFF00, 0x0000] * 2
    assert written == [identifier for _, identifier in answers if identifier]
    assert direct == [True] * 6


def test_a_response_waits_for_the_queue_when_something_is_queued_ahead(tmp_path: Path) -> None:
    """send_directly declines while the reading thread has PDUs to send, in another state than
    Sta6, or with someone listening for sent PDUs; and on a socket it did not wrap."""
    sent: list[bytes] = []
    wrapper = SimpleNamespace(send=sent.append)
    queue: Queue[Any] = Queue()
    handlers: list[Any] = []
    dul = SimpleNamespace(
        socket=wrapper,
        state_machine=SimpleNamespace(current_state="Sta6"),
        to_provider_queue=queue,
        assoc=SimpleNamespace(get_handlers=lambda event: handlers if event == evt.EVT_PDU_SENT else []),
    )
    pdus = find.response_pdus(_response(0xFF00, IDENTIFIER), 5, 16384)
    assert pdus is not None
    assert not find.send_directly(dul, pdus)  # not a wrapper send_whole_pdus made
    find.send_whole_pdus(wrapper)
    assert find.send_directly(dul, pdus)
    assert sent == [find.p_data_tf(pdus[0])]
    queue.put("a PDU")
    assert not find.send_directly(dul, pdus)
    queue.get()
    dul.state_machine.current_state = "Sta7"
    assert not find.send_directly(dul, pdus)
    dul.state_machine.current_state = "Sta6"
    handlers.append("someone")
    assert not find.send_directly(dul, pdus)
    assert len(sent) == 1


def test_matches_answered_from_rows_are_written_without_a_dataset_once_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the accelerated path a RowIdentifier goes to find.encode as it is, and no Dataset is
    made for it on Implicit or Explicit VR Little Endian; big endian gets its Dataset."""
    made: list[Dataset] = []
    dataset = Layout.dataset

    def counted(self: Layout, row: Any) -> Dataset:
        made.append(dataset(self, row))
        return made[-1]

    monkeypatch.setattr(Layout, "dataset", counted)
    assert accel.install(tmp_path)
    try:
        services = _WorklistServices()
        services.matches = [RowIdentifier(_row_layout(), row) for row in _ROWS]
        server = make_server(build_ae(), "127.0.0.1", 0, services)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            little = _answers(server, ImplicitVRLittleEndian, 16382) + _answers(server, ExplicitVRLittleEndian, 16382)
            assert made == []
            big = _answers(server, ExplicitVRBigEndian, 16382)
        finally:
            server.shutdown()
    finally:
        accel.uninstall()
    assert len(made) == len(_ROWS)
    expected = [
        (0xFF00, encode(_row_layout().dataset(row), implicit, little_endian, False))
        for implicit, little_endian in ((True, True), (False, True), (False, False))
        for row in _ROWS
    ]
    answered = [answer for answer in little + big if answer[0] == 0xFF00]
    assert answered == expected
