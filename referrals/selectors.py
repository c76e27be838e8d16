"""Reads of referrals for pages and the API, built on referrals.access (no rule lives here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alliance.access import Principal, with_role
from alliance.models import Doctor, Role
from alliance.modules import OpenCases
from imaging import access as imaging_access
from imaging.models import Study
from imaging.selectors import linked_studies
from imaging.study_cases import StudyCase
from referrals import access
from referrals.models import CLOSED_STATUSES, OPEN_STATUSES, DeskMember, Referral, ReferralNotification, Status

TAB_LABELS = {
    "waiting": _("Waiting for an answer"),
    "appointments": _("Appointments"),
    "in_care": _("In care"),
    "closed": _("Closed"),
    "drafts": _("Drafts"),
}

_TAB_STATUSES: dict[str, tuple[str, ...]] = {
    "waiting": (Status.REQUESTED, Status.ON_HOLD),
    "appointments": (Status.ACCEPTED,),
    "in_care": (Status.IN_PROGRESS,),
    "closed": CLOSED_STATUSES,
    "drafts": (Status.DRAFT,),
}

OUTGOING, INCOMING = "outgoing", "incoming"


@dataclass(frozen=True)
class Filters:
    """Criteria of a referral list; empty fields do not filter."""

    tab: str = ""
    patient: str = ""  # name or ID, partial
    institution: int | None = None  # the other side
    direction: str = ""
    date_from: date | None = None
    date_to: date | None = None

    @classmethod
    def of(cls, given: Filters | dict[str, Any] | None) -> Filters:
        """Filters from a dict of query parameters (strings; what does not parse is ignored)."""
        if given is None:
            return cls()
        if isinstance(given, Filters):
            return given

        def day(value: Any) -> date | None:
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(str(value)) if value else None
            except ValueError:
                return None

        try:
            institution = int(given.get("institution") or 0) or None
        except (TypeError, ValueError):
            institution = None
        return cls(
            tab=str(given.get("tab") or ""),
            patient=str(given.get("patient") or ""),
            institution=institution,
            direction=str(given.get("direction") or ""),
            date_from=day(given.get("date_from")),
            date_to=day(given.get("date_to")),
        )


def _box(principal: Principal, box: str) -> Q | None:
    doctor = principal.doctor
    if doctor is None or not access.may_use_referrals(principal):
        return None
    mine = doctor.institution_id
    if box == OUTGOING:
        return Q(from_institution_id=mine) & (~Q(status=Status.DRAFT) | Q(referrer_id=doctor.pk))
    return Q(to_institution_id=mine) & ~Q(status=Status.DRAFT)


def tab_names(box: str) -> list[str]:
    names = ["waiting", "appointments", "in_care", "closed"]
    return [*names, "drafts"] if box == OUTGOING else names


def _filtered(box: str, filters: Filters) -> Q:
    q = Q()
    if filters.patient.strip():
        for word in filters.patient.split():
            q &= Q(patient__name__icontains=word) | Q(patient__patient_id__icontains=word)
    if filters.institution:
        field = "to_institution_id" if box == OUTGOING else "from_institution_id"
        q &= Q(**{field: filters.institution})
    if filters.direction:
        q &= Q(direction=filters.direction)
    if filters.date_from:
        q &= Q(created_at__date__gte=filters.date_from)
    if filters.date_to:
        q &= Q(created_at__date__lte=filters.date_to)
    return q


def _ordered(rows: QuerySet[Referral], tab: str) -> QuerySet[Referral]:
    if tab == "waiting":
        return rows.order_by("urgency_rank", "requested_at", "id")
    if tab == "appointments":
        return rows.order_by("appointment_at", "id")
    if tab == "in_care":
        return rows.order_by("-arrived_at", "-id")
    return rows.order_by("-created_at", "-id")


def current_tab(box: str, filters: Filters | dict[str, Any] | None) -> str:
    names = tab_names(box)
    tab = Filters.of(filters).tab
    return tab if tab in names else names[0]


def _tabs(
    principal: Principal, box: str, given: Filters | dict[str, Any] | None
) -> tuple[dict[str, int], QuerySet[Referral]]:
    filters = Filters.of(given)
    scope = _box(principal, box)
    if scope is None:
        return {}, Referral.objects.none()
    names = tab_names(box)
    base = scope & _filtered(box, filters)
    tab_q = {name: Q(status__in=_TAB_STATUSES[name]) for name in names}
    found = Referral.objects.filter(base).aggregate(**{n: Count("pk", filter=q) for n, q in tab_q.items()})
    current = current_tab(box, filters)
    rows = _ordered(Referral.objects.filter(base & tab_q[current]), current)
    return {n: found[n] or 0 for n in names}, rows


def outgoing_tabs(
    principal: Principal, filters: Filters | dict[str, Any] | None = None
) -> tuple[dict[str, int], QuerySet[Referral]]:
    """The referrals the principal's institution sent: {tab: count} for waiting, appointments,
    in_care, closed and drafts (one query), and the current tab's rows ordered for the list
    (a bare query: page it, then hydrate() the page). filters: a Filters or a dict of
    query parameters (tab, patient, institution, direction, date_from, date_to)."""
    return _tabs(principal, OUTGOING, filters)


def incoming_tabs(
    principal: Principal, filters: Filters | dict[str, Any] | None = None
) -> tuple[dict[str, int], QuerySet[Referral]]:
    """The referrals sent to the principal's institution, the desk's list (no drafts tab;
    waiting: most urgent first, then oldest). As outgoing_tabs."""
    return _tabs(principal, INCOMING, filters)


def hydrate(page: Any) -> list[Referral]:
    """The rows of one page with what a list row shows (a fixed number of queries)."""
    ids = list(page.values_list("pk", flat=True)) if isinstance(page, QuerySet) else [r.pk for r in page]
    rows = (
        Referral.objects.filter(pk__in=ids)
        .select_related("patient", "from_institution", "to_institution", "referrer__user", "appointment_doctor__user")
        .prefetch_related(Prefetch("studies", queryset=Study.objects.only("pk", "study_uid", "modalities")))
        .in_bulk()
    )
    return [rows[pk] for pk in ids]


def counts(principal: Principal) -> dict[str, dict[str, int]]:
    """Both boxes' tab counts (the API's list answer): two queries."""
    return {box: _tabs(principal, box, None)[0] for box in (OUTGOING, INCOMING)}


def summaries_returned(principal: Principal, limit: int = 5) -> list[Referral]:
    """The referrer's completed referrals whose summary the user has not opened yet, newest first."""
    if principal.doctor is None or not access.may_use_referrals(principal):
        return []
    unread = ReferralNotification.objects.filter(user=principal.user, verb="complete", read_at__isnull=True)
    return list(
        access.referrals_visible_to(principal)
        .filter(status=Status.COMPLETED, pk__in=unread.values("referral_id"))
        .select_related("to_institution", "patient")
        .order_by("-completed_at", "-id")[:limit]
    )


def desk_of(institution: Any) -> dict[str, list[Any]]:
    """An institution's referral desk: its admins (on it by role) and the doctors it named."""
    admins = with_role(
        Doctor.objects.filter(institution_id=institution.pk, active=True).select_related("user"),
        Role.INSTITUTION_ADMIN,
    )
    members = DeskMember.objects.filter(institution_id=institution.pk).select_related("doctor__user", "added_by")
    return {"admins": list(admins), "members": list(members.order_by("doctor__user__username"))}


def appointments_between(principal: Principal, start: datetime, end: datetime) -> QuerySet[Referral]:
    """The desk calendar: incoming referrals with an appointment in [start, end)."""
    scope = _box(principal, INCOMING)
    if scope is None:
        return Referral.objects.none()
    return (
        Referral.objects.filter(
            scope,
            status__in=[Status.ACCEPTED, Status.IN_PROGRESS, Status.COMPLETED],
            appointment_at__gte=start,
            appointment_at__lt=end,
        )
        .select_related("patient", "from_institution", "appointment_doctor__user")
        .order_by("appointment_at", "id")
    )


def waiting_counts(principal: Principal) -> dict[str, int]:
    """What waits for the user (home page and navigation): incoming requests to answer (desk),
    today's appointments (desk or the named doctor), summaries returned (unread completions)."""
    out = {"incoming": 0, "appointments_today": 0, "summaries": 0}
    doctor = principal.doctor
    if doctor is None or not access.may_use_referrals(principal):
        return out
    today = timezone.localdate()
    start = timezone.make_aware(datetime.combine(today, datetime.min.time()))
    end = start + timedelta(days=1)
    desk = access.is_desk_member(principal, doctor.institution_id)
    mine = Q(to_institution_id=doctor.institution_id)
    today_q = Q(status=Status.ACCEPTED, appointment_at__gte=start, appointment_at__lt=end)
    if not desk:
        today_q &= Q(appointment_doctor_id=doctor.pk)
    aggregates: dict[str, Any] = {"appointments_today": Count("pk", filter=today_q)}
    if desk:
        aggregates["incoming"] = Count("pk", filter=Q(status=Status.REQUESTED))
    found = Referral.objects.filter(mine).aggregate(**aggregates)
    out.update({k: v or 0 for k, v in found.items()})
    out["summaries"] = ReferralNotification.objects.filter(
        user=principal.user, verb="complete", read_at__isnull=True
    ).count()
    return out


def case_detail(principal: Principal, referral: Referral) -> dict[str, Any]:
    """What the case page and the API detail show, in a fixed number of queries: the studies
    attached, the studies the case opens now (grants: attached and on arrival), the linked
    patient's prior studies the principal may see, history, thread, follow-ups."""
    attached = list(
        referral.studies.select_related("patient", "institution")
        .prefetch_related("series")
        .order_by("-study_date", "-pk")
    )
    attached_ids = [s.pk for s in attached]
    live = list(imaging_access.live_grants_of(referral.basis))
    linked = list(linked_studies(principal, referral.patient).exclude(pk__in=attached_ids)[:50])
    return {
        "studies": attached,
        "grants": live,
        "arrival_studies": [g.content_object for g in live if g.content_object_id not in set(attached_ids)],
        "linked_studies": linked,
        "transitions": list(referral.transitions.select_related("by")),
        "thread": list(referral.messages.select_related("author__user", "author__institution")),
        "follow_ups": list(referral.follow_ups.select_related("to_institution")),
    }


def notifications_of(user: Any) -> QuerySet[ReferralNotification]:
    return ReferralNotification.objects.filter(user=user).select_related("referral")


def unread_notifications(user: Any) -> QuerySet[ReferralNotification]:
    """The user's unread referral notices (registered with alliance.unread for the top bar)."""
    return ReferralNotification.objects.filter(user=user, read_at__isnull=True)


def open_cases_at(institution: Any) -> OpenCases | None:
    """Open referrals sent by or to the institution, and what switching referrals off there
    does to them (alliance.modules asks before the switch)."""
    open_ = Referral.objects.filter(status__in=OPEN_STATUSES)
    sent = open_.filter(from_institution=institution).count()
    received = open_.filter(to_institution=institution).count()
    if not sent and not received:
        return None
    consequence = _(
        "Open referrals: %(sent)d sent by %(name)s, %(received)d sent to it. While referrals are off its "
        "doctors can neither see nor act on them, and its desk is not told of new ones; the other side "
        "keeps its access to the attached studies, and everything is back when referrals are switched on again."
    ) % {"sent": sent, "received": received, "name": institution.name}
    return OpenCases(module=access.REFERRALS_MODULE, count=sent + received, consequence=consequence)


def waiting_for_action(principal: Principal, limit: int = 10) -> list[Referral]:
    """The referrals that wait for the user (the home page): requests to answer at the
    user's desk, and the user's own referrals where the desk proposed another date.
    Most urgent first, then oldest; hydrated."""
    doctor = principal.doctor
    if doctor is None or not access.may_use_referrals(principal):
        return []
    q = Q(referrer_id=doctor.pk, from_institution_id=doctor.institution_id, status=Status.ON_HOLD)
    if access.is_desk_member(principal, doctor.institution_id):
        q |= Q(to_institution_id=doctor.institution_id, status=Status.REQUESTED)
    rows = access.referrals_visible_to(principal).filter(q).order_by("urgency_rank", "requested_at", "pk")
    return hydrate(rows[:limit])


def cases_on_studies(principal: Principal, study_ids: Sequence[int]) -> dict[int, list[StudyCase]]:
    """The referrals the principal may see that carry these studies, with their state
    (imaging.study_cases asks, for the study list and page): one query."""
    links = (
        Referral.studies.through.objects.filter(
            study_id__in=list(study_ids), referral_id__in=access.referrals_visible_to(principal).values("pk")
        )
        .values_list("study_id", "referral_id", "referral__status")
        .order_by("study_id", "-referral_id")
    )
    out: dict[int, list[StudyCase]] = {}
    for study_id, referral_id, status in links:
        out.setdefault(study_id, []).append(
            StudyCase(
                kind="referral",
                number=referral_id,
                label=_("Referral #%(number)d") % {"number": referral_id},
                state=Status(status).label,
                url=reverse("referrals:detail", args=[referral_id]),
            )
        )
    return out
