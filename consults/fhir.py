"""A consult as FHIR R4: the request (ServiceRequest), its workflow (Task), the signed report
(DiagnosticReport) and the report's PDF (Binary). Ids are "consult-<pk>". What a principal
sees is consults.access.consults_visible_to, as on the case page; every resource shown is
audited as a read of its consult. Registered with alliance.fhir in consults.apps.
"""

from __future__ import annotations

import base64
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404
from django.urls import reverse
from rest_framework.request import Request

from alliance import audit
from alliance.access import Principal
from alliance.fhir.registry import Provider
from alliance.fhir.search import Param, Search, date_q
from consults import access, pdf, selectors, services
from consults.access import CONSULTS_MODULE
from consults.models import Consult, ConsultTransition, ReportVersion, Status
from imaging.fhir import common
from imaging.models import Patient, Study

PREFIX = "consult-"
REQUEST_STATUS = {
    Status.DRAFT: "draft",
    Status.REQUESTED: "active",
    Status.ACCEPTED: "active",
    Status.IN_PROGRESS: "active",
    Status.PRELIMINARY: "active",
    Status.ON_HOLD: "on-hold",
    Status.COMPLETED: "completed",
    Status.REJECTED: "revoked",
    Status.CANCELLED: "revoked",
    Status.FAILED: "revoked",
}
# A consult's status is a Task.status, except the preliminary report of two-level sign-off.
TASK_STATUS: dict[str, str] = {Status.PRELIMINARY: "in-progress"}
CONSULTATION = {"system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation"}
RADIOLOGY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
IMAGING_REPORT = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}


def _identifier(consult: Consult) -> dict[str, str]:
    return {"system": f"{settings.FHIR_SYSTEM_BASE}/consult", "value": str(consult.pk)}


def _name(doctor: Any) -> dict[str, str] | None:
    return {"display": doctor.display_name} if doctor is not None else None


def _subject(consult: Consult) -> dict[str, Any]:
    studies = list(consult.studies.all())
    return common.patient_reference(studies[0].patient) if studies else {"display": "unknown"}


class ConsultProvider(Provider):
    """What the three consult resources share: the visible consults, the patient filter, the audit."""

    prefix = PREFIX
    module = CONSULTS_MODULE
    date_param = ""
    date_field = ""

    def visible(self, principal: Principal) -> QuerySet[Consult]:
        return access.consults_visible_to(principal)

    def search(self, principal: Principal, search: Search) -> QuerySet[Consult]:
        rows = self.visible(principal)
        patients = common.patients_q(search)
        if patients is not None:
            named = Patient.objects.filter(patients).values("pk")
            rows = rows.filter(pk__in=Consult.objects.filter(studies__patient__in=named).values("pk"))
        for ranges in search.dates.get(self.date_param, []):
            rows = rows.filter(date_q(self.date_field, ranges, is_date=False))
        return rows.order_by(f"-{self.date_field}", "-pk")

    def read(self, principal: Principal, local_id: str) -> Consult:
        consult = access.get_consult_for(principal, local_id)
        if not self.visible(principal).filter(pk=consult.pk).exists():
            raise Http404(f"No such {self.resource_type}.")
        return consult

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        consults = _hydrate([c.pk for c in rows])
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action=f"consult.{'view' if read else 'list'}",
            object_type="consult",
            items=[(str(c.pk), c.audit_patient, c.basis) for c in consults],
            source=audit.source_of(request),
            detail={"via": "fhir", "resource": self.resource_type},
        )
        return [self.resource(request, c) for c in consults]

    def resource(self, request: Request, consult: Consult) -> dict[str, Any]:
        raise NotImplementedError


def _hydrate(pks: list[int]) -> list[Consult]:
    """The consults with what their resources show, in a fixed number of queries, in the given order."""
    signed = ReportVersion.objects.filter(signed_at__isnull=False).select_related("signed_by__user").order_by("number")
    rows = (
        Consult.objects.filter(pk__in=pks)
        .select_related("requester__user", "pool__institution", "specialist__user", "owner__user")
        .prefetch_related(
            Prefetch("studies", queryset=Study.objects.select_related("patient__issuer").order_by("pk")),
            Prefetch("transitions", queryset=ConsultTransition.objects.order_by("at", "pk")),
            Prefetch("report__versions", queryset=signed, to_attr="signed_versions"),
        )
    )
    found = {c.pk: c for c in rows}
    return [found[pk] for pk in pks if pk in found]


def _signed(consult: Consult) -> list[ReportVersion]:
    report = getattr(consult, "report", None)
    return list(getattr(report, "signed_versions", [])) if report is not None else []


class ServiceRequestProvider(ConsultProvider):
    resource_type = "ServiceRequest"
    params = {**common.PATIENT_PARAMS, "authored": Param("date", "When the request was written.")}
    date_param, date_field = "authored", "created_at"
    profile = "A consult is ServiceRequest/consult-<id> (a reading of its studies); a referral referral-<id>."

    def resource(self, request: Request, consult: Consult) -> dict[str, Any]:
        performer = consult.specialist or consult.pool
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": f"{PREFIX}{consult.pk}",
            "identifier": [_identifier(consult)],
            "status": REQUEST_STATUS[Status(consult.status)],
            "intent": "order",
            "category": [{"coding": [CONSULTATION]}],
            "priority": consult.priority,
            "code": {"text": " ".join(filter(None, ["Remote consultation", consult.modality]))},
            "subject": _subject(consult),
            "authoredOn": common.instant(consult.created_at),
            "requester": _name(consult.requester),
            "reasonCode": [{"text": consult.question}],
            "supportingInfo": [{"reference": f"ImagingStudy/{s.study_uid}"} for s in consult.studies.all()],
        }
        if performer is not None:
            resource["performer"] = [{"display": str(getattr(performer, "display_name", performer))}]
        if consult.history:
            resource["note"] = [{"text": consult.history}]
        if consult.second_opinion_of_id:
            resource["basedOn"] = [{"reference": f"ServiceRequest/{PREFIX}{consult.second_opinion_of_id}"}]
        return {k: v for k, v in resource.items() if v not in (None, [])}


class TaskProvider(ConsultProvider):
    resource_type = "Task"
    params = {**common.PATIENT_PARAMS, "authored-on": Param("date", "When the task was created.")}
    date_param, date_field = "authored-on", "created_at"
    profile = "The workflow of a consult (consult-<id>) or referral (referral-<id>): its status is Task.status."

    def resource(self, request: Request, consult: Consult) -> dict[str, Any]:
        transitions = list(consult.transitions.all())
        request_ref = {"reference": f"ServiceRequest/{PREFIX}{consult.pk}"}
        resource: dict[str, Any] = {
            "resourceType": "Task",
            "id": f"{PREFIX}{consult.pk}",
            "identifier": [_identifier(consult)],
            "basedOn": [request_ref],
            "status": TASK_STATUS.get(consult.status, consult.status),
            "businessStatus": {"text": consult.status},
            "intent": "order",
            "priority": consult.priority,
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
            "focus": request_ref,
            "for": _subject(consult),
            "authoredOn": common.instant(consult.created_at),
            "lastModified": common.instant(transitions[-1].at if transitions else consult.created_at),
            "requester": _name(consult.requester),
            "owner": _name(consult.owner),
        }
        if consult.reason:
            resource["statusReason"] = {"text": consult.reason}
        if consult.claimed_at:
            period = {"start": common.instant(consult.claimed_at), "end": common.instant(consult.completed_at)}
            resource["executionPeriod"] = {k: v for k, v in period.items() if v}
        if consult.due_at:
            resource["restriction"] = {"period": {"end": common.instant(consult.due_at)}}
        if _signed(consult):
            resource["output"] = [
                {
                    "type": {"text": "report"},
                    "valueReference": {"reference": f"DiagnosticReport/{PREFIX}{consult.pk}"},
                }
            ]
        return {k: v for k, v in resource.items() if v is not None}


def _latest_signed() -> Subquery:
    latest = ReportVersion.objects.filter(report__consult=OuterRef("pk"), signed_at__isnull=False)
    return Subquery(latest.order_by("-signed_at").values("signed_at")[:1])


class DiagnosticReportProvider(ConsultProvider):
    """A consult's signed report: the latest signed version (preliminary under two-level sign-off)."""

    resource_type = "DiagnosticReport"
    params = {
        **common.PATIENT_PARAMS,
        "date": Param("date", "When the report was signed."),
        "issued": Param("date", "When the report was signed."),
    }
    date_param, date_field = "date", "issued_at"
    profile = "The signed report of consult <id> (DiagnosticReport/consult-<id>), its PDF as Binary/consult-<id>."

    def visible(self, principal: Principal) -> QuerySet[Consult]:
        rows = access.consults_visible_to(principal).annotate(issued_at=_latest_signed())
        return rows.filter(issued_at__isnull=False)

    def search(self, principal: Principal, search: Search) -> QuerySet[Consult]:
        rows = super().search(principal, search)
        for ranges in search.dates.get("issued", []):
            rows = rows.filter(date_q("issued_at", ranges, is_date=False))
        return rows

    def resource(self, request: Request, consult: Consult) -> dict[str, Any]:
        versions = _signed(consult)
        latest = versions[-1]
        signer = _name(latest.signed_by)
        resource: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": f"{PREFIX}{consult.pk}",
            "identifier": [_identifier(consult)],
            "basedOn": [{"reference": f"ServiceRequest/{PREFIX}{consult.pk}"}],
            "status": _report_status(consult, versions),
            "category": [{"coding": [RADIOLOGY]}],
            "code": {"coding": [IMAGING_REPORT], "text": "Remote consultation report"},
            "subject": _subject(consult),
            "effectiveDateTime": common.instant(latest.signed_at),
            "issued": common.instant(latest.signed_at),
            "performer": [signer] if signer else None,
            "resultsInterpreter": [signer] if signer else None,
            "imagingStudy": [{"reference": f"ImagingStudy/{s.study_uid}"} for s in consult.studies.all()],
            "conclusion": latest.impression or None,
            "presentedForm": [
                {
                    "contentType": "application/pdf",
                    "language": settings.LANGUAGE_CODE,
                    "url": request.build_absolute_uri(reverse("fhir:Binary-read", args=[f"{PREFIX}{consult.pk}"])),
                    "title": "Report (PDF)",
                },
                {
                    "contentType": "text/plain; charset=utf-8",
                    "language": settings.LANGUAGE_CODE,
                    "data": base64.b64encode(report_text(latest).encode()).decode("ascii"),
                    "title": "Report (text)",
                },
            ],
        }
        return {k: v for k, v in resource.items() if v not in (None, [])}


def _report_status(consult: Consult, versions: list[ReportVersion]) -> str:
    if consult.status == Status.PRELIMINARY or versions[-1].preliminary and consult.status != Status.COMPLETED:
        return "preliminary"
    return "appended" if any(v.addendum for v in versions) else "final"


def report_text(version: ReportVersion) -> str:
    """The signed text as plain text: what the PDF says, without its layout (also the ORU^R01's OBX)."""
    parts = [
        ("ADDENDUM", version.addendum),
        ("FINDINGS", version.findings),
        ("IMPRESSION", version.impression),
        ("RECOMMENDATION", version.recommendation),
    ]
    return "\n\n".join(f"{title}:\n{text.strip()}" for title, text in parts if text.strip())


class BinaryProvider(ConsultProvider):
    """The signed report as printed (consults.pdf), the PDF a DiagnosticReport's presentedForm points to."""

    resource_type = "Binary"
    searchable = False
    profile = "Binary/consult-<id>: the signed report's PDF (application/pdf unless FHIR JSON is asked for)."

    def visible(self, principal: Principal) -> QuerySet[Consult]:
        return DiagnosticReportProvider().visible(principal)

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        found = []
        for consult in rows:
            services.audit_read(request, consult, "consult.report_pdf")
            printed = pdf.render_report(consult, selectors.case_detail(consult), request=request._request)
            data = base64.b64encode(printed).decode("ascii")
            found.append(
                {
                    "resourceType": "Binary",
                    "id": f"{PREFIX}{consult.pk}",
                    "contentType": "application/pdf",
                    "data": data,
                }
            )
        return found
