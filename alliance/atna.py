"""The audit trail sent to an IHE ATNA audit record repository (issue 22 item 5).

Each AuditEvent becomes a DICOM PS3.15 Annex A.5 audit message (XML), framed as an RFC 5424
syslog message and sent over TCP with octet counting (RFC 6587 3.4.1; the framing RFC 5425
uses over TLS), or over TLS when ATNA_SYSLOG_URL is tls://host:port (ATNA_SYSLOG_CA names
the collector's CA; ATNA_SYSLOG_CERT and ATNA_SYSLOG_KEY the client certificate, for the
mutual authentication IHE ATNA asks for).

Nothing is lost while the collector is away: a database trigger (migration
alliance/0009_atna_outbox) adds each audit event's id to an outbox in the transaction that
writes the event, whichever path wrote it; `send_pending` (Celery beat, alliance.tasks)
sends the oldest in batches over one connection and removes them only once the batch has
been sent. A batch cut off by a failure is sent again whole, so a collector may see an event
twice after a failure in the middle of a batch, never not at all.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from django.conf import settings
from django.db import transaction

from alliance.models import AtnaOutbox, AuditEvent

log = logging.getLogger(__name__)

BATCH = 200
TIMEOUT_SECONDS = 10
# RFC 5424 6.2.1: facility 10 (security/authorization), severity 5 (notice), as IHE ATNA uses.
PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"


@dataclass(frozen=True)
class Code:
    """A coded value: csd-code, codeSystemName, originalText (PS3.15 A.5.1)."""

    code: str
    system: str
    text: str


def dcm(code: str, text: str) -> Code:
    return Code(code, "DCM", text)


# PS3.15 A.5.3 / PS3.16 CID 400 (Audit Event ID) and CID 401 (Audit Event Type Code).
APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
BEGIN_TRANSFERRING = dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = dcm("110105", "DICOM Study Deleted")
EXPORT = dcm("110106", "Export")
ORDER_RECORD = dcm("110109", "Order Record")
PATIENT_RECORD = dcm("110110", "Patient Record")
QUERY = dcm("110112", "Query")
SECURITY_ALERT = dcm("110113", "Security Alert")
USER_AUTHENTICATION = dcm("110114", "User Authentication")
AUDIT_LOG_USED = dcm("110101", "Audit Log Used")
LOGIN = dcm("110122", "Login")
LOGOUT = dcm("110123", "Logout")
EMERGENCY_OVERRIDE = dcm("110127", "Emergency Override Started")
SECURITY_ROLES_CHANGED = dcm("110136", "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = dcm("110137", "User security Attributes Changed")
NETWORK_CONFIGURATION = dcm("110128", "Network Configuration")

# Our actions, by exact name or by the prefix before the first dot: (event, action code, type).
EXACT: dict[str, tuple[Code, str, Code | None]] = {
    "login": (USER_AUTHENTICATION, "E", LOGIN),
    "logout": (USER_AUTHENTICATION, "E", LOGOUT),
    "auth.reconfirm": (USER_AUTHENTICATION, "E", LOGIN),
    "dicom.find": (QUERY, "E", None),
    "dicomweb.search": (QUERY, "E", None),
    "dicom.get": (BEGIN_TRANSFERRING, "E", None),
    "dicom.move": (BEGIN_TRANSFERRING, "E", None),
    "dicom.associate": (SECURITY_ALERT, "E", NETWORK_CONFIGURATION),
    "instance.store": (INSTANCES_TRANSFERRED, "C", None),
    "dicomweb.store": (INSTANCES_TRANSFERRED, "C", None),
    "study.delete": (STUDY_DELETED, "D", None),
    "study.purge": (STUDY_DELETED, "D", None),
    "film.download": (EXPORT, "R", None),
    "figures.export": (EXPORT, "R", None),
    "audit.view": (AUDIT_LOG_USED, "R", None),
    "audit.export": (AUDIT_LOG_USED, "R", None),
}
BY_PREFIX: dict[str, tuple[Code, str, Code | None]] = {
    "study": (INSTANCES_ACCESSED, "R", None),
    "series": (INSTANCES_ACCESSED, "R", None),
    "instance": (INSTANCES_ACCESSED, "R", None),
    "dicomweb": (INSTANCES_ACCESSED, "R", None),
    "viewer": (INSTANCES_ACCESSED, "R", None),
    "film": (INSTANCES_ACCESSED, "R", None),
    "read": (INSTANCES_ACCESSED, "R", None),  # read.denied, read.denied.count
    "patient": (PATIENT_RECORD, "U", None),
    "consult": (ORDER_RECORD, "U", None),
    "referral": (ORDER_RECORD, "U", None),
    "break_glass": (SECURITY_ALERT, "E", EMERGENCY_OVERRIDE),
    "grant": (SECURITY_ALERT, "E", SECURITY_ROLES_CHANGED),
    "doctor": (SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "token": (SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "pool": (SECURITY_ALERT, "E", SECURITY_ROLES_CHANGED),
    "device": (SECURITY_ALERT, "E", NETWORK_CONFIGURATION),
}
OUTCOMES: dict[str, str] = {
    AuditEvent.Outcome.SUCCESS: "0",
    AuditEvent.Outcome.DENIED: "4",
    AuditEvent.Outcome.FAILURE: "8",
}
# ParticipantObjectIDTypeCode of the objects DICOM names (PS3.16 CID 404); ours are local codes.
DICOM_OBJECTS = {
    "study": dcm("110180", "Study Instance UID"),
    "series": Code("series", "99ALLIANCE", "Series Instance UID"),
    "instance": Code("instance", "99ALLIANCE", "SOP Instance UID"),
}


def event_codes(action: str) -> tuple[Code, str, Code | None]:
    """The A.5 event ID, EventActionCode and event type of one of our actions."""
    return EXACT.get(action) or BY_PREFIX.get(action.split(".")[0]) or (APPLICATION_ACTIVITY, "E", None)


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.text})


def message(event: AuditEvent) -> bytes:
    """The PS3.15 A.5.1 AuditMessage of one event, UTF-8 XML."""
    event_id, action_code, event_type = event_codes(event.action)
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action_code,
            "EventDateTime": event.time.isoformat(),
            "EventOutcomeIndicator": OUTCOMES.get(event.outcome, "8"),
        },
    )
    _coded(identification, "EventID", event_id)
    if event_type is not None:
        _coded(identification, "EventTypeCode", event_type)
    _participant(root, event)
    source = ET.SubElement(
        root,
        "AuditSourceIdentification",
        {"AuditEnterpriseSiteID": settings.ATNA_ENTERPRISE_SITE_ID, "AuditSourceID": settings.ATNA_SOURCE_ID},
    )
    ET.SubElement(
        source, "AuditSourceTypeCode", {"csd-code": "4", "codeSystemName": "DCM", "originalText": "Application Server"}
    )
    _objects(root, event)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _participant(root: ET.Element, event: AuditEvent) -> None:
    attributes = {
        "UserID": f"{event.actor_type}:{event.actor_id}" if event.actor_id else event.actor_type,
        "UserName": event.actor_name or event.actor_type,
        "UserIsRequestor": "true",
    }
    if event.source:
        attributes |= {"NetworkAccessPointID": event.source, "NetworkAccessPointTypeCode": "2"}
    participant = ET.SubElement(root, "ActiveParticipant", attributes)
    if event.actor_type == "device":  # a modality or workstation sending or asking over DICOM
        _coded(participant, "RoleIDCode", dcm("110153", "Source Role ID"))


def _objects(root: ET.Element, event: AuditEvent) -> None:
    for patient in [p for p in event.patient.split(",") if p]:
        obj = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {"ParticipantObjectID": patient, "ParticipantObjectTypeCode": "1", "ParticipantObjectTypeCodeRole": "1"},
        )
        ET.SubElement(
            obj,
            "ParticipantObjectIDTypeCode",
            {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"},
        )
    if event.object_type and event.object_id:
        id_type = DICOM_OBJECTS.get(event.object_type) or Code(event.object_type, "99ALLIANCE", event.object_type)
        obj = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": event.object_id,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
            },
        )
        _coded(obj, "ParticipantObjectIDTypeCode", id_type)
        for key, value in _details(event):
            ET.SubElement(obj, "ParticipantObjectDetail", {"type": key, "value": value})


def _details(event: AuditEvent) -> Iterable[tuple[str, str]]:
    """Our action and the event's detail (a C-FIND's keys, a route), base64 as A.5 types them."""
    yield "alliance-action", base64.b64encode(event.action.encode()).decode()
    if event.detail:
        text = json.dumps(event.detail, ensure_ascii=False, sort_keys=True, default=str)
        yield "alliance-detail", base64.b64encode(text.encode()).decode()


# --- syslog ------------------------------------------------------------------------------


def syslog_frame(event: AuditEvent, payload: bytes) -> bytes:
    """RFC 5424 6: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG, the MSG UTF-8 with
    its BOM; octet-counted (RFC 6587 3.4.1, RFC 5425 4.3): "LEN SP SYSLOG-MSG"."""
    host = (socket.gethostname() or "-")[:255]
    header = f"<{PRI}>1 {event.time.isoformat()} {host} {settings.ATNA_APP_NAME} - {MSGID} - "
    body = header.encode("ascii", "replace") + b"\xef\xbb\xbf" + payload
    return str(len(body)).encode() + b" " + body


def _connect() -> socket.socket:
    target = urlsplit(settings.ATNA_SYSLOG_URL)
    raw = socket.create_connection((target.hostname, target.port or 0), timeout=TIMEOUT_SECONDS)
    if target.scheme != "tls":
        return raw
    context = ssl.create_default_context(cafile=settings.ATNA_SYSLOG_CA or None)
    if settings.ATNA_SYSLOG_CERT:
        context.load_cert_chain(settings.ATNA_SYSLOG_CERT, settings.ATNA_SYSLOG_KEY or None)
    return context.wrap_socket(raw, server_hostname=target.hostname)


def send_pending(batch: int = BATCH) -> int:
    """Send what the outbox holds, oldest first, a batch at a time; each batch is removed from
    the outbox only once all of it was sent. Returns how many were sent; stops at the first
    failure (the collector away): the next run sends them again."""
    if not settings.ATNA_SYSLOG_URL:
        empty_outbox()
        return 0
    sent = 0
    while True:
        try:
            done = _send_batch(batch)
        except (OSError, ssl.SSLError) as exc:
            log.warning("ATNA: the collector at %s is unavailable (%s); will retry", settings.ATNA_SYSLOG_URL, exc)
            return sent
        sent += done
        if done < batch:
            return sent


def empty_outbox() -> int:
    """No collector configured: nothing to keep the ids for (the trail itself keeps the events)."""
    deleted, _ = AtnaOutbox.objects.all().delete()
    return deleted


@transaction.atomic
def _send_batch(batch: int) -> int:
    # one sender at a time takes a batch; another skips it instead of sending it twice
    pending = AtnaOutbox.objects.select_for_update(skip_locked=True).order_by("event_id")
    ids = list(pending.values_list("event_id", flat=True)[:batch])
    if not ids:
        return 0
    events = AuditEvent.objects.filter(pk__in=ids).order_by("pk")
    with _connect() as conn:
        for event in events:
            conn.sendall(syslog_frame(event, message(event)))
        _finish(conn)
    AtnaOutbox.objects.filter(event_id__in=ids).delete()
    return len(ids)


def _finish(conn: socket.socket) -> None:
    """Half-close and read until the collector closes too: only then has it read everything.
    (Closing at once with unread bytes in our buffer, such as TLS 1.3 session tickets, makes
    the kernel reset the connection, and the collector may lose the last messages.)"""
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(4096):
        pass
