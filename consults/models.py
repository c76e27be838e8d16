"""Remote consultation (C5): a clinic's request, a specialist's claim, a signed report.

States follow FHIR Task (Task.status); the allowed moves are the TRANSITIONS table
below, checked by consults.services for every write and by consults.access for every
"may this user do it" question. The log of moves is ConsultTransition, not a comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from alliance import audit
from alliance.models import Alliance, Doctor, Institution, Pool


class Priority(models.TextChoices):
    """FHIR request-priority, from the most to the least pressing (lists show them in this order).

    The Chinese words must read in that order too: 危急 (life-threatening) > 紧急 (emergency) >
    加急 (expedited) > 常规 (routine). consults.priorities adds the deadline to every label.
    """

    STAT = "stat", _("STAT")
    ASAP = "asap", _("ASAP")
    URGENT = "urgent", _("Urgent")
    ROUTINE = "routine", _("Routine")


# Lower rank is read first; stored on the row so that the worklist sorts on an index.
PRIORITY_RANK = {Priority.STAT: 0, Priority.ASAP: 1, Priority.URGENT: 2, Priority.ROUTINE: 3}

# (deadline, claim timeout) per priority when the alliance has set no policy of its own.
DEFAULT_POLICY = {
    Priority.STAT: (timedelta(hours=1), timedelta(minutes=10)),
    Priority.ASAP: (timedelta(hours=2), timedelta(minutes=30)),
    Priority.URGENT: (timedelta(hours=8), timedelta(hours=1)),
    Priority.ROUTINE: (timedelta(hours=24), timedelta(hours=4)),
}


class Status(models.TextChoices):
    """FHIR Task.status values used by a consult."""

    DRAFT = "draft", _("Draft")
    REQUESTED = "requested", _("Requested")
    ACCEPTED = "accepted", _("Accepted")
    IN_PROGRESS = "in-progress", _("In progress")
    ON_HOLD = "on-hold", _("On hold")
    # Not a FHIR Task.status: a junior reader's signed report waiting for a reviewer of the pool
    # (two-level sign-off); the API's report_status says "preliminary" as FHIR DiagnosticReport does.
    PRELIMINARY = "preliminary", _("Preliminary report")
    COMPLETED = "completed", _("Completed")
    REJECTED = "rejected", _("Rejected")
    CANCELLED = "cancelled", _("Cancelled")
    FAILED = "failed", _("Failed")


# A case the reader's side still works on: its thread, its deadline clock, the reader's key images.
OPEN_STATUSES = (Status.REQUESTED, Status.ACCEPTED, Status.IN_PROGRESS, Status.ON_HOLD)
# Every status a requested consult can still leave (the open ones, and a preliminary report
# waiting for its reviewer): its figures may still change, so the monthly roll-up waits for it,
# and it is still the receiving desk's backlog. A draft can change too, but it was never
# requested: no requested_at, so no month of the figures and no desk holds it.
UNFINISHED_STATUSES = (*OPEN_STATUSES, Status.PRELIMINARY)
OWNED_STATUSES = (Status.ACCEPTED, Status.IN_PROGRESS, Status.ON_HOLD)
CLOSED_STATUSES = (Status.REJECTED, Status.CANCELLED, Status.FAILED)


class Party:
    """Who may take a step, relative to one consult (see consults.access.parties_of)."""

    REQUESTER = "requester"  # the clinician who wrote the request
    CANDIDATE = "candidate"  # may claim it: a member of the target pool, or the named specialist
    NAMED = "named"  # the specialist the request names
    OWNER = "owner"  # the specialist who claimed it
    POOL_ADMIN = "pool_admin"  # institution admin of the receiving institution
    REVIEWER = "reviewer"  # a reviewer of the pool (two-level sign-off), not the report's author
    SYSTEM = "system"  # the deadline job


@dataclass(frozen=True)
class Move:
    sources: tuple[str, ...]
    target: str
    parties: frozenset[str]


def _move(sources: tuple[str, ...], target: str, *parties: str) -> Move:
    return Move(sources, target, frozenset(parties))


# The workflow of issue 6. "create" starts from nothing; "addendum" stays completed;
# "save_draft" keeps a report draft in progress without changing the status.
TRANSITIONS: dict[str, Move] = {
    "create": _move((), Status.DRAFT, Party.REQUESTER),
    "request": _move((Status.DRAFT,), Status.REQUESTED, Party.REQUESTER),
    "claim": _move((Status.REQUESTED,), Status.ACCEPTED, Party.CANDIDATE),
    "reject": _move((Status.REQUESTED,), Status.REJECTED, Party.NAMED, Party.POOL_ADMIN),
    "release": _move((Status.ACCEPTED,), Status.REQUESTED, Party.OWNER, Party.POOL_ADMIN, Party.SYSTEM),
    "start_report": _move((Status.ACCEPTED,), Status.IN_PROGRESS, Party.OWNER),
    "save_draft": _move((Status.IN_PROGRESS,), Status.IN_PROGRESS, Party.OWNER),
    "hold": _move((Status.IN_PROGRESS,), Status.ON_HOLD, Party.OWNER),
    "answer": _move((Status.ON_HOLD,), Status.IN_PROGRESS, Party.REQUESTER),
    "sign": _move((Status.IN_PROGRESS,), Status.COMPLETED, Party.OWNER),
    # Two-level sign-off (书写 → 审核): a junior's signature makes a preliminary report that a
    # reviewer of the pool verifies, or returns to the junior for another draft.
    "sign_preliminary": _move((Status.IN_PROGRESS,), Status.PRELIMINARY, Party.OWNER),
    "verify": _move((Status.PRELIMINARY,), Status.COMPLETED, Party.REVIEWER),
    "return_report": _move((Status.PRELIMINARY,), Status.IN_PROGRESS, Party.REVIEWER),
    "addendum": _move((Status.COMPLETED,), Status.COMPLETED, Party.OWNER),
    "cancel": _move((Status.DRAFT, Status.REQUESTED, Status.ACCEPTED), Status.CANCELLED, Party.REQUESTER),
    "fail": _move((Status.IN_PROGRESS,), Status.FAILED, Party.OWNER),
    "second_opinion": _move((Status.COMPLETED,), Status.COMPLETED, Party.REQUESTER),
}

ACTION_LABELS = {
    "create": _("Draft created"),
    "request": _("Requested"),
    "claim": _("Claimed"),
    "reject": _("Declined"),
    "release": _("Released to the pool"),
    "start_report": _("Report started"),
    "hold": _("Question to the requester"),
    "answer": _("Answered"),
    "sign": _("Report signed"),
    "sign_preliminary": _("Preliminary report signed"),
    "verify": _("Report verified"),
    "return_report": _("Report returned for changes"),
    "addendum": _("Addendum signed"),
    "cancel": _("Cancelled"),
    "fail": _("Failed"),
    "second_opinion": _("Second opinion requested"),
    "widen": _("Widened to the whole pool"),
    "remind_50": _("Half of the time used"),
    "remind_80": _("Four fifths of the time used"),
    "breach": _("Deadline breached"),
    "message": _("New message"),
    "critical": _("Critical result"),
    "critical_ack": _("Critical result acknowledged"),
    "critical_escalate": _("Critical result not acknowledged"),
    "order_exam": _("Exam requested"),
    "exam_arrived": _("Requested exam arrived"),
}


# The notices of a critical result (consults.critical), shown apart in the bell's list.
CRITICAL_VERBS = frozenset({"critical", "critical_ack", "critical_escalate"})


class PriorityPolicy(models.Model):
    """An alliance's turnaround policy for one priority (set by the alliance admin)."""

    alliance = models.ForeignKey(Alliance, on_delete=models.CASCADE, related_name="priority_policies")
    priority = models.CharField(_("priority"), max_length=16, choices=Priority.choices)
    deadline_minutes = models.PositiveIntegerField(_("deadline (minutes)"))
    claim_timeout_minutes = models.PositiveIntegerField(_("claim timeout (minutes)"))

    class Meta:
        verbose_name = _("priority policy")
        verbose_name_plural = _("priority policies")
        constraints = [models.UniqueConstraint(fields=["alliance", "priority"], name="priority_policy_unique")]

    def __str__(self) -> str:
        return f"{self.alliance}: {self.priority}"


class ReportTemplate(models.Model):
    """Starting text for a report of one modality and body part ("" body part: any)."""

    alliance = models.ForeignKey(Alliance, on_delete=models.CASCADE, related_name="report_templates")
    name = models.CharField(_("name"), max_length=200)
    modality = models.CharField(_("modality"), max_length=16)
    body_part = models.CharField(_("body part"), max_length=16, blank=True)
    findings = models.TextField(_("findings"), blank=True)
    impression = models.TextField(_("impression"), blank=True)
    recommendation = models.TextField(_("recommendation"), blank=True)

    class Meta:
        verbose_name = _("report template")
        verbose_name_plural = _("report templates")
        ordering = ["modality", "body_part", "name"]

    def __str__(self) -> str:
        return self.name


class Consult(models.Model):
    """A request for a specialist's reading of one or more studies (a FHIR Task)."""

    requester = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="consults_requested")
    requesting_institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="consults")
    studies = models.ManyToManyField("imaging.Study", related_name="consults", verbose_name=_("studies"))
    question = models.TextField(_("clinical question"))
    history = models.TextField(_("clinical history"), blank=True)
    priority = models.CharField(_("priority"), max_length=16, choices=Priority.choices, default=Priority.ROUTINE)
    priority_rank = models.PositiveSmallIntegerField(default=PRIORITY_RANK[Priority.ROUTINE])
    # The principal modality of the studies (imaging.Study.principal_modality of the first),
    # kept on the row so that the figures count consults by modality without joining the
    # region's studies.
    modality = models.CharField(_("modality"), max_length=16, blank=True, default="")
    pool = models.ForeignKey(
        Pool, on_delete=models.PROTECT, null=True, blank=True, related_name="consults", verbose_name=_("pool")
    )
    specialist = models.ForeignKey(
        Doctor,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="consults_named",
        verbose_name=_("named specialist"),
    )
    owner = models.ForeignKey(Doctor, on_delete=models.PROTECT, null=True, blank=True, related_name="consults_owned")
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT)
    reason = models.TextField(_("reason"), blank=True)
    second_opinion_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="second_opinions"
    )
    created_at = models.DateTimeField(_("created"))
    # Deadline bookkeeping. due_at and claim_due_at move later by the time spent on hold,
    # so "time left" is always due_at minus now (or minus paused_since while on hold).
    requested_at = models.DateTimeField(_("requested"), null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deadline_seconds = models.PositiveIntegerField(default=0)
    claim_timeout_seconds = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField(_("due"), null=True, blank=True)
    claim_due_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.PositiveIntegerField(default=0)
    paused_since = models.DateTimeField(null=True, blank=True)
    # When the owner is reminded (50% and 80% of the time used), moved like due_at.
    remind_50_at = models.DateTimeField(null=True, blank=True)
    remind_80_at = models.DateTimeField(null=True, blank=True)
    reminded_50 = models.BooleanField(default=False)
    reminded_80 = models.BooleanField(default=False)
    widened_at = models.DateTimeField(null=True, blank=True)
    breached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("consult")
        verbose_name_plural = _("consults")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "pool", "priority_rank", "due_at"]),
            models.Index(fields=["owner", "status"]),
            models.Index(fields=["requesting_institution", "status"]),
            models.Index(fields=["specialist", "status"]),
            models.Index(fields=["requested_at"], name="consults_figures_requested"),
            # The figures' live claims and signatures after the roll-up (consults.figures).
            models.Index(fields=["claimed_at"], name="consults_figures_claimed"),
            models.Index(fields=["completed_at"], name="consults_figures_completed"),
            # The oldest unfinished consult, where the figures' roll-up stops: without it
            # PostgreSQL walks consults_figures_requested from the oldest consult of the year.
            models.Index(
                fields=["requested_at"],
                condition=models.Q(status__in=[s.value for s in UNFINISHED_STATUSES]),
                name="consults_unfinished_requested",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()}"

    @property
    def basis(self) -> str:
        """The grant basis that ties study access to this case."""
        return f"consult:{self.pk}"

    @property
    def audit_patient(self) -> str:
        """The patients of the case's studies as the audit trail names them (prefetched studies
        are used as they are; otherwise one query)."""
        return audit.patients(s.patient_id for s in self.studies.all())

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class ConsultMonth(models.Model):
    """The figures' roll-up of closed months (in settings.TIME_ZONE): consults requested in
    `month` (its first day), per requesting, pool and named specialist's institution,
    priority and modality, with how many were signed, signed in time and breached, and the
    signed ones' turnarounds (seconds, sorted float64, little-endian) so that the turnaround
    percentiles stay exact. Only months whose consults are all closed are rolled up (a
    closed consult changes no more), so the rows never go stale; the rest is counted live.
    Derived data, rewritten by consults.figures.roll_up_consult_days."""

    month = models.DateField()
    requesting_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="+")
    pool_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, null=True, related_name="+")
    specialist_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, null=True, related_name="+")
    priority = models.CharField(max_length=16)
    modality = models.CharField(max_length=16, blank=True)
    requested = models.PositiveIntegerField()
    signed = models.PositiveIntegerField()
    in_time = models.PositiveIntegerField()
    breached = models.PositiveIntegerField()
    turnarounds = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["month"], name="consults_month_month")]

    def __str__(self) -> str:
        return f"{self.month} {self.requesting_institution_id} {self.priority}: {self.requested}"


class ReaderDay(models.Model):
    """The figures' roll-up of claims and signatures per specialist and closed day (a claim
    counts on the day of the consult's claimed_at, a report on its completed_at), with the
    consult's institutions as in ConsultMonth. Rewritten with it."""

    day = models.DateField()
    owner = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="+")
    requesting_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="+")
    pool_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, null=True, related_name="+")
    specialist_institution = models.ForeignKey(Institution, on_delete=models.CASCADE, null=True, related_name="+")
    claims = models.PositiveIntegerField()
    reports = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["day"], name="consults_reader_day_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.owner_id}: {self.claims}/{self.reports}"


class ConsultRollUp(models.Model):
    """One row: ConsultMonth and ReaderDay hold every day before `until` (exclusive, the
    first day of a month)."""

    until = models.DateField()

    def __str__(self) -> str:
        return f"consult days until {self.until}"


class ConsultTransition(models.Model):
    """One move of a consult through the workflow: the log the case page shows."""

    consult = models.ForeignKey(Consult, on_delete=models.CASCADE, related_name="transitions")
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    at = models.DateTimeField()
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.consult_id}: {self.from_status} -> {self.to_status}"

    @property
    def label(self) -> str:
        return str(ACTION_LABELS.get(self.action, self.action))


class Report(models.Model):
    """The specialist's report on a consult; its text lives in numbered versions."""

    consult = models.OneToOneField(Consult, on_delete=models.CASCADE, related_name="report")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"report of consult {self.consult_id}"


class ReportVersion(models.Model):
    """One version of a report. Signed versions are immutable (service check and DB trigger)."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    findings = models.TextField(_("findings"), blank=True)
    impression = models.TextField(_("impression"), blank=True)
    recommendation = models.TextField(_("recommendation"), blank=True)
    addendum = models.TextField(_("addendum"), blank=True)
    author = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="report_versions")
    updated_at = models.DateTimeField()
    signed_by = models.ForeignKey(
        Doctor, on_delete=models.PROTECT, null=True, blank=True, related_name="report_versions_signed"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    # Signed by a junior reader under two-level sign-off: preliminary until a ReportReview approves it.
    preliminary = models.BooleanField(_("preliminary"), default=False)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["report", "number"], name="report_version_unique")]

    def __str__(self) -> str:
        return f"v{self.number}"

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    @property
    def review_outcome(self) -> str:
        """ "" when no review was needed; else "preliminary" (waiting), "approved" or "returned"."""
        if not self.preliminary:
            return ""
        outcomes = [r.outcome for r in self.reviews.all()]
        return outcomes[-1] if outcomes else "preliminary"


class ReportReview(models.Model):
    """A reviewer's decision on a preliminary version: approved (the report is final) or returned."""

    class Outcome(models.TextChoices):
        APPROVED = "approved", _("Approved")
        RETURNED = "returned", _("Returned")

    version = models.ForeignKey(ReportVersion, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="report_reviews")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    comments = models.TextField(_("comments"), blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.version} {self.outcome}"


class Message(models.Model):
    """The thread between the requester and the owner."""

    consult = models.ForeignKey(Consult, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="consult_messages")
    body = models.TextField(_("message"))
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.author} on {self.consult_id}"


class Notification(models.Model):
    """An in-app notice of something that happened to a consult that concerns the user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consult_notifications")
    consult = models.ForeignKey(Consult, on_delete=models.CASCADE, related_name="notifications")
    verb = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    # The row is its own outbox: the e-mail task sets this once the mail went out (or the
    # user has no address), and a periodic sweep sends what a broker outage or a lost task
    # left unsent.
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "read_at"]),
            models.Index(fields=["created_at"], condition=models.Q(emailed_at=None), name="consults_notif_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.verb} {self.consult_id}"

    @property
    def label(self) -> str:
        return str(ACTION_LABELS.get(self.verb, self.verb))

    @property
    def is_critical(self) -> bool:
        """A notice of a critical result: flagged, acknowledged or escalated (consults.critical)."""
        return self.verb in CRITICAL_VERBS


class CriticalFinding(models.Model):
    """One entry of the alliance's list of critical findings (危急值) for a modality."""

    alliance = models.ForeignKey(Alliance, on_delete=models.CASCADE, related_name="critical_findings")
    modality = models.CharField(_("modality"), max_length=16)
    name = models.CharField(_("finding"), max_length=200)
    active = models.BooleanField(_("in use"), default=True)

    class Meta:
        verbose_name = _("critical finding")
        verbose_name_plural = _("critical findings")
        ordering = ["modality", "name"]
        constraints = [
            models.UniqueConstraint(fields=["alliance", "modality", "name"], name="critical_finding_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.modality}: {self.name}"


class CriticalResult(models.Model):
    """A critical finding the reader flagged on a consult, until the requesting side reads it
    back (acknowledged_*) or, past the setting CRITICAL_ESCALATE_MINUTES, its admin is told
    (escalated_at, set once). The finding's text is copied: the list may change later."""

    consult = models.ForeignKey(Consult, on_delete=models.CASCADE, related_name="critical_results")
    finding = models.ForeignKey(
        CriticalFinding, on_delete=models.PROTECT, null=True, blank=True, related_name="results"
    )
    text = models.CharField(_("critical finding"), max_length=300)
    # The consult's modality when flagged, so that the figures count without a join.
    modality = models.CharField(_("modality"), max_length=16, blank=True, default="")
    flagged_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="critical_flagged")
    flagged_at = models.DateTimeField(_("flagged"))
    acknowledged_by = models.ForeignKey(
        Doctor, on_delete=models.PROTECT, null=True, blank=True, related_name="critical_acknowledged"
    )
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)
    read_back = models.CharField(_("read back"), max_length=300, blank=True)
    escalated_at = models.DateTimeField(_("escalated"), null=True, blank=True)

    class Meta:
        verbose_name = _("critical result")
        verbose_name_plural = _("critical results")
        ordering = ["-flagged_at", "-id"]
        indexes = [
            models.Index(
                fields=["flagged_at"],
                condition=models.Q(acknowledged_at=None, escalated_at=None),
                name="consults_critical_waiting",
            ),
            models.Index(fields=["flagged_at"], name="consults_critical_figures"),
        ]

    def __str__(self) -> str:
        return f"{self.consult_id}: {self.text}"

    @property
    def is_acknowledged(self) -> bool:
        return self.acknowledged_at is not None
