"""The Django side of the DICOM server: who may associate, and what is stored, found and retrieved.

imaging/dicom/handlers.py calls these from pynetdicom's association threads. Every
decision goes through alliance/access.py (which device this is) and imaging/access.py
(what its principal sees, the same functions the web asks with a doctor's); every
C-STORE (in ingest), C-FIND, C-MOVE and C-GET, and every rejected association, writes an
audit event. A thread that serves an association (its reading thread for C-STORE, its
own for the rest) holds one database connection while it works and hands it to the next
such thread when it is done (imaging/handoff.py), instead of each association connecting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseFailure
from django.db import connection
from django.db.models import QuerySet

from alliance import access, audit, prepared
from alliance.access import Principal
from alliance.models import AuditEvent, Device, Institution
from imaging import access as imaging_access
from imaging import commitment, spool, storage, tasks, worklist, worklist_query
from imaging.dicom.handlers import Decision, Peer, RejectReason
from imaging.dicom.identifiers import Destination, QueryRequest, ReceivedInstance, Retrieval, StoredObject
from imaging.dicom.objects import new_uid
from imaging.dicom.procedures import CommitmentReport, CommitmentRequest, PerformedStep, WorklistQuery
from imaging.dicom.status import MPPS_MAY_NO_LONGER_BE_UPDATED, DimseFailure, Status
from imaging.handoff import Handoff
from imaging.ingest import IngestError, Spooling, ingest_bytes, receive_path
from imaging.models import Instance, Study
from imaging.query import InvalidCriterion, Level, by_identifiers, find, identifier

log = logging.getLogger("imaging.dicom")

# PS3.4 C.4.2.2.1: a retrieve names the unique key of its level (and of the levels above).
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


_UNAVAILABLE = frozenset({"storage-failed", "out-of-space"})
# PS3.4 F.7.2.1.2 and F.7.2.2.2: how an MPPS message that cannot be applied is answered
_MPPS_FAILURES = {
    worklist.DUPLICATE: (Status.DUPLICATE_SOP_INSTANCE, None),
    worklist.UNKNOWN: (Status.NO_SUCH_SOP_INSTANCE, None),
    worklist.FINAL: (Status.PROCESSING_FAILURE, MPPS_MAY_NO_LONGER_BE_UPDATED),
}
_STORE_FAILED = "the archive could not store the instance; try again later"


def _source(peer: Peer) -> str:
    return f"{peer.host}:{peer.port}"


def _visible(device: Device) -> QuerySet[Study]:
    """The studies the device's principal sees (imaging.access, as for a doctor on the web)."""
    return imaging_access.studies_visible_to(Principal.for_device(device))


def _image_store_on(peer: Peer, action: str) -> None:
    """C-STORE, C-FIND, C-MOVE and C-GET are the image store: with the module switched off for
    the device's institution each is refused 0x0124 "Refused: Not Authorized" (PS3.7 Annex C,
    a general status every DIMSE service may return; PS3.4 has no service-specific status for
    it, and 0xA700 would tell the sender to try again later). The association itself stays
    up, so that C-ECHO still shows the network path works."""
    device: Device = peer.principal
    if access.module_on(Principal.for_device(device), access.IMAGE_STORE):
        return
    reason = f"the image store is switched off for {peer.called_ae}"
    audit.record(
        actor=audit.Actor.for_device(device),
        action=action,
        object_type="ae",
        object_id=peer.called_ae,
        source=_source(peer),
        outcome=AuditEvent.Outcome.DENIED,
        detail={"reason": "module off", "module": access.IMAGE_STORE, "dicom_status": int(Status.NOT_AUTHORIZED)},
    )
    raise DimseFailure(Status.NOT_AUTHORIZED, reason)


def _study_of(row: Any, level: Level) -> Study | None:
    if level is Level.STUDY:
        return row
    if level is Level.SERIES:
        return row.study
    if level is Level.IMAGE:
        return row.series.study
    return None


class DjangoServices:
    """Implements imaging.dicom.handlers.Services over the ORM."""

    def __init__(self, *, check_host: bool, write_ahead: bool = False) -> None:
        self.check_host = check_host
        self.write_ahead = write_ahead
        self.connections = Handoff()

    def start(self) -> None:
        """Before the first association: a connection waiting for its thread."""
        self.connections.open_one()

    def close(self) -> None:
        """The server has stopped: close the connections its threads left for the next."""
        self.connections.close()

    # --- association --------------------------------------------------------------------

    def authorize_association(self, peer: Peer) -> Decision:
        try:
            return self._authorize(peer)
        finally:
            # The association's thread lets its connection go: a sender's C-STOREs are served
            # on the reading thread (imaging/dicom/accel/direct.py), which takes it; queries
            # take one again when they come. One connection per association, not two.
            self.connections.give_back()

    def _authorize(self, peer: Peer) -> Decision:
        self.connections.take()  # checked as close_old_connections() would
        device = access.device_for_association(
            calling_ae=peer.calling_ae,
            called_ae=peer.called_ae,
            host=peer.host,
            check_host=self.check_host,
            client_cert_sha256=peer.client_cert_sha256,
        )
        if device is not None:
            return Decision(principal=device)
        called_known = Institution.objects.filter(ae_title=peer.called_ae, active=True).exists()
        reason = RejectReason.CALLING_AE_NOT_RECOGNIZED if called_known else RejectReason.CALLED_AE_NOT_RECOGNIZED
        audit.record(
            actor=audit.Actor.for_unknown_device(peer.calling_ae),
            action="dicom.associate",
            object_type="ae",
            object_id=peer.called_ae,
            source=_source(peer),
            outcome=AuditEvent.Outcome.DENIED,
            detail={"calling_ae": peer.calling_ae, "called_ae": peer.called_ae, "reason": reason.name.lower()},
        )
        return Decision(reject=reason)

    def association_releasing(self, peer: Peer) -> None:
        spooling: Spooling | None = peer.session
        if spooling is not None and not spooling.spool.wait_for(spooling.association):
            log.error("association of %s released before its spooled instances were indexed", peer.calling_ae)

    def association_ended(self, peer: Peer) -> None:
        spooling: Spooling | None = peer.session
        if spooling is not None:
            spooling.spool.finish(spooling.association)
        self.connections.give_back()

    def store_thread_ended(self) -> None:
        self.connections.give_back()  # the thread's own connection (Django keeps one per thread)

    # --- C-STORE ------------------------------------------------------------------------

    def store(self, peer: Peer, instance: ReceivedInstance) -> None:
        self.connections.take()
        _image_store_on(peer, "instance.store")
        device: Device = peer.principal
        institution, actor, source = device.institution, audit.Actor.for_device(device), _source(peer)
        try:
            if instance.path is not None:
                receive_path(
                    instance.path,
                    institution=institution,
                    actor=actor,
                    via="dimse",
                    source=source,
                    spooling=self._spooling(peer),
                    expected_sop_uid=instance.sop_instance_uid,
                )
            else:
                ingest_bytes(instance.part10(), institution=institution, actor=actor, via="dimse", source=source)
        except IngestError as exc:
            if exc.code in _UNAVAILABLE:
                connection.close_if_unusable_or_obsolete()
            raise DimseFailure(exc.dicom_status, exc.reason) from None
        except Exception as exc:
            # The database lost (a broken connection is an InterfaceError, which ingest does not
            # take for a storage failure), or anything else: not stored, and the sender may try
            # again. PS3.4 B.2.3 has no other status for it (0x0110 is no C-STORE status).
            log.exception("C-STORE %s from %s could not be stored", instance.sop_instance_uid, peer.calling_ae)
            self._audit_failed_store(peer, instance.sop_instance_uid, exc)
            connection.close_if_unusable_or_obsolete()  # the next C-STORE connects afresh
            raise DimseFailure(Status.OUT_OF_RESOURCES, _STORE_FAILED) from exc

    def _audit_failed_store(self, peer: Peer, sop_instance_uid: str, exc: Exception) -> None:
        """Every store attempt is audited, this one too; with the database away the log line
        above is all there can be."""
        try:
            self.store_refused(peer, sop_instance_uid, "storage-failed", f"{type(exc).__name__}: {exc}")
        except DatabaseFailure:
            log.warning("could not audit the failed C-STORE of %s: the database is away", sop_instance_uid)

    def store_refused(self, peer: Peer, sop_instance_uid: str, code: str, reason: str) -> None:
        """Audited as ingest audits its refusals (an "instance.store" failure)."""
        self.connections.take()
        device: Device = peer.principal
        audit.record(
            actor=audit.Actor.for_device(device),
            action="instance.store",
            object_type="instance",
            object_id=sop_instance_uid,
            source=_source(peer),
            outcome=AuditEvent.Outcome.FAILURE,
            detail={"via": "dimse", "code": code, "reason": reason[:500], "dicom_status": Status.OUT_OF_RESOURCES},
        )

    def _spooling(self, peer: Peer) -> Spooling | None:
        """The write-ahead spool (imaging/spool.py) for this association, where it can serve:
        PostgreSQL (with a local store or S3: the spool itself is always local)."""
        if peer.session is None and self.write_ahead:
            if connection.vendor == "postgresql":
                device: Device = peer.principal
                sender = spool.Sender(device.institution_id, audit.Actor.for_device(device), "dimse", _source(peer))
                owner = spool.for_this_process()
                peer.session = Spooling(owner, owner.association(sender))
        return peer.session

    # --- C-FIND -------------------------------------------------------------------------

    def find(self, peer: Peer, query: QueryRequest) -> Iterator[Any]:
        self.connections.take()
        _image_store_on(peer, "dicom.find")
        device: Device = peer.principal
        spool.drain()  # what this process answered is found
        level = Level(query.level)
        try:
            with prepared.preparing() if by_identifiers(query.criteria) else nullcontext():  # as QIDO-RS's
                rows = list(find(level, query.criteria, _visible(device)))
        except InvalidCriterion as exc:
            raise DimseFailure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
        detail = {"level": level.value, "keys": _audited_keys(query), "matches": len(rows)}
        self._audit_rows(peer, "dicom.find", level, rows, detail)
        for row in rows:
            ds = identifier(row, level, query.keywords)
            if "RetrieveAETitle" in query.keywords:
                ds.RetrieveAETitle = peer.called_ae
            if "InstanceAvailability" in query.keywords:
                ds.InstanceAvailability = "ONLINE"
            yield ds

    def _audit_rows(self, peer: Peer, action: str, level: Level, rows: list[Any], detail: dict[str, Any]) -> None:
        device: Device = peer.principal
        actor = audit.Actor.for_device(device)
        if level is Level.PATIENT:
            items = [
                (p.patient_id, str(p.pk), "own-institution" if p.issuer_id == device.institution_id else "grant")
                for p in rows
            ]
            object_type = "patient"
        else:
            studies = {s.pk: s for s in (_study_of(row, level) for row in rows) if s is not None}
            bases = imaging_access.bases_for(Principal.for_device(device), list(studies.values()))
            # the patient column holds the index key, as pages and the API write it (audit.read)
            items = [(s.study_uid, str(s.patient_id), bases[pk]) for pk, s in studies.items()]
            object_type = "study"
        source = _source(peer)
        if items:  # a read's events commit without waiting for the disk, as QIDO-RS's (audit.record_read)
            audit.record_many(
                actor=actor,
                action=action,
                object_type=object_type,
                items=items,
                source=source,
                detail=detail,
                read=True,
            )
        else:
            audit.record_read(actor=actor, action=action, source=source, detail=detail)

    # --- C-MOVE and C-GET ---------------------------------------------------------------

    def retrieve(self, peer: Peer, query: QueryRequest, move_destination: str | None) -> Retrieval:
        self.connections.take()
        _image_store_on(peer, "dicom.move" if move_destination is not None else "dicom.get")
        device: Device = peer.principal
        spool.drain()
        destination = None
        if move_destination is not None:
            destination = self._destination(peer, move_destination)
        level = Level(query.level)
        keys = {k: query.criteria.get(k, "") for k in UNIQUE_KEYS.values() if query.criteria.get(k, "")}
        if UNIQUE_KEYS[level] not in keys:
            raise DimseFailure(
                Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"a {level.value} retrieve needs {UNIQUE_KEYS[level]}"
            )
        try:
            instances = list(find(Level.IMAGE, keys, _visible(device)))
        except InvalidCriterion as exc:
            raise DimseFailure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
        action = "dicom.move" if destination else "dicom.get"
        detail: dict[str, Any] = {"level": level.value, "keys": _audited_keys(query), "instances": len(instances)}
        if destination:
            detail["destination"] = destination.ae_title
        self._audit_rows(peer, action, Level.IMAGE, instances, detail)
        return Retrieval(objects=[_stored(i) for i in instances], destination=destination)

    def _destination(self, peer: Peer, ae_title: str) -> Destination:
        device: Device = peer.principal
        target = access.move_destination_for(device, ae_title)
        if target is None:
            audit.record(
                actor=audit.Actor.for_device(device),
                action="dicom.move",
                object_type="ae",
                object_id=ae_title,
                source=_source(peer),
                outcome=AuditEvent.Outcome.DENIED,
                detail={"reason": "move destination unknown"},
            )
            raise DimseFailure(Status.MOVE_DESTINATION_UNKNOWN, f"{ae_title} is not a device of this institution")
        return Destination(ae_title=target.ae_title, host=target.host, port=target.port)

    # --- modality worklist and MPPS ------------------------------------------------------

    def worklist(self, peer: Peer, query: WorklistQuery) -> Iterator[Any]:
        self.connections.take()
        _image_store_on(peer, "worklist.find")
        device: Device = peer.principal
        steps = imaging_access.steps_visible_to(Principal.for_device(device))
        answers = worklist_query.answers(query)
        try:
            rows = answers.rows(steps)
        except worklist_query.InvalidCriterion as exc:
            raise DimseFailure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
        keys = {k: v[:128] for k, v in {**query.criteria, **query.step_criteria}.items() if v}
        detail: dict[str, Any] = {"keys": keys, "matches": len(rows)}
        actor, source = audit.Actor.for_device(device), _source(peer)
        # One INSERT, which commits itself: the read is audited before a match is sent.
        if rows:
            basis = imaging_access.OWN_INSTITUTION
            items = [(*answers.audited(row), basis) for row in rows]
            audit.record_many(
                read=True,
                actor=actor,
                action="worklist.find",
                object_type="scheduled_step",
                items=items,
                source=source,
                detail=detail,
            )
        else:
            audit.record(actor=actor, action="worklist.find", source=source, detail=detail)
        for row in rows:
            yield answers.identifier(row)

    def mpps_create(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> str:
        self.connections.take()
        _image_store_on(peer, "worklist.mpps")
        device: Device = peer.principal
        uid = sop_instance_uid or new_uid(settings.DICOM_UID_ROOT)
        with _mpps_failures():
            worklist.mpps_started(
                by=audit.Actor.for_device(device),
                institution=device.institution,
                device_ae=device.ae_title,
                sop_uid=uid,
                performed=step,
            )
        return uid

    def mpps_set(self, peer: Peer, sop_instance_uid: str, step: PerformedStep) -> None:
        self.connections.take()
        _image_store_on(peer, "worklist.mpps")
        device: Device = peer.principal
        with _mpps_failures():
            worklist.mpps_updated(
                by=audit.Actor.for_device(device),
                institution=device.institution,
                sop_uid=sop_instance_uid,
                performed=step,
            )

    # --- storage commitment -------------------------------------------------------------

    def commitment_requested(self, peer: Peer, request: CommitmentRequest) -> CommitmentReport:
        self.connections.take()
        _image_store_on(peer, "storage.commit")
        device: Device = peer.principal
        spool.drain()  # what this process answered is indexed before we say what we hold
        row = commitment.commitment_check(device=device, request=request, source=_source(peer))
        return commitment.report_of(row, retrieve_ae=peer.called_ae)

    def commitment_reported(self, peer: Peer, report: CommitmentReport, delivered: bool) -> None:
        self.connections.take()
        if report.commitment_id is None:
            return
        if delivered:
            commitment.commitment_delivered(commitment_id=report.commitment_id)
            return
        tasks.deliver_commitment.delay(report.commitment_id)


@contextmanager
def _mpps_failures() -> Iterator[None]:
    try:
        yield
    except worklist.PerformedStepError as exc:
        status, error_id = _MPPS_FAILURES[exc.kind]
        raise DimseFailure(status, str(exc), error_id=error_id) from None


# What a C-FIND, C-GET or C-MOVE asked for, as the audit trail keeps it (IHE ATNA "Query"
# and "Begin Transferring" record the query itself, not only what it matched).
AUDITED_KEYS = ("PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _audited_keys(query: QueryRequest) -> dict[str, str]:
    return {key: query.criteria[key][:512] for key in AUDITED_KEYS if query.criteria.get(key, "")}


def _stored(instance: Instance) -> StoredObject:
    return StoredObject(
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        open=partial(storage.open_instance, instance),
        path=storage.local_path(instance),
    )
