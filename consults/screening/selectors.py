"""Reads of the screening programme for the pages: the invitation list, the overdue list, a
participant's rounds with their comparisons, the reader's worklist, the programme's figures.
Who sees what is decided by consults.screening.access; these only shape what it allows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.access import Principal
from alliance.models import Institution
from alliance.modules import OpenCases
from alliance.open_work import WorkItem
from consults.screening import access, lungrads
from consults.screening.models import Nodule, Participant, Programme, Reading, Round, ScreeningNotification
from imaging import key_objects
from imaging.models import Instance, Study
from imaging.study_cases import StudyAction, StudyCase


def today() -> date:
    return timezone.localdate()


# --- the clinic's lists ---------------------------------------------------------------------


def open_rounds(principal: Principal, programme: Programme) -> QuerySet[Round]:
    """The invitation list: the clinic's participants' CTs still to be done, soonest due first."""
    return (
        Round.objects.filter(
            participant__in=access.participants_visible_to(principal).filter(
                programme=programme, institution_id=principal.institution_id or 0, state=Participant.State.ACTIVE
            ),
            study__isnull=True,
            cancelled_at__isnull=True,
        )
        .select_related("participant__patient", "invited_by__user")
        .order_by("due_date", "pk")
    )


def overdue_rounds(principal: Principal, programme: Programme, on: date | None = None) -> QuerySet[Round]:
    """Open rounds whose window closed (due date + the programme's window) without a scan."""
    closed_before = (on or today()) - timedelta(days=programme.window_days)
    return open_rounds(principal, programme).filter(due_date__lt=closed_before)


@dataclass(frozen=True)
class Due:
    """Where a round stands against its due date, for the lists' badges."""

    state: str  # "later", "soon", "due", "overdue"
    days: int  # days until due (negative: past due)

    @property
    def past(self) -> int:
        """Days past the due date (0 when not past it)."""
        return max(0, -self.days)


def due_of(round_: Round, window_days: int, on: date | None = None) -> Due:
    days = (round_.due_date - (on or today())).days
    if days < -window_days:
        return Due("overdue", days)
    if days <= 0:
        return Due("due", days)
    return Due("soon" if days <= 30 else "later", days)


def participants_of(principal: Principal, programme: Programme) -> QuerySet[Participant]:
    """The participants with their latest signed category and when their next CT is due."""
    signed = Reading.objects.filter(round__participant=OuterRef("pk"), signed_at__isnull=False).order_by(
        "-round__number"
    )
    due = Round.objects.filter(participant=OuterRef("pk"), study__isnull=True, cancelled_at__isnull=True)
    return (
        access.participants_visible_to(principal)
        .filter(programme=programme)
        .select_related("patient", "institution")
        .annotate(
            last_category=Subquery(signed.values("category")[:1]),
            next_due=Subquery(due.order_by("number").values("due_date")[:1]),
        )
        .order_by("-enrolled_at", "-pk")
    )


def enrollable_patient(principal: Principal, patient_id: str) -> Any:
    """The clinic's own patient with this ID (the clinic is its issuer), if known."""
    from imaging.models import Patient

    return Patient.objects.filter(issuer_id=principal.institution_id, patient_id=patient_id.strip()).first()


# --- a participant ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    """One nodule against the same nodule on the previous CT."""

    nodule: Nodule
    prior: Nodule
    days: int
    delta_mm: Decimal | None
    growing: bool
    doubling_days: float | None  # volume doubling time, where both volumes were measured


def _days_between(prior: Nodule, nodule: Nodule) -> int:
    earlier = prior.reading.round.scanned_on or timezone.localdate(prior.reading.signed_at or timezone.now())
    later = nodule.reading.round.scanned_on or timezone.localdate()
    return (later - earlier).days


def growth_of(nodule: Nodule) -> Growth | None:
    prior = nodule.prior
    if prior is None:
        return None
    days = _days_between(prior, nodule)
    delta = nodule.mean_mm - prior.mean_mm if nodule.mean_mm is not None and prior.mean_mm is not None else None
    doubling = None
    if nodule.volume_mm3 and prior.volume_mm3:
        doubling = lungrads.volume_doubling_days(float(prior.volume_mm3), float(nodule.volume_mm3), days)
    return Growth(nodule, prior, days, delta, nodule.change == lungrads.Change.GROWING, doubling)


def nodules_of(reading: Reading) -> list[Nodule]:
    return list(reading.nodules.select_related("prior__reading__round", "reading__round").order_by("number"))


def nodule_rows(reading: Reading | None) -> list[tuple[Nodule, Growth | None]]:
    """The reading's nodules, each with its growth against the previous CT (None: new or baseline)."""
    return [(n, growth_of(n)) for n in nodules_of(reading)] if reading is not None else []


@dataclass
class RoundView:
    round: Round
    reading: Reading | None
    rows: list[tuple[Nodule, Growth | None]]


def rounds_of(participant: Participant) -> list[RoundView]:
    """The participant's rounds, newest first, with their readings, nodules and growth."""
    rounds = list(
        participant.rounds.select_related("study", "reading__reader__user", "invited_by__user").order_by("-number")
    )
    return [RoundView(r, getattr(r, "reading", None), nodule_rows(getattr(r, "reading", None))) for r in rounds]


def candidate_studies_for(principal: Principal, round_: Round) -> QuerySet[Study]:
    """The clinic's own studies of the participant it may tag to the round (the explicit tag)."""
    from imaging.access import studies_visible_to
    from imaging.patients import linked_patient_ids

    return (
        studies_visible_to(principal)
        .filter(
            institution_id=principal.institution_id or 0,
            patient_id__in=linked_patient_ids(round_.participant.patient),
            screening_round__isnull=True,
        )
        .order_by(F("study_date").desc(nulls_last=True), "-pk")
    )


def open_round_for_study(principal: Principal, study: Study) -> list[Round]:
    """The open rounds a study of the clinic may be tagged to (the study page's button)."""
    from imaging.patients import linked_patient_ids

    if study.institution_id != principal.institution_id:
        return []
    participants = access.participants_visible_to(principal).filter(
        institution_id=study.institution_id,
        patient_id__in=linked_patient_ids(study.patient),
        state=Participant.State.ACTIVE,
    )
    return list(
        Round.objects.filter(participant__in=participants, study__isnull=True, cancelled_at__isnull=True)
        .select_related("participant__programme", "participant__patient")
        .order_by("due_date")
    )


# --- the reader -----------------------------------------------------------------------------


def reading_worklist(principal: Principal, programme: Programme | None = None) -> QuerySet[Round]:
    rounds = access.rounds_to_read(principal)
    if programme is not None:
        rounds = rounds.filter(participant__programme=programme)
    return rounds.select_related("participant__patient", "participant__institution", "study").order_by(
        "tagged_at", "pk"
    )


@dataclass(frozen=True)
class Measured:
    """A length the reader saved in the viewer on this study: what the form may take a size from."""

    key: str  # "<sop uid>#<index>"
    length_mm: Decimal
    sop_uid: str
    series_number: int | None
    image_number: int | None
    label: str


def measurements_for(study: Study, user_id: Any) -> list[Measured]:
    """The reader's saved length measurements of the study (imaging.key_objects), newest save."""
    saved = key_objects.key_objects_of(study, user_id)["measurements"]
    lengths = [m for m in saved if m.get("kind") == "length" and m.get("length") is not None]
    numbers = dict(
        Instance.objects.filter(series__study=study, sop_uid__in=[m["sop_uid"] for m in lengths]).values_list(
            "sop_uid", "series__series_number"
        )
    )
    images = dict(
        Instance.objects.filter(series__study=study, sop_uid__in=[m["sop_uid"] for m in lengths]).values_list(
            "sop_uid", "instance_number"
        )
    )
    return [
        Measured(
            key=f"{m['sop_uid']}#{index}",
            length_mm=Decimal(str(m["length"])).quantize(Decimal("0.1")),
            sop_uid=m["sop_uid"],
            series_number=numbers.get(m["sop_uid"]),
            image_number=images.get(m["sop_uid"]),
            label=m.get("label") or "",
        )
        for index, m in enumerate(lengths, start=1)
    ]


# --- other pages' views of screening -----------------------------------------------------------


def cases_on_studies(principal: Principal, study_ids: Sequence[int]) -> dict[int, list[StudyCase]]:
    """The screening rounds on these studies whose participants the principal may see
    (imaging.study_cases asks for the study list and page): one query."""
    rounds = (
        Round.objects.filter(
            study_id__in=list(study_ids), participant__in=access.participants_visible_to(principal).values("pk")
        )
        .select_related("participant__programme", "reading")
        .order_by("study_id")
    )
    out: dict[int, list[StudyCase]] = {}
    for r in rounds:
        reading = getattr(r, "reading", None)
        if r.study_id is None:
            continue
        if reading is not None and reading.is_signed:
            state = _("Lung-RADS %(category)s") % {"category": reading.code}
        else:
            state = _("Waiting for the reading")
        out.setdefault(r.study_id, []).append(
            StudyCase(
                kind="screening",
                number=r.pk,
                label=_("%(programme)s, CT %(number)d")
                % {"programme": r.participant.programme.name, "number": r.number},
                state=state,
                url=reverse("screening:participant", args=[r.participant_id]),
            )
        )
    return out


def actions_on_study(principal: Principal, study: Study) -> list[StudyAction]:
    """The study page's screening buttons: tag the study to the patient's open screening CT (the
    clinic), or read it (the reader of its round)."""
    if access.rounds_to_read(principal).filter(study_id=study.pk).exists():
        round_pk = Round.objects.filter(study_id=study.pk).values_list("pk", flat=True).first()
        return [StudyAction("screening-read", _("Read the screening CT"), reverse("screening:read", args=[round_pk]))]
    if not hasattr(study, "screening_round") and open_round_for_study(principal, study):
        return [
            StudyAction(
                "screening-tag", _("Tag as a screening CT"), reverse("screening:tag_study", args=[study.study_uid])
            )
        ]
    return []


def work_to_read(principal: Principal, since: datetime | None) -> list[WorkItem]:
    return [
        WorkItem(
            patient=f"{r.participant.patient.display_name or _('(no name)')} · {r.participant.patient.patient_id}",
            case=_("Screening CT %(number)d") % {"number": r.number},
            asked=_("Read the screening CT from %(institution)s") % {"institution": r.participant.institution.name},
            url=reverse("screening:read", args=[r.pk]),
            at=r.tagged_at,
            audit_type=Participant.audit_type,
            audit_id=str(r.participant_id),
            audit_patient=str(r.participant.patient_id),
            basis=r.participant.basis,
        )
        for r in reading_worklist(principal)[:20]
    ]


def work_past_due(principal: Principal, since: datetime | None) -> list[WorkItem]:
    """The clinic's participants whose CT is past its due date, most overdue first."""
    if not principal.is_clinical:
        return []
    rounds = (
        Round.objects.filter(
            participant__in=access.participants_visible_to(principal).filter(
                institution_id=principal.institution_id or 0, state=Participant.State.ACTIVE
            ),
            study__isnull=True,
            cancelled_at__isnull=True,
            due_date__lt=today(),
        )
        .select_related("participant__patient", "participant__programme")
        .order_by("due_date")[:20]
    )
    return [
        WorkItem(
            patient=f"{r.participant.patient.display_name or _('(no name)')} · {r.participant.patient.patient_id}",
            case=r.participant.programme.name,
            asked=_("Screening CT due on %(date)s: invite the participant") % {"date": r.due_date.isoformat()},
            url=reverse("screening:participant", args=[r.participant_id]),
            at=None,
            state="danger" if due_of(r, r.participant.programme.window_days).state == "overdue" else "warn",
            audit_type=Participant.audit_type,
            audit_id=str(r.participant_id),
            audit_patient=str(r.participant.patient_id),
            basis=access.basis_for(principal, r.participant),
        )
        for r in rounds
    ]


def unread_notifications(user: Any) -> QuerySet[ScreeningNotification]:
    return ScreeningNotification.objects.filter(user=user, read_at__isnull=True)


def notifications_of(user: Any, limit: int = 50) -> list[ScreeningNotification]:
    return list(
        ScreeningNotification.objects.filter(user=user)
        .select_related("participant__patient", "participant__programme", "round")
        .order_by("-created_at", "-pk")[:limit]
    )


def open_cases_at(institution: Institution) -> OpenCases | None:
    """Participants of the institution still screening, and scans waiting for its pools' reading,
    and what switching screening off there does to them (alliance.modules asks before the switch)."""
    participants = Participant.objects.filter(institution=institution, state=Participant.State.ACTIVE).count()
    to_read = Round.objects.filter(
        participant__programme__reading_pool__institution=institution,
        study__isnull=False,
        reading__signed_at__isnull=True,
        cancelled_at__isnull=True,
    ).count()
    if not participants and not to_read:
        return None
    consequence = _(
        "Screening at %(name)s: %(participants)d taking part, %(to_read)d CTs waiting for its readers. While "
        "screening is off its doctors see neither, and it gets no reminders; CTs are still tagged to their "
        "rounds, and everything is back when screening is switched on again."
    ) % {"participants": participants, "to_read": to_read, "name": institution.name}
    return OpenCases(module=access.SCREENING_MODULE, count=participants + to_read, consequence=consequence)


# --- the programme's figures --------------------------------------------------------------------


@dataclass
class Figures:
    enrolled: int
    active: int
    withdrawn: int
    scanned: int  # participants with at least one scan
    scans: int
    read: int
    categories: list[tuple[str, str, int]]  # (category, label, count) of signed readings
    positive: int
    positive_by_category: list[tuple[str, int]]
    on_time: int
    late: int
    overdue: int
    not_yet_due: int
    referrals: int | None  # None: the referrals app is not installed
    per_institution: list[tuple[Institution, int, int, int]]  # enrolled, scanned, overdue

    @property
    def adherence_total(self) -> int:
        return self.on_time + self.late + self.overdue

    def _share(self, count: int) -> int:
        total = self.adherence_total
        return round(100 * count / total) if total else 0

    @property
    def on_time_share(self) -> int:
        return self._share(self.on_time)

    @property
    def late_share(self) -> int:
        return self._share(self.late)

    @property
    def overdue_share(self) -> int:
        return self._share(self.overdue)


def _adherence(rounds: QuerySet[Round], window_days: int, on: date) -> Counter[str]:
    """On time (scanned by due + window), late (scanned after), overdue (unscanned, window closed)."""
    counts: Counter[str] = Counter()
    for due, scanned, cancelled in rounds.values_list("due_date", "scanned_on", "cancelled_at"):
        closes = due + timedelta(days=window_days)
        if scanned is not None:
            counts["on_time" if scanned <= closes else "late"] += 1
        elif cancelled is None:
            counts["overdue" if on > closes else "not_yet_due"] += 1
    return counts


def referrals_from(programme: Programme, institutions: QuerySet[Institution]) -> int | None:
    """Referrals sent that carry a positive screening scan of the programme (made with the
    result's "refer" action, or by hand). Referrals are loaded by name: consults and referrals
    are independent layers."""
    try:
        referral_model = apps.get_model("referrals", "Referral")
    except LookupError:
        return None
    positive = Round.objects.filter(
        participant__programme=programme,
        participant__institution__in=institutions,
        reading__signed_at__isnull=False,
        reading__category__in=lungrads.POSITIVE,
    ).values("study_id")
    return int(
        referral_model.objects.filter(studies__in=positive)
        .exclude(status__in=["draft", "cancelled"])
        .distinct()
        .count()
    )


def figures(programme: Programme, institutions: QuerySet[Institution], on: date | None = None) -> Figures:
    day = on or today()
    participants = Participant.objects.filter(programme=programme, institution__in=institutions)
    rounds = Round.objects.filter(participant__in=participants)
    readings = Reading.objects.filter(round__in=rounds, signed_at__isnull=False)
    by_category = Counter(readings.values_list("category", flat=True))
    adherence = _adherence(rounds, programme.window_days, day)
    per_institution = []
    for institution in institutions.order_by("name"):
        mine = participants.filter(institution=institution)
        open_mine = rounds.filter(participant__institution=institution, study__isnull=True, cancelled_at__isnull=True)
        per_institution.append(
            (
                institution,
                mine.count(),
                mine.filter(rounds__study__isnull=False).distinct().count(),
                open_mine.filter(due_date__lt=day - timedelta(days=programme.window_days)).count(),
            )
        )
    return Figures(
        enrolled=participants.count(),
        active=participants.filter(state=Participant.State.ACTIVE).count(),
        withdrawn=participants.filter(state=Participant.State.WITHDRAWN).count(),
        scanned=participants.filter(rounds__study__isnull=False).distinct().count(),
        scans=rounds.filter(study__isnull=False).count(),
        read=readings.count(),
        categories=[(c, str(lungrads.CATEGORY_LABELS[c]), by_category.get(c, 0)) for c in lungrads.CATEGORIES],
        positive=sum(by_category.get(c, 0) for c in lungrads.POSITIVE),
        positive_by_category=[(c, by_category.get(c, 0)) for c in ("3", "4A", "4B", "4X")],
        on_time=adherence["on_time"],
        late=adherence["late"],
        overdue=adherence["overdue"],
        not_yet_due=adherence["not_yet_due"],
        referrals=referrals_from(programme, institutions),
        per_institution=per_institution,
    )
