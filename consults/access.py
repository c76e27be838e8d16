"""Who the principal is to a consult, which consults it sees and which moves it may make.

One function per decision, given the request's principal (alliance.access.Principal). The
workflow table lives on the model (consults.models.TRANSITIONS); the studies a consult opens
are granted through imaging/grants.py and seen through imaging/access.py.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from alliance.access import IMAGE_STORE, Principal, may_manage_alliance, with_role
from alliance.models import Doctor, Institution, Pool, Role
from consults.models import (
    OPEN_STATUSES,
    OWNED_STATUSES,
    TRANSITIONS,
    UNFINISHED_STATUSES,
    Consult,
    CriticalFinding,
    CriticalResult,
    Party,
    ReportTemplate,
    Status,
)
from imaging import access as imaging_access
from imaging.models import ScheduledStep, Study

CONSULTS_MODULE = "consults"


def _takes_part(principal: Principal) -> bool:
    return principal.doctor is not None and principal.has_module(CONSULTS_MODULE)


def claimable(principal: Principal) -> Q:
    """Consults the principal may claim: named to them, or sent (or widened) to one of their pools."""
    doctor = principal.doctor
    pool_wide = Q(specialist__isnull=True) | Q(widened_at__isnull=False)
    # A pool's cases reach a member only if they were sent (or widened) to it since they joined.
    seated = Q(pk__in=[])
    for pool_id, since in principal.pool_since.items():
        seated |= Q(pool_id=pool_id) & (Q(requested_at__gte=since) | Q(widened_at__gte=since))
    q = seated & pool_wide
    if doctor is not None and doctor.has_role(Role.SPECIALIST):
        q |= Q(specialist_id=doctor.pk)
    return q


def at_receiving_desk(principal: Principal) -> Q:
    """Consults sent to the institution the principal administers (its desk's cases)."""
    if principal.doctor is None or not principal.has_role(Role.INSTITUTION_ADMIN):
        return Q(pk__in=[])
    institution_id = principal.institution_id
    return Q(pool__institution_id=institution_id) | Q(pool__isnull=True, specialist__institution_id=institution_id)


def _reviewed_pools(principal: Principal) -> QuerySet[Pool]:
    """The active pools with two-level sign-off where the principal is a reviewer."""
    if principal.doctor is None or not principal.has_role(Role.SPECIALIST):
        return Pool.objects.none()
    return Pool.objects.filter(reviewers=principal.doctor, two_level_signoff=True, active=True)


def under_review_by(principal: Principal) -> Q:
    """Cases of the pools the principal reviews, from the claim on: what a reviewer may follow.
    The pools are a subquery, so that the worklist stays one round trip per question."""
    if principal.doctor is None or not principal.has_role(Role.SPECIALIST):
        return Q(pk__in=[])
    reviewed = _reviewed_pools(principal).values("pk")
    return Q(pool_id__in=reviewed, status__in=[*OWNED_STATUSES, Status.PRELIMINARY, Status.COMPLETED])


def waiting_for_review_by(principal: Principal) -> Q:
    """Preliminary reports the principal may verify: of a pool they review, written by someone else."""
    doctor = principal.doctor
    if doctor is None:
        return Q(pk__in=[])
    return Q(status=Status.PRELIMINARY) & under_review_by(principal) & ~Q(owner_id=doctor.pk)


def consults_visible_to(principal: Principal) -> QuerySet[Consult]:
    """The requesting institution sees its requests (drafts only their author); the specialist
    side sees what it may claim and what it owns, a pool's reviewers its cases under two-level
    sign-off, the receiving institution's admin its desk's unfinished cases (a preliminary
    report waiting for a reviewer included); after cancel or reject it sees nothing."""
    doctor = principal.doctor
    if doctor is None or not _takes_part(principal):
        return Consult.objects.none()
    q = Q(requester_id=doctor.pk)
    if principal.is_clinical:
        q |= Q(requesting_institution_id=doctor.institution_id) & ~Q(status=Status.DRAFT)
    q |= Q(owner_id=doctor.pk) & ~Q(status__in=[Status.CANCELLED, Status.REJECTED])
    q |= Q(status=Status.REQUESTED) & claimable(principal)
    q |= Q(status__in=UNFINISHED_STATUSES) & at_receiving_desk(principal)
    q |= under_review_by(principal)
    return Consult.objects.filter(q)


def get_consult_for(principal: Principal, pk: Any) -> Consult:
    """The consult if the principal may see it; the same 404 whether it is missing or forbidden."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such consult.") from None
    consult = (
        consults_visible_to(principal)
        .select_related(
            "requester__user", "requesting_institution", "pool__institution", "specialist__user", "owner__user"
        )
        .filter(pk=pk)
        .first()
    )
    if consult is None:
        imaging_access.refuse(principal, "consult", Consult.objects.filter(pk=pk), str(pk), "studies__patient_id")
    return consult


def get_consult_to_claim(principal: Principal, pk: Any) -> Consult:
    """The consult a claim is about: as get_consult_for, and also a case the principal could have
    claimed that another reader has just taken (it left their view), so that the claim is answered
    "already claimed by ..." rather than a 404. Nothing of the case is shown for it but the claimer."""
    try:
        return get_consult_for(principal, pk)
    except Http404:
        if not str(pk).isdigit():
            raise
        claimed = Consult.objects.select_related("pool", "specialist", "owner__user").filter(owner__isnull=False)
        consult = claimed.filter(pk=int(pk)).first()
        if consult is None or Party.CANDIDATE not in parties_of(principal, consult):
            raise
        return consult


def receiving_institution_id(consult: Consult) -> int | None:
    if consult.pool is not None:
        return consult.pool.institution_id
    return consult.specialist.institution_id if consult.specialist is not None else None


def parties_of(principal: Principal, consult: Consult) -> frozenset[str]:
    """Who the principal is to this consult (consults.models.Party values)."""
    doctor = principal.doctor
    if doctor is None or not _takes_part(principal):
        return frozenset()
    parties = set()
    if consult.requester_id == doctor.pk and principal.is_clinical:
        parties.add(Party.REQUESTER)
    if consult.owner_id == doctor.pk:
        parties.add(Party.OWNER)
    if consult.specialist_id == doctor.pk and doctor.has_role(Role.SPECIALIST):
        parties.update({Party.NAMED, Party.CANDIDATE})
    pool_wide = consult.specialist_id is None or consult.widened_at is not None
    sent = max((t for t in (consult.requested_at, consult.widened_at) if t is not None), default=None)
    if pool_wide and principal.in_pool_since(consult.pool_id, sent):
        parties.add(Party.CANDIDATE)
    if doctor.has_role(Role.INSTITUTION_ADMIN) and receiving_institution_id(consult) == doctor.institution_id:
        parties.add(Party.POOL_ADMIN)
    if is_reviewer_of(doctor, consult) and consult.owner_id != doctor.pk:
        parties.add(Party.REVIEWER)  # a reviewer never verifies their own report
    return frozenset(parties)


def is_reviewer_of(doctor: Doctor, consult: Consult) -> bool:
    """Is the doctor a reviewer of the consult's pool while it has two-level sign-off on?"""
    pool = consult.pool
    return pool is not None and pool.two_level_signoff and pool.reviewers.filter(pk=doctor.pk).exists()


def needs_review(consult: Consult) -> bool:
    """Is the owner's signature preliminary: two-level sign-off on, and the owner no reviewer?"""
    pool, owner = consult.pool, consult.owner
    return pool is not None and owner is not None and pool.two_level_signoff and not is_reviewer_of(owner, consult)


def may_act(principal: Principal, consult: Consult, action: str) -> bool:
    """May the principal make this move now (right party and right status)?"""
    move = TRANSITIONS[action]
    return (
        consult.status in move.sources
        and bool(move.parties & parties_of(principal, consult))
        and _signature_fits(action, consult)
    )


def _signature_fits(action: str, consult: Consult) -> bool:
    """Of the two signatures, only the one the pool's sign-off asks of the owner applies."""
    if action in ("sign", "sign_preliminary"):
        return (action == "sign_preliminary") == needs_review(consult)
    return True


def actions_for(principal: Principal, consult: Consult) -> list[str]:
    """Every move the principal may make on the consult now (for the case page and the API)."""
    parties = parties_of(principal, consult)
    return [
        a
        for a, m in TRANSITIONS.items()
        if a != "create" and consult.status in m.sources and m.parties & parties and _signature_fits(a, consult)
    ]


def may_sign(principal: Principal, consult: Consult) -> bool:
    """May the principal sign the consult's report now: its owner while the report is in
    progress, with the signature the pool's sign-off asks of them (preliminary or final)."""
    return may_act(principal, consult, "sign_preliminary" if needs_review(consult) else "sign")


def may_claim(principal: Principal, consult: Consult) -> bool:
    return may_act(principal, consult, "claim")


def may_set_consult_policy(principal: Principal) -> bool:
    """The turnaround policy (deadline and claim timeout per priority) belongs to the alliance admin."""
    return may_manage_alliance(principal)


def may_manage_report_templates(principal: Principal) -> bool:
    """Report templates are shared by the whole alliance; its admin keeps them."""
    return may_manage_alliance(principal)


def report_templates_managed_by(principal: Principal) -> QuerySet[ReportTemplate]:
    if not may_manage_report_templates(principal):
        return ReportTemplate.objects.none()
    return ReportTemplate.objects.filter(alliance=principal.alliance)


def may_request_consult(principal: Principal) -> bool:
    """Any active doctor with a clinical role may ask for a reading of their institution's studies."""
    return principal.is_clinical and principal.has_module(CONSULTS_MODULE)


def may_post_message(principal: Principal, consult: Consult) -> bool:
    """The thread is between the requester and the owner while the case is open."""
    return consult.status in OPEN_STATUSES and bool({Party.REQUESTER, Party.OWNER} & parties_of(principal, consult))


def may_read_report(principal: Principal, consult: Consult) -> bool:
    """A signed report is read by those who see the case (and its draft by the owner only)."""
    return consults_visible_to(principal).filter(pk=consult.pk).exists()


def may_save_key_objects(principal: Principal, study: Study) -> bool:
    """Key images and measurements are saved into a study the principal may read, by its
    reader on an open consult that includes it, by the reader of its screening CT, or by a
    doctor of the owning institution."""
    if principal.doctor is None or not imaging_access.studies_visible_to(principal).filter(pk=study.pk).exists():
        return False
    if imaging_access.may_mark_own_study(principal, study):
        return True
    from consults.screening.access import may_measure  # the screening app's own rule

    if may_measure(principal, study):
        return True
    return (
        _takes_part(principal)
        and Consult.objects.filter(owner_id=principal.doctor.pk, studies=study, status__in=OPEN_STATUSES).exists()
    )


def studies_requestable_by(principal: Principal) -> QuerySet[Study]:
    """Studies a doctor may attach to a consult: visible to them and owned by their institution."""
    if principal.doctor is None or not may_request_consult(principal):
        return Study.objects.none()
    return imaging_access.studies_visible_to(principal).filter(institution_id=principal.doctor.institution_id)


def consult_targets_for(principal: Principal) -> tuple[QuerySet[Pool], QuerySet[Doctor]]:
    """Pools and specialists of the principal's alliance that a consult may be sent to."""
    alliance = principal.alliance
    if alliance is None:
        return Pool.objects.none(), Doctor.objects.none()
    live = {"institution__alliance": alliance, "institution__active": True}
    receiving = Institution.objects.filter(alliance=alliance, active=True)
    receiving_ids = [i.pk for i in receiving.only("pk", "modules") if CONSULTS_MODULE in i.modules]
    pools = Pool.objects.filter(active=True, institution_id__in=receiving_ids, **live).select_related("institution")
    doctors = with_role(Doctor.objects.filter(active=True, institution_id__in=receiving_ids, **live), Role.SPECIALIST)
    return pools, doctors.select_related("user", "institution")


def second_opinion_targets_for(principal: Principal, consult: Consult) -> tuple[QuerySet[Pool], QuerySet[Doctor]]:
    """Where a second opinion on the consult may go: any target but the first reader, and not
    the first pool (it would route the case back to the same desk)."""
    pools, doctors = consult_targets_for(principal)
    if consult.pool_id is not None:
        pools = pools.exclude(pk=consult.pool_id)
    if consult.owner_id is not None:
        doctors = doctors.exclude(pk=consult.owner_id)
    return pools, doctors


def may_give_film(principal: Principal, consult: Consult) -> bool:
    """The requesting institution gives its patient the film of a signed consult."""
    from imaging import films

    return (
        consult.status == Status.COMPLETED
        and principal.institution_id == consult.requesting_institution_id
        and films.may_make_case_film(principal)
    )


# --- critical results (危急值) ------------------------------------------------------------

# The reader flags while writing the report, while waiting for an answer, and after signing.
CRITICAL_FLAG_STATUSES = (Status.IN_PROGRESS, Status.ON_HOLD, Status.COMPLETED)


def may_flag_critical(principal: Principal, consult: Consult) -> bool:
    """Only the reader of the case (its owner) flags a critical finding on it."""
    return consult.status in CRITICAL_FLAG_STATUSES and Party.OWNER in parties_of(principal, consult)


def critical_results_acknowledgeable_by(principal: Principal) -> QuerySet[CriticalResult]:
    """Flags the principal may read back: a clinician of the requesting institution who sees the case."""
    doctor = principal.doctor
    if doctor is None or not principal.is_clinical:
        return CriticalResult.objects.none()
    visible = consults_visible_to(principal).filter(requesting_institution_id=doctor.institution_id)
    return CriticalResult.objects.filter(consult__in=visible.values("pk"))


def may_acknowledge_critical(principal: Principal, result: CriticalResult) -> bool:
    return critical_results_acknowledgeable_by(principal).filter(pk=result.pk).exists()


def may_manage_critical_findings(principal: Principal) -> bool:
    """The list of critical findings is the alliance's, kept by its admin."""
    return may_manage_alliance(principal)


def critical_findings_managed_by(principal: Principal) -> QuerySet[CriticalFinding]:
    if not may_manage_critical_findings(principal):
        return CriticalFinding.objects.none()
    return CriticalFinding.objects.filter(alliance=principal.alliance)


def critical_findings_for(consult: Consult) -> QuerySet[CriticalFinding]:
    """The entries of the list a reader may pick on this consult: its alliance's, its modality's, in use."""
    return CriticalFinding.objects.filter(
        alliance_id=consult.requesting_institution.alliance_id, modality=consult.modality, active=True
    )


# The parties on the receiving side of a consult, and the states in which its grants live.
RECEIVING_PARTIES = frozenset({Party.OWNER, Party.CANDIDATE, Party.NAMED, Party.POOL_ADMIN, Party.REVIEWER})
CLOSED_TO_ROUTING = frozenset({Status.DRAFT, Status.REJECTED, Status.CANCELLED, Status.FAILED})


def may_route_consult(principal: Principal, consult: Consult) -> bool:
    """Send the case's studies to a destination of the receiving institution (its PACS): a
    party on the receiving side, while the case's access lives (imaging.routing decides the rest)."""
    return consult.status not in CLOSED_TO_ROUTING and bool(RECEIVING_PARTIES & parties_of(principal, consult))


# --- exams a case asks for (imaging.worklist) ----------------------------------------------

EXAM_PARTIES = frozenset({Party.OWNER, Party.REQUESTER})


def may_order_exam(principal: Principal, consult: Consult) -> bool:
    """The reader of an open case, or its requester, asks the requesting institution to
    perform an exam of the patient (a step on its modality worklist), where that institution
    keeps a worklist (its image store is on)."""
    return (
        consult.status in OPEN_STATUSES
        and bool(EXAM_PARTIES & parties_of(principal, consult))
        and IMAGE_STORE in consult.requesting_institution.modules
    )


def exams_of(principal: Principal, consult: Consult) -> QuerySet[ScheduledStep]:
    """The exams asked for on the case, with their state, for whoever sees the case (the rest
    of the requesting institution's worklist stays its own: imaging.access.steps_visible_to)."""
    if not consults_visible_to(principal).filter(pk=consult.pk).exists():
        return ScheduledStep.objects.none()
    steps = ScheduledStep.objects.filter(consult_id=consult.pk, institution_id=consult.requesting_institution_id)
    return steps.select_related("study").order_by("scheduled_at", "pk")
