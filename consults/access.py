"""Who the principal is to a consult, which consults it sees and which moves it may make.

One function per decision, given the request's principal (alliance.access.Principal). The
workflow table lives on the model (consults.models.TRANSITIONS); the studies a consult opens
are granted through imaging/grants.py and seen through imaging/access.py.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from alliance.access import Principal, may_manage_alliance, with_role
from alliance.models import Doctor, Institution, Pool, Role
from consults.models import OPEN_STATUSES, TRANSITIONS, Consult, Party, ReportTemplate, Status
from imaging import access as imaging_access
from imaging.models import Study

CONSULTS_MODULE = "consults"


def _takes_part(principal: Principal) -> bool:
    return principal.doctor is not None and principal.has_module(CONSULTS_MODULE)


def claimable(principal: Principal) -> Q:
    """Consults the principal may claim: named to them, or sent (or widened) to one of their pools."""
    doctor = principal.doctor
    pool_wide = Q(specialist__isnull=True) | Q(widened_at__isnull=False)
    q = Q(pool_id__in=principal.pool_ids) & pool_wide
    if doctor is not None and doctor.has_role(Role.SPECIALIST):
        q |= Q(specialist_id=doctor.pk)
    return q


def at_receiving_desk(principal: Principal) -> Q:
    """Consults sent to the institution the principal administers (its desk's cases)."""
    if principal.doctor is None or not principal.has_role(Role.INSTITUTION_ADMIN):
        return Q(pk__in=[])
    institution_id = principal.institution_id
    return Q(pool__institution_id=institution_id) | Q(pool__isnull=True, specialist__institution_id=institution_id)


def consults_visible_to(principal: Principal) -> QuerySet[Consult]:
    """The requesting institution sees its requests (drafts only their author); the specialist
    side sees what it may claim and what it owns; after cancel or reject it sees nothing."""
    doctor = principal.doctor
    if doctor is None or not _takes_part(principal):
        return Consult.objects.none()
    q = Q(requester_id=doctor.pk)
    if principal.is_clinical:
        q |= Q(requesting_institution_id=doctor.institution_id) & ~Q(status=Status.DRAFT)
    q |= Q(owner_id=doctor.pk) & ~Q(status__in=[Status.CANCELLED, Status.REJECTED])
    q |= Q(status=Status.REQUESTED) & claimable(principal)
    q |= Q(status__in=OPEN_STATUSES) & at_receiving_desk(principal)
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
    if pool_wide and consult.pool_id in principal.pool_ids:
        parties.add(Party.CANDIDATE)
    if doctor.has_role(Role.INSTITUTION_ADMIN) and receiving_institution_id(consult) == doctor.institution_id:
        parties.add(Party.POOL_ADMIN)
    return frozenset(parties)


def may_act(principal: Principal, consult: Consult, action: str) -> bool:
    """May the principal make this move now (right party and right status)?"""
    move = TRANSITIONS[action]
    return consult.status in move.sources and bool(move.parties & parties_of(principal, consult))


def actions_for(principal: Principal, consult: Consult) -> list[str]:
    """Every move the principal may make on the consult now (for the case page and the API)."""
    parties = parties_of(principal, consult)
    return [a for a, m in TRANSITIONS.items() if a != "create" and consult.status in m.sources and m.parties & parties]


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


def may_give_film(principal: Principal, consult: Consult) -> bool:
    """The requesting institution gives its patient the film of a signed consult."""
    from imaging import films

    return (
        consult.status == Status.COMPLETED
        and principal.institution_id == consult.requesting_institution_id
        and films.may_make_case_film(principal)
    )
