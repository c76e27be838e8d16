"""One handler per pynetdicom event; each calls the injected services and answers with a named status.

The services (imaging/dimse_services.py) decide who may associate and what is stored, found
and retrieved; this module only speaks the protocol: A-ASSOCIATE-RJ reasons (PS3.8 9.3.4),
DIMSE statuses with an Error Comment (PS3.7 C.4), C-FIND pending responses, C-MOVE
sub-associations and C-GET sub-operations (PS3.4 C.4).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE, N_ACTION, N_CREATE, N_SET
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import PresentationContext

from imaging.dicom import accel
from imaging.dicom.identifiers import PATIENT_ROOT, STUDY_ROOT, QueryRequest, ReceivedInstance, Retrieval, StoredObject
from imaging.dicom.layout import RowIdentifier
from imaging.dicom.procedures import (
    MPPS,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    WORKLIST_FIND,
    CommitmentReport,
    CommitmentRequest,
    PerformedStep,
    WorklistQuery,
)
from imaging.dicom.status import DimseFailure, Status, error_comment

log = logging.getLogger("imaging.dicom")

_PATIENT_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.1."  # PS3.4 C.6.1: patient root FIND/MOVE/GET
_STUDY_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.2."
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
# How long the N-EVENT-REPORT of a storage commitment waits for the peer's answer on the
# association of its request, before it goes out on an association of its own instead.
REPORT_REPLY_SECONDS = 30


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ diagnostics from the service user (PS3.8 Table 9-21, source 1)."""

    NO_REASON = 0x01
    CALLING_AE_NOT_RECOGNIZED = 0x03
    CALLED_AE_NOT_RECOGNIZED = 0x07


@dataclass
class Peer:
    """Who is on the other end of an association, and what the services made of them."""

    calling_ae: str
    called_ae: str
    host: str
    port: int
    principal: Any = None
    session: Any = None  # what the services keep for the association (its spool, for C-STORE)
    tls: bool = False  # the association came over TLS (PS3.15 B.1)
    client_cert_sha256: str = ""  # the SHA-256 of the client certificate it presented (hex), if any


@dataclass(frozen=True)
class Decision:
    """The services' answer to an association request: a principal, or a reason to reject."""

    principal: Any = None
    reject: RejectReason | None = None


class Services(Protocol):
    def authorize_association(self, peer: Peer) -> Decision: ...

    def store(self, peer: Peer, instance: ReceivedInstance) -> None:
        """Keep the instance durably, or raise DimseFailure."""

    def find(self, peer: Peer, query: QueryRequest) -> Iterable[Dataset]:
        """The identifiers of every match, or raise DimseFailure."""

    def retrieve(self, peer: Peer, query: QueryRequest, move_destination: str | None) -> Retrieval:
        """What to send (and where, for C-MOVE), or raise DimseFailure."""

    def association_releasing(self, peer: Peer) -> None:
        """The peer asked to release: finish what its stores left, before the A-RELEASE-RP."""

    def association_ended(self, peer: Peer) -> None: ...

    def store_refused(self, peer: Peer, sop_instance_uid: str, code: str, reason: str) -> None:
        """An instance refused while it was received, before store() (too large, not writable):
        note the refusal as store() would have (code as imaging/ingest.py names it)."""

    def store_thread_ended(self) -> None:
        """A thread other than the association's own that called the services ends (the reading
        thread of imaging/dicom/accel/direct.py, a commitment report's): let go of what it holds."""

    def worklist(self, peer: Peer, query: WorklistQuery) -> Iterable[Dataset | RowIdentifier]:
        """The modality worklist's matching items (PS3.4 K.6), each a Dataset or a row and
        its layout (written without a Dataset on the accelerated path), or raise DimseFailure."""

    def mpps_create(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> str:
        """Record a performed procedure step the modality started (its UID: the one given, or a
        new one when the request had none), or raise DimseFailure."""

    def mpps_set(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> None:
        """Update a performed procedure step, or raise DimseFailure."""

    def commitment_requested(self, peer: Peer, request: CommitmentRequest) -> CommitmentReport:
        """Which of the instances we keep, durably and indexed, and which not; or raise DimseFailure."""

    def commitment_reported(self, peer: Peer, report: CommitmentReport, delivered: bool) -> None:
        """The report went out on the request's association (delivered), or could not: then it
        is to go out on an association of its own, to the device."""


def status_dataset(status: int, reason: str = "") -> Dataset:
    """A response status with its Error Comment (0000,0902), so the peer sees why."""
    ds = Dataset()
    ds.Status = int(status)
    comment = error_comment(reason)
    if comment:
        ds.ErrorComment = comment
    return ds


def failure_dataset(failure: DimseFailure) -> Dataset:
    ds = status_dataset(failure.status, failure.reason)
    if failure.error_id is not None:
        ds.ErrorID = failure.error_id  # (0000,0903)
    return ds


def client_certificate_sha256(assoc: Any) -> tuple[bool, str]:
    """(over TLS, the SHA-256 of the client's certificate in hex or "") of an association."""
    wrapper = getattr(getattr(assoc, "dul", None), "socket", None)  # pynetdicom's AssociationSocket
    sock = getattr(wrapper, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return False, ""
    der = sock.getpeercert(binary_form=True)
    if not der:
        return True, ""
    return True, hashlib.sha256(der).hexdigest()


def set_no_delay(event: evt.Event) -> None:
    """TCP_NODELAY: pynetdicom sends command and data set as separate PDUs; Nagle would hold them."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def received_path(event: evt.Event) -> Path | None:
    """Where pynetdicom wrote the data set, when it receives into files (else None)."""
    try:
        return event.dataset_path
    except AttributeError:
        return None


def query_root(sop_class_uid: str) -> str:
    return PATIENT_ROOT if str(sop_class_uid).startswith(_PATIENT_ROOT_PREFIX) else STUDY_ROOT


def requested_query_root(event: evt.Event) -> str:
    """The query root named by the Affected SOP Class UID of a C-FIND, C-MOVE or C-GET request."""
    request = event.request
    if not isinstance(request, C_FIND | C_MOVE | C_GET):
        raise TypeError(f"not a query/retrieve request: {type(request).__name__}")
    if request.AffectedSOPClassUID is None:  # pynetdicom dispatches only valid requests, which carry it
        raise ValueError(f"{type(request).__name__} without an Affected SOP Class UID")
    return query_root(request.AffectedSOPClassUID)


def move_contexts(objects: list[StoredObject]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax) sent, so every file goes out as stored."""
    contexts: dict[tuple[str, str], PresentationContext] = {}
    for obj in objects:
        pair = (obj.sop_class_uid, obj.transfer_syntax_uid)
        if pair in contexts or len(contexts) >= _MAX_CONTEXTS:
            continue
        syntaxes = [obj.transfer_syntax_uid]
        if not UID(obj.transfer_syntax_uid).is_compressed:
            syntaxes += [ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts not in syntaxes]
        contexts[pair] = build_context(obj.sop_class_uid, syntaxes)
    return list(contexts.values())


def outgoing(obj: StoredObject) -> Dataset:
    """What C-MOVE and C-GET hand pynetdicom for a stored instance. Accelerated: a StoredFile,
    sent as the stored bytes (imaging/dicom/accel/retrieve.py); else the decoded data set,
    which pynetdicom encodes again in the transfer syntax the peer accepted."""
    if accel.installed():
        return accel.StoredFile(obj)
    with obj.open() as source:
        return dcmread(source)


class Handlers:
    """The event handlers of one server, sharing the services and the per-association peers."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._peers: WeakKeyDictionary[Any, Peer] = WeakKeyDictionary()

    def bindings(self) -> list[evt.EventHandlerType]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_ACSE_RECV, self.on_acse_received),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
        ]

    def peer(self, event: evt.Event) -> Peer:
        return self._peers[event.assoc]

    # --- association --------------------------------------------------------------------

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None:  # pynetdicom fires EVT_REQUESTED only once the A-ASSOCIATE-RQ is in
            raise RuntimeError("EVT_REQUESTED without the A-ASSOCIATE-RQ primitive")
        peer = Peer(
            calling_ae=str(request.calling_ae_title).strip(),
            called_ae=str(request.called_ae_title).strip(),
            host=assoc.requestor.address,
            port=assoc.requestor.port,
        )
        peer.tls, peer.client_cert_sha256 = client_certificate_sha256(assoc)
        try:
            decision = self.services.authorize_association(peer)
        except Exception:
            log.exception("association from %s@%s: could not decide; rejected (transient)", peer.calling_ae, peer.host)
            self._reject(assoc, 0x02, 0x03, 0x01)  # transient, provider, temporary congestion
            return
        if decision.reject is not None:
            log.warning(
                "association rejected: %s@%s:%s -> %s (%s)",
                peer.calling_ae,
                peer.host,
                peer.port,
                peer.called_ae,
                decision.reject.name,
            )
            self._reject(assoc, 0x01, 0x01, int(decision.reject))  # permanent, service user
            return
        peer.principal = decision.principal
        self._peers[assoc] = peer
        assoc.acceptor.ae_title = peer.called_ae
        accel.serve_stores_directly(
            assoc,
            partial(self.store_status, peer),
            self.on_store,
            self.services.store_thread_ended,
            partial(self.services.store_refused, peer),
        )

    def on_acse_received(self, event: evt.Event) -> None:
        """A peer asking to release (PS3.8 7.2): finish what its stores left before the
        A-RELEASE-RP, so a peer that has released may count on everything it stored being
        found. pynetdicom signals this on the association's thread just before it responds."""
        primitive = getattr(event, "primitive", None)  # set from the event data (EVT_ACSE_RECV)
        if not isinstance(primitive, A_RELEASE) or primitive.result is not None:
            return
        peer = self._peers.get(event.assoc)
        if peer is None:
            return
        try:
            self.services.association_releasing(peer)
        except Exception:
            log.exception("finishing the association of %s@%s before its release", peer.calling_ae, peer.host)

    @staticmethod
    def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
        """Send A-ASSOCIATE-RJ and wait until it is on the wire, as pynetdicom's own rejections do
        (otherwise the server closes the socket first and the peer sees an abort)."""
        assoc.acse.send_reject(result, source, diagnostic)
        assoc.kill()

    def on_ended(self, event: evt.Event) -> None:
        peer = self._peers.pop(event.assoc, None)
        if peer is not None:
            self.services.association_ended(peer)

    # --- services -----------------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        return Status.SUCCESS

    def on_store(self, event: evt.Event) -> int | Dataset:
        request = event.request
        if not isinstance(request, C_STORE):
            raise TypeError(f"on_store is bound to EVT_C_STORE, got {type(request).__name__}")
        instance = ReceivedInstance(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            part10=event.encoded_dataset,
            path=received_path(event),
        )
        try:
            peer = self.peer(event)
        except KeyError:  # an association this server did not accept
            log.exception("C-STORE %s on an association without a peer", instance.sop_instance_uid)
            return status_dataset(Status.PROCESSING_FAILURE, "the instance could not be stored; try again")
        return self.store_status(peer, instance)

    def store_status(self, peer: Peer, instance: ReceivedInstance) -> int | Dataset:
        """Store a received instance; the C-STORE response's status (with a reason on failure)."""
        try:
            self.services.store(peer, instance)
        except DimseFailure as failure:
            log.warning("C-STORE %s refused: %s", instance.sop_instance_uid, failure)
            return status_dataset(failure.status, failure.reason)
        except Exception:
            log.exception("C-STORE %s failed", instance.sop_instance_uid)
            return status_dataset(Status.PROCESSING_FAILURE, "the instance could not be stored; try again")
        return Status.SUCCESS

    def on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | RowIdentifier | None]]:
        if isinstance(event.request, C_FIND) and event.request.AffectedSOPClassUID == WORKLIST_FIND:
            yield from self.on_worklist_find(event)
            return
        try:
            query = QueryRequest.from_identifier(event.identifier, requested_query_root(event))
            for identifier in self.services.find(self.peer(event), query):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                yield Status.PENDING, identifier
        except DimseFailure as failure:
            log.warning("C-FIND refused: %s", failure)
            yield status_dataset(failure.status, failure.reason), None
        # pynetdicom sends the final Success once the matches are exhausted

    def _retrieval(self, event: evt.Event, move_destination: str | None) -> Retrieval:
        query = QueryRequest.from_identifier(event.identifier, requested_query_root(event))
        return self.services.retrieve(self.peer(event), query, move_destination)

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        destination_ae = str(event.move_destination).strip()
        try:
            retrieval = self._retrieval(event, destination_ae)
        except DimseFailure as failure:
            log.warning("C-MOVE to %s refused: %s", destination_ae, failure)
            if failure.status != Status.MOVE_DESTINATION_UNKNOWN:
                raise  # pynetdicom answers a failure of the 0xC000 family
            yield None, None  # pynetdicom answers 0xA801
            return
        dest = retrieval.destination
        if dest is None:
            yield None, None
            return
        sub_association_handlers = [(evt.EVT_CONN_OPEN, set_no_delay), *accel.requested_association_handlers()]
        options = {"contexts": move_contexts(retrieval.objects), "evt_handlers": sub_association_handlers}
        yield dest.host, dest.port, options
        yield from self._send(event, retrieval.objects)

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        try:
            retrieval = self._retrieval(event, None)
        except DimseFailure as failure:
            log.warning("C-GET refused: %s", failure)
            yield 1
            yield status_dataset(failure.status, failure.reason), None
            return
        yield from self._send(event, retrieval.objects)

    def _send(self, event: evt.Event, objects: list[StoredObject]) -> Iterator[Any]:
        yield len(objects)
        for obj in objects:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, outgoing(obj)

    # --- modality worklist, performed procedure step, storage commitment ---------------

    def on_worklist_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | RowIdentifier | None]]:
        """MWL C-FIND (PS3.4 K.4.1): a pending response per scheduled step that matches."""
        try:
            query = WorklistQuery.from_identifier(event.identifier)
            written = accel.installed()  # a RowIdentifier goes to accel's encode as it is
            for identifier in self.services.worklist(self.peer(event), query):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                if isinstance(identifier, RowIdentifier) and not written:
                    identifier = identifier.dataset()  # pynetdicom's own encode takes a Dataset
                yield Status.PENDING, identifier
        except DimseFailure as failure:
            log.warning("MWL C-FIND refused: %s", failure)
            yield status_dataset(failure.status, failure.reason), None

    def on_n_create(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """MPPS N-CREATE (PS3.4 F.7.2.1): the modality started a procedure step."""
        request = event.request
        if not isinstance(request, N_CREATE) or request.AffectedSOPClassUID != MPPS:
            return status_dataset(Status.NO_SUCH_SOP_CLASS, "only MPPS instances are created here"), None
        given = str(request.AffectedSOPInstanceUID or "")
        try:
            step = PerformedStep.from_create(_decoded(lambda: event.attribute_list))
            uid = self.services.mpps_create(self.peer(event), given, step)
        except DimseFailure as failure:
            log.warning("MPPS N-CREATE %s refused: %s", given, failure)
            return failure_dataset(failure), None
        reply = Dataset()
        if not given:  # PS3.7 10.1.5.1.4: the response names the instance we made
            reply.AffectedSOPInstanceUID = uid
        return Status.SUCCESS, reply

    def on_n_set(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """MPPS N-SET (PS3.4 F.7.2.2): the modality finished or abandoned the step."""
        request = event.request
        if not isinstance(request, N_SET) or request.RequestedSOPClassUID != MPPS:
            return status_dataset(Status.NO_SUCH_SOP_CLASS, "only MPPS instances are set here"), None
        uid = str(request.RequestedSOPInstanceUID or "")
        try:
            modifications = _decoded(lambda: event.modification_list)
            step = PerformedStep.from_set(modifications)
            self.services.mpps_set(self.peer(event), uid, step)
        except DimseFailure as failure:
            log.warning("MPPS N-SET %s refused: %s", uid, failure)
            return failure_dataset(failure), None
        return Status.SUCCESS, modifications

    def on_n_action(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """Storage commitment request (PS3.4 J.3.2): answered at once; the outcome follows as an
        N-EVENT-REPORT, on this association while it is open, else on one of its own."""
        request = event.request
        if not isinstance(request, N_ACTION) or request.RequestedSOPClassUID != STORAGE_COMMITMENT:
            return status_dataset(Status.NO_SUCH_SOP_CLASS, "only storage commitment is asked here"), None
        if request.RequestedSOPInstanceUID != STORAGE_COMMITMENT_INSTANCE:
            return status_dataset(
                Status.NO_SUCH_SOP_INSTANCE, "the commitment instance is 1.2.840.10008.1.20.1.1"
            ), None
        peer = self.peer(event)
        try:
            information = _decoded(lambda: event.action_information)
            commitment = CommitmentRequest.from_action(request.ActionTypeID, information)
            report = self.services.commitment_requested(peer, commitment)
        except DimseFailure as failure:
            log.warning("storage commitment refused: %s", failure)
            return failure_dataset(failure), None
        watch = ResponseWatch(event.assoc, "N_ACTION_RSP")
        sender = threading.Thread(
            target=self._report, args=(event.assoc, peer, report, watch), name="commitment-report", daemon=True
        )
        sender.start()
        return Status.SUCCESS, None

    def _report(self, assoc: Any, peer: Peer, report: CommitmentReport, watch: ResponseWatch) -> None:
        try:
            delivered = watch.wait(REPORT_REPLY_SECONDS) and _send_report(assoc, report)
            self.services.commitment_reported(peer, report, delivered=delivered)
        except Exception:
            log.exception("storage commitment %s: could not record its report", report.transaction_uid)
        finally:
            self.services.store_thread_ended()


class ResponseWatch:
    """Tells when the response of the request being served has gone out on the wire, so that a
    message we send next on the association follows it (PS3.4 J.3.3: the commitment's report
    comes after the N-ACTION response). pynetdicom marks its reactor paused while a handler runs,
    so that a send_* method called from the handler goes at once; one from another thread
    would go before the response. Public events only: the response's message is handed over
    (EVT_DIMSE_SENT), then its PDU sent (EVT_PDU_SENT)."""

    def __init__(self, assoc: Any, response: str) -> None:
        self.assoc = assoc
        self.response = response  # the class name of pynetdicom's message, e.g. N_ACTION_RSP
        self.handed_over = False
        self.sent = threading.Event()
        assoc.bind(evt.EVT_DIMSE_SENT, self._message_sent)
        assoc.bind(evt.EVT_PDU_SENT, self._pdu_sent)

    def _message_sent(self, event: evt.Event) -> None:
        if type(getattr(event, "message", None)).__name__ == self.response:
            self.handed_over = True

    def _pdu_sent(self, event: evt.Event) -> None:
        if self.handed_over:
            self.sent.set()

    def wait(self, seconds: float) -> bool:
        """True once the response is out; False if it did not go out within `seconds`."""
        try:
            return self.sent.wait(seconds)
        finally:
            self.assoc.unbind(evt.EVT_DIMSE_SENT, self._message_sent)
            self.assoc.unbind(evt.EVT_PDU_SENT, self._pdu_sent)


def _decoded(read: Any) -> Dataset | None:
    """A request's data set as pynetdicom decodes it on first use; one it cannot decode is
    refused with a status rather than an exception in pynetdicom's service class."""
    try:
        ds = read()
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for bytes it cannot read
        raise DimseFailure(Status.INVALID_ATTRIBUTE_VALUE, f"the data set cannot be decoded: {exc}") from None
    return ds if isinstance(ds, Dataset) else None


def _send_report(assoc: Any, report: CommitmentReport) -> bool:
    """Send the commitment's N-EVENT-REPORT on the association of its request; True when the
    peer answered Success (PS3.4 J.3.3)."""
    if not assoc.is_established:
        return False
    timeout = assoc.dimse_timeout
    assoc.dimse_timeout = min(timeout or REPORT_REPLY_SECONDS, REPORT_REPLY_SECONDS)
    try:
        answer, _reply = assoc.send_n_event_report(
            report.event_information(), report.event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
    except Exception:  # noqa: BLE001 - released or aborted meanwhile: it goes out on its own association
        log.warning("storage commitment %s: not reported on its association", report.transaction_uid, exc_info=True)
        return False
    finally:
        assoc.dimse_timeout = timeout
    return int(answer.get("Status", -1)) == Status.SUCCESS
