"""Worklist orders as FHIR R4 ServiceRequest (issue 18 item 2): `POST /fhir/ServiceRequest`
puts an order on the performing institution's modality worklist (imaging.worklist.schedule_step),
and each scheduled step reads back as ServiceRequest/worklist-<id>.

What is read of a ServiceRequest sent to us, once fhir.resources' R4B model (which R4's
ServiceRequest matches) has validated it:
- status `active` and an order intent; `doNotPerform` is refused;
- subject: the patient by identifier, its system naming the issuer
  ({FHIR_SYSTEM_BASE}/patient-id/<AE title>), in subject.identifier or in a contained Patient
  the subject references ("#p"), whose name, birthDate and gender the modality will show;
- code: the modality as a coding of the DICOM code system (DCM, e.g. CT), or a modality as
  text; code.text (else the coding's display) is the procedure;
- occurrenceDateTime: the scheduled start, a date and time with its zone;
- performer: the institution that performs it (Organization) and, if it matters, its station
  (Device), each by identifier {FHIR_SYSTEM_BASE}/ae-title|<AE title>;
- identifier of type ACSN (v2-0203): the accession number (one is made when none is sent; the
  same accession number again finds the step it made); requisition: the requested procedure ID.
Who may order is the REST worklist API's rule (imaging.access.may_schedule_at). A resource that
is not valid FHIR is refused with 400, one we cannot act on with 422, each issue naming its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pydantic
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from fhir.resources.R4B.servicerequest import ServiceRequest
from rest_framework.request import Request

from alliance import audit
from alliance.access import IMAGE_STORE, AccessDenied, Principal, institutions_visible_to
from alliance.fhir.registry import Issue, Provider, Refused
from alliance.fhir.search import Param, Search, date_q
from alliance.models import Institution
from imaging import access, worklist
from imaging.fhir import common
from imaging.forms import MODALITIES
from imaging.models import Patient, ScheduledStep

PREFIX = "worklist-"
ORDER_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
Status = ScheduledStep.Status
REQUEST_STATUS = {
    Status.SCHEDULED: "active",
    Status.IN_PROGRESS: "active",
    Status.COMPLETED: "completed",
    Status.DISCONTINUED: "revoked",
}
IMAGING = {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}
ACSN = {"system": common.V2_0203, "code": "ACSN"}
GENDERS = {"male": "M", "female": "F", "other": "O"}
# Where in the ServiceRequest each value of imaging.worklist.schedule_step comes from.
PLACES = {
    "accession_number": "ServiceRequest.identifier",
    "requested_procedure_id": "ServiceRequest.requisition",
    "modality": "ServiceRequest.code",
    "station_ae": "ServiceRequest.performer",
    "scheduled_at": "ServiceRequest.occurrenceDateTime",
    "patient_id": "ServiceRequest.subject.identifier",
    "patient_name": "ServiceRequest.subject",
    "sex": "ServiceRequest.subject",
}


def ae_title_system() -> str:
    return f"{settings.FHIR_SYSTEM_BASE}/ae-title"


def requested_procedure_system(ae_title: str) -> str:
    return f"{settings.FHIR_SYSTEM_BASE}/requested-procedure/{ae_title}"


def _unprocessable(diagnostics: str, expression: str, code: str = "processing") -> Refused:
    return Refused(422, [Issue(code, diagnostics, expression)])


# --- reading an order --------------------------------------------------------------------


def validated(body: Any) -> ServiceRequest:
    """The body as an R4 ServiceRequest, or Refused (400) naming every place that is wrong."""
    if not isinstance(body, dict) or body.get("resourceType") != "ServiceRequest":
        raise Refused(400, [Issue("invalid", "Send one ServiceRequest resource, as JSON.", "ServiceRequest")])
    try:
        return ServiceRequest.model_validate(body)
    except pydantic.ValidationError as exc:
        raise Refused(400, [_issue_of(error) for error in exc.errors()[:20]]) from None


def _issue_of(error: Any) -> Issue:
    place = "ServiceRequest" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    code = {"missing": "required", "extra_forbidden": "structure"}.get(error["type"].rsplit(".", 1)[-1], "value")
    return Issue(code, f"{place}: {error['msg']}", place)


@dataclass(frozen=True)
class Order:
    """What schedule_step takes, read from a ServiceRequest."""

    institution: Institution
    station_ae: str
    patient_id: str
    issuer: Institution
    patient_name: str
    birth_date: date | None
    sex: str
    modality: str
    procedure_description: str
    scheduled_at: datetime
    accession_number: str
    requested_procedure_id: str


def order_of(principal: Principal, request: ServiceRequest) -> Order:
    """The order the request makes; AccessDenied unless the principal may schedule at its performer."""
    _check_kind(request)
    institution, station = _performer(principal, request)
    if not access.may_schedule_at(principal, institution):
        raise AccessDenied(_("Clinicians of the institution keep its worklist."))
    modality, description = _code(request)
    patient_id, issuer, name, born, sex = _subject(principal, request, institution)
    return Order(
        institution=institution,
        station_ae=station,
        patient_id=patient_id,
        issuer=issuer,
        patient_name=name,
        birth_date=born,
        sex=sex,
        modality=modality,
        procedure_description=description,
        scheduled_at=_start(request),
        accession_number=_accession(request, institution),
        requested_procedure_id=_requisition(request),
    )


def _check_kind(request: ServiceRequest) -> None:
    if request.status != "active":
        raise _unprocessable("Only an active order goes on a worklist (status active).", "ServiceRequest.status")
    if request.intent not in ORDER_INTENTS:
        raise _unprocessable("A worklist takes orders (intent order).", "ServiceRequest.intent")
    if request.doNotPerform:
        raise _unprocessable("An order not to perform has no place on a worklist.", "ServiceRequest.doNotPerform")


def _kind_of(reference: Any) -> str:
    if reference.type:
        return str(reference.type)
    return str(reference.reference or "").partition("/")[0] if "/" in str(reference.reference or "") else ""


def _performer(principal: Principal, request: ServiceRequest) -> tuple[Institution, str]:
    """The institution that performs the exam and the station ("" for any), by AE title."""
    alliance = institutions_visible_to(principal)
    institutions: list[Institution] = []
    stations: list[tuple[str, str]] = []
    for index, reference in enumerate(request.performer or []):
        place = f"ServiceRequest.performer[{index}]"
        identifier = reference.identifier
        if identifier is None or identifier.system != ae_title_system() or not identifier.value:
            raise _unprocessable(f"Name the performer by identifier {ae_title_system()}|<AE title>.", place)
        value, kind = identifier.value.strip().upper(), _kind_of(reference)
        found = alliance.filter(ae_title=value).first() if kind != "Device" else None
        if found is not None:
            institutions.append(found)
        elif kind == "Organization":
            raise _unprocessable(f"No institution of your alliance has the AE title {value}.", place, "not-found")
        else:
            stations.append((value, place))
    if len(institutions) != 1:
        raise _unprocessable(
            "Name the one institution that performs the exam (performer, an Organization).",
            "ServiceRequest.performer",
            "required" if not institutions else "processing",
        )
    institution = institutions[0]
    if len(stations) > 1:
        raise _unprocessable("Name one station at most.", stations[1][1])
    for value, place in stations:
        if not institution.devices.filter(ae_title=value, active=True).exists():
            raise _unprocessable(f"{value} is not a station of {institution.name}.", place, "not-found")
    return institution, stations[0][0] if stations else ""


def _code(request: ServiceRequest) -> tuple[str, str]:
    """The modality and the procedure."""
    code = request.code
    text = (code.text or "").strip() if code is not None else ""
    dicom = [c for c in (code.coding or []) if c.system == common.DCM and c.code] if code is not None else []
    if dicom:
        return str(dicom[0].code).strip().upper(), text or (dicom[0].display or "").strip()
    if text.upper() in MODALITIES:
        return text.upper(), ""
    raise _unprocessable(
        f"Give the modality as a coding of {common.DCM} (e.g. CT), or as text (e.g. CT).",
        "ServiceRequest.code",
        "required",
    )


def _start(request: ServiceRequest) -> datetime:
    start = request.occurrenceDateTime
    if not isinstance(start, datetime) or timezone.is_naive(start):
        raise _unprocessable(
            "Give the scheduled start as occurrenceDateTime, a date and time with its zone.",
            "ServiceRequest.occurrenceDateTime",
            "required" if start is None else "value",
        )
    return start


def _accession(request: ServiceRequest, institution: Institution) -> str:
    for index, identifier in enumerate(request.identifier or []):
        codings = (identifier.type.coding or []) if identifier.type is not None else []
        if not any(c.system == ACSN["system"] and c.code == ACSN["code"] for c in codings):
            continue
        named = common.issuer_of(identifier.system or "", "accession")
        if named is not None and named != institution.ae_title:
            raise _unprocessable(
                f"The accession number's system names {named}, not the performer {institution.ae_title}.",
                f"ServiceRequest.identifier[{index}].system",
            )
        return (identifier.value or "").strip() or worklist.new_accession_number()
    return worklist.new_accession_number()


def _requisition(request: ServiceRequest) -> str:
    value = (request.requisition.value or "").strip() if request.requisition is not None else ""
    if len(value) > 16:
        raise _unprocessable(
            "A requested procedure ID (requisition) has at most 16 characters.", PLACES["requested_procedure_id"]
        )
    return value


def _contained_patient(request: ServiceRequest, reference: str) -> Any:
    for resource in request.contained or []:
        if resource.get_resource_type() == "Patient" and f"#{resource.id}" == reference:
            return resource
    raise _unprocessable(f"No contained Patient has the id {reference[1:]}.", "ServiceRequest.subject.reference")


def _subject(
    principal: Principal, request: ServiceRequest, institution: Institution
) -> tuple[str, Institution, str, date | None, str]:
    """The patient (ID and issuer) and the demographics the modality will show."""
    subject, place = request.subject, "ServiceRequest.subject"
    reference = str(subject.reference or "")
    if reference and not reference.startswith("#"):
        raise _unprocessable("Name the patient by identifier (or a contained Patient), not by reference.", place)
    contained = _contained_patient(request, reference) if reference else None
    identifiers = [subject.identifier] if subject.identifier else list(contained.identifier or []) if contained else []
    ours = [i for i in identifiers if common.issuer_of(i.system or "") is not None and i.value]
    if not ours:
        raise _unprocessable(
            f"Give the patient's identifier with the system {common.patient_system('<AE title of the issuer>')}.",
            f"{place}.identifier",
            "required",
        )
    identifier = ours[0]
    issuer_ae = common.issuer_of(identifier.system or "")
    issuer = institutions_visible_to(principal).filter(ae_title=issuer_ae).first()
    if issuer is None:
        raise _unprocessable(f"No institution of your alliance has the AE title {issuer_ae}.", f"{place}.identifier")
    patient_id = str(identifier.value).strip()
    if contained is not None:
        born = contained.birthDate if isinstance(contained.birthDate, date) else None
        return patient_id, issuer, _person_name(contained.name or []), born, GENDERS.get(contained.gender or "", "")
    known = Patient.objects.filter(issuer=issuer, patient_id=patient_id).first() if issuer == institution else None
    if known is None:  # another institution's patient: what it holds is not the caller's to copy
        return patient_id, issuer, "", None, ""
    return patient_id, issuer, known.name, known.birth_date, known.sex


def _person_name(names: list[Any]) -> str:
    """A DICOM PN (family^given^middle) of the first HumanName, or its text."""
    if not names:
        return ""
    name = names[0]
    given = [g for g in (name.given or []) if g]
    components = [name.family or "", given[0] if given else "", " ".join(given[1:])]
    pn = "^".join(components).rstrip("^")
    return pn or (name.text or "").strip()


def schedule(principal: Principal, body: Any) -> tuple[ScheduledStep, bool]:
    """The step the ServiceRequest puts on the worklist, and whether it is new (False: the
    same accession number was ordered before, and that step is returned as it is)."""
    order = order_of(principal, validated(body))
    known = ScheduledStep.objects.filter(institution=order.institution, accession_number=order.accession_number)
    existed = known.exists()
    try:
        step = worklist.schedule_step(
            by=principal.actor,
            institution=order.institution,
            patient_id=order.patient_id,
            issuer=order.issuer,
            patient_name=order.patient_name,
            birth_date=order.birth_date,
            sex=order.sex,
            accession_number=order.accession_number,
            modality=order.modality,
            scheduled_at=order.scheduled_at,
            station_ae=order.station_ae,
            procedure_description=order.procedure_description,
            source=ScheduledStep.Source.FHIR,
            requested_procedure_id=order.requested_procedure_id,
        )
    except ValidationError as exc:
        issues = [
            Issue(
                "business-rule" if field == "accession_number" else "value",
                message,
                PLACES.get(field, "ServiceRequest"),
            )
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
        raise Refused(422, issues) from None
    return step, not existed


# --- a step as a ServiceRequest ----------------------------------------------------------


def step_resource(step: ScheduledStep) -> dict[str, Any]:
    institution = step.institution
    identifiers: list[dict[str, Any]] = [
        {
            "type": {"coding": [ACSN]},
            "system": common.accession_system(institution.ae_title),
            "value": step.accession_number,
        },
        {"system": common.DICOM_UID_SYSTEM, "value": f"urn:oid:{step.study_uid}"},
    ]
    performers: list[dict[str, Any]] = [
        {
            "type": "Organization",
            "identifier": {"system": ae_title_system(), "value": institution.ae_title},
            "display": institution.name,
        }
    ]
    if step.station_ae:
        performers.append(
            {
                "type": "Device",
                "identifier": {"system": ae_title_system(), "value": step.station_ae},
                "display": step.station_ae,
            }
        )
    subject: dict[str, Any] = {
        "reference": f"Patient/{step.patient_id}",
        "identifier": common.patient_identifier(step.patient),
    }
    if step.patient_display:  # the name as ordered, not what another institution's devices sent
        subject["display"] = step.patient_display
    code: dict[str, Any] = {"coding": [{"system": common.DCM, "code": step.modality}]}
    if step.procedure_description:
        code["text"] = step.procedure_description
    based_on = [
        {"reference": f"ServiceRequest/{kind}-{pk}"}
        for kind, pk in (("consult", step.consult_id), ("referral", step.referral_id))
        if pk is not None
    ]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": f"{PREFIX}{step.pk}",
        "identifier": identifiers,
        "requisition": {
            "system": requested_procedure_system(institution.ae_title),
            "value": step.requested_procedure_id,
        },
        "status": REQUEST_STATUS[Status(step.status)],
        "intent": "order",
        "category": [{"coding": [IMAGING]}],
        "code": code,
        "subject": subject,
        "occurrenceDateTime": common.instant(step.scheduled_at),
        "authoredOn": common.instant(step.created_at),
        "performer": performers,
        "basedOn": based_on,
    }
    return {k: v for k, v in resource.items() if v not in (None, [])}


class WorklistOrderProvider(Provider):
    """The steps of the principal's institution's worklist, as the worklist page shows them."""

    resource_type = "ServiceRequest"
    prefix = PREFIX
    module = IMAGE_STORE
    params = {**common.PATIENT_PARAMS, "authored": Param("date", "When the request was written.")}
    creates = True
    profile = (
        "A worklist order is ServiceRequest/worklist-<id>, a scheduled exam of your institution; "
        "POST a ServiceRequest to put one on its modality worklist."
    )

    def search(self, principal: Principal, search: Search) -> QuerySet[ScheduledStep]:
        rows = access.steps_visible_to(principal).select_related("patient__issuer", "institution")
        rows = common.filter_by_patient(rows, search, "patient")
        for ranges in search.dates.get("authored", []):
            rows = rows.filter(date_q("created_at", ranges, is_date=False))
        return rows.order_by("-created_at", "-pk")

    def read(self, principal: Principal, local_id: str) -> ScheduledStep:
        if not local_id.isdigit() or len(local_id) > 18:
            raise Http404("No such ServiceRequest.")
        return access.get_step_for(principal, int(local_id))

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        bases = {step.pk: access.OWN_INSTITUTION for step in rows}
        audit.read_many(request, rows, "worklist.view" if read else "worklist.list", bases, via="fhir")
        return [step_resource(step) for step in rows]

    def create(self, principal: Principal, resource: Any) -> tuple[ScheduledStep, bool]:
        return schedule(principal, resource)
