"""A referral as FHIR R4: the request (ServiceRequest) and its workflow (Task), ids
"referral-<pk>". What a principal sees is referrals.access.referrals_visible_to, as on the
case page; every resource shown is audited as a read of its referral. Registered with
alliance.fhir in referrals.apps.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from rest_framework.request import Request

from alliance import audit
from alliance.access import Principal
from alliance.fhir.registry import Provider
from alliance.fhir.search import Param, Search, date_q
from imaging.fhir import common
from imaging.models import Study
from referrals import access
from referrals.access import REFERRALS_MODULE
from referrals.models import Referral, ReferralTransition, Status, Urgency

PREFIX = "referral-"
REQUEST_STATUS = {
    Status.DRAFT: "draft",
    Status.REQUESTED: "active",
    Status.ACCEPTED: "active",
    Status.IN_PROGRESS: "active",
    Status.ON_HOLD: "on-hold",
    Status.COMPLETED: "completed",
    Status.REJECTED: "revoked",
    Status.CANCELLED: "revoked",
    Status.FAILED: "revoked",
}
PRIORITY: dict[str, str] = {Urgency.ROUTINE: "routine", Urgency.URGENT: "urgent", Urgency.EMERGENCY: "stat"}
REFERRAL = {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}


def _identifier(referral: Referral) -> dict[str, str]:
    return {"system": f"{settings.FHIR_SYSTEM_BASE}/referral", "value": str(referral.pk)}


class ReferralProvider(Provider):
    prefix = PREFIX
    module = REFERRALS_MODULE
    date_param = ""

    def search(self, principal: Principal, search: Search) -> QuerySet[Referral]:
        rows = common.filter_by_patient(access.referrals_visible_to(principal), search, "patient")
        for ranges in search.dates.get(self.date_param, []):
            rows = rows.filter(date_q("created_at", ranges, is_date=False))
        return rows.order_by("-created_at", "-pk")

    def read(self, principal: Principal, local_id: str) -> Referral:
        return access.get_referral_for(principal, local_id)

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        referrals = _hydrate([r.pk for r in rows])
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action=f"referral.{'view' if read else 'list'}",
            object_type="referral",
            items=[(str(r.pk), str(r.patient_id), r.basis) for r in referrals],
            source=audit.source_of(request),
            detail={"via": "fhir", "resource": self.resource_type},
        )
        return [self.resource(r) for r in referrals]

    def resource(self, referral: Referral) -> dict[str, Any]:
        raise NotImplementedError


def _hydrate(pks: list[int]) -> list[Referral]:
    rows = (
        Referral.objects.filter(pk__in=pks)
        .select_related("referrer__user", "to_institution", "patient__issuer", "appointment_doctor__user")
        .prefetch_related(
            Prefetch("studies", queryset=Study.objects.order_by("pk")),
            Prefetch("transitions", queryset=ReferralTransition.objects.order_by("at", "pk")),
        )
    )
    found = {r.pk: r for r in rows}
    return [found[pk] for pk in pks if pk in found]


class ServiceRequestProvider(ReferralProvider):
    resource_type = "ServiceRequest"
    params = {**common.PATIENT_PARAMS, "authored": Param("date", "When the request was written.")}
    date_param = "authored"

    def resource(self, referral: Referral) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": f"{PREFIX}{referral.pk}",
            "identifier": [_identifier(referral)],
            "status": REQUEST_STATUS[Status(referral.status)],
            "intent": "order",
            "category": [{"coding": [REFERRAL]}],
            "priority": PRIORITY.get(referral.urgency, "routine"),
            "code": {"text": f"Referral ({referral.direction})"},
            "subject": common.patient_reference(referral.patient),
            "authoredOn": common.instant(referral.created_at),
            "requester": {"display": referral.referrer.display_name},
            "performer": [{"display": referral.to_institution.name}],
            "reasonCode": [{"text": referral.reason}],
            "supportingInfo": [{"reference": f"ImagingStudy/{s.study_uid}"} for s in referral.studies.all()],
            "occurrenceDateTime": common.instant(referral.appointment_at),
        }
        if referral.summary:
            resource["note"] = [{"text": referral.summary}]
        if referral.based_on_id:
            resource["basedOn"] = [{"reference": f"ServiceRequest/{PREFIX}{referral.based_on_id}"}]
        return {k: v for k, v in resource.items() if v not in (None, [])}


class TaskProvider(ReferralProvider):
    resource_type = "Task"
    params = {**common.PATIENT_PARAMS, "authored-on": Param("date", "When the task was created.")}
    date_param = "authored-on"

    def resource(self, referral: Referral) -> dict[str, Any]:
        transitions = list(referral.transitions.all())
        request_ref = {"reference": f"ServiceRequest/{PREFIX}{referral.pk}"}
        owner = referral.appointment_doctor
        resource: dict[str, Any] = {
            "resourceType": "Task",
            "id": f"{PREFIX}{referral.pk}",
            "identifier": [_identifier(referral)],
            "basedOn": [request_ref],
            "status": referral.status,
            "businessStatus": {"text": referral.status},
            "intent": "order",
            "priority": PRIORITY.get(referral.urgency, "routine"),
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
            "focus": request_ref,
            "for": common.patient_reference(referral.patient),
            "authoredOn": common.instant(referral.created_at),
            "lastModified": common.instant(transitions[-1].at if transitions else referral.created_at),
            "requester": {"display": referral.referrer.display_name},
            "owner": {"display": owner.display_name if owner is not None else referral.to_institution.name},
        }
        if referral.closed_reason:
            resource["statusReason"] = {"text": referral.closed_reason}
        if referral.arrived_at:
            period = {"start": common.instant(referral.arrived_at), "end": common.instant(referral.completed_at)}
            resource["executionPeriod"] = {k: v for k, v in period.items() if v}
        if referral.feedback:
            resource["output"] = [{"type": {"text": "discharge summary"}, "valueString": referral.feedback}]
        return resource
