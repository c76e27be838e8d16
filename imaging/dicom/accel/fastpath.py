"""C-STORE's per-message work without pydicom: the received file's meta header and the
C-STORE response's command set, written by hand, and received P-DATA taken apart in place.

pynetdicom builds both through pydicom data sets (create_file_meta and write_file_meta_info
for every received file, primitive_to_message and encode for every response): about a
third of a millisecond of interpreter time per instance on the association's threads,
which a modality sending a series waits for on every image. Both encodings are short and
fixed (PS3.10 7.1 file meta, Explicit VR Little Endian; PS3.7 E.1 command set, Implicit VR
Little Endian), so imaging/dicom/accel/__init__.py swaps in encoders that produce the same
bytes as pynetdicom (tests/imaging/test_dicom_accel_fastpath.py compares them), and leaves
every other message and every unusual response to pynetdicom.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import struct
import sys
import tempfile
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from imaging.dicom.accel import elements, find, negotiation

log = logging.getLogger("imaging.dicom")
_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_PREAMBLE = b"\x00" * 128 + b"DICM"
max_bytes = sys.maxsize  # a received data set larger is not written whole (accel.install's max_file_bytes)


# --- encoding -------------------------------------------------------------------------


def _explicit_short(element: int, vr: bytes, value: bytes) -> bytes:
    """A group 0002 element with a 2-byte length (PS3.5 7.1.2)."""
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) as pynetdicom writes them in
    front of a received data set: version 00 01, the three UIDs, its implementation UID and
    version name."""
    body = b"".join(
        (
            struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01",
            _explicit_short(0x0002, b"UI", elements.pad(sop_class_uid.encode("ascii"), b"\x00")),
            _explicit_short(0x0003, b"UI", elements.pad(sop_instance_uid.encode("ascii"), b"\x00")),
            _explicit_short(0x0010, b"UI", elements.pad(transfer_syntax_uid.encode("ascii"), b"\x00")),
            _explicit_short(0x0012, b"UI", elements.pad(PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\x00")),
            _explicit_short(0x0013, b"SH", elements.pad(PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
        )
    )
    return _PREAMBLE + _explicit_short(0x0000, b"UL", struct.pack("<I", len(body))) + body


def store_response(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE response (PS3.7 9.3.1.2), or None when it carries more
    than a status and an Error Comment (pynetdicom encodes those)."""
    if primitive.OffendingElement is not None or primitive.MessageIDBeingRespondedTo is None:
        return None
    return store_response_command(
        str(primitive.AffectedSOPClassUID or ""),
        primitive.MessageIDBeingRespondedTo,
        primitive.Status,
        primitive.ErrorComment,
        str(primitive.AffectedSOPInstanceUID or ""),
    )


def store_response_command(
    sop_class_uid: str, message_id: int, status: Any, comment: str | None, sop_instance_uid: str
) -> bytes | None:
    """A C-STORE response's command set from its values, or None when one of them would not
    encode as pynetdicom encodes it (it is left to pynetdicom then)."""
    try:
        parts = [
            elements.implicit(0x0000, 0x0002, elements.pad(sop_class_uid.encode("ascii"), b"\x00")),
            elements.implicit(0x0000, 0x0100, struct.pack("<H", _C_STORE_RSP)),
            elements.implicit(0x0000, 0x0120, struct.pack("<H", message_id)),
            elements.implicit(0x0000, 0x0800, struct.pack("<H", _NO_DATA_SET)),
            elements.implicit(0x0000, 0x0900, struct.pack("<H", status)),
        ]
        if comment is not None:
            parts.append(elements.implicit(0x0000, 0x0902, elements.pad(comment.encode("ascii"), b" ")))
        parts.append(elements.implicit(0x0000, 0x1000, elements.pad(sop_instance_uid.encode("ascii"), b"\x00")))
    except (UnicodeEncodeError, struct.error, TypeError, AttributeError):  # AttributeError: not one string
        return None  # a value pydicom would encode differently, or refuse: its business
    body = b"".join(parts)
    return elements.implicit(0x0000, 0x0000, struct.pack("<I", len(body))) + body


# --- pynetdicom, patched ----------------------------------------------------------------

_names = itertools.count()
_TOKEN = uuid.uuid4().hex[:12]  # with the pid: unique across forks and across restarts reusing a pid
original_decode_msg = DIMSEMessage.decode_msg
original_send_msg = DIMSEServiceProvider.send_msg
original_decode_pdu = DULServiceProvider._decode_pdu


def _received_file(message: DIMSEMessage, assoc: Any, context_id: int) -> None:
    """Open the file a C-STORE's data set is received into, with its file meta written."""
    cs = message.command_set
    transfer_syntax = assoc._accepted_cx[context_id].transfer_syntax[0]
    out, path = open_received_file(str(cs.AffectedSOPClassUID), str(cs.AffectedSOPInstanceUID), str(transfer_syntax))
    message._data_set_file = out  # type: ignore[assignment]
    message._data_set_path = path


def _sync_file_range() -> Any:
    """Linux's sync_file_range(2), or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writing the range's dirty pages out; do not wait for them


def start_writeback(fd: int) -> None:
    """Start writing a received file's data to the disk, without waiting for it: every path
    that keeps the file makes it durable (fdatasync) before its answer, and then waits only for
    what is still on its way, while the file was read and checked and the index asked in the
    meantime. (Until 2026-12 the spool's fdatasync was handed to the store's thread pool for
    that overlap: the hand-off between threads cost more interpreter time than the overlap
    saved, bench/RESULTS.md.) Best effort: nothing where the system has no sync_file_range."""
    if _SYNC_FILE_RANGE is None:
        return
    if _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
        log.debug("sync_file_range failed: %s", os.strerror(ctypes.get_errno()))


def open_received_file(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> tuple[Any, Path]:
    """A new file in the temp folder (accel.install's receive folder) for a received data set, unbuffered,
    its preamble and file meta written; the caller closes and removes it."""
    path = Path(tempfile.gettempdir()) / f"rx-{_TOKEN}-{os.getpid()}-{next(_names)}.dcm"
    out = open(str(path), "xb", buffering=0)  # noqa: SIM115 - the caller closes it
    try:
        out.write(file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid))
    except BaseException:
        out.close()
        path.unlink(missing_ok=True)
        raise
    return out, path


class ReceivedPData:
    """A received P-DATA-TF PDU as the state machine takes it (to_primitive()), its values
    memoryviews of the received bytes rather than copies."""

    __slots__ = ("values",)

    def __init__(self, values: list[tuple[int, memoryview]]) -> None:
        self.values = values

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive.presentation_data_value_list.extend(self.values)  # type: ignore[arg-type]
        return primitive


def p_data_values(pdu: bytearray) -> list[tuple[int, memoryview]] | None:
    """The (presentation context ID, value) items of a whole P-DATA-TF PDU (PS3.8 9.3.5), each
    value (message control header and fragment) a view of `pdu`; None when it is not one or
    does not parse (pynetdicom decodes it then, and refuses it as it does)."""
    if len(pdu) < 6 or pdu[0] != 0x04:
        return None
    (length,) = struct.unpack_from(">L", pdu, 2)
    if 6 + length != len(pdu):
        return None
    return _p_data_items(pdu, 6)


def p_data_items(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """p_data_values of a P-DATA-TF PDU's body: what follows its 6-byte header."""
    return _p_data_items(body, 0)


def _p_data_items(buffer: bytearray, offset: int) -> list[tuple[int, memoryview]] | None:
    end = len(buffer)
    view = memoryview(buffer)
    values = []
    while offset < end:
        if offset + 6 > end:
            return None
        (item_length,) = struct.unpack_from(">L", buffer, offset)
        if item_length < 2 or offset + 4 + item_length > end:
            return None
        values.append((buffer[offset + 4], view[offset + 5 : offset + 4 + item_length]))
        offset += 4 + item_length
    return values if values else None


def decode_pdu(self: DULServiceProvider, bytestream: bytearray) -> tuple[Any, str]:
    """DULServiceProvider._decode_pdu, with a P-DATA-TF taken apart without copying its data
    (pynetdicom copies a received image three times on the way), and an A-ASSOCIATE-RQ
    remembered (imaging/dicom/accel/negotiation.py), when nobody listens for EVT_DATA_RECV or
    EVT_PDU_RECV, which are given pynetdicom's own objects."""
    assoc = self.assoc
    if not (assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV)):
        values = p_data_values(bytestream)
        if values is not None:
            return ReceivedPData(values), "Evt10"
        if bytestream[:1] == b"\x01":  # an A-ASSOCIATE-RQ: the same bytes are decoded once
            return negotiation.remembered_request(bytestream), "Evt6"
    return original_decode_pdu(self, bytestream)


def decode_msg(self: DIMSEMessage, primitive: P_DATA, assoc: Any = None) -> bool:
    """DIMSEMessage.decode_msg, with a received C-STORE data set going into a file whose
    meta header is written by hand. Any other message: pynetdicom's own decoding."""
    if not (_config.STORE_RECV_CHUNKED_DATASET and assoc is not None) or primitive.__class__ is not P_DATA:
        return original_decode_msg(self, primitive, assoc)
    pdvs = primitive.presentation_data_value_list
    for index, (context_id, data) in enumerate(pdvs):
        control = data[0]
        if control & 1:  # command fragment (PS3.8 E.2)
            self.encoded_command_set.write(data[1:])
            if not control & 2:
                continue
            self.context_id = context_id
            self.command_set = decode(self.encoded_command_set, True, True)
            field = self.command_set.CommandField
            if field != _C_STORE_RQ:
                # not a C-STORE request: pynetdicom decodes the whole command again, and the rest
                command = self.encoded_command_set.getvalue()
                self.encoded_command_set = BytesIO()
                restart = P_DATA()
                restart.presentation_data_value_list.append((context_id, bytes([control]) + command))
                restart.presentation_data_value_list.extend(pdvs[index + 1 :])
                return original_decode_msg(self, restart, assoc)
            self.__class__ = C_STORE_RQ
            if self.command_set.CommandDataSetType == _NO_DATA_SET:
                return True
            try:
                _received_file(self, assoc, context_id)
            except OSError:  # a full disk: received in memory instead, as pynetdicom would
                pass
        else:  # data set fragment
            if self._data_set_file is not None:
                _write_received(self, data[1:])
            else:
                self.data_set.write(data[1:])  # type: ignore[union-attr]
            if control & 2:
                return True
    return False


def _write_received(message: DIMSEMessage, fragment: bytes | memoryview) -> None:
    """Write a C-STORE data set fragment to its file, until it is more than max_bytes (the file
    is then closed, one fragment over: ingest refuses it as too large) or a write fails (the
    file is then removed: ingest refuses it, out of resources). The rest is dropped either way;
    the association goes on."""
    out: Any = message._data_set_file  # the file open_received_file opened
    if out is None or out.closed:
        return
    received = getattr(message, "_received", 0) + len(fragment)
    message._received = received  # type: ignore[attr-defined]
    try:
        out.write(fragment)
    except OSError:
        out.close()
        if message._data_set_path is not None:
            Path(str(message._data_set_path)).unlink(missing_ok=True)
        return
    if received > max_bytes:
        out.close()


def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """DIMSEServiceProvider.send_msg, with a plain C-STORE response, and a C-FIND response that
    carries a status and perhaps an identifier, encoded by hand (when no one listens for
    EVT_DIMSE_SENT, which is given pynetdicom's message object); a C-FIND response goes
    straight to the socket when it may (find.send_directly)."""
    if primitive.MessageIDBeingRespondedTo is not None and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        if isinstance(primitive, C_FIND):
            pdus = find.response_pdus(primitive, context_id, self.maximum_pdu_size)
            if pdus is not None:
                if not find.send_directly(self.dul, pdus):
                    for pdata in find.response_pdata(pdus):
                        self.dul.send_pdu(pdata)
                return
        elif isinstance(primitive, C_STORE):
            store = _store_pdata(primitive, context_id, self.maximum_pdu_size)
            if store is not None:
                self.dul.send_pdu(store)
                return
    original_send_msg(self, primitive, context_id)


def _store_pdata(primitive: C_STORE, context_id: int, maximum_pdu: int) -> P_DATA | None:
    command = store_response(primitive)
    if command is None or (maximum_pdu and len(command) + 6 > maximum_pdu):
        return None
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
    return pdata
