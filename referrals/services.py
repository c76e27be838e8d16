"""Every write to a referral. One keyword-only, atomic function per move of the workflow.

Each move: lock the row, check the move against referrals.models.TRANSITIONS for the acting
party (referrals.access.parties_of), change the row, log a ReferralTransition, write one audit
event, and leave e-mail to transaction.on_commit. Access to the studies is granted, narrowed
and revoked only through imaging.grants, always to the receiving institution's group with the
basis "referral:<id>". In-app notifications are rows written in the same transaction.
`by` is the acting principal (alliance.access.Principal), or None for the system.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal, settings_of
from alliance.models import Doctor, Institution
from imaging import grants
from imaging.grants import Grantee
from imaging.models import Patient, Study
from imaging.patients import link_patients, register_patient
from imaging.routing import services as routing
from referrals import access, tasks  # tasks names services only when one runs
from referrals.models import (
    TRANSITIONS,
    URGENCY_RANK,
    DeskMember,
    Direction,
    Party,
    Referral,
    ReferralMessage,
    ReferralNotification,
    ReferralTransition,
    Status,
    Urgency,
    direction_between,
)

# On arrival the receiving side also sees the patient's studies of the last year at the
# referring institution.
ARRIVAL_LOOKBACK = timedelta(days=365)
REMIND_AFTER = timedelta(hours=24)


class IllegalTransition(Exception):
    """The referral is not in a state that allows the move; nothing was changed."""


# --- the machinery shared by every move -------------------------------------------------


def _now() -> datetime:
    return timezone.now()


def _locked(referral: Referral) -> Referral:
    """Lock the row, then read it afresh with what the moves need."""
    Referral.objects.select_for_update().filter(pk=referral.pk).values_list("pk", flat=True).get()
    return Referral.objects.select_related(
        "referrer__user", "from_institution", "to_institution", "patient", "appointment_doctor__user"
    ).get(pk=referral.pk)


def _user(by: Principal | None) -> Any:
    return by.user if by is not None else None


def _actor(by: Principal | None) -> audit.Actor:
    return by.actor if by is not None else audit.SYSTEM


def _check(referral: Referral, action: str, by: Principal | None) -> str:
    """Refuse the move unless the acting party and the current status allow it."""
    move = TRANSITIONS[action]
    parties = {Party.SYSTEM} if by is None else access.parties_of(by, referral)
    if not move.parties & parties:
        raise AccessDenied(_("You may not do this to referral #%(id)s.") % {"id": referral.pk})
    if referral.status not in move.sources:
        raise IllegalTransition(
            _("Referral #%(id)s is %(status)s; this is only possible when it is %(allowed)s.")
            % {
                "id": referral.pk,
                "status": referral.get_status_display(),
                "allowed": ", ".join(str(Status(s).label) for s in move.sources),
            }
        )
    return referral.status


def audit_read(request: Any, referral: Referral, action: str = "referral.view") -> None:
    """The audit event of a page or API call that showed the referral to the user."""
    audit.record(
        actor=audit.actor_of(request),
        action=action,
        object_type="referral",
        object_id=referral.pk,
        patient=str(referral.patient_id),
        basis=referral.basis,
        source=audit.source_of(request),
    )


def _log(
    referral: Referral, action: str, from_status: str, by: Principal | None, at: datetime, reason: str = ""
) -> None:
    ReferralTransition.objects.create(
        referral=referral,
        action=action,
        from_status=from_status,
        to_status=referral.status,
        by=_user(by),
        at=at,
        reason=reason,
    )
    audit.record(
        actor=_actor(by),
        action=f"referral.{action}",
        object_type="referral",
        object_id=referral.pk,
        patient=str(referral.patient_id),
        basis=referral.basis,
        detail={"from": from_status, "to": referral.status, "reason": reason},
    )


def _notify(referral: Referral, users: Iterable[Any], verb: str, at: datetime, by: Principal | None = None) -> None:
    """A notice for every user concerned except the one who acted; e-mail after commit."""
    acting = by.user_id if by is not None else None
    targets = {u.pk: u for u in users if u is not None and u.pk != acting}
    rows = ReferralNotification.objects.bulk_create(
        ReferralNotification(user_id=pk, referral=referral, verb=verb, created_at=at) for pk in targets
    )
    ids = [n.pk for n in rows]

    def queue_emails() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.send_notification_emails.delay(ids)

    if ids:
        # robust: with the broker away the action still answers; the rows are the outbox
        # and tasks.send_unsent_emails mails them once it is back.
        transaction.on_commit(queue_emails, robust=True)


def desk_users(institution_id: int) -> list[Any]:
    """The users of an institution's referral desk (its admins and named members)."""
    doctors = Doctor.objects.filter(access.desk_doctors_q(institution_id)).select_related("user").distinct()
    return [d.user for d in doctors]


def _receiving_users(referral: Referral) -> list[Any]:
    users = desk_users(referral.to_institution_id)
    if referral.appointment_doctor_id:
        users.append(referral.appointment_doctor.user)  # type: ignore[union-attr]
    return users


def _doctor(by: Principal) -> Doctor:
    doctor = by.doctor
    if doctor is None:
        raise AccessDenied(_("Only an active doctor may act on referrals."))
    return doctor


def _required(value: str, field: str, message: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError({field: message})
    return value


def _grant(referral: Referral, studies: Iterable[Study], by: Principal | None) -> None:
    grantee = Grantee.institution(referral.to_institution)
    for study in studies:
        grants.grant_study(study=study, grantee=grantee, basis=referral.basis, by=_actor(by))


def _revoke(referral: Referral, by: Principal | None) -> None:
    grants.revoke_grants(basis=referral.basis, by=_actor(by))


# --- the referral -----------------------------------------------------------------------


def _validate_target(by: Principal, to_institution: Any, direction: str) -> Institution:
    if direction not in Direction.values:
        raise ValidationError({"direction": _("Choose up, down or same level.")})
    if to_institution is None:
        raise ValidationError({"to_institution": _("Choose the receiving institution.")})
    if not access.receiving_institutions_for(by).filter(pk=to_institution.pk).exists():
        raise ValidationError(
            {"to_institution": _("This institution is not a member of your alliance that takes referrals.")}
        )
    own = _doctor(by).institution
    actual = direction_between(own.level, to_institution.level)
    if actual != direction:
        raise ValidationError(
            {
                "direction": _("%(to)s is %(level)s: a referral there from %(own)s is %(actual)s, not %(direction)s.")
                % {
                    "to": to_institution.name,
                    "level": to_institution.get_level_display(),
                    "own": own.name,
                    "actual": Direction(actual).label,
                    "direction": Direction(direction).label,
                }
            }
        )
    return to_institution


def _validate_studies(by: Principal, studies: Iterable[Any]) -> list[Study]:
    studies = list(studies)
    if not studies:
        return []
    allowed = set(access.studies_referable_by(by).filter(pk__in=[s.pk for s in studies]).values_list("pk", flat=True))
    if any(s.pk not in allowed for s in studies):
        raise ValidationError({"studies": _("You may only attach your own institution's studies.")})
    if len({s.patient_id for s in studies}) > 1:
        raise ValidationError({"studies": _("All attached studies must be of the same patient.")})
    return studies


def _parse_date(value: Any, field: str) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationError({field: _("Give a date as YYYY-MM-DD.")}) from None


def _validate_patient(
    by: Principal,
    patient: Patient | None,
    studies: list[Study],
    patient_data: dict[str, Any] | None,
    based_on: Referral | None,
) -> Patient:
    own_id = _doctor(by).institution_id
    if studies:
        of_studies = studies[0].patient
        if patient is not None and patient.pk != of_studies.pk:
            raise ValidationError({"patient": _("The attached studies are of another patient.")})
        return of_studies
    if patient is not None:
        allowed = {own_id}
        if patient.issuer_id in allowed or (
            based_on is not None and patient.pk in {based_on.patient_id, based_on.receiving_patient_id}
        ):
            return patient
        raise ValidationError({"patient": _("Choose a patient of your own institution.")})
    if patient_data:
        data = dict(patient_data)
        _required(str(data.get("name") or ""), "name", _("Give the patient's name."))
        return register_patient(
            issuer=_doctor(by).institution,
            patient_id=str(data.get("patient_id") or ""),
            name=str(data.get("name") or ""),
            birth_date=_parse_date(data.get("birth_date"), "birth_date"),
            sex=str(data.get("sex") or ""),
            by=by.actor,
        )
    raise ValidationError({"patient": _("Attach a study of the patient or type the patient's details.")})


def _validate_based_on(by: Principal, based_on: Referral | None) -> Referral | None:
    if based_on is None:
        return None
    visible = access.referrals_visible_to(by).filter(pk=based_on.pk).exists()
    if not visible or based_on.to_institution_id != _doctor(by).institution_id:
        raise ValidationError({"based_on": _("You may only follow up a referral your institution received.")})
    return based_on


def _validate_consult(by: Principal, consult: Any) -> Any:
    if consult is None:
        return None
    if getattr(consult, "requesting_institution_id", None) != _doctor(by).institution_id:
        raise ValidationError({"consult": _("You may only refer from a consult of your own institution.")})
    return consult


@transaction.atomic
def referral_create(
    *,
    by: Principal,
    patient: Patient | None = None,
    studies: Iterable[Any] = (),
    patient_data: dict[str, Any] | None = None,
    direction: str,
    to_institution: Institution | None,
    reason: str,
    summary: str = "",
    urgency: str = Urgency.ROUTINE,
    wished_date: Any = None,
    based_on: Referral | None = None,
    consult: Any = None,
    send: bool = False,
) -> Referral:
    """A draft referral (or, with send, a requested one): a patient, where to, why, how urgent.

    Every field is checked before anything is written: a bad one is a ValidationError naming it.
    """
    doctor = _doctor(by)
    if not access.may_use_referrals(by):
        raise AccessDenied(_("Referrals are not switched on for your institution, or you may not refer."))
    if urgency not in Urgency.values:
        raise ValidationError({"urgency": _("Choose routine, urgent or emergency.")})
    target = _validate_target(by, to_institution, direction)
    studies = _validate_studies(by, studies)
    reason = _required(reason, "reason", _("Say why the patient is referred."))
    wished = _parse_date(wished_date, "wished_date")
    if wished is not None and wished < timezone.localdate():
        raise ValidationError({"wished_date": _("The wished date is in the past.")})
    based_on = _validate_based_on(by, based_on)
    consult = _validate_consult(by, consult)
    the_patient = _validate_patient(by, patient, studies, patient_data, based_on)
    now = _now()
    referral = Referral.objects.create(
        referrer=doctor,
        from_institution_id=doctor.institution_id,
        to_institution=target,
        direction=direction,
        urgency=urgency,
        urgency_rank=URGENCY_RANK[urgency],
        patient=the_patient,
        reason=reason,
        summary=(summary or "").strip(),
        wished_date=wished,
        based_on=based_on,
        consult=consult,
        created_at=now,
    )
    referral.studies.set(studies)
    _log(referral, "create", "", by, now)
    if send:
        referral = referral_request(referral=referral, by=by)
    return referral


@transaction.atomic
def referral_request(*, referral: Referral, by: Principal) -> Referral:
    """Send the draft: the receiving institution sees exactly the attached studies; its desk is told."""
    referral = _locked(referral)
    previous = _check(referral, "request", by)
    if not access.receiving_institutions_for(by).filter(pk=referral.to_institution_id).exists():
        raise ValidationError({"to_institution": _("This institution no longer takes referrals; choose another one.")})
    now = _now()
    referral.status = Status.REQUESTED
    referral.requested_at = now
    referral.save()
    _grant(referral, referral.studies.select_related("patient"), by)
    _log(referral, "request", previous, by, now)
    _notify(referral, desk_users(referral.to_institution_id), "request", now, by)
    _route_after_commit(referral)
    return referral


def routing_case(referral: Referral) -> routing.Case:
    """The referral as imaging's routing rules see it."""
    return routing.Case(referral.basis, "referral", referral.from_institution, referral.to_institution)


def _route_after_commit(referral: Referral) -> None:
    """The routing rules of both sides fire once the request is committed (imaging.routing)."""

    def route_requested_case() -> None:  # named: a robust on_commit logs its callback's __qualname__
        routing.case_requested(case=routing_case(referral), studies=referral.studies.select_related("patient"))

    transaction.on_commit(route_requested_case, robust=True)


def referral_route(*, referral: Referral, by: Principal, destination: Any) -> int:
    """The receiving side sends the referral's studies to one of its destinations; how many were queued."""
    if not access.may_route_referral(by, referral):
        raise AccessDenied(_("You may not send the studies of referral #%(id)s.") % {"id": referral.pk})
    if destination.institution_id != by.institution_id:
        raise AccessDenied(_("Choose a destination of your institution."))
    items = routing.route_case(
        by=by, case=routing_case(referral), studies=referral.studies.all(), destination=destination
    )
    return len(items)


# --- the receiving desk -----------------------------------------------------------------


def _to_datetime(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError({field: _("Give a date and time as YYYY-MM-DDTHH:MM.")}) from None
    else:
        raise ValidationError({field: _("Give the date and time of the appointment.")})
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


@transaction.atomic
def referral_accept(
    *, referral: Referral, by: Principal, appointment_at: Any, department: str, doctor: Doctor | None = None
) -> Referral:
    """The desk gives an appointment (date and time, department, optionally a named doctor)."""
    referral = _locked(referral)
    previous = _check(referral, "accept", by)
    moment = _to_datetime(appointment_at, "appointment_at")
    now = _now()
    if moment <= now:
        raise ValidationError({"appointment_at": _("The appointment is in the past.")})
    department = _required(department, "department", _("Name the department that sees the patient."))
    if doctor is not None and (not doctor.active or doctor.institution_id != referral.to_institution_id):
        raise ValidationError({"doctor": _("The named doctor must be an active doctor of the receiving institution.")})
    referral.status = Status.ACCEPTED
    referral.appointment_at = moment
    referral.department = department
    referral.appointment_doctor = doctor
    referral.answered_at = now
    referral.save()
    _log(referral, "accept", previous, by, now)
    _notify(referral, [referral.referrer.user, doctor.user if doctor else None], "accept", now, by)
    return referral


@transaction.atomic
def referral_propose(*, referral: Referral, by: Principal, date: Any, note: str = "") -> Referral:
    """The desk proposes another date; the referrer agrees or cancels."""
    referral = _locked(referral)
    previous = _check(referral, "propose", by)
    proposed = _parse_date(date, "date")
    if proposed is None:
        raise ValidationError({"date": _("Give the date you propose.")})
    if proposed < timezone.localdate():
        raise ValidationError({"date": _("The proposed date is in the past.")})
    now = _now()
    referral.status = Status.ON_HOLD
    referral.proposed_date = proposed
    referral.answered_at = now
    referral.save()
    _log(referral, "propose", previous, by, now, (note or "").strip())
    _notify(referral, [referral.referrer.user], "propose", now, by)
    return referral


@transaction.atomic
def referral_agree(*, referral: Referral, by: Principal) -> Referral:
    """The referrer takes the proposed date: the request goes back to the desk with it."""
    referral = _locked(referral)
    previous = _check(referral, "agree", by)
    now = _now()
    referral.status = Status.REQUESTED
    referral.wished_date = referral.proposed_date
    referral.proposed_date = None
    referral.save()
    _log(referral, "agree", previous, by, now)
    _notify(referral, desk_users(referral.to_institution_id), "agree", now, by)
    return referral


@transaction.atomic
def referral_reject(*, referral: Referral, by: Principal, reason: str) -> Referral:
    """The desk declines, with a reason; the receiving side's access ends at once."""
    referral = _locked(referral)
    previous = _check(referral, "reject", by)
    reason = _required(reason, "reason", _("Say why the referral is declined."))
    now = _now()
    referral.status = Status.REJECTED
    referral.closed_reason = reason
    referral.answered_at = now
    referral.save()
    _revoke(referral, by)
    _log(referral, "reject", previous, by, now, reason)
    _notify(referral, [referral.referrer.user], "reject", now, by)
    return referral


def _recent_studies_at_referrer(referral: Referral, now: datetime) -> list[Study]:
    """The patient's other studies at the referring institution from the last 12 months."""
    since = now - ARRIVAL_LOOKBACK
    recent = Q(study_date__gte=since.date()) | Q(study_date__isnull=True, received_at__gte=since)
    return list(
        Study.objects.filter(recent, patient_id=referral.patient_id, institution_id=referral.from_institution_id)
        .exclude(pk__in=referral.studies.values("pk"))
        .select_related("patient")
    )


@transaction.atomic
def referral_arrive(*, referral: Referral, by: Principal, patient_id: str = "") -> Referral:
    """The patient arrived. The receiving side now also sees the patient's other studies at the
    referring institution from the last 12 months (same basis); the receiving hospital's own
    patient ID, when given, is recorded and cross-referenced (never merged)."""
    referral = _locked(referral)
    previous = _check(referral, "arrive", by)
    now = _now()
    patient_id = (patient_id or "").strip()
    if patient_id:
        source = referral.patient
        receiving = register_patient(
            issuer=referral.to_institution,
            patient_id=patient_id,
            name=source.name,
            birth_date=source.birth_date,
            sex=source.sex,
            by=by.actor,
        )
        if receiving.pk != source.pk:
            link_patients(patient=source, linked=receiving, basis=referral.basis, by=by.actor, user=by.user)
        referral.receiving_patient = receiving
    referral.status = Status.IN_PROGRESS
    referral.arrived_at = now
    referral.save()
    wider = _recent_studies_at_referrer(referral, now)
    _grant(referral, wider, by)
    _log(referral, "arrive", previous, by, now, f"+{len(wider)} studies" if wider else "")
    _notify(
        referral,
        [referral.referrer.user, referral.appointment_doctor.user if referral.appointment_doctor else None],
        "arrive",
        now,
        by,
    )
    return referral


@transaction.atomic
def referral_no_show(*, referral: Referral, by: Principal, reason: str) -> Referral:
    """The patient did not come: the case fails and the receiving side's access ends."""
    referral = _locked(referral)
    previous = _check(referral, "no_show", by)
    reason = _required(reason, "reason", _("Say what happened (e.g. the patient did not come)."))
    now = _now()
    referral.status = Status.FAILED
    referral.closed_reason = reason
    referral.save()
    _revoke(referral, by)
    _log(referral, "no_show", previous, by, now, reason)
    _notify(referral, [referral.referrer.user], "no_show", now, by)
    return referral


@transaction.atomic
def referral_complete(*, referral: Referral, by: Principal, summary: str) -> Referral:
    """The receiving doctor sends the discharge or feedback summary back; the receiving side's
    access becomes read-only and ends after the alliance's referral_access_days."""
    referral = _locked(referral)
    previous = _check(referral, "complete", by)
    summary = _required(summary, "summary", _("Write the discharge or feedback summary."))
    now = _now()
    referral.status = Status.COMPLETED
    referral.feedback = summary
    referral.completed_at = now
    referral.save()
    days = settings_of(referral.to_institution.alliance_id).referral_access_days
    grants.close_case_grants(basis=referral.basis, read_until=now + timedelta(days=days), by=_actor(by))
    _log(referral, "complete", previous, by, now)
    _notify(referral, [referral.referrer.user], "complete", now, by)
    return referral


# --- the referrer closing it ------------------------------------------------------------


@transaction.atomic
def referral_cancel(*, referral: Referral, by: Principal, reason: str) -> Referral:
    """The referrer withdraws; access granted for the case ends at once."""
    referral = _locked(referral)
    previous = _check(referral, "cancel", by)
    reason = _required(reason, "reason", _("Say why the referral is cancelled."))
    now = _now()
    referral.status = Status.CANCELLED
    referral.closed_reason = reason
    referral.save()
    if previous != Status.DRAFT:
        _revoke(referral, by)
    _log(referral, "cancel", previous, by, now, reason)
    _notify(referral, _receiving_users(referral) if previous != Status.DRAFT else [], "cancel", now, by)
    return referral


# --- the thread, the bell and the desk --------------------------------------------------


@transaction.atomic
def referral_message(*, referral: Referral, by: Principal, body: str) -> ReferralMessage:
    referral = _locked(referral)
    if not access.may_post_message(by, referral):
        raise AccessDenied(_("Only the two sides of an open referral write in its thread."))
    body = _required(body, "body", _("Write a message."))
    now = _now()
    message = ReferralMessage.objects.create(referral=referral, author=_doctor(by), body=body, created_at=now)
    audit.record(
        actor=by.actor,
        action="referral.message",
        object_type="referral",
        object_id=referral.pk,
        patient=str(referral.patient_id),
        basis=referral.basis,
    )
    if by.institution_id == referral.to_institution_id:
        other = [referral.referrer.user]
    else:
        other = _receiving_users(referral)
    _notify(referral, other, "message", now, by)
    return message


def notifications_mark_read(
    *, user: Any, ids: Iterable[int] | None = None, referral: Referral | None = None, verb: str = ""
) -> int:
    """Mark the user's unread notices read: the given ids, or one case's (opening the case page), or all."""
    rows = ReferralNotification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    if referral is not None:
        rows = rows.filter(referral_id=referral.pk)
    if verb:
        rows = rows.filter(verb=verb)
    return rows.update(read_at=_now())


@transaction.atomic
def desk_add(*, institution: Institution, doctor: Doctor, by: Principal) -> DeskMember:
    """The institution admin names a doctor of the institution to its referral desk."""
    if not access.may_manage_desk(by, institution):
        raise AccessDenied(_("Only the institution's admin names its referral desk."))
    if doctor.institution_id != institution.pk or not doctor.active:
        raise ValidationError({"doctor": _("Only an active doctor of the institution can be on its desk.")})
    member, created = DeskMember.objects.get_or_create(
        institution=institution, doctor=doctor, defaults={"added_by": by.user}
    )
    if created:
        audit.record(
            actor=by.actor,
            action="referral.desk_add",
            object_type="doctor",
            object_id=doctor.pk,
            detail={"institution": institution.pk},
        )
    return member


@transaction.atomic
def desk_remove(*, institution: Institution, doctor: Doctor, by: Principal) -> int:
    if not access.may_manage_desk(by, institution):
        raise AccessDenied(_("Only the institution's admin names its referral desk."))
    count, _rows = DeskMember.objects.filter(institution=institution, doctor=doctor).delete()
    if count:
        audit.record(
            actor=by.actor,
            action="referral.desk_remove",
            object_type="doctor",
            object_id=doctor.pk,
            detail={"institution": institution.pk},
        )
    return count


# --- the reminder -----------------------------------------------------------------------


def referral_remind_waiting(*, now: datetime | None = None) -> int:
    """The periodic job: tell the desk once about each request waiting more than 24 hours."""
    now = now or _now()
    due = Referral.objects.filter(
        status=Status.REQUESTED, reminded_at__isnull=True, requested_at__lte=now - REMIND_AFTER
    )
    count = 0
    for pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            referral = _locked(Referral(pk=pk))
            if referral.status != Status.REQUESTED or referral.reminded_at is not None:
                continue
            referral.reminded_at = now
            referral.save(update_fields=["reminded_at"])
            _notify(referral, desk_users(referral.to_institution_id), "remind", now)
            audit.record(
                actor=audit.SYSTEM,
                action="referral.remind",
                object_type="referral",
                object_id=referral.pk,
                patient=str(referral.patient_id),
                basis=referral.basis,
            )
            count += 1
    return count


# --- prefills for the forms -------------------------------------------------------------


def refer_back_initial(referral: Referral) -> dict[str, Any]:
    """A completed referral's "refer back": the patient (under the receiving side's ID when it was
    recorded), the receiving institution's studies of the patient, the summary, the link."""
    patient = referral.receiving_patient or referral.patient
    studies = list(
        Study.objects.filter(institution_id=referral.to_institution_id, patient_id=patient.pk)
        .select_related("patient")
        .order_by("-study_date", "-pk")
    )
    return {
        "patient": patient,
        "studies": studies,
        "summary": referral.feedback,
        "based_on": referral,
        "to_institution": referral.from_institution,
        "direction": direction_between(referral.to_institution.level, referral.from_institution.level),
    }


def from_screening_initial(reading: Any) -> dict[str, Any]:
    """A positive screening result's "refer this participant": the patient, the screening CT,
    the category with its recommended work-up as the reason, the findings as the summary."""
    round_ = reading.round
    return {
        "patient": round_.participant.patient,
        "studies": [round_.study] if round_.study_id else [],
        "reason": reading.referral_reason(),
        "summary": reading.referral_summary(),
        "screening": reading,
    }


def from_consult_initial(consult: Any) -> dict[str, Any]:
    """A signed consult's "refer this patient": its patient and studies, and the report's
    recommendation as the reason."""
    studies = list(consult.studies.select_related("patient"))
    signed = None
    report = getattr(consult, "report", None) if hasattr(consult, "report") else None
    if report is not None:
        signed = report.versions.filter(signed_at__isnull=False).order_by("-number").first()
    return {
        "patient": studies[0].patient if studies else None,
        "studies": studies,
        "reason": signed.recommendation if signed is not None else "",
        "summary": signed.impression if signed is not None else "",
        "consult": consult,
    }
