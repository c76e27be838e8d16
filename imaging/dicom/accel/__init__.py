"""Every reach into pynetdicom's internals, behind one door: `install()`.

What it changes, each written against pynetdicom WRITTEN_FOR and measured in bench/RESULTS.md:
- wakeup.py: the two reactor loops of an association wait for their work instead of
  sleeping 1 ms at a time (an eventfd and an Event; pynetdicom's `time` in its association
  and dul modules);
- direct.py: C-STORE served on the association's reading thread, past the state machine
  and the DIMSE queues (DULServiceProvider._read_pdu_data), each PDU read in bulk;
- fastpath.py: C-STORE's file meta and response encoded by hand, received P-DATA taken
  apart in place (DIMSEMessage.decode_msg, DIMSEServiceProvider.send_msg,
  DULServiceProvider._decode_pdu);
- find.py: each C-FIND response's identifier and command set encoded by hand (a worklist
  match's identifier written from its database row, imaging/dicom/layout.py), command and
  identifier sent in one PDU (`encode` in pynetdicom's service_class module; send_msg);
- negotiation.py: presentation contexts copied field by field, UIDs validated once
  (transport.deepcopy; set_uid in the presentation, pdu_items and pdu_primitives modules;
  PresentationContext.add_transfer_syntax); the same A-ASSOCIATE-RQ bytes decoded, negotiated
  and answered once (fastpath's _decode_pdu; PresentationContextItemRQ.to_primitive; the acse
  module's negotiate_as_acceptor; A_ASSOCIATE_AC.from_primitive);
- associations.py: each accepted association gets the above before it starts
  (RequestHandler._create_association); those we request (C-MOVE) get their wakers and a
  fix of a pynetdicom race (activate through `requested_association_handlers()`);
- retrieve.py: C-MOVE and C-GET send each stored file's bytes unchanged
  (Association.send_c_store).
- sender.py: routing's C-STOREs (imaging/dicom/scu.py) written straight to the socket of an
  association we requested, its reactor held for the run, pynetdicom's DIMSE log handlers
  unbound for it while their lines would be dropped (`stored_sender`, with the handlers of
  `sending_handlers`; neither needs install(), both check the version).
- scoped.py: pynetdicom's documented switch for sending a file's data set as its bytes
  (_config.STORE_SEND_CHUNKED_DATASET), on for one thread for the length of a block, where
  routing needs it, instead of for the whole process (`stored_bytes_sent`; the association
  module's `_config`; no install() needed, the version checked).

On any other pynetdicom version, or with `enabled=False` (DICOM_ACCELERATE=0), install()
logs one line and changes nothing of pynetdicom but its documented configuration: the
server then runs on pynetdicom's own path (data sets received in memory, retrieved
instances decoded and encoded again by pynetdicom). imaging/dicom/handlers.py and scp.py work
either way; they call `serve_stores_directly`, `requested_association_handlers` and
`installed` here, which do nothing when nothing was installed.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynetdicom
from pynetdicom import _config, acse, evt, pdu_items, pdu_primitives, presentation, service_class, transport
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_items import PresentationContextItemRQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler

from imaging.dicom.accel import associations, direct, fastpath, find, negotiation, retrieve, scoped, wakeup
from imaging.dicom.accel.retrieve import StoredFile
from imaging.dicom.accel.sender import StoredSender, data_set_offset

__all__ = [
    "WRITTEN_FOR",
    "StoredFile",
    "StoredSender",
    "data_set_offset",
    "install",
    "installed",
    "requested_association_handlers",
    "sending_handlers",
    "stored_bytes_sent",
    "stored_sender",
    "serve_stores_directly",
    "uninstall",
]

log = logging.getLogger("imaging.dicom")

WRITTEN_FOR = "3.0.4"  # requirements.txt pins it; tests/imaging/test_dicom_accel.py checks they agree

_NEGOTIATION_MODULES = (presentation, pdu_items, pdu_primitives)
_lock = threading.Lock()
_undo: list[tuple[Any, str, Any]] = []  # (owner, name, value before install), in the order set
_installed = False


def install(
    receive_folder: Path, *, enabled: bool = True, debug: bool = False, max_file_bytes: int | None = None
) -> bool:
    """Configure pynetdicom for the DICOM server; True when the accelerated path is installed.

    `receive_folder`: where received data sets are written (on the store's file system, so
    ingest links them into place). `debug`: the accelerated path logs each C-STORE through
    the "imaging.dicom" logger at DEBUG (pynetdicom's own PDU logging would listen to every
    PDU and keep the fast paths away); the plain path keeps pynetdicom's standard logging.
    `max_file_bytes`: a received data set larger is not written past it, and refused (0xA700).
    Idempotent while installed; uninstall() undoes it."""
    with _lock:
        if _installed:
            return True
        if not enabled:
            log.info("DICOM_ACCELERATE=0: DICOM served on pynetdicom's own path")
            _configure_plain(debug)
            return False
        version = pynetdicom.__version__
        if version != WRITTEN_FOR:
            log.warning(
                "pynetdicom %s is installed, imaging/dicom/accel was written for %s: "
                "DICOM served on pynetdicom's own path, slower (set DICOM_ACCELERATE=0 to say so)",
                version,
                WRITTEN_FOR,
            )
            _configure_plain(debug)
            return False
        _install(receive_folder, debug, max_file_bytes)
        return True


def _configure_plain(debug: bool) -> None:
    """pynetdicom's documented options only: data sets in memory, standard logging with DEBUG."""
    _set(_config, "STORE_RECV_CHUNKED_DATASET", False)
    _set(_config, "STORE_SEND_CHUNKED_DATASET", False)
    if not debug:
        _quiet_protocol_logging()


def _quiet_protocol_logging() -> None:
    """Unbind pynetdicom's standard PDU and DIMSE log handlers from servers made after this:
    they decode and format every command for DEBUG lines, on the association thread, before
    each response (and, listening to every PDU, they keep the accelerated paths away)."""
    _set(_config, "LOG_HANDLER_LEVEL", "none")
    _set(_config, "LOG_REQUEST_IDENTIFIERS", False)  # else each identifier is pretty-printed
    _set(_config, "LOG_RESPONSE_IDENTIFIERS", False)


def _install(receive_folder: Path, debug: bool, max_file_bytes: int | None) -> None:
    global _installed
    _quiet_protocol_logging()
    # Each received data set goes straight into a PS3.10 file in the folder (fastpath), and a
    # file path's data set is sent as its bytes (retrieve).
    _set(_config, "STORE_RECV_CHUNKED_DATASET", True)
    _set(_config, "STORE_SEND_CHUNKED_DATASET", True)
    _set(tempfile, "tempdir", str(receive_folder))
    _set(direct, "debug", debug)
    if max_file_bytes is not None:
        _set(fastpath, "max_bytes", max_file_bytes)
    _set(DIMSEMessage, "decode_msg", fastpath.decode_msg)
    _set(DIMSEServiceProvider, "send_msg", fastpath.send_msg)
    _set(DULServiceProvider, "_decode_pdu", fastpath.decode_pdu)
    _set(service_class, "encode", find.encode)
    _set(DULServiceProvider, "_read_pdu_data", direct.read_pdu_data)
    _set(transport, "deepcopy", negotiation.copy_contexts)
    for module in _NEGOTIATION_MODULES:
        _set(module, "set_uid", negotiation.set_uid_remembered)
    _set(PresentationContext, "add_transfer_syntax", negotiation.add_transfer_syntax)
    _set(PresentationContextItemRQ, "to_primitive", negotiation.remembered_context)
    _set(acse, "negotiate_as_acceptor", negotiation.negotiate_as_acceptor)
    _set(A_ASSOCIATE_AC, "from_primitive", negotiation.accept_from_primitive)
    _set(RequestHandler, "_create_association", associations.create_association)
    _set(Association, "send_c_store", retrieve.send_c_store)
    _installed = True


_ABSENT = object()


def _set(owner: Any, name: str, value: Any) -> None:
    """setattr, remembering what was there (a class's own attribute, not an inherited one)."""
    before = vars(owner).get(name, _ABSENT)
    _undo.append((owner, name, before))
    setattr(owner, name, value)


def uninstall() -> None:
    """Put back everything install() changed, in pynetdicom and in its configuration
    (associations already made keep what they were given)."""
    global _installed
    with _lock:
        while _undo:
            owner, name, value = _undo.pop()
            if value is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        wakeup.disable()
        negotiation.forget()
        _installed = False


def installed() -> bool:
    """Whether the accelerated path is installed (retrieved instances may be StoredFile)."""
    return _installed


def serve_stores_directly(
    assoc: Any,
    handler: direct.StoreHandler,
    bound: Any,
    thread_ended: Callable[[], None],
    refused: direct.RefusalHandler,
) -> None:
    """Let an accepted association serve its C-STOREs on its reading thread with `handler`
    while its EVT_C_STORE handler is `bound`; `thread_ended` runs on that thread when it ends,
    if it served any; `refused(sop_instance_uid, code, reason)` is told of an instance refused
    while it was received (too large, not writable). Nothing happens when the accelerated path
    is not installed."""
    direct.activate(assoc, handler, bound, thread_ended, refused)


def requested_association_handlers() -> list[evt.EventHandlerType]:
    """Event handlers for an association we request (C-MOVE): its wakers and race fix."""
    if not _installed:
        return []
    return [(evt.EVT_CONN_OPEN, associations.on_requested_open)]


def _sending_possible(enabled: bool) -> bool:
    return enabled and pynetdicom.__version__ == WRITTEN_FOR


def sending_handlers(*, enabled: bool = True) -> list[evt.EventHandlerType]:
    """Event handlers for an association that routing requests: its reactor wakers, bulk reads
    and the response race fix (as for C-MOVE's); none on another pynetdicom version."""
    if not _sending_possible(enabled):
        return []
    return [(evt.EVT_CONN_OPEN, associations.on_requested_open)]


def stored_sender(assoc: Any, timeout: float, *, enabled: bool = True) -> StoredSender | None:
    """A StoredSender holding the association for a run of C-STOREs, or None (another pynetdicom
    version, or DICOM_ACCELERATE=0): the caller then sends through Association.send_c_store."""
    if not _sending_possible(enabled):
        return None
    return StoredSender(assoc, timeout)


@contextmanager
def stored_bytes_sent() -> Iterator[bool]:
    """Within the block, Association.send_c_store called on this thread with a file's path sends
    the file's data set bytes as they are (what routing promises a peer, on either DIMSE path:
    this is not one of the fast paths, DICOM_ACCELERATE does not switch it); every other thread
    and pynetdicom user keeps pynetdicom's configuration. Yields False on another pynetdicom
    version: the caller then hands pynetdicom the decoded data set, encoded again."""
    if pynetdicom.__version__ != WRITTEN_FOR:
        yield False
        return
    with scoped.stored_bytes():
        yield True
