"""Reads of consults for pages and the API, built on consults.access (no rule lives here)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance.access import Principal
from alliance.models import Role
from alliance.modules import OpenCases
from consults import access, clock
from consults.models import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    OWNED_STATUSES,
    UNFINISHED_STATUSES,
    Consult,
    CriticalResult,
    Message,
    Notification,
    ReportReview,
    ReportTemplate,
    ReportVersion,
    Status,
)
from imaging.models import Study
from imaging.selectors import StudyQuery, filter_studies
from imaging.study_cases import StudyCase

TAB_LABELS_ORDER = [
    "unclaimed",
    "mine",
    "review",
    "signed",
    "desk",
    "waiting",
    "reading",
    "questions",
    "reports",
    "closed",
    "drafts",
]


def worklist_tabs(principal: Principal) -> dict[str, Q]:
    """The worklist tabs a principal has, each a filter within consults_visible_to(principal).

    Specialists: their pools' unclaimed cases, their own open cases, what they signed.
    Clinicians: their institution's requests by status (drafts: their own).
    The receiving institution's admin: every unfinished case sent to the institution.
    """
    doctor = principal.doctor
    if doctor is None or not principal.has_module(access.CONSULTS_MODULE):
        return {}
    tabs: dict[str, Q] = {}
    if principal.has_role(Role.SPECIALIST):
        tabs["unclaimed"] = Q(status=Status.REQUESTED) & access.claimable(principal)
        tabs["mine"] = Q(owner_id=doctor.pk, status__in=OWNED_STATUSES)
        tabs["signed"] = Q(owner_id=doctor.pk, status__in=[Status.PRELIMINARY, Status.COMPLETED])
        tabs["review"] = access.waiting_for_review_by(principal)
    if principal.has_role(Role.CLINICIAN):
        ours = Q(requesting_institution_id=doctor.institution_id)
        tabs["waiting"] = ours & Q(status__in=[Status.REQUESTED, Status.ACCEPTED])
        tabs["reading"] = ours & Q(status=Status.IN_PROGRESS)
        tabs["questions"] = ours & Q(status=Status.ON_HOLD)
        tabs["reports"] = ours & Q(status__in=[Status.PRELIMINARY, Status.COMPLETED])
        tabs["closed"] = ours & Q(status__in=CLOSED_STATUSES)
        tabs["drafts"] = Q(requester_id=doctor.pk, status=Status.DRAFT)
    if principal.has_role(Role.INSTITUTION_ADMIN):
        tabs["desk"] = Q(status__in=UNFINISHED_STATUSES) & access.at_receiving_desk(principal)
    return tabs


def worklist_counts(principal: Principal) -> dict[str, int]:
    """How many consults each of the principal's tabs holds: one query."""
    tabs = worklist_tabs(principal)
    if not tabs:
        return {}
    any_tab = reduce(operator.or_, tabs.values())
    return Consult.objects.filter(any_tab).aggregate(**{name: Count("pk", filter=q) for name, q in tabs.items()})


def worklist(principal: Principal, tab: str) -> QuerySet[Consult]:
    """One tab's consults ordered by priority then time left; page it, then hydrate() the page."""
    q = worklist_tabs(principal).get(tab)
    if q is None:
        return Consult.objects.none()
    rows = Consult.objects.filter(q)
    if tab == "review":
        return rows.order_by("priority_rank", "id")
    if tab in {"signed", "reports", "closed"}:
        return rows.order_by("-completed_at", "-created_at", "-id")
    if tab == "drafts":
        return rows.order_by("-created_at", "-id")
    if tab in {"unclaimed", "waiting"}:
        # Nothing here is on hold, so time left orders as due_at does, and the index serves it.
        return rows.order_by("priority_rank", "due_at", "id")
    left = F("due_at") - Coalesce(F("paused_since"), Value(clock.now()))
    return rows.annotate(time_left=left).order_by("priority_rank", "time_left", "id")


def hydrate(page: Iterable[Consult]) -> list[Consult]:
    """The rows of one page with what a worklist row shows. Sorting and slicing run on the
    bare table first: joining 10,000 rows only to keep 25 costs more than a second query."""
    ids = list(page.values_list("pk", flat=True)) if isinstance(page, QuerySet) else [c.pk for c in page]
    rows = (
        Consult.objects.filter(pk__in=ids)
        .select_related("requester__user", "requesting_institution", "pool", "specialist__user", "owner__user")
        .prefetch_related(Prefetch("studies", queryset=Study.objects.select_related("patient")))
        .in_bulk()
    )
    return [rows[pk] for pk in ids]


def shown_tabs(counts: dict[str, int], current: str) -> list[tuple[str, int]]:
    """The tabs a page shows, in order: "review" only to whom it holds reports (or who is on it)."""
    return [(t, counts[t]) for t in TAB_LABELS_ORDER if t in counts and (t != "review" or counts[t] or t == current)]


def default_tab(counts: dict[str, Any]) -> str:
    tabs = [t for t in TAB_LABELS_ORDER if t in counts]
    return tabs[0] if tabs else ""


@dataclass(frozen=True)
class Deadline:
    """Time left on a consult and how worried the worklist should look (a CSS class)."""

    left: timedelta | None
    state: str  # ok, warn, danger, breached, paused, none

    @property
    def minutes(self) -> int | None:
        return None if self.left is None else int(self.left.total_seconds() // 60)


def deadline_of(consult: Consult, now: datetime | None = None) -> Deadline:
    if consult.status not in OPEN_STATUSES or consult.due_at is None:
        return Deadline(None, "none")
    now = now or clock.now()
    left = consult.due_at - (consult.paused_since or now)
    if consult.paused_since is not None:
        return Deadline(left, "paused")
    if left <= timedelta(0):
        return Deadline(left, "breached")
    share = left.total_seconds() / max(consult.deadline_seconds, 1)
    return Deadline(left, "ok" if share > 0.5 else "warn" if share > 0.2 else "danger")


def case_detail(consult: Consult, up_to: int | None = None) -> dict[str, Any]:
    """What the case page and the API detail show, in a fixed number of queries. With `up_to`,
    the report as it stood at that version (the PDF written into the studies for it)."""
    studies = list(consult.studies.select_related("patient", "institution").prefetch_related("series"))
    shown = ReportVersion.objects.filter(report__consult=consult)
    if up_to is not None:
        shown = shown.filter(number__lte=up_to)
    versions = list(
        shown.select_related("signed_by__user", "author__user").prefetch_related(
            Prefetch("reviews", queryset=ReportReview.objects.select_related("reviewer__user"))
        )
    )
    reviews = [r for v in versions for r in v.reviews.all()]
    return {
        "studies": studies,
        "transitions": list(consult.transitions.select_related("by")),
        "thread": list(consult.messages.select_related("author__user", "author__institution")),
        "versions": versions,
        "signed_versions": [v for v in versions if v.is_signed],
        "draft": next((v for v in versions if not v.is_signed), None),
        "reviews": reviews,
        "returned": next((r for r in reversed(reviews) if r.outcome == ReportReview.Outcome.RETURNED), None)
        if consult.status == Status.IN_PROGRESS
        else None,
        "preliminary": consult.status == Status.PRELIMINARY,
        "second_opinions": list(consult.second_opinions.all()),
    }


def templates_for(consult: Consult) -> QuerySet[ReportTemplate]:
    modalities = {m for s in consult.studies.all() for m in s.modality_list}
    return ReportTemplate.objects.filter(
        alliance_id=consult.requesting_institution.alliance_id, modality__in=modalities
    ).order_by("modality", "body_part", "name")


def unread_count(user: Any) -> int:
    if not getattr(user, "is_authenticated", False):
        return 0
    return unread_notifications(user).count()


def unread_notifications(user: Any) -> QuerySet[Notification]:
    """The user's unread consult notices (registered with alliance.unread for the bell)."""
    return Notification.objects.filter(user=user, read_at__isnull=True)


def notifications_of(principal: Principal) -> QuerySet[Notification]:
    """The user's notices, newest first, each with `visible`: whether the principal still sees its
    consult (consults_visible_to, as a subquery of the same query). A notice outlives the user's
    access (the reader of a cancelled case, a doctor moved away): it still says what happened,
    but names no patient and opens nothing."""
    still_seen = access.consults_visible_to(principal).filter(pk=OuterRef("consult_id"))
    return (
        Notification.objects.filter(user=principal.user).select_related("consult").annotate(visible=Exists(still_seen))
    )


def notification_rows(page: Iterable[Notification]) -> list[Notification]:
    """One page of notifications (from notifications_of) with the studies and patients of the
    cases the user still sees, and of no other (a fixed number of queries)."""
    rows = list(page)
    prefetch_related_objects(
        [n for n in rows if n.visible],  # type: ignore[attr-defined]  # notifications_of's annotation
        Prefetch("consult__studies", queryset=Study.objects.select_related("patient").order_by("pk")),
    )
    return rows


def open_cases_at(institution: Any) -> OpenCases | None:
    """Unfinished consults requested by or sent to the institution (a preliminary report waits
    for a reviewer there), and what switching consults off there does to them (alliance.modules
    asks before the switch)."""
    open_ = Consult.objects.filter(status__in=UNFINISHED_STATUSES)
    requested = open_.filter(requesting_institution=institution).count()
    received = open_.filter(
        Q(pool__institution=institution) | Q(pool__isnull=True, specialist__institution=institution)
    )
    sent_to = received.count()
    if not requested and not sent_to:
        return None
    consequence = _(
        "Open consults: %(requested)d requested by %(name)s, %(received)d sent to it. While consults are "
        "off its doctors can neither see nor act on them; the other side can still work on them, their "
        "deadlines keep running, and they are back when consults are switched on again."
    ) % {"requested": requested, "received": sent_to, "name": institution.name}
    return OpenCases(module=access.CONSULTS_MODULE, count=requested + sent_to, consequence=consequence)


# --- critical results (危急值) ------------------------------------------------------------


def critical_results_to_acknowledge(principal: Principal) -> QuerySet[CriticalResult]:
    """The flags waiting for the principal's side to read them back, the oldest first."""
    return (
        access.critical_results_acknowledgeable_by(principal)
        .filter(acknowledged_at=None)
        .select_related("consult", "flagged_by__user", "flagged_by__institution")
        .prefetch_related("consult__studies__patient")
        .order_by("flagged_at", "pk")
    )


def critical_results_of(consult: Consult) -> list[CriticalResult]:
    """Every flag of the case, the ones still waiting first, then the newest."""
    rows = consult.critical_results.select_related(
        "flagged_by__user", "flagged_by__institution", "acknowledged_by__user", "acknowledged_by__institution"
    )
    return sorted(rows, key=lambda r: (r.is_acknowledged, -r.flagged_at.timestamp(), -r.pk))


# --- what waits for the user (the home page, through alliance.open_work) ---------------

OPEN_WORK_LIMIT = 10
# "About to breach": the deadline states of deadline_of() that ask for action now.
NEAR_BREACH_STATES = frozenset({"danger", "breached"})


def _last_message() -> QuerySet[Message]:
    return Message.objects.filter(consult=OuterRef("pk")).order_by("-created_at", "-pk")


def questions_waiting(principal: Principal, limit: int = OPEN_WORK_LIMIT) -> list[Consult]:
    """Open consults whose thread's last message came from the other side and waits for the
    user's side: the requesting institution's clinicians answer the reader's questions (the
    case is on hold), the reader who owns the case reads the requester's answers and messages.
    Each consult carries last_message (its text) for the home page; hydrated."""
    doctor = principal.doctor
    if doctor is None or not principal.has_module(access.CONSULTS_MODULE):
        return []
    from_requesting_side = Q(last_author_institution=F("requesting_institution_id"))
    q = Q(pk__in=[])
    if principal.has_role(Role.CLINICIAN):
        q |= Q(requesting_institution_id=doctor.institution_id) & ~from_requesting_side
    if principal.has_role(Role.SPECIALIST):
        q |= Q(owner_id=doctor.pk) & from_requesting_side
    rows = (
        access.consults_visible_to(principal)
        .filter(status__in=OPEN_STATUSES)
        .annotate(
            last_author_institution=Subquery(_last_message().values("author__institution_id")[:1]),
            last_message_at=Subquery(_last_message().values("created_at")[:1]),
            last_message=Subquery(_last_message().values("body")[:1]),
        )
        .filter(q, last_message_at__isnull=False)
        .order_by("last_message_at", "pk")
    )
    found = list(rows[:limit])
    hydrated = {c.pk: c for c in hydrate(found)}
    for consult in found:
        hydrated[consult.pk].last_message = consult.last_message  # type: ignore[attr-defined]
        hydrated[consult.pk].last_message_at = consult.last_message_at  # type: ignore[attr-defined]
    return [hydrated[c.pk] for c in found]


def reports_signed_since(principal: Principal, since: datetime | None, limit: int = OPEN_WORK_LIMIT) -> list[Consult]:
    """The user's own requests whose report was signed after `since` (their previous visit;
    the last week when there is none), newest first; hydrated."""
    doctor = principal.doctor
    if doctor is None or not principal.has_role(Role.CLINICIAN):
        return []
    since = since or clock.now() - timedelta(days=7)
    rows = access.consults_visible_to(principal).filter(
        requester_id=doctor.pk, status=Status.COMPLETED, completed_at__gt=since
    )
    return hydrate(rows.order_by("-completed_at", "-pk")[:limit])


def near_deadline(principal: Principal, limit: int = OPEN_WORK_LIMIT) -> list[tuple[Consult, Deadline]]:
    """Open cases about to breach their deadline (or past it) that are the user's to act on:
    a specialist's claimed cases and the cases they may claim; a requester's own open cases.
    Most pressing first, with each case's Deadline; hydrated."""
    doctor = principal.doctor
    if doctor is None or not principal.has_module(access.CONSULTS_MODULE):
        return []
    q = Q(pk__in=[])
    if principal.has_role(Role.SPECIALIST):
        q |= Q(owner_id=doctor.pk, status__in=OWNED_STATUSES) | (
            Q(status=Status.REQUESTED) & access.claimable(principal)
        )
    if principal.has_role(Role.CLINICIAN):
        q |= Q(requester_id=doctor.pk, status__in=OPEN_STATUSES)
    running = access.consults_visible_to(principal).filter(q, due_at__isnull=False, paused_since__isnull=True)
    now = clock.now()
    near = [
        c for c in running.order_by("due_at", "pk")[: limit * 10] if deadline_of(c, now).state in NEAR_BREACH_STATES
    ]
    return [(c, deadline_of(c, now)) for c in hydrate(near[:limit])]


def cases_on_studies(principal: Principal, study_ids: Sequence[int]) -> dict[int, list[StudyCase]]:
    """The consults on these studies the principal may see, with their state and signed
    report (imaging.study_cases asks, for the study list and page): one query."""
    signed = ReportVersion.objects.filter(report__consult=OuterRef("consult_id"), signed_at__isnull=False)
    links = (
        Consult.studies.through.objects.filter(
            study_id__in=list(study_ids), consult_id__in=access.consults_visible_to(principal).values("pk")
        )
        .annotate(signed=Exists(signed))
        .values_list("study_id", "consult_id", "consult__status", "signed")  # type: ignore[misc]  # an annotation
        .order_by("study_id", "-consult_id")
    )
    out: dict[int, list[StudyCase]] = {}
    for study_id, consult_id, status, has_report in links:
        out.setdefault(study_id, []).append(
            StudyCase(
                kind="consult",
                number=consult_id,
                label=_("Consult #%(number)d") % {"number": consult_id},
                state=Status(status).label,
                url=reverse("consults:detail", args=[consult_id]),
                report_url=reverse("consults:detail", args=[consult_id]) + "#report" if has_report else "",
                report_pdf_url=reverse("consults:report_pdf", args=[consult_id]) if has_report else "",
                awaits_report=status in UNFINISHED_STATUSES,
            )
        )
    return out


# --- the consult form's study picker -------------------------------------------------

PICK_LIMIT = 20


def studies_to_pick(principal: Principal, query: StudyQuery, limit: int = PICK_LIMIT) -> list[Study]:
    """Studies the principal may attach to a consult that match the picker's search, newest first."""
    return list(filter_studies(access.studies_requestable_by(principal), query)[:limit])
