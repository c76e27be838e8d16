"""C-FIND's per-match work without pydicom's writer: each pending response's identifier and
command set written by hand, and both sent in one P-DATA-TF PDU.

pynetdicom sends every match of a C-FIND as its own C-FIND-RSP (PS3.4 C.4.1.3.1, status
0xFF00) and encodes each one's identifier with pydicom's write_dataset and each one's
command set with pydicom twice (primitive_to_message for the group length, encode_msg for
the bytes), then hands the command and the identifier to the reading thread as two PDUs:
about a millisecond of interpreter time per match, which a modality asking for a station's
day list (tens of matches) waits for on every query.

`encode` stands in for pynetdicom's `encode` in its service classes (service_class.encode,
used for C-FIND identifiers and the status identifiers of C-GET and C-MOVE): on Implicit
and Explicit VR Little Endian it writes the data sets whose every element it knows how to
write, and produces the bytes pydicom's write_dataset produces (PS3.5 7.1, 7.5; the rules of
pydicom 3.0's filewriter: tag order, group lengths left out, even lengths padded with a space,
UIDs with NUL, text in the data set's Specific Character Set, sequences and items of
defined length unless marked otherwise); tests/imaging/test_dicom_accel_find.py compares
them. Anything else (big endian, deflate, values read from bytes and never touched, binary
and ambiguous VRs, multi-valued numbers, code extensions, over-long values in explicit VR)
goes to pydicom, unchanged.
A RowIdentifier (imaging.dicom.layout: a worklist match answered from its database row,
with no Dataset made) is written from its row by its layout, or made a Dataset for pydicom.

`response_pdus` makes the PDUs of a C-FIND response whose command carries no more than the
status (PS3.7 9.3.2.2: Affected SOP Class UID, Command Field, Message ID Being Responded To,
Command Data Set Type, Status), command set written by hand (Implicit VR Little Endian,
PS3.7 6.3.1), command and identifier as two PDVs of one P-DATA-TF (PS3.8 9.3.5 allows
several) when they fit in the peer's maximum PDU length, fragmented as pynetdicom fragments
them when not; `send_directly` writes them to the socket from the association's thread
(each PDU whole, under a lock the reading thread's sends take too: `send_whole_pdus`).
Everything else goes to pynetdicom.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from io import BufferedIOBase, BytesIO
from typing import Any

from pydicom.charset import default_encoding, encode_string, python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode as original_encode
from pynetdicom.pdu_primitives import P_DATA

from imaging.dicom.accel import elements
from imaging.dicom.layout import RowIdentifier

_C_FIND_RSP = 0x8020
_DATA_SET_PRESENT = 0x0001  # (0000,0800) as pynetdicom sets it when an identifier follows
_NO_DATA_SET = 0x0101
_COMMAND_LAST, _DATA_LAST = 0x03, 0x02
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"  # (FFFE,E00D), length 0
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # explicit VR: reserved 2 bytes, 4-byte length
_NUMBERS = {"US": "<H", "UL": "<L", "SS": "<h", "SL": "<l", "FL": "<f", "FD": "<d", "SV": "<q", "UV": "<Q"}
_TEXT = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})  # in the Specific Character Set; PN apart
_ASCII = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR"})  # pydicom's default encoding
_MULTI = (MultiValue, list, tuple)


class _NotMine(Exception):
    """An element this encoder does not write as pydicom would: pydicom writes the data set."""


# --- the identifier ---------------------------------------------------------------------


def encode(
    ds: Dataset | RowIdentifier, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom.dsutils.encode: the same bytes, written here when it can. A RowIdentifier (a
    match answered from its database row, imaging.dicom.layout) is written from its row on
    Implicit and Explicit VR Little Endian, and made a Dataset for anything else."""
    if isinstance(ds, RowIdentifier):
        if is_little_endian and not deflated:
            written = ds.written(is_implicit_vr)
            if written is not None:
                return written
        ds = ds.dataset()
    if is_little_endian and not deflated:
        written = data_set_bytes(ds, is_implicit_vr)
        if written is not None:
            return written
    return original_encode(ds, is_implicit_vr, is_little_endian, deflated)


def data_set_bytes(ds: Dataset, implicit: bool) -> bytes | None:
    """The data set in Implicit (or Explicit) VR Little Endian as pydicom's write_dataset
    writes it, or None when it holds anything this module leaves to pydicom."""
    try:
        return _data_set(ds, implicit, [default_encoding])
    except (_NotMine, UnicodeError, struct.error, TypeError, AttributeError):
        return None


def _data_set(ds: Dataset, implicit: bool, parent: list[str]) -> bytes:
    encodings = _encodings(ds, parent)
    out = []
    for tag, elem in sorted(ds.items(), key=_tag_order):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # group lengths are not written (PS3.5 7.2)
            continue
        if not isinstance(elem, DataElement):  # a RawDataElement: pydicom converts or copies it
            raise _NotMine
        out.append(_element(elem, implicit, encodings))
    return b"".join(out)


def _tag_order(item: tuple[int, Any]) -> int:
    return int(item[0])  # a plain int compares in C; a pydicom Tag in Python


def _encodings(ds: Dataset, parent: list[str]) -> list[str]:
    """The Python codecs of the data set's text: its own Specific Character Set, else its
    parent's (PS3.5 7.5.3). One character set without code extensions, as pydicom converts it
    without a word; anything else is pydicom's to convert."""
    elem = ds.get_item(0x00080005)
    if elem is None:
        return parent
    if not isinstance(elem, DataElement):
        raise _NotMine
    value = elem.value
    if not value:
        return [default_encoding]
    if not isinstance(value, str) or value not in python_encoding:
        raise _NotMine
    return [python_encoding[value]]


def _element(elem: DataElement, implicit: bool, encodings: list[str]) -> bytes:
    vr = elem.VR
    writer = _WRITERS.get(vr)  # an ambiguous VR ("US or SS") among those not here: pydicom corrects it
    value = elem.value
    undefined = elem.is_undefined_length
    if writer is None or isinstance(value, BufferedIOBase) or (undefined and vr != "SQ"):
        raise _NotMine
    encoded = b"" if _is_empty(vr, value) else writer(elem, vr, implicit, encodings)
    length = _UNDEFINED if undefined else len(encoded)
    tag = elem.tag
    if implicit:
        head = struct.pack("<HHL", tag >> 16, tag & 0xFFFF, length)
    elif vr in _LONG:
        head = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
    elif length > 0xFFFF:  # pydicom writes it as UN, with a warning
        raise _NotMine
    else:
        head = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    return head + encoded + _SEQUENCE_END if undefined else head + encoded


def _is_empty(vr: str, value: Any) -> bool:
    """DataElement.is_empty (a value multiplicity of 0; a sequence without items), without its
    property calls."""
    if vr == "SQ":
        return not value
    if value is None:
        return True
    if isinstance(value, str | bytes | PersonName | list | MultiValue | tuple):
        return not value
    return False


def _strings(value: Any) -> str:
    """pydicom's multi_string: the values of a multi-valued string joined by backslashes."""
    if isinstance(value, str):
        return value
    if isinstance(value, _MULTI) and all(isinstance(v, str) for v in value):
        return "\\".join(value)
    raise _NotMine


def _ascii(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """AE, AS, CS, DA, DT, TM, UR (strings only; pydicom formats date and time objects)."""
    text = _strings(elem.value)
    return elements.pad(text.encode(default_encoding), b" ")


def _uid(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    return elements.pad(_strings(elem.value).encode(default_encoding), b"\x00")


def _text(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """SH, LO, ST, LT, UC, UT: each value in the character set, then joined (write_text)."""
    value = elem.value
    if isinstance(value, str):
        encoded = encode_string(value, encodings)
    elif isinstance(value, _MULTI) and value and isinstance(value[0], str):
        encoded = b"\\".join(encode_string(v, encodings) for v in value)
    else:
        raise _NotMine
    return elements.pad(encoded, b" ")


def _person_name(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """PN: each name's component groups in the character set (PersonName.encode, as write_PN)."""
    value = elem.value
    names = [value] if elem.VM == 1 else value
    if not all(isinstance(name, PersonName) for name in names):
        raise _NotMine
    return elements.pad(b"\\".join(name.encode(encodings) for name in names), b" ")


def _number_string(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """IS, DS: the string each number was read from, if any (write_number_string)."""
    value = elem.value
    values = value if isinstance(value, _MULTI) else [value]
    text = "\\".join(v.original_string if hasattr(v, "original_string") else str(v) for v in values)
    return elements.pad(text.encode(default_encoding), b" ")


def _number(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """One binary number (several go to pydicom, which treats some ambiguous tags apart)."""
    value = elem.value
    if isinstance(value, _MULTI) or isinstance(value, str | bytes):
        raise _NotMine
    return struct.pack(_NUMBERS[vr], value)


def _sequence(elem: DataElement, vr: str, implicit: bool, encodings: list[str]) -> bytes:
    """SQ: each item (FFFE,E000) with its length, or undefined and delimited (PS3.5 7.5)."""
    out = []
    for item in elem.value:
        if not isinstance(item, Dataset):
            raise _NotMine
        body = _data_set(item, implicit, encodings)
        if getattr(item, "is_undefined_length_sequence_item", False):
            out.append(_ITEM + struct.pack("<L", _UNDEFINED) + body + _ITEM_END)
        else:
            out.append(_ITEM + struct.pack("<L", len(body)) + body)
    return b"".join(out)


_Writer = Callable[[DataElement, str, bool, list[str]], bytes]
_WRITERS: dict[str, _Writer] = {
    **dict.fromkeys(_ASCII, _ascii),
    **dict.fromkeys(_TEXT, _text),
    **dict.fromkeys(_NUMBERS, _number),
    "UI": _uid,
    "PN": _person_name,
    "IS": _number_string,
    "DS": _number_string,
    "SQ": _sequence,
}


# --- the response -----------------------------------------------------------------------


def response_command(sop_class_uid: str | None, message_id: int, status: int, with_identifier: bool) -> bytes:
    """The command set of a C-FIND response carrying a status alone (PS3.7 9.3.2.2), group
    length first, in Implicit VR Little Endian as pynetdicom encodes it."""
    parts = []
    if sop_class_uid is not None:
        parts.append(elements.implicit(0x0000, 0x0002, elements.pad(sop_class_uid.encode("ascii"), b"\x00")))
    parts += [
        elements.implicit(0x0000, 0x0100, struct.pack("<H", _C_FIND_RSP)),
        elements.implicit(0x0000, 0x0120, struct.pack("<H", message_id)),
        elements.implicit(0x0000, 0x0800, struct.pack("<H", _DATA_SET_PRESENT if with_identifier else _NO_DATA_SET)),
        elements.implicit(0x0000, 0x0900, struct.pack("<H", status)),
    ]
    body = b"".join(parts)
    return elements.implicit(0x0000, 0x0000, struct.pack("<L", len(body))) + body


Pdv = tuple[int, bytes]  # (presentation context ID, message control header and fragment)


def response_pdus(primitive: C_FIND, context_id: int, maximum_pdu: int) -> list[list[Pdv]] | None:
    """The PDUs (each a list of PDVs) of a C-FIND response: command and identifier together
    when they fit in one, else fragmented as pynetdicom fragments them (PS3.8 E.2); None when
    the response carries more than a status (pynetdicom encodes it then)."""
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    identifier = primitive.Identifier
    if identifier is not None and not (isinstance(identifier, BytesIO) and identifier.getbuffer().nbytes):
        return None
    uid = primitive.AffectedSOPClassUID
    try:
        command = response_command(
            None if uid is None else str(uid),
            primitive.MessageIDBeingRespondedTo,
            primitive.Status,
            identifier is not None,
        )
    except (UnicodeEncodeError, struct.error, TypeError):
        return None
    data = b"" if identifier is None else identifier.getvalue()
    if 0 < maximum_pdu < 7:  # no room for a fragment: pynetdicom refuses it as it does
        return None
    if not maximum_pdu or 12 + len(command) + len(data) <= maximum_pdu:
        values = [(context_id, bytes([_COMMAND_LAST]) + command)]
        if data:
            values.append((context_id, bytes([_DATA_LAST]) + data))
        return [values]
    return _fragments(context_id, command, maximum_pdu - 6, True) + _fragments(context_id, data, maximum_pdu - 6, False)


def _fragments(context_id: int, value: bytes, size: int, command: bool) -> list[list[Pdv]]:
    """One PDU per fragment of at most `size` bytes, the last marked last (PS3.8 E.2)."""
    more, last = (0x01, _COMMAND_LAST) if command else (0x00, _DATA_LAST)
    pdus = []
    for start in range(0, len(value), size):
        control = last if start + size >= len(value) else more
        pdus.append([(context_id, bytes([control]) + value[start : start + size])])
    return pdus


def response_pdata(pdus: list[list[Pdv]]) -> list[P_DATA]:
    """The PDUs as P-DATA primitives, for the association's reading thread to send."""
    primitives = []
    for values in pdus:
        pdata = P_DATA()
        pdata.presentation_data_value_list.extend(values)
        primitives.append(pdata)
    return primitives


def p_data_tf(values: list[Pdv]) -> bytes:
    """A P-DATA-TF PDU of these PDVs (PS3.8 9.3.5)."""
    items = b"".join(struct.pack(">LB", len(value) + 1, context_id) + value for context_id, value in values)
    return struct.pack(">BBL", 0x04, 0x00, len(items)) + items


# --- sending from the association's own thread ----------------------------------------------

_LOCKED = "_cloudpacs_whole_pdus"


def send_whole_pdus(wrapper: Any) -> None:
    """Make this AssociationSocket's send() write each PDU whole under a lock, so that another
    thread than its reading one may send on it (send_directly)."""
    lock = threading.Lock()
    send = wrapper.send

    def locked(bytestream: bytes) -> None:
        with lock:
            send(bytestream)

    # Attributes of this one socket wrapper: the DUL calls self.socket.send(bytes) for each PDU.
    wrapper.send = locked
    setattr(wrapper, _LOCKED, True)


def send_directly(dul: Any, pdus: list[list[Pdv]]) -> bool:
    """Write a response's PDUs to the socket from the calling thread (the association's, which
    serves the C-FIND), in one call, instead of handing each to the reading thread through its
    queue and state machine (a thread wake-up, and the interpreter lock passed back and forth,
    for every match). Only while the association is established (Sta6, where a P-DATA-TF
    changes no state: PS3.8 9.2, DT-1), nothing is queued ahead, and no one listens for the
    PDUs sent; False leaves it to the queue."""
    wrapper = dul.socket
    if wrapper is None or not getattr(wrapper, _LOCKED, False):
        return False
    if dul.state_machine.current_state != "Sta6" or dul.to_provider_queue.qsize():
        return False
    if dul.assoc.get_handlers(evt.EVT_PDU_SENT):
        return False
    wrapper.send(b"".join(p_data_tf(values) for values in pdus))
    return True
