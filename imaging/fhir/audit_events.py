"""The audit trail as FHIR R4 AuditEvent, for those who may read it (alliance.access:
the alliance admin, their alliance's events). Coded as the IHE ATNA export codes them
(alliance.atna, DICOM PS3.15 A.5). It lives with the image index because a search by the
patient's identifier needs the patients; alliance itself may not import imaging.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404
from rest_framework.request import Request

from alliance import atna, audit
from alliance.access import Principal, audit_events_visible_to
from alliance.fhir.registry import Provider
from alliance.fhir.search import Param, Search, date_q
from alliance.models import AuditEvent
from imaging.fhir import common
from imaging.models import Patient

ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_TYPE_IP = "2"


class AuditEventProvider(Provider):
    resource_type = "AuditEvent"
    params = {
        "date": Param("date", "When the event was recorded (eq, ge, le, gt, lt, ne)."),
        "patient": Param("reference", "The patient concerned, as Patient/<id>."),
        "patient.identifier": Param("token", "The patient's identifier, system|value."),
        "action": Param("token", "C, R, U, D or E (what the ATNA export calls the event)."),
    }
    profile = "The alliance's audit trail, for the alliance admin; coded as its IHE ATNA export (DICOM PS3.15 A.5)."

    def search(self, principal: Principal, search: Search) -> QuerySet[AuditEvent]:
        rows = audit_events_visible_to(principal)
        for ranges in search.dates.get("date", []):
            rows = rows.filter(date_q("time", ranges, is_date=False))
        patients = common.patients_q(search, reference_params=("patient",))
        if patients is not None:
            keys = [str(pk) for pk in Patient.objects.filter(patients).values_list("pk", flat=True)[:1000]]
            rows = rows.filter(_patient_column_q(keys))
        for tokens in search.tokens.get("action", []):
            rows = rows.filter(_action_q({t.value for t in tokens}))
        return rows.order_by("-time", "-pk")

    def read(self, principal: Principal, local_id: str) -> AuditEvent:
        is_key = local_id.isdigit() and len(local_id) <= 18
        event = audit_events_visible_to(principal).filter(pk=int(local_id)).first() if is_key else None
        if event is None:
            raise Http404("No such audit event.")
        return event

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        audit.record(
            actor=audit.actor_of(request),
            action="audit.view",
            object_type="audit",
            source=audit.source_of(request),
            detail={"via": "fhir", "events": [e.pk for e in rows]},
        )
        return [audit_event_resource(e) for e in rows]


def _patient_column_q(keys: list[str]) -> Q:
    """Events about these patients: the column holds one patient key or several, comma-separated."""
    q = Q(pk__in=[])
    for key in keys:
        q |= Q(patient=key) | Q(patient__startswith=f"{key},") | Q(patient__endswith=f",{key}")
        q |= Q(patient__contains=f",{key},")
    return q


def _action_q(codes: set[str]) -> Q:
    """Our actions whose ATNA EventActionCode is one of these: exact names, then prefixes."""
    exact = [name for name, (_e, code, _t) in atna.EXACT.items() if code in codes]
    q = Q(action__in=exact)
    for prefix, (_e, code, _t) in atna.BY_PREFIX.items():
        if code in codes:
            q |= Q(action__startswith=f"{prefix}.") & ~Q(action__in=list(atna.EXACT))
    if "E" in codes:  # everything the tables do not name is application activity ("E")
        known = Q(action__in=list(atna.EXACT))
        for prefix in atna.BY_PREFIX:
            known |= Q(action__startswith=f"{prefix}.")
        q |= ~known
    return q


def _coding(code: atna.Code) -> dict[str, str]:
    return {"system": common.DCM, "code": code.code, "display": code.text}


def audit_event_resource(event: AuditEvent) -> dict[str, Any]:
    event_id, action_code, event_type = atna.event_codes(event.action)
    agent: dict[str, Any] = {
        "who": {
            "identifier": {"value": f"{event.actor_type}:{event.actor_id}" if event.actor_id else event.actor_type},
            "display": event.actor_name or event.actor_type,
        },
        "requestor": True,
    }
    if event.source:
        agent["network"] = {"address": event.source, "type": NETWORK_TYPE_IP}
    subtypes: list[dict[str, str]] = [{"system": f"{settings.FHIR_SYSTEM_BASE}/audit-action", "code": event.action}]
    if event_type is not None:
        subtypes.insert(0, _coding(event_type))
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.pk),
        "type": _coding(event_id),
        "subtype": subtypes,
        "action": action_code,
        "recorded": common.instant(event.time),
        "outcome": atna.OUTCOMES.get(event.outcome, "8"),
        "agent": [agent],
        "source": {
            "observer": {"display": settings.ATNA_SOURCE_ID or "alliance"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if settings.ATNA_ENTERPRISE_SITE_ID:
        resource["source"]["site"] = settings.ATNA_ENTERPRISE_SITE_ID
    entities = _entities(event)
    if entities:
        resource["entity"] = entities
    return resource


def _entities(event: AuditEvent) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    for key in [p for p in event.patient.split(",") if p]:
        what: dict[str, Any] = {"reference": f"Patient/{key}"} if key.isdigit() else {"identifier": {"value": key}}
        entities.append(
            {"what": what, "type": {"system": ENTITY_TYPE, "code": "1"}, "role": {"system": OBJECT_ROLE, "code": "1"}}
        )
    if event.object_type:
        entity: dict[str, Any] = {
            "what": {"identifier": {"value": event.object_id or "-"}, "display": event.object_type},
            "type": {"system": ENTITY_TYPE, "code": "2"},
            "role": {"system": OBJECT_ROLE, "code": "3"},
        }
        if event.basis:
            entity["detail"] = [{"type": "basis", "valueString": event.basis}]
        entities.append(entity)
    return entities
