"""The Application Entity of the DICOM server and the socket server that runs it.

pynetdicom's public API only; what reaches into its internals to make the server faster is
in imaging/dicom/accel/, installed (or not) by the dicom_server command before it serves.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import socket
import ssl
import threading
import time
from socketserver import TCPServer
from typing import Any

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt, sop_class
from pynetdicom.transport import ThreadedAssociationServer

from imaging.dicom.datasets import SUPPORTED_TRANSFER_SYNTAXES
from imaging.dicom.handlers import Handlers, Services
from imaging.dicom.procedures import MPPS, STORAGE_COMMITMENT, WORKLIST_FIND

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
# A TLS client that does not finish its handshake within this is let go.
HANDSHAKE_SECONDS = 30
# How often a request thread looks whether its association has ended without a connection close
_CLOSE_WATCH_SECONDS = 1.0
log = logging.getLogger("imaging.dicom")


def tls_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The server side of DICOM TLS (PS3.15 B.1, and B.9's BCP 195 profiles): TLS 1.2 or later
    with the certificate chain and key given. With a CA file, a client may present a
    certificate that CA issued (it is then checked; one it did not issue ends the handshake),
    for the device pinning of alliance.access.device_for_association. Bad files raise here,
    so the server does not start half configured."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    if ca:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


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
    FIND, MOVE and GET; the modality worklist (FIND), MPPS and storage commitment (push model)."""
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
    for workflow_class in (WORKLIST_FIND, MPPS, STORAGE_COMMITMENT):
        ae.add_supported_context(workflow_class, ALL_TRANSFER_SYNTAXES)
    return ae


class AcceptLoad:
    """How many associations each of the server's processes has open, in memory they share
    (made before they fork), so that the least busy one takes the next connection.

    The processes share one listening socket. When a connection arrives every process is
    woken; one that has more associations open than another process waits, up to
    DEFER_SECONDS, until a less busy one has taken it (its count has risen), so the connection
    goes there (the kernel's SO_REUSEPORT spreading picks by a hash of the addresses: four
    associations often landed 3 and 1, or 4 and 0, halving the throughput of the busy
    process's share). A fixed 2 ms pause was not enough on two loaded cores: the idle
    process had not run by then in two of five runs of four associations, and they landed
    3 and 1 (bench/RESULTS.md)."""

    DEFER_SECONDS = 0.05  # the longest a busier process leaves a connection to the others
    POLL_SECONDS = 0.001

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
        """At once when no process has fewer associations open than `slot`'s; otherwise once
        one of those has taken a connection (it then has as many), or after DEFER_SECONDS."""
        deadline = time.monotonic() + self.DEFER_SECONDS
        while self.counts[slot] > min(self.counts) and time.monotonic() < deadline:
            time.sleep(self.POLL_SECONDS)


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
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket. Given a
    `listening` socket (listening_socket) and an AcceptLoad with this process's `slot`, it
    serves on that socket beside the other processes."""

    # Each connection's request thread outlives the call that made its association: it waits
    # for the connection to close, to count it out of AcceptLoad (daemon: never waited for).
    daemon_threads = True

    def __init__(
        self,
        *args: Any,
        listening: socket.socket | None = None,
        load: AcceptLoad | None = None,
        slot: int = 0,
        tls: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        self.listening = listening  # read by server_bind, which the base __init__ calls
        self.load = load
        self.slot = slot
        self.tls = tls  # wrapped here, the handshake in the connection's own thread
        self._opened = threading.local()  # the association the request thread made (EVT_CONN_OPEN)
        self._closing: dict[Any, threading.Event] = {}  # association -> set at its EVT_CONN_CLOSE
        self._closing_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        if load is not None:
            self.bind(evt.EVT_CONN_OPEN, self._note_association)
            self.bind(evt.EVT_CONN_CLOSE, self._note_closed)

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
        if self.load is not None:
            self.load.started(self.slot)
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # pynetdicom's own TLS shakes hands here, in the one thread that accepts: a slow
            # or silent client would hold every other connection up.
            client = self.tls.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    # --- counting associations for AcceptLoad -------------------------------------------
    # A connection counts from its accept (in the serving thread, before the next accept)
    # until it is closed. pynetdicom's request thread only creates and starts the association
    # (EVT_CONN_OPEN fires in it), which then runs in a thread of its own: the request thread
    # waits for the connection's EVT_CONN_CLOSE (or, failing that, the association's end)
    # before counting it out. Not the association's end alone: a connection closed before any
    # A-ASSOCIATE-RQ (a port probe, a health check) leaves its association waiting out the
    # ACSE timeout (30 s), and counted that long it drew the next associations to the other
    # processes (four landed 3 and 1 after the benchmark's port probe).

    def _note_association(self, event: evt.Event) -> None:
        self._opened.assoc = event.assoc
        self._opened.closed = threading.Event()
        with self._closing_lock:
            self._closing[event.assoc] = self._opened.closed

    def _note_closed(self, event: evt.Event) -> None:
        with self._closing_lock:
            closed = self._closing.pop(event.assoc, None)
        if closed is not None:
            closed.set()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._opened.assoc = None
        try:
            if isinstance(request, ssl.SSLSocket) and not _shake_hands(request, client_address):
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)
            assoc = self._opened.assoc
            if assoc is not None:
                while not self._opened.closed.wait(_CLOSE_WATCH_SECONDS) and assoc.is_alive():
                    pass
        finally:
            if self._opened.assoc is not None:
                with self._closing_lock:
                    self._closing.pop(self._opened.assoc, None)
            self._opened.assoc = None
            if self.load is not None:
                self.load.ended(self.slot)

    def shutdown(self) -> None:
        """Stop serve_forever() and close the socket. (pynetdicom's shutdown also takes the
        server out of its AE's list of the servers AE.start_server made, where this one is not.)"""
        TCPServer.shutdown(self)
        self.server_close()

    def server_close(self) -> None:
        if self.listening is not None and self.socket is self.listening:
            self.socket.close()  # this process's descriptor only: never shut the shared socket down
            return
        super().server_close()


def _shake_hands(conn: ssl.SSLSocket, client_address: Any) -> bool:
    conn.settimeout(HANDSHAKE_SECONDS)
    try:
        conn.do_handshake()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.warning("TLS handshake with %s failed: %s", client_address, exc)
        return False
    conn.settimeout(None)
    return True


def make_server(
    ae: AE,
    host: str,
    port: int,
    services: Services,
    *,
    listening: socket.socket | None = None,
    load: AcceptLoad | None = None,
    slot: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Server:
    """A bound, listening server; call serve_forever() on it, shutdown() to stop. With
    `listening`, `load` and `slot`: one of several processes sharing that socket. With `tls`:
    every connection is DICOM over TLS (PS3.15 B.1)."""
    handlers = Handlers(services)
    server = ae.make_server(
        (host, port),
        evt_handlers=handlers.bindings(),
        server_class=Server,
        listening=listening,
        load=load,
        slot=slot,
        tls=tls,
    )
    if not isinstance(server, Server):  # make_server builds server_class
        raise TypeError(f"make_server returned {type(server).__name__}, not Server")
    return server
