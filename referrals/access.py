"""Who the principal is to a referral, which referrals it sees and which moves it may make.

One function per decision, given the request's principal (alliance.access.Principal). The
workflow table lives on the model (referrals.models.TRANSITIONS); the studies a referral opens
are granted through imaging/grants.py (to the receiving institution's group) and seen through
imaging/access.py.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404

from alliance.access import Principal, institutions_managed_by
from alliance.models import Doctor, Institution, Role
from imaging import access as imaging_access
from imaging.models import Study
from referrals.models import (
    LEVEL_RANK,
    OPEN_STATUSES,
    TRANSITIONS,
    DeskMember,
    Direction,
    Party,
    Referral,
    Status,
    direction_between,
)

REFERRALS_MODULE = "referrals"
_DESK_CACHE = "_referral_desk_institution"


def may_use_referrals(principal: Principal) -> bool:
    """An active clinical doctor whose institution has the referrals module switched on."""
    return principal.doctor is not None and principal.is_clinical and principal.has_module(REFERRALS_MODULE)


def is_desk_member(principal: Principal, institution_id: int | None) -> bool:
    """On the institution's referral desk: its institution admins and the doctors it names.

    Asked once per principal (the answer is kept on it for the request)."""
    doctor = principal.doctor
    if doctor is None or institution_id is None or doctor.institution_id != institution_id:
        return False
    if not may_use_referrals(principal):
        return False
    cached = getattr(principal, _DESK_CACHE, None)
    if cached is None:
        cached = principal.has_role(Role.INSTITUTION_ADMIN) or (
            DeskMember.objects.filter(institution_id=institution_id, doctor_id=doctor.pk).exists()
        )
        setattr(principal, _DESK_CACHE, cached)
    return bool(cached)


def may_manage_desk(principal: Principal, institution: Institution) -> bool:
    """The institution's admin names its desk (the console page)."""
    return institutions_managed_by(principal).filter(pk=institution.pk).exists()


def referrals_visible_to(principal: Principal) -> QuerySet[Referral]:
    """Outgoing: the referrals of the principal's institution (drafts only their author's).
    Incoming: those sent to the principal's institution, once sent (never a draft)."""
    doctor = principal.doctor
    if doctor is None or not may_use_referrals(principal):
        return Referral.objects.none()
    mine = doctor.institution_id
    q = Q(referrer_id=doctor.pk)
    q |= Q(from_institution_id=mine) & ~Q(status=Status.DRAFT)
    q |= Q(to_institution_id=mine) & ~Q(status=Status.DRAFT)
    return Referral.objects.filter(q)


def get_referral_for(principal: Principal, pk: Any) -> Referral:
    """The referral if the principal may see it; the same 404 whether it is missing or forbidden."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such referral.") from None
    referral = (
        referrals_visible_to(principal)
        .select_related(
            "referrer__user",
            "from_institution",
            "to_institution",
            "patient__issuer",
            "receiving_patient__issuer",
            "appointment_doctor__user",
        )
        .filter(pk=pk)
        .first()
    )
    if referral is None:
        imaging_access.refuse(principal, "referral", Referral.objects.filter(pk=pk), str(pk), "patient_id")
    return referral


def parties_of(principal: Principal, referral: Referral) -> frozenset[str]:
    """Who the principal is to this referral (referrals.models.Party values)."""
    doctor = principal.doctor
    if doctor is None or not may_use_referrals(principal):
        return frozenset()
    parties = set()
    if referral.referrer_id == doctor.pk:
        parties.add(Party.REFERRER)
    if is_desk_member(principal, referral.to_institution_id):
        parties.add(Party.DESK)
        if referral.appointment_doctor_id is None:
            parties.add(Party.RECEIVER)
    if referral.appointment_doctor_id == doctor.pk and doctor.institution_id == referral.to_institution_id:
        parties.add(Party.RECEIVER)
    return frozenset(parties)


def may_act(principal: Principal, referral: Referral, action: str) -> bool:
    """May the principal make this move now (right party and right status)?"""
    move = TRANSITIONS[action]
    return referral.status in move.sources and bool(move.parties & parties_of(principal, referral))


def actions_for(principal: Principal, referral: Referral) -> list[str]:
    """Every move the principal may make on the referral now (for the case page and the API)."""
    parties = parties_of(principal, referral)
    return [a for a, m in TRANSITIONS.items() if a != "create" and referral.status in m.sources and m.parties & parties]


def may_post_message(principal: Principal, referral: Referral) -> bool:
    """The thread is between the two sides (the referrer, the desk, the receiving doctor) while open."""
    return referral.status in OPEN_STATUSES and bool(parties_of(principal, referral))


def may_schedule_exam(principal: Principal, referral: Referral) -> bool:
    """The receiving side puts an exam for the referred patient on its own modality worklist,
    once it has accepted the referral and until it is done (imaging decides who keeps a worklist)."""
    return (
        referral.status in (Status.ACCEPTED, Status.IN_PROGRESS)
        and principal.institution_id == referral.to_institution_id
        and bool({Party.DESK, Party.RECEIVER} & parties_of(principal, referral))
        and imaging_access.may_schedule(principal)
    )


def may_refer(principal: Principal) -> bool:
    """May write a referral (the "New referral" button): a clinical doctor with the module on."""
    return may_use_referrals(principal)


def may_refer_back(principal: Principal, referral: Referral) -> bool:
    """A completed up referral offers "refer back down" to the receiving side."""
    return (
        referral.status == Status.COMPLETED
        and referral.direction == Direction.UP
        and may_use_referrals(principal)
        and principal.institution_id == referral.to_institution_id
    )


def get_consult_to_refer(principal: Principal, consult_id: Any) -> Any:
    """A signed (completed) consult of the principal's institution, to refer its patient; 404
    otherwise. Loaded by name: consults and referrals are independent layers."""
    try:
        pk = int(consult_id)
    except (TypeError, ValueError):
        raise Http404("No such consult.") from None
    if not may_use_referrals(principal):
        raise Http404("No such consult.")
    consult_model = apps.get_model("consults", "Consult")
    consult = consult_model.objects.filter(
        pk=pk, status=Status.COMPLETED, requesting_institution_id=principal.institution_id
    ).first()
    if consult is None:
        # Its own institution's consult that is not signed yet is not a refused read.
        others = consult_model.objects.filter(pk=pk).exclude(requesting_institution_id=principal.institution_id)
        imaging_access.refuse(principal, "consult", others, str(pk), "studies__patient_id")
    return consult


def get_screening_result_to_refer(principal: Principal, reading_id: Any) -> Any:
    """A signed positive screening result (Lung-RADS 3 or 4) of a participant of the principal's
    institution, to refer them; 404 otherwise. Loaded by name: consults (whose screening app
    holds it) and referrals are independent layers."""
    try:
        pk = int(reading_id)
        reading_model = apps.get_model("screening", "Reading")
    except (TypeError, ValueError, LookupError):
        raise Http404("No such screening result.") from None
    if not may_use_referrals(principal):
        raise Http404("No such screening result.")
    rows = reading_model.objects.select_related("round__participant__patient__issuer", "round__study")
    reading = rows.filter(pk=pk, round__participant__institution_id=principal.institution_id).first()
    if reading is None:
        others = reading_model.objects.filter(pk=pk)
        imaging_access.refuse(principal, "screening-reading", others, str(pk), "round__participant__patient_id")
    if not reading.positive:
        raise Http404("Only a positive screening result is referred from here.")
    return reading


def appointment_doctors_for(principal: Principal, referral: Referral) -> QuerySet[Doctor]:
    """Whom the desk may name for the appointment: active doctors of the receiving institution."""
    if Party.DESK not in parties_of(principal, referral):
        return Doctor.objects.none()
    return (
        Doctor.objects.filter(institution_id=referral.to_institution_id, active=True)
        .select_related("user")
        .order_by("user__username")
    )


def desk_candidates_for(principal: Principal, institution: Institution) -> QuerySet[Doctor]:
    """Doctors the institution admin may add to the desk: active, of the institution, not on it."""
    if not may_manage_desk(principal, institution):
        return Doctor.objects.none()
    return (
        Doctor.objects.filter(institution_id=institution.pk, active=True)
        .exclude(desk_memberships__institution_id=institution.pk)
        .select_related("user")
        .order_by("user__username")
    )


def studies_referable_by(principal: Principal) -> QuerySet[Study]:
    """Studies a doctor may attach to a referral: visible to them and their institution's own."""
    if principal.doctor is None or not may_use_referrals(principal):
        return Study.objects.none()
    return imaging_access.studies_visible_to(principal).filter(institution_id=principal.doctor.institution_id)


def _with_module(institutions: QuerySet[Institution], module: str) -> QuerySet[Institution]:
    """Institutions with a module on (JSON list containment; SQLite has no JSON __contains)."""
    if connection.vendor == "postgresql":
        return institutions.filter(modules__contains=[module])
    return institutions.filter(modules__icontains=f'"{module}"')


def receiving_institutions_for(principal: Principal, direction: str = "") -> QuerySet[Institution]:
    """Where the principal may refer to: active members of the same alliance with referrals on,
    other than its own, whose level fits the direction (all directions when none is given)."""
    doctor = principal.doctor
    if doctor is None or not may_use_referrals(principal):
        return Institution.objects.none()
    own = doctor.institution
    rows = Institution.objects.filter(alliance_id=own.alliance_id, active=True).exclude(pk=own.pk)
    if direction:
        levels = [level for level in LEVEL_RANK if direction_between(own.level, level) == direction]
        rows = rows.filter(level__in=levels)
    return _with_module(rows, REFERRALS_MODULE).order_by("name")


def desk_doctors_q(institution_id: int) -> Q:
    """The desk of an institution as a filter on Doctor: its admins and its named members."""
    admins = (
        Q(roles__contains=[Role.INSTITUTION_ADMIN])
        if connection.vendor == "postgresql"
        else Q(roles__icontains=f'"{Role.INSTITUTION_ADMIN}"')
    )
    return Q(institution_id=institution_id, active=True) & (admins | Q(desk_memberships__institution_id=institution_id))


def may_give_film(principal: Principal, referral: Referral) -> bool:
    """Either side of a completed referral may make the patient's cloud film link for it."""
    from imaging import films

    sides = (referral.from_institution_id, referral.to_institution_id)
    return (
        referral.status == Status.COMPLETED
        and principal.institution_id in sides
        and films.may_make_case_film(principal)
    )


def may_route_referral(principal: Principal, referral: Referral) -> bool:
    """Send the referral's studies to a destination of the receiving institution: a member of
    its desk or the receiving doctor, while the referral's access lives."""
    closed = {Status.DRAFT, Status.REJECTED, Status.CANCELLED, Status.FAILED}
    return referral.status not in closed and bool({Party.DESK, Party.RECEIVER} & parties_of(principal, referral))
