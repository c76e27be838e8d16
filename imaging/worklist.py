"""The modality worklist (PS3.4 annex K): scheduled procedure steps per institution.

Steps are made by a consult or referral that asks for an exam, by the worklist page, the REST
API, and FHIR/HL7 orders, all through `schedule_step`. A modality of the institution reads them
with an MWL C-FIND (imaging.dimse_services), tells us it started and finished with MPPS, and the
study it then sends is matched by accession number (`complete_from_instances`), and the app that
asked for the exam is told (`on_study_arrived`). Every change of status goes through `_move`,
which checks ScheduledStep.TRANSITIONS and writes the log row.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import Principal
from alliance.models import Institution, ae_title_validator
from imaging import access
from imaging.dicom.objects import new_uid
from imaging.dicom.procedures import PerformedStep, ScheduledRef
from imaging.models import Instance, Patient, PerformedProcedureStep, ScheduledStep, ScheduledStepChange, Study
from imaging.patients import register_patient

__all__ = [
    "ScheduledStep",
    "complete_from_instances",
    "discontinue_step",
    "mpps_started",
    "mpps_updated",
    "on_study_arrived",
    "schedule_step",
]

Status = ScheduledStep.Status
OPEN = (Status.SCHEDULED, Status.IN_PROGRESS)

# PS3.5 6.2: an SH value; a modality is a CS defined term (PS3.3 C.7.3.1.1.1), letters and digits.
_SH = re.compile(r"^[^\\\x00-\x1f]{1,16}$")
_CS = re.compile(r"^[A-Z0-9_]{1,16}$")


_ACCESSION_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # no I, L, O, U: read aloud and typed again


def new_accession_number() -> str:
    """An accession number for an exam scheduled without one: the local date and six random
    characters (16 at most, SH). The unique constraint catches the rare repeat."""
    suffix = "".join(secrets.choice(_ACCESSION_ALPHABET) for _ in range(6))
    return f"{timezone.localdate():%y%m%d}{suffix}"


def steps_for(
    principal: Principal, *, day: date | None = None, status: str = "", modality: str = ""
) -> QuerySet[ScheduledStep]:
    """The principal's worklist for the page and the API: one local day if given,
    the steps still to do unless a status (or "all") is asked, in the order of their start."""
    steps = access.steps_visible_to(principal).select_related("patient__issuer")
    if day is not None:
        start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
        steps = steps.filter(scheduled_at__gte=start, scheduled_at__lt=start + timedelta(days=1))
    if status == "":
        steps = steps.filter(status__in=OPEN)
    elif status != "all":
        steps = steps.filter(status=status)
    if modality:
        steps = steps.filter(modality=modality)
    return steps.order_by("scheduled_at", "pk")


def _check(
    *,
    accession_number: str,
    modality: str,
    station_ae: str,
    scheduled_at: datetime,
    source: str,
    patient_name: str,
) -> None:
    errors: dict[str, str] = {}
    if not _SH.match(accession_number):
        errors["accession_number"] = _("An accession number is 1 to 16 characters, without a backslash.")
    if not _CS.match(modality):
        errors["modality"] = _("A modality is a DICOM code such as CT, MR, DX or US.")
    if station_ae:
        try:
            ae_title_validator(station_ae)
        except ValidationError:
            errors["station_ae"] = _("An AE title is 1 to 16 letters, digits, '_', '-' or '.'.")
    if not isinstance(scheduled_at, datetime) or timezone.is_naive(scheduled_at):
        errors["scheduled_at"] = _("Give the scheduled start as a date and time with its time zone.")
    if source not in ScheduledStep.Source.values:
        errors["source"] = _("Unknown source of the order.")
    if len(patient_name) > 324 or "\\" in patient_name:
        errors["patient_name"] = _("A patient name has at most 324 characters and no backslash.")
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def schedule_step(
    *,
    by: audit.Actor,
    institution: Institution,
    patient_id: str,
    issuer: Institution,
    patient_name: str,
    birth_date: date | None,
    sex: str,
    accession_number: str,
    modality: str,
    scheduled_at: datetime,
    station_ae: str,
    procedure_description: str,
    source: str,
    consult_id: int | None = None,
    referral_id: int | None = None,
    performing_physician: str = "",
    requested_procedure_id: str = "",
) -> ScheduledStep:
    """A new scheduled step on the institution's worklist, for the patient (issuer, patient_id).

    The same order sent again (same institution, accession number and patient) returns the step
    it made the first time, unchanged; an accession number the institution already used for
    another patient is refused. Raises ValidationError naming the field of any bad value.
    """
    accession_number, modality = (accession_number or "").strip(), (modality or "").strip().upper()
    station_ae, patient_name = (station_ae or "").strip(), (patient_name or "").strip()
    _check(
        accession_number=accession_number,
        modality=modality,
        station_ae=station_ae,
        scheduled_at=scheduled_at,
        source=source,
        patient_name=patient_name,
    )
    patient = register_patient(
        issuer=issuer, patient_id=patient_id, name=patient_name, birth_date=birth_date, sex=sex, by=by
    )
    existing = ScheduledStep.objects.filter(institution=institution, accession_number=accession_number).first()
    if existing is not None:
        return _same_order(existing, patient.pk)
    procedure_id = (requested_procedure_id or accession_number).strip()[:16]
    try:
        with transaction.atomic():
            step = ScheduledStep.objects.create(
                institution=institution,
                patient=patient,
                patient_name=patient_name,
                birth_date=birth_date,
                sex=(sex or "").strip().upper(),
                accession_number=accession_number,
                requested_procedure_id=procedure_id,
                procedure_description=(procedure_description or "").strip()[:64],
                study_uid=new_uid(settings.DICOM_UID_ROOT),
                modality=modality,
                station_ae=station_ae,
                scheduled_at=scheduled_at,
                performing_physician=(performing_physician or "").strip()[:324],
                source=source,
                consult_id=consult_id,
                referral_id=referral_id,
            )
    except IntegrityError:
        # the same order arrived twice at once: the other one made it
        existing = ScheduledStep.objects.get(institution=institution, accession_number=accession_number)
        return _same_order(existing, patient.pk)
    _log(step, "", Status.SCHEDULED, by, "")
    audit.record(
        actor=by,
        action="worklist.schedule",
        object_type=step.audit_type,
        object_id=step.audit_id,
        patient=step.audit_patient,
        detail={"accession": accession_number, "modality": modality, "source": source, "institution": institution.pk},
    )
    return step


def schedule_for_patient(
    *,
    by: audit.Actor,
    institution: Institution,
    patient: Patient,
    accession_number: str,
    modality: str,
    scheduled_at: datetime,
    station_ae: str,
    procedure_description: str,
    source: str,
    consult_id: int | None = None,
    referral_id: int | None = None,
    performing_physician: str = "",
    requested_procedure_id: str = "",
) -> ScheduledStep:
    """schedule_step for a patient the alliance already holds (a consult's, a referral's),
    with the demographics as the archive has them."""
    return schedule_step(
        by=by,
        institution=institution,
        patient_id=patient.patient_id,
        issuer=patient.issuer,
        patient_name=patient.name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        accession_number=accession_number,
        modality=modality,
        scheduled_at=scheduled_at,
        station_ae=station_ae,
        procedure_description=procedure_description,
        source=source,
        consult_id=consult_id,
        referral_id=referral_id,
        performing_physician=performing_physician,
        requested_procedure_id=requested_procedure_id,
    )


def _same_order(existing: ScheduledStep, patient_pk: int) -> ScheduledStep:
    if existing.patient_id != patient_pk:
        raise ValidationError(
            {"accession_number": _("This accession number is already on the worklist for another patient.")}
        )
    return existing


@transaction.atomic
def discontinue_step(*, by: audit.Actor, step: ScheduledStep, reason: str = "") -> ScheduledStep:
    """Take the step off the worklist (the order was cancelled or the exam abandoned)."""
    step = _move(step, Status.DISCONTINUED, by=by, reason=reason)
    audit.record(
        actor=by,
        action="worklist.discontinue",
        object_type=step.audit_type,
        object_id=step.audit_id,
        patient=step.audit_patient,
        detail={"accession": step.accession_number, "reason": reason[:200]},
    )
    return step


def _move(step: ScheduledStep, to: str, *, by: audit.Actor, reason: str) -> ScheduledStep:
    """The step, locked and moved to `to` if its table of transitions allows it."""
    step = ScheduledStep.objects.select_for_update().get(pk=step.pk)
    if to not in ScheduledStep.TRANSITIONS[Status(step.status)]:
        raise ValidationError(
            {"status": _("A step that is %(status)s cannot become %(to)s.") % {"status": step.status, "to": to}}
        )
    before = step.status
    step.status = to
    step.save(update_fields=["status", "updated_at"])
    _log(step, before, to, by, reason)
    return step


def _log(step: ScheduledStep, before: str, to: str, by: audit.Actor, reason: str) -> None:
    ScheduledStepChange.objects.create(
        step=step, from_status=before, to_status=to, at=timezone.now(), actor=by.name[:200], reason=reason[:200]
    )


# --- what the modality reports: MPPS (PS3.4 F.7) ----------------------------------------


class PerformedStepError(Exception):
    """An MPPS message that cannot be applied; `kind` says which (imaging.dimse_services answers
    each with its DIMSE status)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


DUPLICATE, UNKNOWN, FINAL = "duplicate", "unknown", "final"
_MPPS_TO_STEP = {
    PerformedProcedureStep.Status.COMPLETED: Status.COMPLETED,
    PerformedProcedureStep.Status.DISCONTINUED: Status.DISCONTINUED,
}


@transaction.atomic
def mpps_started(
    *, by: audit.Actor, institution: Institution, device_ae: str, sop_uid: str, performed: PerformedStep
) -> PerformedProcedureStep:
    """A modality of the institution started a procedure step (MPPS N-CREATE): the scheduled
    steps it names (by step ID, accession number or Study Instance UID) are in progress. An
    unscheduled one is kept too, so that its N-SET is answered."""
    if PerformedProcedureStep.objects.filter(sop_uid=sop_uid).exists():
        raise PerformedStepError(DUPLICATE, "this MPPS instance exists already")
    mpps = PerformedProcedureStep.objects.create(
        sop_uid=sop_uid, institution=institution, device_ae=device_ae[:16], modality=performed.modality[:16]
    )
    steps = list(_named_steps(institution, performed.scheduled))
    mpps.steps.set(steps)
    for step in steps:
        if step.status == Status.SCHEDULED:
            _move(step, Status.IN_PROGRESS, by=by, reason=f"MPPS {sop_uid}"[:200])
    ScheduledStep.objects.filter(pk__in=[s.pk for s in steps]).update(mpps_uid=sop_uid)
    audit.record(
        actor=by,
        action="worklist.mpps",
        object_type="mpps",
        object_id=sop_uid,
        patient=",".join(sorted({str(s.patient_id) for s in steps})),
        detail={"status": performed.status, "steps": [s.pk for s in steps], "institution": institution.pk},
    )
    return mpps


def _named_steps(institution: Institution, refs: tuple[ScheduledRef, ...]) -> list[ScheduledStep]:
    condition = Q()
    for ref in refs:
        if ref.step_id.startswith("SPS") and ref.step_id[3:].isdigit():
            condition |= Q(pk=int(ref.step_id[3:]))
        if ref.accession_number:
            condition |= Q(accession_number=ref.accession_number)
        if ref.study_uid:
            condition |= Q(study_uid=ref.study_uid)
    if not condition:
        return []
    return list(ScheduledStep.objects.select_for_update().filter(condition, institution=institution, status__in=OPEN))


@transaction.atomic
def mpps_updated(
    *, by: audit.Actor, institution: Institution, sop_uid: str, performed: PerformedStep
) -> PerformedProcedureStep:
    """The modality changed a performed step (MPPS N-SET): COMPLETED completes its scheduled
    steps, DISCONTINUED takes them off the worklist; a finished one may no longer change."""
    mpps = PerformedProcedureStep.objects.select_for_update().filter(sop_uid=sop_uid, institution=institution).first()
    if mpps is None:
        raise PerformedStepError(UNKNOWN, "no such MPPS instance of this institution")
    if mpps.is_final:
        raise PerformedStepError(FINAL, f"the MPPS is {mpps.status}: it may no longer be updated")
    if performed.status and performed.status != mpps.status:
        mpps.status = performed.status
        mpps.save(update_fields=["status", "updated_at"])
    target = _MPPS_TO_STEP.get(PerformedProcedureStep.Status(mpps.status))
    steps = list(mpps.steps.filter(status__in=OPEN))
    if target is not None:
        reason = performed.reason or f"MPPS {sop_uid}"
        for step in steps:
            _move(step, target, by=by, reason=reason[:200])
    audit.record(
        actor=by,
        action="worklist.mpps",
        object_type="mpps",
        object_id=sop_uid,
        patient=",".join(sorted({str(s.patient_id) for s in steps})),
        detail={"status": mpps.status, "steps": [s.pk for s in steps], "institution": institution.pk},
    )
    return mpps


# --- the study that arrives (ingest's follow-up, imaging.tasks) --------------------------

# What a higher app does when the study of a step it asked for has come (consults attaches it
# to the case that asked): called with the step, in the transaction that links the study.
StudyArrived = Callable[..., None]
_ARRIVED: list[StudyArrived] = []


def on_study_arrived(hook: StudyArrived) -> None:
    """Have `hook(step=...)` called whenever a step's study is linked (once per hook)."""
    if hook not in _ARRIVED:
        _ARRIVED.append(hook)


def _waiting_for_study() -> Q:
    """Steps a study may still come for: open ones, and those the modality's MPPS completed
    before its images came (the study is linked to them without another change of status)."""
    return Q(status__in=OPEN) | Q(status=Status.COMPLETED, study__isnull=True)


def complete_from_instances(instance_ids: list[int]) -> int:
    """Complete the steps whose study has come: a study of the same institution with the
    step's accession number, or the Study Instance UID the worklist gave. How many steps were
    given their study."""
    study_ids = sorted(set(Instance.objects.filter(pk__in=instance_ids).values_list("series__study_id", flat=True)))
    if not study_ids:
        return 0
    arrived = Study.objects.filter(pk__in=study_ids, institution_id=OuterRef("institution_id")).filter(
        Q(accession_number=OuterRef("accession_number")) | Q(study_uid=OuterRef("study_uid"))
    )
    waiting = ScheduledStep.objects.filter(Exists(arrived)).filter(_waiting_for_study()).values_list("pk", flat=True)
    return sum(complete_step(step_id=pk, study_ids=study_ids) for pk in list(waiting))


@transaction.atomic
def complete_step(*, step_id: int, study_ids: list[int]) -> int:
    """Link the study among these that came for the step and mark it completed (1), or
    nothing if it has moved on meanwhile (0)."""
    step = ScheduledStep.objects.select_for_update().filter(_waiting_for_study(), pk=step_id).first()
    if step is None:
        return 0
    study = (
        Study.objects.filter(pk__in=study_ids, institution_id=step.institution_id)
        .filter(Q(accession_number=step.accession_number) | Q(study_uid=step.study_uid))
        .order_by("pk")
        .first()
    )
    if study is None:
        return 0
    step.study = study
    step.save(update_fields=["study", "updated_at"])
    if step.is_open:
        step = _move(step, Status.COMPLETED, by=audit.SYSTEM, reason=f"study {study.study_uid}"[:200])
    audit.record(
        actor=audit.SYSTEM,
        action="worklist.complete",
        object_type=step.audit_type,
        object_id=step.audit_id,
        patient=step.audit_patient,
        detail={"accession": step.accession_number, "study": study.study_uid},
    )
    for hook in _ARRIVED:
        hook(step=step)
    return 1
