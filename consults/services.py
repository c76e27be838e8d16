"""Every write to a consult. One keyword-only, atomic function per move of the workflow.

Each move: lock the row, check the move against consults.models.TRANSITIONS for the
acting party (consults.access.parties_of), change the row, log a ConsultTransition,
write one audit event, and leave e-mail to transaction.on_commit. Access to the studies
is granted and revoked only through imaging.grants. In-app notifications are rows
written in the same transaction, so a notice exists exactly when its move happened.
`by` is the acting principal (alliance.access.Principal, as the view resolved it for the
request), or None for the system (the deadline job).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from alliance import audit, reauth
from alliance.access import AccessDenied, Principal, institution_admins_of, settings_of
from consults import access, clock, hl7, priorities, tasks  # tasks names services only when one runs
from consults.models import (
    CLOSED_STATUSES,
    PRIORITY_RANK,
    TRANSITIONS,
    Consult,
    ConsultTransition,
    Message,
    Notification,
    Party,
    Priority,
    PriorityPolicy,
    Report,
    ReportReview,
    ReportTemplate,
    ReportVersion,
    Status,
)
from imaging import films, grants, worklist
from imaging.grants import Grantee
from imaging.models import ScheduledStep
from imaging.routing import services as routing

T = TypeVar("T")


def _set(value: T | None) -> T:
    """A field the workflow guarantees in this state (the owner of an accepted case, the
    clock of a requested one); None here is a broken invariant, not a user error."""
    assert value is not None
    return value


class IllegalTransition(Exception):
    """The consult is not in a state that allows the move; nothing was changed."""


# --- the machinery shared by every move -------------------------------------------------


def locked(consult: Consult) -> Consult:
    """Lock the row, then read it afresh: a join read under the lock could show the
    related rows as they were before a concurrent move (PostgreSQL re-checks only the row).
    Every write to a consult starts here (consults.critical's too)."""
    Consult.objects.select_for_update().filter(pk=consult.pk).values_list("pk", flat=True).get()
    return Consult.objects.select_related(
        "pool__institution", "specialist__user", "owner__user", "requester__user", "requesting_institution"
    ).get(pk=consult.pk)


def _user(by: Principal | None) -> Any:
    return by.user if by is not None else None


def _actor(by: Principal | None) -> audit.Actor:
    return by.actor if by is not None else audit.SYSTEM


def _check(consult: Consult, action: str, by: Principal | None) -> str:
    """Refuse the move unless the acting party and the current status allow it."""
    move = TRANSITIONS[action]
    parties = {Party.SYSTEM} if by is None else access.parties_of(by, consult)
    if not move.parties & parties:
        raise AccessDenied(_("You may not do this to consult #%(id)s.") % {"id": consult.pk})
    if consult.status not in move.sources:
        raise IllegalTransition(
            _("Consult #%(id)s is %(status)s; this is only possible when it is %(allowed)s.")
            % {
                "id": consult.pk,
                "status": consult.get_status_display(),
                "allowed": ", ".join(str(Status(s).label) for s in move.sources),
            }
        )
    return consult.status


def audit_read(request: Any, consult: Consult, action: str = "consult.view") -> None:
    """The audit event of a page or API call that showed the consult (or its report) to the user,
    committed as a read's (audit.record_read)."""
    audit.record_read(
        actor=audit.actor_of(request),
        action=action,
        object_type="consult",
        object_id=consult.pk,
        patient=consult.audit_patient,
        basis=consult.basis,
        source=audit.source_of(request),
    )


def _log(consult: Consult, action: str, from_status: str, by: Principal | None, at: datetime, reason: str = "") -> None:
    ConsultTransition.objects.create(
        consult=consult,
        action=action,
        from_status=from_status,
        to_status=consult.status,
        by=_user(by),
        at=at,
        reason=reason,
    )
    audit.record(
        actor=_actor(by),
        action=f"consult.{action}",
        object_type="consult",
        object_id=consult.pk,
        patient=consult.audit_patient,
        basis=consult.basis,
        detail={"from": from_status, "to": consult.status, "reason": reason},
    )


def notify(consult: Consult, users: Iterable[Any], verb: str, at: datetime, by: Principal | None = None) -> None:
    """A notice for every user concerned except the one who acted; e-mail after commit (the
    one way a consult's notices are made, consults.critical's too)."""
    acting = by.user_id if by is not None else None
    targets = {u.pk: u for u in users if u is not None and u.pk != acting}
    rows = Notification.objects.bulk_create(
        Notification(user_id=pk, consult=consult, verb=verb, created_at=at) for pk in targets
    )
    ids = [n.pk for n in rows]

    def queue_emails() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.send_notification_emails.delay(ids)

    if ids:
        # robust: with the broker away the action still answers; the rows are the outbox
        # and tasks.send_unsent_emails mails them once it is back.
        transaction.on_commit(queue_emails, robust=True)


def _candidate_users(consult: Consult) -> list[Any]:
    """Who may claim: the named specialist, or every active member of the pool once pool-wide."""
    users = [_set(consult.specialist).user] if consult.specialist_id else []
    if consult.pool_id and (consult.specialist_id is None or consult.widened_at):
        users += [d.user for d in _set(consult.pool).members.filter(active=True).select_related("user")]
    return users


def _receiving_admins(consult: Consult) -> list[Any]:
    institution_id = access.receiving_institution_id(consult)
    return [d.user for d in institution_admins_of(institution_id)] if institution_id else []


def acting_doctor(by: Principal) -> Any:
    """The doctor who acts; refused for anyone else."""
    doctor = by.doctor
    if doctor is None:
        raise AccessDenied(_("Only an active doctor may act on consults."))
    return doctor


def _required(value: str, field: str, message: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError({field: message})
    return value


def _grant_case(consult: Consult, grantee: Grantee, by: Principal | None) -> None:
    for study in consult.studies.select_related("patient"):
        grants.grant_study(study=study, grantee=grantee, basis=consult.basis, by=_actor(by), write=True)


def _revoke_case(consult: Consult, by: Principal | None) -> None:
    grants.revoke_grants(basis=consult.basis, by=_actor(by))


def _candidate_grantees(consult: Consult) -> list[Grantee]:
    """Who may claim, as grantees: the named specialist, and the pool once the case is pool-wide."""
    grantees = [Grantee(user=_set(consult.specialist).user)] if consult.specialist_id else []
    if consult.pool_id and (consult.specialist_id is None or consult.widened_at):
        grantees.append(Grantee.pool(_set(consult.pool)))
    return grantees


def _reviewers(consult: Consult) -> list[Any]:
    """The active reviewers of the consult's pool when it has two-level sign-off; else nobody."""
    pool = consult.pool
    if pool is None or not pool.two_level_signoff:
        return []
    return [d.user for d in pool.reviewers.filter(active=True).select_related("user")]


def _reader_grantees(consult: Consult) -> list[Grantee]:
    """Who reads a claimed case's images: the owner, and the pool's reviewers under two-level sign-off."""
    owner = _set(consult.owner).user
    return [Grantee(user=owner), *(Grantee(user=u) for u in _reviewers(consult) if u.pk != owner.pk)]


def _narrow_case(consult: Consult, grantees: list[Grantee], by: Principal | None) -> None:
    """The case's images go to exactly these grantees (the claimer; or the candidates again)."""
    grants.narrow_grants(
        basis=consult.basis, studies=consult.studies.select_related("patient"), grantees=grantees, by=_actor(by)
    )


def _close_case(consult: Consult, by: Principal | None, now: datetime) -> None:
    """The reader keeps read-only access for the alliance's reader_access_days, then none."""
    days = settings_of(consult.requesting_institution.alliance_id).reader_access_days
    grants.close_case_grants(basis=consult.basis, read_until=now + timedelta(days=days), by=_actor(by))


# --- the request ------------------------------------------------------------------------


def _validate_target(by: Principal, pool: Any, specialist: Any) -> Any:
    if pool is None and specialist is None:
        raise ValidationError({"pool": _("Choose a specialist pool or a named specialist.")})
    pools, specialists = access.consult_targets_for(by)
    if pool is not None and not pools.filter(pk=pool.pk).exists():
        raise ValidationError({"pool": _("This pool does not take consults from your alliance.")})
    if specialist is not None and not specialists.filter(pk=specialist.pk).exists():
        raise ValidationError({"specialist": _("This doctor is not an active specialist of your alliance.")})
    if pool is None:
        # A named request falls back to the specialist's desk when it is widened at a deadline.
        pool = specialist.pools.filter(active=True, institution_id=specialist.institution_id).first()
    return pool


def _validate_studies(by: Principal, studies: Iterable[Any]) -> list[Any]:
    studies = list(studies)
    if not studies:
        raise ValidationError({"studies": _("Attach at least one study.")})
    allowed = set(access.studies_requestable_by(by).filter(pk__in=[s.pk for s in studies]).values_list("pk", flat=True))
    if any(s.pk not in allowed for s in studies):
        raise ValidationError({"studies": _("You may only attach your own institution's studies.")})
    return studies


@transaction.atomic
def consult_create(
    *,
    by: Principal,
    studies: Iterable[Any],
    question: str,
    history: str = "",
    priority: str = Priority.ROUTINE,
    pool: Any = None,
    specialist: Any = None,
    second_opinion_of: Consult | None = None,
) -> Consult:
    """A draft request: the requester's own institution's studies, a question, a target."""
    doctor = acting_doctor(by)
    if not access.may_request_consult(by):
        raise AccessDenied(_("Only a clinician may request a consult."))
    if priority not in Priority.values:
        raise ValidationError({"priority": _("Choose routine, urgent, ASAP or STAT.")})
    studies = _validate_studies(by, studies)
    question = _required(question, "question", _("Write the clinical question."))
    now = clock.now()
    consult = Consult.objects.create(
        requester=doctor,
        requesting_institution_id=doctor.institution_id,
        question=question,
        history=(history or "").strip(),
        priority=priority,
        priority_rank=PRIORITY_RANK[Priority(priority)],
        modality=studies[0].principal_modality,
        pool=_validate_target(by, pool, specialist),
        specialist=specialist,
        second_opinion_of=second_opinion_of,
        created_at=now,
    )
    consult.studies.set(studies)
    _log(consult, "create", "", by, now)
    return consult


def _start_clock(consult: Consult, now: datetime) -> None:
    deadline, claim_timeout = priorities.policy_for(consult.requesting_institution.alliance_id, consult.priority)
    consult.requested_at = now
    consult.deadline_seconds = int(deadline.total_seconds())
    consult.claim_timeout_seconds = int(claim_timeout.total_seconds())
    consult.due_at = now + deadline
    consult.claim_due_at = now + claim_timeout
    consult.remind_50_at = now + deadline * 0.5
    consult.remind_80_at = now + deadline * 0.8
    consult.reminded_50 = consult.reminded_80 = False


@transaction.atomic
def consult_request(*, consult: Consult, by: Principal) -> Consult:
    """Send the draft: the target gets write access to exactly its studies; the clock starts."""
    consult = locked(consult)
    previous = _check(consult, "request", by)
    now = clock.now()
    consult.status = Status.REQUESTED
    _start_clock(consult, now)
    consult.save()
    grantee = Grantee(user=_set(consult.specialist).user) if consult.specialist_id else Grantee.pool(_set(consult.pool))
    _grant_case(consult, grantee, by)
    _log(consult, "request", previous, by, now)
    notify(consult, _candidate_users(consult), "request", now, by)
    _route_after_commit(consult)
    return consult


def routing_case(consult: Consult) -> routing.Case:
    """The consult as imaging's routing rules see it."""
    pool = consult.pool
    receiving = pool.institution if pool is not None else _set(consult.specialist).institution
    return routing.Case(consult.basis, "consult", consult.requesting_institution, receiving, pool)


def _route_after_commit(consult: Consult) -> None:
    """The routing rules of both sides fire once the request is committed (imaging.routing)."""

    def route_requested_case() -> None:  # named: a robust on_commit logs its callback's __qualname__
        routing.case_requested(case=routing_case(consult), studies=consult.studies.select_related("patient"))

    transaction.on_commit(route_requested_case, robust=True)


def consult_route(*, consult: Consult, by: Principal, destination: Any) -> int:
    """The receiving side sends the case's studies to one of its destinations (its PACS); how
    many studies were queued. Its devices may see them while the case's access lasts."""
    if not access.may_route_consult(by, consult):
        raise AccessDenied(_("You may not send the studies of consult #%(id)s.") % {"id": consult.pk})
    if destination.institution_id != by.institution_id:
        raise AccessDenied(_("Choose a destination of your institution."))
    items = routing.route_case(
        by=by, case=routing_case(consult), studies=consult.studies.all(), destination=destination
    )
    return len(items)


# --- the specialist side ----------------------------------------------------------------


@transaction.atomic
def consult_claim(*, consult: Consult, by: Principal) -> Consult:
    """One reader per case: the row lock makes the second of two simultaneous claims fail."""
    consult = locked(consult)
    if consult.owner_id is not None and Party.CANDIDATE in access.parties_of(by, consult):
        raise IllegalTransition(
            _("Consult #%(id)s was already claimed by %(owner)s.") % {"id": consult.pk, "owner": consult.owner}
        )
    previous = _check(consult, "claim", by)
    now = clock.now()
    consult.status = Status.ACCEPTED
    consult.owner = acting_doctor(by)
    consult.claimed_at = now
    consult.claim_due_at = now + timedelta(seconds=consult.claim_timeout_seconds)
    consult.save()
    _narrow_case(consult, _reader_grantees(consult), by)
    _log(consult, "claim", previous, by, now)
    notify(consult, [consult.requester.user], "claim", now, by)
    return consult


@transaction.atomic
def consult_reject(*, consult: Consult, by: Principal, reason: str) -> Consult:
    consult = locked(consult)
    previous = _check(consult, "reject", by)
    reason = _required(reason, "reason", _("Say why the consult is declined."))
    now = clock.now()
    consult.status = Status.REJECTED
    consult.reason = reason
    consult.save()
    _revoke_case(consult, by)
    _log(consult, "reject", previous, by, now, reason)
    notify(consult, [consult.requester.user], "reject", now, by)
    return consult


def _widen(consult: Consult, by: Principal | None, now: datetime) -> None:
    """A named request opens to the specialist's whole pool (deadline escalation)."""
    if consult.widened_at is not None:
        return
    consult.widened_at = now
    if consult.specialist_id and consult.pool_id:
        _grant_case(consult, Grantee.pool(_set(consult.pool)), by)


@transaction.atomic
def consult_release(*, consult: Consult, by: Principal | None = None, reason: str = "", widen: bool = False) -> Consult:
    """Back to the pool: by the owner, the receiving institution's admin, or (by=None) the deadline job."""
    consult = locked(consult)
    previous = _check(consult, "release", by)
    now = clock.now()
    former_owner = _set(consult.owner).user
    consult.status = Status.REQUESTED
    consult.owner = None
    consult.claim_due_at = now + timedelta(seconds=consult.claim_timeout_seconds)
    if widen:
        consult.widened_at = consult.widened_at or now
    consult.save()
    _narrow_case(consult, _candidate_grantees(consult), by)
    _log(consult, "release", previous, by, now, reason)
    notify(consult, [former_owner, consult.requester.user, *_candidate_users(consult)], "release", now, by)
    return consult


@transaction.atomic
def consult_start_report(*, consult: Consult, by: Principal) -> ReportVersion:
    """The owner starts the report: an empty draft (a template is applied only when the reader picks one)."""
    consult = locked(consult)
    previous = _check(consult, "start_report", by)
    now = clock.now()
    consult.status = Status.IN_PROGRESS
    consult.save()
    report, _created = Report.objects.get_or_create(consult=consult)
    draft = report.versions.filter(signed_at__isnull=True).first()
    if draft is None:
        draft = ReportVersion.objects.create(
            report=report, number=report.versions.count() + 1, author=_set(consult.owner), updated_at=now
        )
    _log(consult, "start_report", previous, by, now)
    notify(consult, [consult.requester.user], "start_report", now, by)
    return draft


def _draft_of(consult: Consult) -> ReportVersion:
    draft = (
        ReportVersion.objects.select_for_update()
        .filter(report__consult=consult, signed_at__isnull=True)
        .order_by("-number")
        .first()
    )
    if draft is None:
        raise IllegalTransition(_("Consult #%(id)s has no report draft.") % {"id": consult.pk})
    return draft


@transaction.atomic
def consult_save_draft(
    *, consult: Consult, by: Principal, findings: str, impression: str, recommendation: str = ""
) -> ReportVersion:
    """Autosave of the report draft; a signed version is never written again."""
    consult = locked(consult)
    _check(consult, "save_draft", by)
    draft = _draft_of(consult)
    draft.findings, draft.impression, draft.recommendation = findings, impression, recommendation
    draft.updated_at = clock.now()
    draft.save(update_fields=["findings", "impression", "recommendation", "updated_at"])
    audit.record(
        actor=by.actor,
        action="consult.save_draft",
        object_type="consult",
        object_id=consult.pk,
        patient=consult.audit_patient,
        basis=consult.basis,
        detail={"version": draft.number},
    )
    return draft


@transaction.atomic
def consult_hold(*, consult: Consult, by: Principal, question: str) -> Consult:
    """The owner asks the requester; the deadline clock pauses until the answer."""
    consult = locked(consult)
    previous = _check(consult, "hold", by)
    question = _required(question, "question", _("Write the question for the requester."))
    now = clock.now()
    consult.status = Status.ON_HOLD
    consult.paused_since = now
    consult.save()
    Message.objects.create(consult=consult, author=_set(consult.owner), body=question, created_at=now)
    _log(consult, "hold", previous, by, now, question)
    notify(consult, [consult.requester.user], "hold", now, by)
    return consult


@transaction.atomic
def consult_answer(*, consult: Consult, by: Principal, answer: str) -> Consult:
    """The requester answers; every deadline moves later by the time spent on hold."""
    consult = locked(consult)
    previous = _check(consult, "answer", by)
    answer = _required(answer, "answer", _("Write the answer."))
    now = clock.now()
    paused = now - _set(consult.paused_since)
    consult.paused_seconds += int(paused.total_seconds())
    for field in ("due_at", "claim_due_at", "remind_50_at", "remind_80_at"):
        setattr(consult, field, getattr(consult, field) + paused)
    consult.paused_since = None
    consult.status = Status.IN_PROGRESS
    consult.save()
    Message.objects.create(consult=consult, author=consult.requester, body=answer, created_at=now)
    _log(consult, "answer", previous, by, now, answer)
    notify(consult, [_set(consult.owner).user], "answer", now, by)
    return consult


@transaction.atomic
def consult_sign(
    *,
    consult: Consult,
    by: Principal,
    findings: str | None = None,
    impression: str | None = None,
    recommendation: str | None = None,
) -> ReportVersion:
    """Sign the draft (saving the given text first): immutable from now on; access drops to read-only.

    Under the pool's two-level sign-off a junior reader's signature is preliminary: the case
    waits for a reviewer (consult_verify, consult_return_report) and is final only then.
    Pages and the API sign through consult_sign_confirmed, which asks for the password first.
    """
    consult = locked(consult)
    action = "sign_preliminary" if access.needs_review(consult) else "sign"
    previous = _check(consult, action, by)
    draft = _draft_of(consult)
    for field, value in (("findings", findings), ("impression", impression), ("recommendation", recommendation)):
        if value is not None:
            setattr(draft, field, value)
    check_signable(impression=draft.impression)
    now = clock.now()
    draft.signed_by, draft.signed_at, draft.updated_at = consult.owner, now, now
    draft.preliminary = action == "sign_preliminary"
    draft.save()
    if draft.preliminary:
        consult.status = Status.PRELIMINARY
        consult.save()
        _log(consult, action, previous, by, now)
        notify(consult, [consult.requester.user, *_reviewers(consult)], action, now, by)
        return draft
    _finalise(consult, by, now)
    _log(consult, "sign", previous, by, now)
    notify(consult, [consult.requester.user], "sign", now, by)
    return draft


def check_signable(*, impression: str) -> None:
    """What a report needs before it may be signed (asked again by consult_sign)."""
    _required(impression, "impression", _("A signed report needs an impression."))


def _finalise(consult: Consult, by: Principal, now: datetime) -> None:
    """The report is final (signed, or verified under two-level sign-off): the case is done."""
    consult.status = Status.COMPLETED
    consult.completed_at = now
    consult.save()
    _close_case(consult, by, now)
    # The patient's cloud film of the answered case, if the alliance has it made on signing.
    films.film_on_sign(
        case=consult.basis,
        studies=list(consult.studies.select_related("patient")),
        institution=consult.requesting_institution,
        by=by.actor,
    )
    # A hospital PACS that retrieves the study gets the final report with it (PDF and text SR).
    final = ReportVersion.objects.filter(report__consult=consult, signed_at__isnull=False).order_by("-number").first()
    if final is not None:
        _report_into_study_on_commit(final)
        hl7.queue_result(consult, final)


def consult_sign_confirmed(
    *, request: Any, consult: Consult, by: Principal, secret: str, **texts: Any
) -> ReportVersion:
    """The signature a person gives: their password again, then consult_sign.

    The check runs before (outside) the signing transaction, so that a refused attempt stays
    audited and counted toward the sign-in lockout. Raises reauth.IdentityNotConfirmed.
    """
    reauth.confirm_identity(request=request, user=by.user, secret=secret, purpose="consult.sign")
    return consult_sign(consult=consult, by=by, **texts)


def refusal_text(exc: reauth.IdentityNotConfirmed) -> str:
    """Why a password check refused a signature, in words for the reader."""
    texts = {
        "missing": _("Type your password to sign."),
        "wrong": _("Wrong password: nothing was signed."),
        "locked": _("Your account is locked after too many failed sign-ins: nothing was signed."),
    }
    return str(texts.get(exc.reason, texts["wrong"]))


def _preliminary_of(consult: Consult) -> ReportVersion:
    version = ReportVersion.objects.filter(report__consult=consult, signed_at__isnull=False).order_by("-number").first()
    if version is None or not version.preliminary:
        raise IllegalTransition(_("Consult #%(id)s has no preliminary report.") % {"id": consult.pk})
    return version


@transaction.atomic
def consult_verify(*, consult: Consult, by: Principal) -> ReportVersion:
    """A reviewer of the pool approves the junior's preliminary report: it is final now."""
    consult = locked(consult)
    previous = _check(consult, "verify", by)
    version = _preliminary_of(consult)
    now = clock.now()
    reviewer = acting_doctor(by)
    ReportReview.objects.create(version=version, reviewer=reviewer, outcome=ReportReview.Outcome.APPROVED, at=now)
    _finalise(consult, by, now)
    _log(consult, "verify", previous, by, now)
    notify(consult, [consult.requester.user, _set(consult.owner).user], "verify", now, by)
    return version


def consult_verify_confirmed(*, request: Any, consult: Consult, by: Principal, secret: str) -> ReportVersion:
    """Verifying is the final signature: the reviewer's password again, then consult_verify."""
    reauth.confirm_identity(request=request, user=by.user, secret=secret, purpose="consult.verify")
    return consult_verify(consult=consult, by=by)


@transaction.atomic
def consult_return_report(*, consult: Consult, by: Principal, comments: str) -> ReportVersion:
    """A reviewer returns the preliminary report with comments; the junior gets a new draft of it."""
    consult = locked(consult)
    previous = _check(consult, "return_report", by)
    comments = _required(comments, "comments", _("Say what the reader should change."))
    version = _preliminary_of(consult)
    now = clock.now()
    ReportReview.objects.create(
        version=version, reviewer=acting_doctor(by), outcome=ReportReview.Outcome.RETURNED, comments=comments, at=now
    )
    draft = ReportVersion.objects.create(
        report_id=version.report_id,
        number=version.number + 1,
        findings=version.findings,
        impression=version.impression,
        recommendation=version.recommendation,
        author=_set(consult.owner),
        updated_at=now,
    )
    consult.status = Status.IN_PROGRESS
    consult.save()
    _log(consult, "return_report", previous, by, now, comments)
    notify(consult, [_set(consult.owner).user], "return_report", now, by)
    return draft


def _report_into_study_on_commit(version: ReportVersion) -> None:
    """Once the signing commits, the report goes into the case's studies as DICOM (consults.report_objects)."""

    def queue_report_into_studies() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.report_into_studies.delay(version.pk)

    # robust: with the broker away the signing still stands; the report can be written later.
    transaction.on_commit(queue_report_into_studies, robust=True)


@transaction.atomic
def consult_addendum(*, consult: Consult, by: Principal, text: str) -> ReportVersion:
    """A new signed version with the addendum; earlier versions stay as they were."""
    consult = locked(consult)
    previous = _check(consult, "addendum", by)
    text = _required(text, "addendum", _("Write the addendum."))
    last = ReportVersion.objects.filter(report__consult=consult, signed_at__isnull=False).order_by("-number").first()
    if last is None:
        raise IllegalTransition(_("Consult #%(id)s has no signed report.") % {"id": consult.pk})
    now = clock.now()
    version = ReportVersion.objects.create(
        report_id=last.report_id,
        number=last.number + 1,
        findings=last.findings,
        impression=last.impression,
        recommendation=last.recommendation,
        addendum=text,
        author=_set(consult.owner),
        updated_at=now,
        signed_by=consult.owner,
        signed_at=now,
    )
    _log(consult, "addendum", previous, by, now, text)
    notify(consult, [consult.requester.user], "addendum", now, by)
    hl7.queue_result(consult, version)
    _report_into_study_on_commit(version)  # the PACS that retrieves the study gets the addendum too
    return version


# --- closing without a report -----------------------------------------------------------


@transaction.atomic
def consult_cancel(*, consult: Consult, by: Principal, reason: str) -> Consult:
    """The requester withdraws; access granted for the case ends at once."""
    consult = locked(consult)
    previous = _check(consult, "cancel", by)
    reason = _required(reason, "reason", _("Say why the consult is cancelled."))
    now = clock.now()
    concerned = [_set(consult.owner).user] if consult.owner_id else _candidate_users(consult)
    consult.status = Status.CANCELLED
    consult.reason = reason
    consult.save()
    if previous != Status.DRAFT:
        _revoke_case(consult, by)
    _log(consult, "cancel", previous, by, now, reason)
    notify(consult, concerned if previous != Status.DRAFT else [], "cancel", now, by)
    return consult


@transaction.atomic
def consult_fail(*, consult: Consult, by: Principal, reason: str) -> Consult:
    """The owner cannot report (e.g. images unreadable); the specialist side keeps read-only access."""
    consult = locked(consult)
    previous = _check(consult, "fail", by)
    reason = _required(reason, "reason", _("Say why no report can be written."))
    now = clock.now()
    consult.status = Status.FAILED
    consult.reason = reason
    consult.save()
    _close_case(consult, by, now)
    _log(consult, "fail", previous, by, now, reason)
    notify(consult, [consult.requester.user], "fail", now, by)
    return consult


@transaction.atomic
def consult_second_opinion(
    *, consult: Consult, by: Principal, pool: Any = None, specialist: Any = None, question: str = "", priority: str = ""
) -> Consult:
    """A new consult on the same studies, linked to the completed one, sent elsewhere."""
    consult = locked(consult)
    previous = _check(consult, "second_opinion", by)
    if specialist is not None and specialist.pk == consult.owner_id:
        raise ValidationError({"specialist": _("A second opinion goes to another specialist.")})
    if specialist is None and pool is not None and pool.pk == consult.pool_id:
        raise ValidationError({"pool": _("A second opinion goes to another pool or a named specialist.")})
    new = consult_create(
        by=by,
        studies=consult.studies.all(),
        question=question or consult.question,
        history=consult.history,
        priority=priority or consult.priority,
        pool=pool,
        specialist=specialist,
        second_opinion_of=consult,
    )
    new = consult_request(consult=new, by=by)
    _log(consult, "second_opinion", previous, by, clock.now(), f"#{new.pk}")
    return new


# --- exams the case asks for (imaging.worklist) -----------------------------------------


def _patient_of(consult: Consult) -> Any:
    """The patient of the case: that of its first study, as its FHIR ServiceRequest names it."""
    study = consult.studies.select_related("patient__issuer").order_by("pk").first()
    if study is None:
        raise ValidationError({"studies": _("The case has no study, so no patient to examine.")})
    return study.patient


@transaction.atomic
def consult_order_exam(
    *,
    consult: Consult,
    by: Principal,
    modality: str,
    scheduled_at: datetime,
    station_ae: str = "",
    procedure_description: str = "",
) -> ScheduledStep:
    """The reader (or the requester) asks the requesting institution to perform an exam of the
    patient: a step on its modality worklist, linked to the case, with an accession number made
    here. The other party is told; the study it brings joins the case (consult_exam_arrived)."""
    consult = locked(consult)
    if not access.may_order_exam(by, consult):
        raise AccessDenied(_("Only the reader or the requester of an open case asks for an exam."))
    institution = consult.requesting_institution
    station_ae = (station_ae or "").strip().upper()
    if station_ae and not institution.devices.filter(ae_title=station_ae, active=True).exists():
        raise ValidationError({"station_ae": _("Choose a station of %(name)s.") % {"name": institution.name}})
    patient = _patient_of(consult)
    step = worklist.schedule_for_patient(
        by=by.actor,
        institution=institution,
        patient=patient,
        accession_number=worklist.new_accession_number(),
        modality=modality,
        scheduled_at=scheduled_at,
        station_ae=station_ae,
        procedure_description=procedure_description,
        source=ScheduledStep.Source.CONSULT,
        consult_id=consult.pk,
    )
    now = clock.now()
    _log(consult, "order_exam", consult.status, by, now, _exam_note(step))
    notify(consult, [consult.requester.user, consult.owner.user if consult.owner else None], "order_exam", now, by)
    return step


def _exam_note(step: ScheduledStep) -> str:
    return " · ".join(filter(None, [step.modality, step.procedure_description, step.accession_number]))


@transaction.atomic
def consult_exam_arrived(*, step: ScheduledStep) -> None:
    """imaging.worklist's hook: the study of an exam a case asked for has come. It joins the
    case (unless the case was closed without a reading), opened to whoever reads the case's
    other studies now, and both parties are told. Safe to call twice."""
    if step.consult_id is None or step.study_id is None:
        return
    found = Consult.objects.filter(pk=step.consult_id, requesting_institution_id=step.institution_id).first()
    if found is None:
        return
    consult = locked(found)
    study = _set(step.study)
    if consult.status in CLOSED_STATUSES or consult.studies.filter(pk=study.pk).exists():
        return
    consult.studies.add(study)
    grants.extend_case_grants(basis=consult.basis, study=study, by=audit.SYSTEM)
    now = clock.now()
    _log(consult, "exam_arrived", consult.status, None, now, _exam_note(step))
    notify(consult, [consult.requester.user, consult.owner.user if consult.owner else None], "exam_arrived", now)


# --- the thread and the bell ------------------------------------------------------------


@transaction.atomic
def consult_post_message(*, consult: Consult, by: Principal, body: str) -> Message:
    consult = locked(consult)
    if not access.may_post_message(by, consult):
        raise AccessDenied(_("Only the requester and the owner write in an open case's thread."))
    body = _required(body, "body", _("Write a message."))
    now = clock.now()
    message = Message.objects.create(consult=consult, author=acting_doctor(by), body=body, created_at=now)
    audit.record(
        actor=by.actor,
        action="consult.message",
        object_type="consult",
        object_id=consult.pk,
        patient=consult.audit_patient,
        basis=consult.basis,
    )
    other = (
        _set(consult.owner).user
        if consult.requester.user_id == by.user_id and consult.owner_id
        else consult.requester.user
    )
    notify(consult, [other], "message", now, by)
    return message


def notifications_mark_read(*, user: Any, ids: Iterable[int] | None = None) -> int:
    rows = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    return rows.update(read_at=clock.now())


# --- deadlines --------------------------------------------------------------------------


def _remind(consult: Consult, flag: str, verb: str, now: datetime) -> None:
    setattr(consult, flag, True)
    consult.save(update_fields=[flag])
    notify(consult, [_set(consult.owner).user], verb, now)
    audit.record(actor=audit.SYSTEM, action=f"consult.{verb}", object_type="consult", object_id=consult.pk)


def _escalate(consult: Consult, now: datetime) -> str:
    """Past the claim timeout or the deadline: release a stalled claim, widen, tell the admins."""
    breached = _set(consult.due_at) <= now
    was_waiting = consult.status == Status.REQUESTED
    if consult.status == Status.ACCEPTED:
        consult_release(consult=consult, by=None, reason="deadline" if breached else "claim timeout", widen=True)
        consult.refresh_from_db()
    elif consult.status == Status.REQUESTED:
        _widen(consult, None, now)
    verb = "breach" if breached else "widen"
    if breached:
        consult.breached_at = now
    consult.save()
    owner = [_set(consult.owner).user] if consult.owner_id else []
    pool = _candidate_users(consult) if was_waiting else []
    notify(consult, [*_receiving_admins(consult), *owner, *pool], verb, now)
    audit.record(actor=audit.SYSTEM, action=f"consult.{verb}", object_type="consult", object_id=consult.pk)
    return verb


def _deadline_step(pk: int, now: datetime) -> list[str]:
    with transaction.atomic():
        consult = locked(Consult(pk=pk))
        done = []
        if consult.status in (Status.ACCEPTED, Status.IN_PROGRESS):
            if not consult.reminded_50 and _set(consult.remind_50_at) <= now:
                _remind(consult, "reminded_50", "remind_50", now)
                done.append("remind_50")
            if not consult.reminded_80 and _set(consult.remind_80_at) <= now:
                _remind(consult, "reminded_80", "remind_80", now)
                done.append("remind_80")
        stalled = consult.status == Status.ACCEPTED and (
            _set(consult.claim_due_at) <= now or _set(consult.due_at) <= now
        )
        unclaimed = (
            consult.status == Status.REQUESTED and consult.widened_at is None and _set(consult.claim_due_at) <= now
        )
        late = consult.status in (Status.REQUESTED, Status.IN_PROGRESS) and consult.breached_at is None
        if stalled or unclaimed or (late and _set(consult.due_at) <= now):
            done.append(_escalate(consult, now))
        return done


def _due_for_deadline_work(now: datetime) -> list[int]:
    owned = Q(status__in=[Status.ACCEPTED, Status.IN_PROGRESS]) & (
        Q(reminded_50=False, remind_50_at__lte=now) | Q(reminded_80=False, remind_80_at__lte=now)
    )
    stalled = Q(status=Status.ACCEPTED) & (Q(claim_due_at__lte=now) | Q(due_at__lte=now))
    unclaimed = Q(status=Status.REQUESTED, widened_at__isnull=True, claim_due_at__lte=now)
    late = Q(status__in=[Status.REQUESTED, Status.IN_PROGRESS], breached_at__isnull=True, due_at__lte=now)
    return list(Consult.objects.filter(owned | stalled | unclaimed | late).values_list("pk", flat=True))


def consult_check_deadlines(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic job: reminders at 50% and 80%, release and widening at the claim timeout
    or the deadline. On-hold cases are skipped: their clock is paused. Safe to run twice."""
    now = now or clock.now()
    counts: dict[str, int] = {}
    for pk in _due_for_deadline_work(now):
        for what in _deadline_step(pk, now):
            counts[what] = counts.get(what, 0) + 1
    return counts


# --- the alliance's turnaround policy ---------------------------------------------------


@transaction.atomic
def policy_set(*, by: Principal, priority: str, deadline_minutes: int, claim_timeout_minutes: int) -> PriorityPolicy:
    """The alliance admin sets the deadline and claim timeout of one priority for new requests."""
    if not access.may_set_consult_policy(by):
        raise AccessDenied(_("Only an alliance admin sets the turnaround policy."))
    if priority not in Priority.values:
        raise ValidationError({"priority": _("Choose routine, urgent, ASAP or STAT.")})
    if deadline_minutes < 1:
        raise ValidationError({"deadline_minutes": _("The deadline is at least one minute.")})
    if not 1 <= claim_timeout_minutes <= deadline_minutes:
        raise ValidationError({"claim_timeout_minutes": _("The claim timeout is between one minute and the deadline.")})
    alliance = by.alliance
    policy, _created = PriorityPolicy.objects.update_or_create(
        alliance=_set(alliance),
        priority=priority,
        defaults={"deadline_minutes": deadline_minutes, "claim_timeout_minutes": claim_timeout_minutes},
    )
    audit.record(
        actor=by.actor,
        action="consult.policy",
        object_type="alliance",
        object_id=_set(alliance).pk,
        detail={
            "priority": priority,
            "deadline_minutes": deadline_minutes,
            "claim_timeout_minutes": claim_timeout_minutes,
        },
    )
    return policy


@transaction.atomic
def policies_set(*, by: Principal, rows: dict[str, tuple[int, int]]) -> list[PriorityPolicy]:
    """Several priorities at once (the policy page): all are written, or none.

    A row equal to what is in force already is left alone, so the audit log shows changes only.
    Errors name the priority: {"urgent_deadline_minutes": [...]}.
    """
    if not access.may_set_consult_policy(by):
        raise AccessDenied(_("Only an alliance admin sets the turnaround policy."))
    current = {row["priority"]: row for row in priorities.policy_table(by.alliance)}
    errors: dict[str, list[str]] = {}
    changed = []
    for priority, (deadline_minutes, claim_timeout_minutes) in rows.items():
        now = current.get(priority)
        if now and (now["deadline_minutes"], now["claim_timeout_minutes"]) == (deadline_minutes, claim_timeout_minutes):
            continue
        try:
            with transaction.atomic():
                changed.append(
                    policy_set(
                        by=by,
                        priority=priority,
                        deadline_minutes=deadline_minutes,
                        claim_timeout_minutes=claim_timeout_minutes,
                    )
                )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(f"{priority}_{field}", []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return changed


# --- report templates -------------------------------------------------------------------


def _template_fields(name: str, modality: str, body_part: str) -> dict[str, str]:
    return {
        "name": _required(name, "name", _("Name the template.")),
        "modality": _required(modality, "modality", _("Give the modality, e.g. CT.")).upper(),
        "body_part": (body_part or "").strip().upper(),
    }


@transaction.atomic
def report_template_create(
    *,
    alliance: Any,
    name: str,
    modality: str,
    body_part: str = "",
    findings: str = "",
    impression: str = "",
    recommendation: str = "",
    actor: audit.Actor,
) -> ReportTemplate:
    """A starting text for reports of one modality (and body part) across the alliance."""
    template = ReportTemplate.objects.create(
        alliance=alliance,
        findings=findings,
        impression=impression,
        recommendation=recommendation,
        **_template_fields(name, modality, body_part),
    )
    audit.record(
        actor=actor,
        action="consult.template_create",
        object_type="report_template",
        object_id=template.pk,
        detail={"alliance": alliance.pk, "modality": template.modality, "body_part": template.body_part},
    )
    return template


@transaction.atomic
def report_template_save(
    *,
    by: Principal,
    template: ReportTemplate | None = None,
    name: str,
    modality: str,
    body_part: str = "",
    findings: str = "",
    impression: str = "",
    recommendation: str = "",
) -> ReportTemplate:
    """The alliance admin adds a template (template=None) or changes one of their alliance's."""
    if not access.may_manage_report_templates(by):
        raise AccessDenied(_("Only an alliance admin keeps the report templates."))
    texts = {"findings": findings, "impression": impression, "recommendation": recommendation}
    if template is None:
        alliance = _set(by.alliance)
        return report_template_create(
            alliance=alliance,
            name=name,
            modality=modality,
            body_part=body_part,
            actor=by.actor,
            **texts,
        )
    template = access.report_templates_managed_by(by).select_for_update().get(pk=template.pk)
    for field, value in {**_template_fields(name, modality, body_part), **texts}.items():
        setattr(template, field, value)
    template.save()
    audit.record(
        actor=by.actor,
        action="consult.template_update",
        object_type="report_template",
        object_id=template.pk,
        detail={"modality": template.modality, "body_part": template.body_part},
    )
    return template
