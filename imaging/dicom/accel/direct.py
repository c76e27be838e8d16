"""C-STORE served on the thread that reads the association's socket.

pynetdicom hands every received PDU through its state machine, its DIMSE provider and two
queues to the association's own thread, which decodes the command again, builds the
request and the response primitives, runs the handler, and queues the response back to
the reading thread to be encoded and sent: for each image, two threads taking turns with
the interpreter lock and most of a millisecond of interpreter time. A modality sending a
series does nothing but C-STORE requests, one after the other, so on a server association
the reading thread serves them itself (`install()` before the association starts,
`activate()` once it is accepted):

- a P-DATA-TF PDU that begins a message with a whole C-STORE-RQ command (a storage SOP
  class, an accepted presentation context, only the command's own elements, valid UIDs)
  opens the file its data set is received into (fastpath.open_received_file, as for
  pynetdicom); its data set fragments, in that PDU and the following ones, are written as
  they come;
- the last fragment closes the file, the store handler runs, and the C-STORE-RSP goes out
  on the socket, byte for byte what pynetdicom sends (fastpath.store_response_command).

Everything else goes the way pynetdicom goes: any other message, an association that is not
idle in Sta6 (a request being served, a response queued, a release under way), anyone
listening for PDU, data or DIMSE events, a command split over PDUs, any PDU other than
P-DATA-TF (it also ends a message in progress, whose file is removed). The state machine
stays in Sta6 throughout, as pynetdicom's own P-DATA transitions (DT-1, DT-2) leave it.

As with pynetdicom, a peer is expected to wait for each response before its next request
(no asynchronous operations are negotiated).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass

from imaging.dicom.accel import fastpath, wakeup
from imaging.dicom.datasets import is_storage_sop_class, is_valid_uid
from imaging.dicom.identifiers import ReceivedInstance
from imaging.dicom.status import error_comment

log = logging.getLogger("imaging.dicom")
debug = False  # log each C-STORE served here at DEBUG (accel.install(debug=True), with DEBUG on)
TOO_LARGE = "too-large"  # refusal codes as ingest names them (imaging/ingest.py STATUSES)
STORAGE_FAILED = "storage-failed"
RefusalHandler = Callable[[str, str, str], None]  # (SOP Instance UID, code, reason)

_ATTR = "_cloudpacs_direct_store"
_P_DATA_TF = 0x04
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
_PROCESSING_FAILURE = 0xC211  # what pynetdicom answers when a C-STORE handler raises
_OUT_OF_RESOURCES = 0xA700
# PS3.7 9.3.1.1: the elements a C-STORE-RQ carries (group length, Affected SOP Class UID,
# Command Field, Message ID, Priority, Command Data Set Type, Affected SOP Instance UID, Move
# Originator AE Title and Message ID).
_STORE_RQ_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})
# Events whose handlers are given pynetdicom's own PDU, data or message objects.
_WATCHED = (
    evt.EVT_PDU_RECV,
    evt.EVT_DATA_RECV,
    evt.EVT_DIMSE_RECV,
    evt.EVT_PDU_SENT,
    evt.EVT_DATA_SENT,
    evt.EVT_DIMSE_SENT,
)

StoreHandler = Callable[[ReceivedInstance], "int | Dataset"]


@dataclass(frozen=True)
class StoreRequest:
    """What a C-STORE-RQ command set (PS3.7 9.3.1.1) says that the store and its answer need."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def store_request(command: bytes | memoryview) -> StoreRequest | None:
    """The C-STORE-RQ in a command set (Implicit VR Little Endian, PS3.7 6.3.1), or None when
    it is anything else or carries anything unusual (pynetdicom judges it then)."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", command, pos)
        pos += 8
        if group != 0x0000 or element not in _STORE_RQ_ELEMENTS or pos + length > end or element in values:
            return None
        values[element] = bytes(command[pos : pos + length])
        pos += length
    try:
        (field,) = struct.unpack("<H", values[0x0100])
        (message_id,) = struct.unpack("<H", values[0x0110])
        (priority,) = struct.unpack("<H", values[0x0700])
        (data_set_type,) = struct.unpack("<H", values[0x0800])
        sop_class_uid = values[0x0002].rstrip(b"\x00 ").decode("ascii")
        sop_instance_uid = values[0x1000].rstrip(b"\x00 ").decode("ascii")
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
    if field != _C_STORE_RQ or data_set_type == _NO_DATA_SET or priority not in (0, 1, 2):
        return None
    if not (is_valid_uid(sop_class_uid) and is_valid_uid(sop_instance_uid)):
        return None
    return StoreRequest(message_id, sop_class_uid, sop_instance_uid)


@dataclass
class _Message:
    """A C-STORE-RQ whose data set is being received."""

    request: StoreRequest
    context_id: int
    transfer_syntax_uid: str
    file: Any  # None once writing stopped: the data set is refused, its rest read and dropped
    path: Path | None
    received: int = 0  # data set bytes, written or not
    refusal: str = ""  # why writing stopped: TOO_LARGE, STORAGE_FAILED, or discarded
    error: str = ""  # what failed, for STORAGE_FAILED


class DirectStore:
    """Serves one association's C-STORE requests on its DUL thread (see the module's text)."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.dul: DULServiceProvider = assoc.dul
        self.handler: StoreHandler | None = None
        self.expected: Any = None  # the EVT_C_STORE handler the association must still have
        self.thread_ended: Callable[[], None] | None = None
        self.refused: RefusalHandler | None = None
        self.served = 0
        self.message: _Message | None = None

    # --- taking a PDU ---------------------------------------------------------------------

    def take(self, pdu_type: int, body: bytearray) -> bool:
        """Serve a received PDU (its type, and what follows its header) here; False leaves it
        to pynetdicom (as if never looked at)."""
        if pdu_type != _P_DATA_TF:
            self.discard()  # an abort or a release ends a message in progress
            return False
        values = fastpath.p_data_items(body)
        if values is None:
            self.discard()
            return False
        for index, (context_id, data) in enumerate(values):
            if self._feed(context_id, data):
                continue
            if index == 0:
                return False
            self._hand_over(values[index:])
            return True
        return True

    def _feed(self, context_id: int, data: memoryview) -> bool:
        """One presentation data value; False when pynetdicom should take it from here."""
        control = data[0]
        message = self.message
        if message is None:
            return control == 0x03 and self._idle() and self._start(context_id, data[1:])
        if control & 0x01 or context_id != message.context_id:
            self.discard()  # not how a data set goes on: pynetdicom judges what the peer sent
            return False
        fragment = data[1:]
        message.received += len(fragment)
        if message.file is not None:
            if message.received > fastpath.max_bytes:
                _stop_writing(message, TOO_LARGE)
            else:
                try:
                    message.file.write(fragment)
                except OSError as exc:  # a full disk: refused below, the association goes on
                    _stop_writing(message, STORAGE_FAILED)
                    message.error = str(exc.strerror or exc)
        if control & 0x02:
            self.message = None
            if message.file is None:
                self._refuse(message)
            else:
                self._complete(message)
        return True

    def _hand_over(self, values: list[tuple[int, memoryview]]) -> None:
        """The rest of a PDU, for pynetdicom, as its own reading would have queued it."""
        self.dul.event_queue.put("Evt10")
        self.dul._recv_pdu.put(fastpath.ReceivedPData(values))  # type: ignore[arg-type]  # as decode_pdu does

    def _idle(self) -> bool:
        """Whether pynetdicom has nothing of this association in hand, and no one listens to
        its inner events: only then may a message go past it."""
        assoc, dul = self.assoc, self.dul
        if self.handler is None or not _config.STORE_RECV_CHUNKED_DATASET:
            return False
        if dul.state_machine.current_state != "Sta6" or not assoc.is_established or assoc._sent_release:
            return False
        dimse = assoc.dimse
        if dimse.message is not None or dimse.msg_queue.qsize() or assoc._is_paused:
            return False
        if dul.event_queue.qsize() or dul.to_provider_queue.qsize():
            return False
        if assoc.get_handlers(evt.EVT_C_STORE) != self.expected:
            return False
        return not any(assoc.get_handlers(event) for event in _WATCHED)

    def _start(self, context_id: int, command: memoryview) -> bool:
        request = store_request(command)
        if request is None:
            return False
        context = self.assoc._accepted_cx.get(context_id)
        if context is None or not is_storage_sop_class(request.sop_class_uid):
            return False
        if request.sop_class_uid in self.assoc.acceptor.accepted_common_extended:
            return False
        transfer_syntax = str(context.transfer_syntax[0])
        try:
            out, path = fastpath.open_received_file(request.sop_class_uid, request.sop_instance_uid, transfer_syntax)
        except OSError as exc:  # a full disk, or no descriptor left: refused once the data set is in
            error = str(exc.strerror or exc)
            self.message = _Message(
                request, context_id, transfer_syntax, None, None, refusal=STORAGE_FAILED, error=error
            )
            return True
        self.message = _Message(request, context_id, transfer_syntax, out, path)
        return True

    # --- serving a received request -------------------------------------------------------

    def _refuse(self, message: _Message) -> None:
        """Answer a data set that was not kept (PS3.4 B.2.3: 0xA700, refused: out of resources)."""
        code, uid = message.refusal, message.request.sop_instance_uid
        if code == TOO_LARGE:
            reason = f"the data set is {message.received} bytes, over the limit of {fastpath.max_bytes} bytes"
        else:
            reason = f"cannot write the data set: {message.error}"
        log.warning("C-STORE %s refused: 0xA700 %s", uid, reason)
        if self.refused is not None:
            try:
                self.refused(uid, code, reason)
            except Exception:
                log.exception("noting the refusal of %s", uid)
        status = Dataset()
        status.Status = _OUT_OF_RESOURCES
        status.ErrorComment = error_comment(reason)
        if self.assoc.is_established:
            self._respond(message, status)

    def _complete(self, message: _Message) -> None:
        request = message.request
        if message.path is None:
            raise RuntimeError("a data set completed without its file")
        fastpath.start_writeback(message.file.fileno())  # synced before the answer; on its way now
        message.file.close()
        instance = ReceivedInstance(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax_uid=message.transfer_syntax_uid,
            part10=message.path.read_bytes,
            path=message.path,
        )
        handler = self.handler
        if handler is None:
            raise RuntimeError("a C-STORE was taken by a direct store without a handler")
        self.served += 1
        try:
            status: int | Dataset = handler(instance)
        except Exception:
            log.exception("Exception in the handler bound to 'evt.EVT_C_STORE'")
            status = _PROCESSING_FAILURE
        finally:
            message.path.unlink(missing_ok=True)
        if debug:
            log.debug(
                "C-STORE %s (message %d, context %d) from %s: 0x%04X on the reading thread",
                request.sop_instance_uid,
                request.message_id,
                message.context_id,
                self.assoc.requestor.ae_title,
                status if isinstance(status, int) else int(status.get("Status", _PROCESSING_FAILURE)),
            )
        if self.assoc.is_established:
            self._respond(message, status)

    def _respond(self, message: _Message, status: int | Dataset) -> None:
        """Send the C-STORE response; should our encoding of it fail, pynetdicom's own encodes
        it, with the status alone if need be: the peer always gets a status, and this thread
        (the association's reader) goes on."""
        try:
            self._send_response(message, status)
        except Exception:
            log.exception("the C-STORE response to %s could not be sent as built", message.request.sop_instance_uid)
            self._send_status_only(message, status)

    def _send_status_only(self, message: _Message, status: int | Dataset) -> None:
        request = message.request
        response = C_STORE()
        response.MessageIDBeingRespondedTo = request.message_id
        response.AffectedSOPInstanceUID = request.sop_instance_uid
        response.AffectedSOPClassUID = request.sop_class_uid
        response.Status = int(status) if isinstance(status, int) else int(status.get("Status", _PROCESSING_FAILURE))
        fastpath.original_send_msg(self.assoc.dimse, response, message.context_id)

    def _send_response(self, message: _Message, status: int | Dataset) -> None:
        request = message.request
        command = None
        if isinstance(status, int):
            command = fastpath.store_response_command(
                request.sop_class_uid, request.message_id, status, None, request.sop_instance_uid
            )
        if command is None:  # a status data set, or a value only pynetdicom can word
            response = self._response_primitive(request, status)
            command = fastpath.store_response(response)
            if command is None:
                self.assoc.dimse.send_msg(response, message.context_id)  # queued: this thread sends it next
                return
        maximum = self.assoc.dimse.maximum_pdu_size
        if maximum and len(command) + 6 > maximum:
            self.assoc.dimse.send_msg(self._response_primitive(request, status), message.context_id)
            return
        pdv = struct.pack(">LBB", len(command) + 2, message.context_id, 0x03) + command
        socket = self.dul.socket
        if socket is not None:  # else the connection has gone (pynetdicom drops what it would send)
            socket.send(struct.pack(">BBL", _P_DATA_TF, 0x00, len(pdv)) + pdv)

    def _response_primitive(self, request: StoreRequest, status: int | Dataset) -> C_STORE:
        """The response as pynetdicom's Storage service class builds and checks it."""
        response = C_STORE()
        response.MessageID = request.message_id
        response.MessageIDBeingRespondedTo = request.message_id
        response.AffectedSOPInstanceUID = request.sop_instance_uid
        response.AffectedSOPClassUID = request.sop_class_uid
        return StorageServiceClass(self.assoc).validate_status(status, response)

    # --- ending -----------------------------------------------------------------------------

    def discard(self) -> None:
        """Drop a message in progress (its file goes)."""
        message, self.message = self.message, None
        if message is not None:
            _stop_writing(message, "discarded")

    def close(self) -> None:
        """The DUL thread ends: what it was receiving goes, and what it used for stores closes."""
        self.discard()
        if self.served and self.thread_ended is not None:
            try:
                self.thread_ended()
            except Exception:
                log.exception("closing what the association's reading thread used for its stores")


def _stop_writing(message: _Message, reason: str) -> None:
    """Close and remove the message's file; what else arrives of its data set is dropped."""
    if message.file is not None:
        message.file.close()
        message.file = None
    if message.path is not None:
        message.path.unlink(missing_ok=True)
    message.refusal = reason


original_read_pdu_data = DULServiceProvider._read_pdu_data


def read_pdu_data(self: DULServiceProvider) -> None:
    """DULServiceProvider._read_pdu_data, offering each whole PDU to the association's direct
    store first (when it has one)."""
    direct: DirectStore | None = getattr(self, _ATTR, None)
    if direct is None:
        original_read_pdu_data(self)
        return
    socket = self.socket
    if socket is None:
        raise RuntimeError("the DUL reads before its socket is set")
    # As pynetdicom reads: the PDU type and length, then the rest; a short read or a closed
    # connection is Evt17, an unknown PDU type Evt19.
    try:
        header = socket.recv(6)
    except (OSError, TimeoutError):
        log.error("Connection closed before the entire PDU was received")
        direct.discard()
        self.event_queue.put("Evt17")
        return
    if len(header) != 6:
        direct.discard()
        self.event_queue.put("Evt17")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        log.error("Unknown PDU type received '0x%02X'", pdu_type)
        direct.discard()
        self.event_queue.put("Evt19")
        return
    try:
        body = socket.recv(length)
    except (OSError, TimeoutError):
        log.error("Connection closed before the entire PDU was received")
        direct.discard()
        self.event_queue.put("Evt17")
        return
    if len(body) != length:
        log.error("The received PDU is shorter than expected (%d of %d bytes received)", 6 + len(body), 6 + length)
        direct.discard()
        self.event_queue.put("Evt17")
        return
    if direct.take(pdu_type, body):
        return
    pdu = bytearray(header)
    pdu += body
    try:
        decoded, event = self._decode_pdu(pdu)
    except Exception:
        log.exception("Unable to decode the received PDU data")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(decoded)


def install(assoc: Any) -> DirectStore:
    """Give a server association, before it starts, a direct store (inactive until activate());
    read_pdu_data must be DULServiceProvider._read_pdu_data (imaging/dicom/accel/__init__.py)."""
    direct = DirectStore(assoc)
    dul = assoc.dul
    setattr(dul, _ATTR, direct)
    wakeup.run_at_thread_end(dul, direct.close)  # before it starts, as on the server
    return direct


def activate(
    assoc: Any,
    handler: StoreHandler,
    bound: Any,
    thread_ended: Callable[[], None],
    refused: RefusalHandler | None = None,
) -> None:
    """Let the association's direct store serve C-STOREs with `handler` while the association's
    EVT_C_STORE handler is `bound` (checked for each request); `thread_ended` runs on the
    reading thread when it ends, if it served any; `refused` is told of each instance refused
    before `handler` could see it (too large, not writable). Nothing happens for an association
    without a direct store (install()) or with another EVT_C_STORE handler."""
    direct: DirectStore | None = getattr(getattr(assoc, "dul", None), _ATTR, None)
    if direct is None:
        return
    binding = assoc.get_handlers(evt.EVT_C_STORE)
    if not binding or binding[0] != bound:
        return
    direct.expected = binding
    direct.thread_ended = thread_ended
    direct.refused = refused
    direct.handler = handler


# The buffer a PDU is first read into. The length comes from the peer's PDU header, before
# anything is known of the peer, so memory is only ever taken for bytes that have arrived:
# the buffer doubles as it fills, up to that length (as pynetdicom's own reads grow).
FIRST_READ_BYTES = 2 * 1024 * 1024  # a whole PDU at our 1 MiB maximum


def read_in_bulk(wrapper: Any) -> None:
    """Have this AssociationSocket read a PDU with as few recv calls as the kernel allows
    (pynetdicom reads 4 KiB per call: 130 system calls and bytearray extensions for one
    512 KiB image, 0.7 ms of CPU per instance on this machine's kind)."""

    def recv(nr_bytes: int) -> bytearray:
        raw = wrapper.socket
        buffer = bytearray(min(nr_bytes, FIRST_READ_BYTES))
        got = 0
        while got < nr_bytes:
            if got == len(buffer):
                buffer.extend(bytes(min(len(buffer), nr_bytes - len(buffer))))
            with memoryview(buffer) as view:
                n = raw.recv_into(view[got:], len(buffer) - got)
            if not n:  # the peer closed: what was read so far, as pynetdicom does
                break
            got += n
        del buffer[got:]
        return buffer

    # An attribute of this one socket wrapper: the DUL calls self.socket.recv(n) for each PDU.
    wrapper.recv = recv
