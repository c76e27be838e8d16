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
- negotiation.py: presentation contexts copied field by field, UIDs validated once
  (transport.deepcopy; set_uid in the presentation, pdu_items and pdu_primitives modules);
- associations.py: each accepted association gets the above before it starts
  (RequestHandler._create_association); those we request (C-MOVE) get their wakers and a
  fix of a pynetdicom race (activate through `requested_association_handlers()`);
- retrieve.py: C-MOVE and C-GET send each stored file's bytes unchanged
  (Association.send_c_store).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynetdicom
from pynetdicom import _config, evt, pdu_items, pdu_primitives, presentation, transport
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler

from imaging.dicom.accel import associations, direct, fastpath, negotiation, retrieve, wakeup
from imaging.dicom.accel.retrieve import StoredFile

__all__ = [
    "WRITTEN_FOR",
    "StoredFile",
    "install",
    "installed",
    "requested_association_handlers",
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
    _set(DULServiceProvider, "_read_pdu_data", direct.read_pdu_data)
    _set(transport, "deepcopy", negotiation.copy_contexts)
    for module in _NEGOTIATION_MODULES:
        _set(module, "set_uid", negotiation.set_uid_remembered)
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
