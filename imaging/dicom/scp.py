"""The Application Entity of the DICOM server and the socket server that runs it."""

from __future__ import annotations

import copy
import ctypes
import functools
import multiprocessing
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    pdu_items,
    pdu_primitives,
    presentation,
    sop_class,
    transport,
    utils,
)
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from imaging.dicom import direct, fastpath, wakeup
from imaging.dicom.datasets import SUPPORTED_TRANSFER_SYNTAXES
from imaging.dicom.handlers import Handlers, Services

# pynetdicom.sop_class creates its SOP class names at import time from its UID tables, so
# mypy cannot see them; each ignore covers exactly one such generated name.
VERIFICATION: UID = sop_class.Verification  # type: ignore[attr-defined]
QUERY_RETRIEVE: list[UID] = [
    sop_class.PatientRootQueryRetrieveInformationModelFind,  # type: ignore[attr-defined]
    sop_class.PatientRootQueryRetrieveInformationModelMove,  # type: ignore[attr-defined]
    sop_class.PatientRootQueryRetrieveInformationModelGet,  # type: ignore[attr-defined]
    sop_class.StudyRootQueryRetrieveInformationModelFind,  # type: ignore[attr-defined]
    sop_class.StudyRootQueryRetrieveInformationModelMove,  # type: ignore[attr-defined]
    sop_class.StudyRootQueryRetrieveInformationModelGet,  # type: ignore[attr-defined]
]
# Larger PDUs mean fewer socket reads per instance; peers still send what they can.
MAX_PDU_BYTES = 1024 * 1024


def storage_transfer_syntaxes() -> list[str]:
    """Our order decides when a peer offers several syntaxes in one context (pynetdicom takes the
    first of ours that it offers). Compressed first: a modality offering its JPEG 2000 with
    explicit VR as a fallback sends the file as it is and we keep that. Then explicit VR little
    endian before implicit, so that a C-GET of files stored that way goes out unconverted."""
    native = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
    return sorted(SUPPORTED_TRANSFER_SYNTAXES - set(native)) + [
        ts for ts in native if ts in SUPPORTED_TRANSFER_SYNTAXES
    ]


def build_ae(ae_title: str = "CLOUDPACS", *, max_associations: int = 32) -> AE:
    """Storage of every storage SOP class in every transfer syntax the store accepts, compressed
    ones included (others are refused at association); verification; patient- and study-root
    FIND, MOVE and GET."""
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.maximum_associations = max_associations
    ae.require_called_aet = False  # the called AE names an institution; the services check it
    ae.network_timeout = 120
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.add_supported_context(VERIFICATION, ALL_TRANSFER_SYNTAXES)
    storage_syntaxes = storage_transfer_syntaxes()
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is None:  # pynetdicom builds each of these from a storage SOP class
            raise RuntimeError("a storage presentation context without its abstract syntax")
        # scp_role: a C-GET requestor may take the storage SCP role on this association
        ae.add_supported_context(cx.abstract_syntax, storage_syntaxes, scp_role=True, scu_role=False)
    for query_class in QUERY_RETRIEVE:
        ae.add_supported_context(query_class, ALL_TRANSFER_SYNTAXES)
    return ae


def copy_contexts(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """copy.deepcopy, except for a list of presentation contexts, which is copied field by field.

    pynetdicom deep-copies the server's supported contexts for every association it accepts
    (transport.RequestHandler._create_association): with every storage SOP class in every
    transfer syntax that is 177 contexts and 3,885 UIDs, 16 ms of interpreter time on a quiet
    machine and several times that under load, for every association. The UIDs are strings
    and cannot change; only the lists holding them and the contexts themselves need copies.
    """
    if isinstance(value, list) and all(type(cx) is PresentationContext for cx in value):
        return [_copy_context(cx) for cx in value]
    return copy.deepcopy(value, memo)


def _copy_context(cx: PresentationContext) -> PresentationContext:
    twin = copy.copy(cx)
    twin._transfer_syntax = list(cx._transfer_syntax)
    return twin


_NEGOTIATION_MODULES = (presentation, pdu_items, pdu_primitives)


@functools.lru_cache(maxsize=4096)
def _remembered_uid(value: Any, name: str, allow_empty: bool, allow_none: bool, validate: bool) -> Any:
    return utils.set_uid(value, name, allow_empty, allow_none, validate)


def set_uid_remembered(
    value: Any, name: str, allow_empty: bool = True, allow_none: bool = True, validate: bool = True
) -> Any:
    """pynetdicom.utils.set_uid, remembering what it made of each value.

    Association negotiation converts and validates every UID a peer proposes, several times
    over (decoding the PDU, building the primitive, matching contexts), each through
    pydicom's UID class and a regular expression. storescu proposes over a hundred SOP classes
    in several transfer syntaxes, every time: tens of milliseconds of interpreter time per
    association, the same strings each time. A UID is an immutable string, so the same one
    can be handed out again; refusals are raised again each time (they are not remembered).
    Only the negotiation modules use this: the UIDs of instances go on as before.
    """
    try:
        return _remembered_uid(value, name, allow_empty, allow_none, validate)
    except TypeError:  # an unhashable value: pynetdicom's own error
        return utils.set_uid(value, name, allow_empty, allow_none, validate)


def _speed_up_negotiation() -> None:
    transport.deepcopy = copy_contexts  # type: ignore[assignment]  # see copy_contexts
    for module in _NEGOTIATION_MODULES:
        module.set_uid = set_uid_remembered  # type: ignore[attr-defined]


class WakingRequestHandler(RequestHandler):
    """pynetdicom's handler of an accepted connection, whose association's reactors are woken
    by their work instead of polling (imaging/dicom/wakeup.py)."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        wakeup.install(assoc)
        direct.install(assoc)  # serves C-STORE on the reading thread once accepted (Handlers)
        if isinstance(self.server, Server):
            self.server._claim(self.request, assoc)
        return assoc


class AcceptLoad:
    """How many associations each of the server's processes has open, in memory they share
    (made before they fork), so that the least busy one takes the next connection.

    The processes share one listening socket. When a connection arrives every process is
    woken; one that has more associations open than another process waits DEFER_SECONDS
    before it accepts, so the less busy one takes it (the kernel's SO_REUSEPORT spreading
    picks by a hash of the addresses: four associations often landed 3 and 1, or 4 and 0,
    halving the throughput of the busy process's share)."""

    DEFER_SECONDS = 0.002

    def __init__(self, processes: int) -> None:
        self.counts = multiprocessing.RawArray(ctypes.c_int, processes)
        self._lock = threading.Lock()

    def started(self, slot: int) -> None:
        with self._lock:
            self.counts[slot] += 1

    def ended(self, slot: int) -> None:
        with self._lock:
            self.counts[slot] -= 1

    def wait_turn(self, slot: int) -> None:
        if self.counts[slot] > min(self.counts):
            time.sleep(self.DEFER_SECONDS)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket for several server processes to share
    (every process may be woken by a connection; those that do not get it must not block)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket and reactors woken
    by their work. Given a `listening` socket (listening_socket) and an AcceptLoad with this
    process's `slot`, it serves on that socket beside the other processes."""

    def __init__(
        self,
        *args: Any,
        listening: socket.socket | None = None,
        load: AcceptLoad | None = None,
        slot: int = 0,
        **kwargs: Any,
    ) -> None:
        self.listening = listening  # read by server_bind, which the base __init__ calls
        self.load = load
        self.slot = slot
        self._unclaimed: set[int] = set()  # connections accepted whose association is not made yet
        self._unclaimed_lock = threading.Lock()
        _speed_up_negotiation()
        kwargs.setdefault("request_handler", WakingRequestHandler)
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.listening is None:
            super().server_bind()
            return
        if self.socket is not None:  # the one socketserver made: the shared one serves instead
            self.socket.close()
        self.socket = self.listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.listening is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.load is not None:
            self.load.wait_turn(self.slot)
        client, address = super().get_request()  # BlockingIOError when another process took it
        self._accepted(client)
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._ended_without_association(request)

    # --- counting associations for AcceptLoad -------------------------------------------
    # A connection counts from its accept (here, in the serving thread, before the next
    # accept) until its association thread ends; pynetdicom's request thread only creates
    # and starts the association, which then runs in a thread of its own.

    def _accepted(self, client: socket.socket) -> None:
        if self.load is not None:
            with self._unclaimed_lock:
                self._unclaimed.add(id(client))
            self.load.started(self.slot)

    def _claim(self, request: Any, assoc: Association) -> None:
        """The association made for `request`: it counts until its thread ends."""
        if self.load is None or not self._take_unclaimed(request):
            return
        load, slot, run = self.load, self.slot, assoc.run

        def run_then_count_out() -> None:
            try:
                run()
            finally:
                load.ended(slot)

        assoc.run = run_then_count_out  # type: ignore[method-assign]  # this one association's thread

    def _ended_without_association(self, request: Any) -> None:
        if self.load is not None and self._take_unclaimed(request):
            self.load.ended(self.slot)

    def _take_unclaimed(self, request: Any) -> bool:
        """Whether `request` was counted in and not yet given to an association (now it is)."""
        with self._unclaimed_lock:
            if id(request) not in self._unclaimed:
                return False
            self._unclaimed.discard(id(request))
            return True

    def server_close(self) -> None:
        if self.listening is not None and self.socket is self.listening:
            self.socket.close()  # this process's descriptor only: never shut the shared socket down
            return
        super().server_close()


def quiet_protocol_logging() -> None:
    """Unbind pynetdicom's standard PDU and DIMSE log handlers from servers made after this call:
    they decode and format every command for DEBUG lines that a production server never shows,
    on the association thread, before each response."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False  # else each identifier is pretty-printed for the DEBUG log
    _config.LOG_RESPONSE_IDENTIFIERS = False


def receive_into_files(folder: Path) -> None:
    """Have pynetdicom write each received data set straight into a PS3.10 file in `folder`
    instead of memory: a large multi-frame instance costs no memory, and when `folder` is on
    the store's file system ingest links the file into place without copying it. The file's
    meta header, and each C-STORE response, are encoded by hand (imaging/dicom/fastpath.py)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(folder)  # fastpath (and pynetdicom's own NamedTemporaryFile) create them there
    fastpath.install()


def send_files_as_stored() -> None:
    """Have pynetdicom send a file path's data set as its bytes, without decoding it (what
    handlers.send_as_stored relies on for C-MOVE and C-GET)."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def make_server(
    ae: AE,
    host: str,
    port: int,
    services: Services,
    *,
    listening: socket.socket | None = None,
    load: AcceptLoad | None = None,
    slot: int = 0,
) -> Server:
    """A bound, listening server; call serve_forever() on it, shutdown() to stop. With
    `listening`, `load` and `slot`: one of several processes sharing that socket."""
    handlers = Handlers(services)
    server = ae.make_server(
        (host, port),
        evt_handlers=handlers.bindings(),
        server_class=Server,
        listening=listening,
        load=load,
        slot=slot,
    )
    if not isinstance(server, Server):  # make_server builds server_class
        raise TypeError(f"make_server returned {type(server).__name__}, not Server")
    ae._servers.append(server)  # pynetdicom's shutdown() and AE.shutdown() look for it there
    return server
