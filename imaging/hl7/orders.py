"""ORM^O01 and OMI^O23 orders from a registered HIS into the modality worklist.

`receive` answers every message with an ACK: AA once each order of it is on the worklist
(imaging.worklist.schedule_step) or taken off it (ORC-1 CA, discontinue_step); AR for a
message we do not take (not HL7, another type or version, a sender nobody registered); AE
with the segment and field at fault for an order we cannot read. A message's orders are
applied together or not at all, and the same order sent again finds its step (schedule_step
is idempotent on the accession number), so a HIS that resends after a lost ACK does no harm.

Where the fields are (IHE RAD TF-2 4.4 for ORM^O01, 4.4/4.13 for OMI^O23): accession number
OBR-18 (OMI: IPC-1), requested procedure ID OBR-19 (IPC-2), modality OBR-24 (IPC-5),
scheduled station AE title IPC-9, the start ORC-7.4 / OBR-27.4 (OMI: TQ1-7), the procedure
OBR-4.2 or 4.1. The patient is PID-3 (its assigning authority PID-3.4 names the issuing
institution by AE title, else the ordering institution issued it), PID-5, PID-7, PID-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import hl7
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from alliance import audit
from alliance.models import AuditEvent, Institution
from imaging import worklist
from imaging.hl7.messages import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_VERSION,
    HL7Error,
    ack,
    has_segment,
    hl7_datetime,
    parse,
    value,
)
from imaging.hl7.models import HisEndpoint
from imaging.models import ScheduledStep

SUPPORTED = {("ORM", "O01"), ("OMI", "O23")}
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
NEW, CANCEL = "NW", "CA"
SEXES = {"M": "M", "F": "F", "O": "O", "U": "", "A": "O", "N": ""}


@dataclass(frozen=True)
class Where:
    """A field of one segment occurrence, for an ERR segment."""

    segment: str
    field: int
    sequence: int = 1


@dataclass
class Order:
    control: str
    accession: str
    accession_at: Where
    modality: str
    modality_at: Where
    scheduled_at: datetime
    scheduled_at_where: Where
    procedure_id: str
    station_ae: str
    description: str


def receive(text: str, *, peer: str = "") -> str:
    """The ACK (as text) for one message received over MLLP."""
    message: hl7.Message | None = None
    endpoint: HisEndpoint | None = None
    try:
        message = parse(text)
        _check_header(message)
        endpoint = _endpoint(message)
        _apply(message, endpoint, _patient(message, endpoint), _orders(message))
    except HL7Error as error:
        _audit_refusal(message, endpoint, error, peer)
        return ack(message, error.ack, error)
    return ack(message, "AA")


def _check_header(message: hl7.Message) -> None:
    kind, event = value(message, "MSH", 9, 1), value(message, "MSH", 9, 2)
    if (kind, event) not in SUPPORTED:
        text = f"{kind}^{event} is not taken here: send ORM^O01 or OMI^O23."
        raise HL7Error("AR", "MSH", 9, UNSUPPORTED_MESSAGE_TYPE, text)
    version = value(message, "MSH", 12)
    if version not in VERSIONS:
        raise HL7Error("AR", "MSH", 12, UNSUPPORTED_VERSION, f"HL7 version {version or '(none)'} is not supported.")


def _endpoint(message: hl7.Message) -> HisEndpoint:
    application, facility = value(message, "MSH", 3), value(message, "MSH", 4)
    endpoint = (
        HisEndpoint.objects.select_related("institution")
        .filter(sending_application=application, sending_facility=facility, active=True, institution__active=True)
        .first()
    )
    if endpoint is None:
        raise HL7Error("AR", "MSH", 4, UNKNOWN_KEY, f"No HIS is registered as {application}@{facility}.")
    return endpoint


@dataclass(frozen=True)
class PatientFields:
    patient_id: str
    issuer: Institution
    name: str
    birth_date: date | None
    sex: str


def _patient(message: hl7.Message, endpoint: HisEndpoint) -> PatientFields:
    if not has_segment(message, "PID"):
        raise HL7Error("AE", "PID", 1, SEGMENT_SEQUENCE_ERROR, "The order has no PID segment.")
    patient_id = value(message, "PID", 3, 1)
    if not patient_id:
        raise HL7Error("AE", "PID", 3, REQUIRED_FIELD_MISSING, "PID-3 (the patient ID) is empty.")
    authority = value(message, "PID", 3, 4)
    issuer = endpoint.institution
    if authority and authority != issuer.ae_title:
        found = Institution.objects.filter(ae_title=authority, alliance_id=issuer.alliance_id).first()
        if found is None:
            raise HL7Error("AE", "PID", 3, UNKNOWN_KEY, f"No institution of the alliance has the AE title {authority}.")
        issuer = found
    name = "^".join(value(message, "PID", 5, c) for c in (1, 2, 3)).rstrip("^")
    born = hl7_datetime(value(message, "PID", 7), "PID", 7)
    sex = value(message, "PID", 8).upper()
    if sex not in SEXES:
        raise HL7Error("AE", "PID", 8, TABLE_VALUE_NOT_FOUND, f"PID-8 {sex} is not a sex of table 0001.")
    return PatientFields(patient_id, issuer, name, born.date() if born else None, SEXES[sex])


def _orders(message: hl7.Message) -> list[Order]:
    """Each ORC with the OBR (and, in OMI, TQ1 and IPC) that follow it, in message order."""
    omi = value(message, "MSH", 9, 1) == "OMI"
    seen: dict[str, int] = {}
    groups: list[dict[str, int]] = []
    for segment in message:
        name = str(segment[0])
        seen[name] = seen.get(name, 0) + 1
        if name == "ORC":
            groups.append({})
        if name in ("ORC", "OBR", "TQ1", "IPC") and groups and name not in groups[-1]:
            groups[-1][name] = seen[name]
    if not groups:
        raise HL7Error("AE", "ORC", 1, SEGMENT_SEQUENCE_ERROR, "The message has no order (ORC segment).")
    return [_order(message, group, omi) for group in groups]


def _first(message: hl7.Message, *places: tuple[Where, int]) -> tuple[str, Where]:
    """The first non-empty of several places a value may be sent in, and where it was found
    (the first place when none has it, for the error)."""
    for where, component in places:
        found = value(message, where.segment, where.field, component, sequence=where.sequence)
        if found:
            return found, where
    return "", places[0][0]


def _order(message: hl7.Message, group: dict[str, int], omi: bool) -> Order:
    orc, obr = group.get("ORC", 0), group.get("OBR", 0)
    if not obr:
        raise HL7Error("AE", "OBR", 1, SEGMENT_SEQUENCE_ERROR, f"Order {orc} has no OBR segment.", orc)
    control = value(message, "ORC", 1, sequence=orc).upper()
    if not control:
        raise HL7Error("AE", "ORC", 1, REQUIRED_FIELD_MISSING, "ORC-1 (the order control) is empty.", orc)
    if control not in (NEW, CANCEL):
        raise HL7Error("AE", "ORC", 1, TABLE_VALUE_NOT_FOUND, f"Order control {control}: only NW and CA.", orc)
    ipc = group.get("IPC", 0) if omi else 0
    at_ipc = [(Where("IPC", 1, ipc), 1)] if ipc else []
    accession, accession_at = _first(
        message, *at_ipc, (Where("OBR", 18, obr), 1), (Where("ORC", 3, orc), 1), (Where("OBR", 3, obr), 1)
    )
    if not accession:
        raise HL7Error(
            "AE",
            accession_at.segment,
            accession_at.field,
            REQUIRED_FIELD_MISSING,
            "No accession number.",
            accession_at.sequence,
        )
    modality, modality_at = _first(message, *([(Where("IPC", 5, ipc), 1)] if ipc else []), (Where("OBR", 24, obr), 1))
    tq1 = group.get("TQ1", 0)
    start, start_at = _first(
        message,
        *([(Where("TQ1", 7, tq1), 1)] if tq1 else []),
        (Where("ORC", 7, orc), 4),
        (Where("OBR", 27, obr), 4),
        (Where("OBR", 36, obr), 1),
    )
    scheduled = hl7_datetime(start, start_at.segment, start_at.field, sequence=start_at.sequence) or timezone.now()
    procedure_id, _at = _first(message, *([(Where("IPC", 2, ipc), 1)] if ipc else []), (Where("OBR", 19, obr), 1))
    description, _at = _first(message, (Where("OBR", 4, obr), 2), (Where("OBR", 4, obr), 1))
    station = value(message, "IPC", 9, sequence=ipc) if ipc else ""
    if control == NEW and not modality:
        raise HL7Error(
            "AE", modality_at.segment, modality_at.field, REQUIRED_FIELD_MISSING, "No modality.", modality_at.sequence
        )
    return Order(
        control, accession, accession_at, modality, modality_at, scheduled, start_at, procedure_id, station, description
    )


def _apply(message: hl7.Message, endpoint: HisEndpoint, patient: PatientFields, orders: list[Order]) -> None:
    """Every order of the message onto the worklist (or off it), or none of them."""
    actor = _actor(message, endpoint)
    with transaction.atomic():
        for order in orders:
            if order.control == CANCEL:
                _cancel(endpoint, order, actor)
            else:
                _schedule(endpoint, patient, order, actor)


def _schedule(endpoint: HisEndpoint, patient: PatientFields, order: Order, actor: audit.Actor) -> None:
    try:
        worklist.schedule_step(
            by=actor,
            institution=endpoint.institution,
            patient_id=patient.patient_id,
            issuer=patient.issuer,
            patient_name=patient.name,
            birth_date=patient.birth_date,
            sex=patient.sex,
            accession_number=order.accession,
            modality=order.modality,
            scheduled_at=order.scheduled_at,
            station_ae=order.station_ae,
            procedure_description=order.description,
            requested_procedure_id=order.procedure_id,
            source=ScheduledStep.Source.HL7,
        )
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        where = _field_of(field, order)
        raise HL7Error("AE", where.segment, where.field, DATA_TYPE_ERROR, " ".join(messages), where.sequence) from None


def _field_of(field: str, order: Order) -> Where:
    """Where in the message the value schedule_step refused came from."""
    return {
        "accession_number": order.accession_at,
        "modality": order.modality_at,
        "scheduled_at": order.scheduled_at_where,
        "station_ae": Where("IPC", 9, order.accession_at.sequence),
        "patient_id": Where("PID", 3),
        "patient_name": Where("PID", 5),
        "sex": Where("PID", 8),
    }.get(field, Where("MSH", 9))


def _cancel(endpoint: HisEndpoint, order: Order, actor: audit.Actor) -> None:
    step = ScheduledStep.objects.filter(institution=endpoint.institution, accession_number=order.accession).first()
    where = order.accession_at
    if step is None:
        raise HL7Error(
            "AE", where.segment, where.field, UNKNOWN_KEY, f"No order {order.accession} to cancel.", where.sequence
        )
    if step.status == ScheduledStep.Status.DISCONTINUED:
        return  # cancelled already: the HIS resent the cancellation
    try:
        worklist.discontinue_step(by=actor, step=step, reason="cancelled by the HIS (ORC-1 CA)")
    except ValidationError as exc:
        text = " ".join(m for ms in exc.message_dict.values() for m in ms)
        raise HL7Error("AE", "ORC", 1, TABLE_VALUE_NOT_FOUND, text, where.sequence) from None


def _actor(message: hl7.Message | None, endpoint: HisEndpoint | None) -> audit.Actor:
    """The HIS as the audit trail names it: its registration, or what it said it was."""
    name = f"{value(message, 'MSH', 3)}@{value(message, 'MSH', 4)}" if message is not None else "unknown"
    if endpoint is None:
        return audit.Actor("his", "", name[:200], None)
    return audit.Actor("his", str(endpoint.pk), name[:200], endpoint.institution_id)


def _audit_refusal(message: Any, endpoint: HisEndpoint | None, error: HL7Error, peer: str) -> None:
    audit.record(
        actor=_actor(message, endpoint),
        action="hl7.refuse",
        object_type="hl7",
        object_id=value(message, "MSH", 10) if message is not None else "",
        source=peer,
        outcome=AuditEvent.Outcome.FAILURE,
        detail={
            "ack": error.ack,
            "where": f"{error.segment}-{error.field}",
            "code": error.code,
            "error": error.text[:200],
        },
    )
