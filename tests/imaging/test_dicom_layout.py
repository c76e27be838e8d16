"""imaging/dicom/layout.py: identifiers written from rows, byte for byte as pydicom writes the
same values as a Dataset (Implicit and Explicit VR Little Endian), and the keys it does not
lay out left to pydicom."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from imaging.dicom.layout import CHARSET, Field, Layout, RowIdentifier
from imaging.query import RESPONSE_CHARSET


def pydicom_bytes(ds: Dataset, implicit: bool) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


def decoded(data: bytes, implicit: bool) -> Dataset:
    return read_dataset(BytesIO(data), implicit, True)


def column(i: int) -> Any:
    return lambda row: row[i]


# (tag, VR) of the worklist's keys with a value; then keys returned empty of several VRs.
VALUED = [
    (0x00100010, "PN"),  # Patient's Name
    (0x00100020, "LO"),  # Patient ID
    (0x00080050, "SH"),  # Accession Number
    (0x0020000D, "UI"),  # Study Instance UID
    (0x00100030, "DA"),  # Patient's Birth Date
    (0x00100040, "CS"),  # Patient's Sex
]
STEP = [
    (0x00400001, "AE"),  # Scheduled Station AE Title
    (0x00400003, "TM"),  # Scheduled Procedure Step Start Time
    (0x00400006, "PN"),  # Scheduled Performing Physician's Name
    (0x00400007, "LO"),  # Scheduled Procedure Step Description
]
EMPTY = [
    (0x00380010, "LO"),  # Admission ID
    (0x00101030, "DS"),  # Patient's Weight
    (0x001021C0, "US"),  # Pregnancy Status
    (0x00081110, "SQ"),  # Referenced Study Sequence
    (0x00104000, "LT"),  # Patient Comments
    (0x00100021, "LO"),  # Issuer of Patient ID
]


def layout(with_item: bool = True, empty: bool = True) -> Layout:
    fields = [Field(tag, vr, column(i)) for i, (tag, vr) in enumerate(VALUED)]
    if empty:
        fields += [Field(tag, vr) for tag, vr in EMPTY]
    if with_item:
        item = [Field(tag, vr, column(len(VALUED) + i)) for i, (tag, vr) in enumerate(STEP)]
        item.append(Field(0x00400008, "SQ"))  # Scheduled Protocol Code Sequence, asked: empty
        fields.append(Field(0x00400100, "SQ", item=tuple(item)))
    return Layout(fields)


ROWS = {
    "chinese": (
        "Wang^Fang=王^芳",
        "P1001",
        "A1",
        "1.2.826.0.1.3680043.10.1",
        "19610302",
        "F",
        "CT_1",
        "090000",
        "李^医生",
        "CT 胸部",
    ),
    "odd lengths": ("Li^Na", "P1", "A123", "1.2.3", "19610302", "M", "CT1", "0900", "Zhang", "CT"),
    "empty and missing": ("", "P2", "A2", "1.2.3.4", "", "", "", "", "", ""),
    "spaces kept or stripped as pydicom does": (
        " Li^Na ",
        " P3 ",
        "A3 ",
        " 1.2.3 ",
        "19610302",
        "F ",
        " ST ",
        "090000",
        "Zhang^=",
        " x ",
    ),
    "trailing component groups": ("Wang^Fang==", "P4", "A4", "1.2", "19610302", "O", "ST", "1200", "=", "a"),
    "backslashes": ("A^B\\C^D", "P5\\P6", "A5", "1.2\\ 1.3 ", "19610302", "F", "ST", "1200", "X\\Y=", "one\\two"),
    "non-ascii in every text VR": (
        "Müller^José",
        "患者1",
        "检查1",
        "1.2.3",
        "19610302",
        "F",
        "ST",
        "1200",
        "Ödön",
        "Ç",
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("shape", ["full", "no item", "only held keys"])
def test_a_row_is_written_as_pydicom_writes_its_dataset(row: tuple[str, ...], implicit: bool, shape: str) -> None:
    laid = layout(with_item=shape != "no item", empty=shape != "only held keys")
    written = laid.written(row, implicit)
    ds = laid.dataset(row)
    assert written is not None
    assert written == pydicom_bytes(ds, implicit)
    again = decoded(written, implicit)
    assert [elem.tag for elem in again] == [elem.tag for elem in ds]
    assert again.SpecificCharacterSet == CHARSET == RESPONSE_CHARSET


def test_the_chinese_name_is_utf8_and_empty_keys_are_empty() -> None:
    laid = layout()
    again = decoded(laid.written(ROWS["chinese"], True) or b"", True)
    again.decode()
    assert str(again.PatientName) == "Wang^Fang=王^芳"
    assert again.PatientName.ideographic == "王^芳"
    assert again.AdmissionID in ("", None) and len(again.ReferencedStudySequence) == 0
    item = again.ScheduledProcedureStepSequence[0]
    assert (str(item.ScheduledPerformingPhysicianName), item.ScheduledProcedureStepDescription) == (
        "李^医生",
        "CT 胸部",
    )
    assert len(item.ScheduledProtocolCodeSequence) == 0
    empty = decoded(laid.written(ROWS["empty and missing"], False) or b"", False)
    assert empty.PatientName in ("", None) and empty.PatientBirthDate in ("", None)
    assert empty.ScheduledProcedureStepSequence[0].ScheduledStationAETitle in ("", None)


def test_a_sequence_asked_with_an_empty_item_is_answered_with_an_empty_item() -> None:
    laid = Layout([Field(0x00100010, "PN", column(0)), Field(0x00400100, "SQ", item=())])
    for implicit in (True, False):
        written = laid.written(("Li^Na",), implicit)
        assert written == pydicom_bytes(laid.dataset(("Li^Na",)), implicit)
        assert len(decoded(written or b"", implicit).ScheduledProcedureStepSequence) == 1


@pytest.mark.parametrize(
    "field",
    [
        Field(0x00280106, "US or SS"),  # Smallest Image Pixel Value: an ambiguous VR
        Field(0x00101030, "DS", column(0)),  # a value of a VR this module does not write
        Field(0x00100000, "UL"),  # a group length
        Field(0x00020010, "UI"),  # file meta
    ],
)
def test_keys_it_does_not_lay_out_leave_the_whole_answer_to_pydicom(field: Field) -> None:
    laid = Layout([Field(0x00100010, "PN", column(1)), field])
    assert laid.written(("70", "Li^Na"), True) is None
    assert laid.written(("70", "Li^Na"), False) is None
    assert str(laid.dataset(("70", "Li^Na")).PatientName) == "Li^Na"


def test_a_value_pydicom_s_default_encoding_cannot_hold_is_left_to_pydicom() -> None:
    laid = Layout([Field(0x00100040, "CS", column(0))])  # CS: pydicom's default encoding, Latin-1
    assert laid.written(("女",), True) is None
    assert laid.written(("É",), True) == pydicom_bytes(laid.dataset(("É",)), True)


def test_a_value_too_long_for_explicit_vr_s_length_is_left_to_pydicom() -> None:
    laid = Layout([Field(0x00081030, "LO", column(0))])
    long = "x" * 70_000
    assert laid.written((long,), False) is None
    assert laid.written((long,), True) == pydicom_bytes(laid.dataset((long,)), True)


def test_a_row_identifier_is_its_layout_s_answer() -> None:
    laid = layout()
    row = ROWS["chinese"]
    match = RowIdentifier(laid, row)
    assert match.written(True) == laid.written(row, True)
    assert match.dataset() == laid.dataset(row)
