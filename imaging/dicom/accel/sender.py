"""C-STORE requests sent as the stored file's bytes, past pynetdicom's per-PDU machinery.

Association.send_c_store hands each P-DATA-TF PDU of a data set to the DUL thread through a
queue and its state machine (32 of them for a 512x512 CT image at the 16 KiB PDU many peers
accept), and pauses and resumes the association's reactor around every request, which polls
at 1 ms. Routing a study (imaging/dicom/scu.py) is a run of C-STOREs on one association
that asks nothing else of it, so StoredSender holds the reactor paused for the run (as
send_c_store does around each request, so that it cannot take a response off the queue),
writes each request's command and data set PDUs straight to the socket from the sending
thread, and takes the response from the DIMSE queue that the DUL thread fills.

Writing past the DUL is safe here: in Sta6 a P-DATA-TF PDU changes no state (PS3.8 9.2,
DT-1), nothing else is queued for sending while the run holds the association, and the DUL
thread still reads the socket and decodes the responses. The PDUs are PS3.8 9.3.5 P-DATA-TF
with one PDV each, fragments of at most the peer's Maximum Length Received less the PDV
item header, message control headers as PS3.8 E.2; the command set is PS3.7 9.3.1.1 in
Implicit VR Little Endian (E.1), as pynetdicom encodes it
(tests/imaging/test_dicom_accel_sender.py compares the bytes).
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
import time
from typing import IO, Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_recv_handler, standard_dimse_sent_handler

from imaging.dicom.accel import elements, wakeup

log = logging.getLogger("imaging.dicom")
_C_STORE_RQ = 0x0001
_DATA_SET_PRESENT = 0x0001  # (0000,0800): anything but 0x0101; pynetdicom sends 0x0001
_PRIORITY_MEDIUM = 0x0000
_COMMAND_MORE, _COMMAND_LAST, _DATA_MORE, _DATA_LAST = 0x01, 0x03, 0x00, 0x02
_SEND_BYTES = 1024 * 1024  # data set bytes read and written per system call
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
_P_DATA_TF = 0x04
_C_STORE_RSP = 0x8001
# Anyone listening for these would miss what the sender reads off the socket itself.
_RECEIVE_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_DATA_RECV, evt.EVT_DIMSE_RECV, evt.EVT_FSM_TRANSITION)
# pynetdicom binds these to every association (_config.LOG_HANDLER_LEVEL "standard"): on the
# DUL thread, before the sender can have a C-STORE response, they decode its command set's
# elements with pydicom to format an INFO line of the "pynetdicom" logger.
_DIMSE_LOG_LINES = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
)


def store_request_command(sop_class_uid: str, sop_instance_uid: str, message_id: int) -> bytes:
    """The command set of a C-STORE request (PS3.7 9.3.1.1), group length first."""
    body = b"".join(
        (
            elements.implicit(0x0000, 0x0002, elements.pad(sop_class_uid.encode("ascii"), b"\x00")),
            elements.implicit(0x0000, 0x0100, struct.pack("<H", _C_STORE_RQ)),
            elements.implicit(0x0000, 0x0110, struct.pack("<H", message_id)),
            elements.implicit(0x0000, 0x0700, struct.pack("<H", _PRIORITY_MEDIUM)),
            elements.implicit(0x0000, 0x0800, struct.pack("<H", _DATA_SET_PRESENT)),
            elements.implicit(0x0000, 0x1000, elements.pad(sop_instance_uid.encode("ascii"), b"\x00")),
        )
    )
    return elements.implicit(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def p_data_pdus(context_id: int, fragment: bytes | memoryview, last: bool, command: bool) -> bytes:
    """One P-DATA-TF PDU carrying one fragment (PS3.8 9.3.5, E.2)."""
    control = (_COMMAND_LAST if last else _COMMAND_MORE) if command else (_DATA_LAST if last else _DATA_MORE)
    item_length = len(fragment) + 2
    return struct.pack(">BBLLBB", 0x04, 0x00, item_length + 4, item_length, context_id, control) + bytes(fragment)


def p_data_header(fragment_length: int, context_id: int, last: bool, command: bool) -> bytes:
    """The PDU and PDV item headers in front of one fragment (p_data_pdus without the copy)."""
    control = (_COMMAND_LAST if last else _COMMAND_MORE) if command else (_DATA_LAST if last else _DATA_MORE)
    item_length = fragment_length + 2
    return struct.pack(">BBLLBB", 0x04, 0x00, item_length + 4, item_length, context_id, control)


def store_response(body: bytes | bytearray, message_id: int) -> Dataset | None:
    """The status of a P-DATA-TF PDU's body (what follows its 6-byte header) that is exactly one
    PDV holding a whole C-STORE-RSP command set (PS3.7 9.3.1.2, Implicit VR Little Endian,
    PS3.8 E.2 control header 0x03) answering `message_id`: a Dataset with Status and, when
    sent, ErrorComment and OffendingElement (as pynetdicom's send_c_store returns it). None
    for anything else: another message, a data set, several PDVs, or bytes that do not parse."""
    if len(body) < 6:
        return None
    item_length, _context_id, control = struct.unpack_from(">LBB", body, 0)
    if item_length + 4 != len(body) or control != _COMMAND_LAST:
        return None
    values: dict[int, bytes] = {}
    at, end = 6, len(body)
    while at < end:
        if end - at < 8:
            return None
        group, element, length = struct.unpack_from("<HHL", body, at)
        at += 8
        if group != 0x0000 or length > end - at:
            return None
        values[element] = bytes(body[at : at + length])
        at += length
    try:
        if struct.unpack("<H", values[0x0100])[0] != _C_STORE_RSP:
            return None
        if struct.unpack("<H", values[0x0120])[0] != message_id:
            return None
        code = struct.unpack("<H", values[0x0900])[0]
    except (KeyError, struct.error):
        return None
    status = Dataset()
    status.Status = code
    comment = values.get(0x0902)
    if comment:
        status.ErrorComment = comment.decode("ascii", "replace").rstrip(" \x00")
    offending = values.get(0x0901)
    if offending and len(offending) % 4 == 0:
        pairs = struct.unpack(f"<{len(offending) // 2}H", offending)
        status.OffendingElement = [(pairs[i] << 16) | pairs[i + 1] for i in range(0, len(pairs), 2)]
    return status


def data_set_offset(head: bytes) -> int | None:
    """Where the data set starts in a PS3.10 file whose first bytes are `head` (preamble,
    "DICM", then (0002,0000) File Meta Information Group Length, Explicit VR UL), or None."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int.from_bytes(head[140:144], "little")


def _quiet_dimse_logging(assoc: Any) -> list[tuple[Any, Any]]:
    """Unbind pynetdicom's standard DIMSE log handlers from the association for the run, when
    the lines they would format are dropped anyway (the "pynetdicom" logger below INFO, as
    every deployment but a debugging one has it); what was unbound, for close() to bind again."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return []
    unbound = []
    for event, handler in _DIMSE_LOG_LINES:
        if any(bound is handler for bound, _ in assoc.get_handlers(event)):
            assoc.unbind(event, handler)
            unbound.append((event, handler))
    return unbound


class StoredSender:
    """Sends stored files on one established association we requested; close() gives the
    association back to pynetdicom (before its release).

    While nothing else listens to the association's receiving side (pynetdicom's DIMSE log
    lines dropped, no PDU, data or DIMSE handlers), the sender also reads each response off
    the socket itself, as storescu does, instead of waiting for the DUL thread to decode it
    and queue it across (a thread hand-over and pydicom's decoding of every response): the
    DUL thread stops reading the socket for the run (its waker no longer waits on it) and
    still sends what is queued for it (an abort, the release after close()). Any PDU that is
    not the expected C-STORE-RSP in one PDV (an abort, a release request, another message) is
    handed to the DUL as its own reader would have, and the run goes on pynetdicom's way.
    """

    def __init__(self, assoc: Any, timeout: float) -> None:
        self.assoc = assoc
        self.timeout = timeout
        self.socket = assoc.dul.socket.socket
        self.fragment = (assoc.acceptor.maximum_length or (1 << 31)) - 6
        self.unbound = _quiet_dimse_logging(assoc)
        self.gather = not isinstance(self.socket, ssl.SSLSocket)  # TLS sockets have no sendmsg
        assoc._reactor_checkpoint.clear()  # hold the reactor, as send_c_store does per request
        deadline = time.monotonic() + timeout
        while not assoc._is_paused and assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.0001)
        self.reading = self._hold_socket()

    def _hold_socket(self) -> bool:
        """Take the reading of responses from the DUL thread (see the class); False when it must stay."""
        dul = self.assoc.dul
        if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            return False
        for event in _RECEIVE_EVENTS:  # pynetdicom's own only format log lines, dropped below INFO
            if any(getattr(h, "__module__", "") != "pynetdicom._handlers" for h, _ in self.assoc.get_handlers(event)):
                return False
        if dul.state_machine.current_state != "Sta6" or not self.assoc.is_established:
            return False
        self.saved_timeout = self.socket.gettimeout()
        dul._is_transport_event = _nothing_to_read  # this instance only, until _give_back_socket
        wakeup.hold_socket(dul, True)
        return True

    def _give_back_socket(self) -> None:
        if not self.reading:
            return
        self.reading = False
        dul = self.assoc.dul
        vars(dul).pop("_is_transport_event", None)
        dul._idle_timer.restart()  # it saw no transport event while the sender read
        try:
            self.socket.settimeout(self.saved_timeout)
        except OSError:
            pass  # closed meanwhile
        wakeup.hold_socket(dul, False)

    def close(self) -> None:
        self._give_back_socket()
        for event, handler in self.unbound:
            self.assoc.bind(event, handler)
        self.unbound = []
        self.assoc._reactor_checkpoint.set()

    def send(
        self,
        source: IO[bytes],
        offset: int,
        context_id: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        message_id: int,
    ) -> Dataset:
        """Send the data set that starts at `offset` in `source`; the response's status (an
        empty Dataset when none came: the peer aborted or timed out, as send_c_store says)."""
        command = store_request_command(sop_class_uid, sop_instance_uid, message_id)
        pieces = [
            p_data_pdus(context_id, command[i : i + self.fragment], i + self.fragment >= len(command), True)
            for i in range(0, len(command), self.fragment)
        ]
        source.seek(offset)
        try:
            self._send_data_set(source, context_id, b"".join(pieces))
        except OSError:
            self._give_back_socket()  # the caller aborts: the DUL must see the connection end
            raise
        if self.reading:
            return self._read_response(message_id)
        return self._response(message_id)

    def _send_data_set(self, source: IO[bytes], context_id: int, command: bytes) -> None:
        """The data set's PDUs, the command's in front of the first run (one system call fewer)."""
        size = self.fragment
        chunk = max(size, _SEND_BYTES - _SEND_BYTES % size)
        data = source.read(chunk)
        pieces: list[bytes | memoryview] = [command]
        while True:
            following = source.read(chunk) if len(data) == chunk else b""
            view = memoryview(data)
            for start in range(0, len(data), size):
                last = not following and start + size >= len(data)
                fragment = view[start : start + size]
                if self.gather:  # the header and the file's bytes as they are, gathered by the kernel
                    pieces.append(p_data_header(len(fragment), context_id, last, False))
                    pieces.append(fragment)
                else:
                    pieces.append(p_data_pdus(context_id, fragment, last, False))
            if not data:  # an empty data set still ends with its last fragment
                pieces.append(p_data_pdus(context_id, b"", True, False))
            if self.gather:
                _send_gathered(self.socket, pieces)
            else:
                self.socket.sendall(b"".join(pieces))
            if not following:
                return
            data, pieces = following, []

    def _read_response(self, message_id: int) -> Dataset:
        """The response read here (see the class); an empty Dataset when none came."""
        try:
            self.socket.settimeout(self.timeout)
            header = _receive(self.socket, 6)
            if header is None:
                self._give_back_socket()  # the peer closed: the DUL finds it so too
                return Dataset()
            pdu_type, _, length = struct.unpack(">BBL", header)
            body = _receive(self.socket, length)
        except TimeoutError:
            self._give_back_socket()
            return Dataset()  # no answer in time, as send_c_store's dimse timeout says
        if body is None:
            self._give_back_socket()
            return Dataset()
        if pdu_type == _P_DATA_TF:
            status = store_response(body, message_id)
            if status is not None:
                return status
        self._hand_over(header + body)
        if pdu_type == _P_DATA_TF:
            return self._response(message_id)  # another kind of message: pynetdicom's way
        return Dataset()  # an abort or a release request instead of the answer

    def _hand_over(self, pdu: bytes) -> None:
        """Give a PDU read here to the DUL, as its reader would have, and stop reading here."""
        dul = self.assoc.dul
        try:
            decoded, event = dul._decode_pdu(bytearray(pdu))
        except Exception:
            log.exception("Unable to decode the received PDU data")
            dul.event_queue.put("Evt19")
        else:
            dul.event_queue.put(event)
            dul._recv_pdu.put(decoded)
        self._give_back_socket()

    def _response(self, message_id: int) -> Dataset:
        status = Dataset()
        _context_id, rsp = self.assoc.dimse.get_msg(block=True)
        if rsp is None or not getattr(rsp, "is_valid_response", False):
            return status
        if rsp.MessageIDBeingRespondedTo != message_id:
            return status  # not the answer to this request: the association is no longer usable
        status.Status = rsp.Status
        for keyword in rsp.STATUS_OPTIONAL_KEYWORDS:
            if getattr(rsp, keyword, None) is not None:
                setattr(status, keyword, getattr(rsp, keyword))
        return status


def _nothing_to_read() -> bool:
    """The DUL's transport check while the sender reads the socket itself."""
    return False


def _receive(sock: Any, length: int) -> bytes | None:
    """Exactly `length` bytes, or None when the peer closed the connection first."""
    chunks = []
    missing = length
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _send_gathered(sock: Any, buffers: list[bytes | memoryview]) -> None:
    """socket.sendall over several buffers without joining them (sendmsg, IOV_MAX at a time)."""
    pending = [memoryview(b) for b in buffers]
    while pending:
        sent = sock.sendmsg(pending[:_IOV_MAX])
        while sent and pending:
            if sent >= len(pending[0]):
                sent -= len(pending.pop(0))
            else:
                pending[0] = pending[0][sent:]
                sent = 0
