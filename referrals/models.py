"""Two-way referral (C6): a patient sent up to the hospital and back down to the clinic.

States follow FHIR Task (Task.status), as consults do; the allowed moves are the TRANSITIONS
table below, checked by referrals.services for every write and by referrals.access for every
"may this user do it" question. The log of moves is ReferralTransition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from alliance.models import Doctor, Institution


class Direction(models.TextChoices):
    UP = "up", _("上转 Up to a higher level")
    DOWN = "down", _("下转 Down to a lower level")
    SAME = "same", _("平级 Same level")


# Levels of care: a tertiary hospital above a secondary (county) one above the primary level.
LEVEL_RANK: dict[str, int] = {
    Institution.Level.TERTIARY: 3,
    Institution.Level.SECONDARY: 2,
    Institution.Level.TOWNSHIP: 1,
    Institution.Level.COMMUNITY: 1,
}


def direction_between(from_level: str, to_level: str) -> str:
    """The direction a referral from one level to another has."""
    a, b = LEVEL_RANK.get(from_level, 0), LEVEL_RANK.get(to_level, 0)
    if b > a:
        return Direction.UP
    if b < a:
        return Direction.DOWN
    return Direction.SAME


class Urgency(models.TextChoices):
    ROUTINE = "routine", _("Routine")
    URGENT = "urgent", _("Urgent")
    EMERGENCY = "emergency", _("Emergency")


# Lower rank is read first; stored on the row so that the desk's list sorts on an index.
URGENCY_RANK: dict[str, int] = {Urgency.EMERGENCY: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}

# How soon the receiving desk is expected to answer: shown with the urgency everywhere.
ANSWER_WITHIN: dict[str, timedelta] = {
    Urgency.EMERGENCY: timedelta(hours=2),
    Urgency.URGENT: timedelta(hours=24),
    Urgency.ROUTINE: timedelta(hours=72),
}

URGENCY_WITH_TIME: dict[str, Any] = {
    Urgency.EMERGENCY: _("Emergency · desk answers within 2 h"),
    Urgency.URGENT: _("Urgent · desk answers within 24 h"),
    Urgency.ROUTINE: _("Routine · desk answers within 72 h"),
}


class Status(models.TextChoices):
    """FHIR Task.status values used by a referral (the same as a consult's)."""

    DRAFT = "draft", _("Draft")
    REQUESTED = "requested", _("Requested")
    ACCEPTED = "accepted", _("Accepted")
    IN_PROGRESS = "in-progress", _("In progress")
    ON_HOLD = "on-hold", _("On hold")
    COMPLETED = "completed", _("Completed")
    REJECTED = "rejected", _("Rejected")
    CANCELLED = "cancelled", _("Cancelled")
    FAILED = "failed", _("Failed")


OPEN_STATUSES = (Status.REQUESTED, Status.ON_HOLD, Status.ACCEPTED, Status.IN_PROGRESS)
CLOSED_STATUSES = (Status.COMPLETED, Status.REJECTED, Status.CANCELLED, Status.FAILED)


class Party:
    """Who may take a step, relative to one referral (see referrals.access.parties_of)."""

    REFERRER = "referrer"  # the doctor who wrote the referral
    DESK = "desk"  # the receiving institution's referral desk: its admins and DeskMember rows
    RECEIVER = "receiver"  # the appointment's named doctor, or any desk member when none is named
    SYSTEM = "system"  # the reminder job


@dataclass(frozen=True)
class Move:
    sources: tuple[str, ...]
    target: str
    parties: frozenset[str]


def _move(sources: tuple[str, ...], target: str, *parties: str) -> Move:
    return Move(sources, target, frozenset(parties))


# The workflow of issue 13.
TRANSITIONS: dict[str, Move] = {
    "create": _move((), Status.DRAFT, Party.REFERRER),
    "request": _move((Status.DRAFT,), Status.REQUESTED, Party.REFERRER),
    "accept": _move((Status.REQUESTED,), Status.ACCEPTED, Party.DESK),
    "propose": _move((Status.REQUESTED,), Status.ON_HOLD, Party.DESK),
    "agree": _move((Status.ON_HOLD,), Status.REQUESTED, Party.REFERRER),
    "reject": _move((Status.REQUESTED,), Status.REJECTED, Party.DESK),
    "arrive": _move((Status.ACCEPTED,), Status.IN_PROGRESS, Party.DESK),
    "no_show": _move((Status.ACCEPTED,), Status.FAILED, Party.DESK),
    "complete": _move((Status.IN_PROGRESS,), Status.COMPLETED, Party.RECEIVER),
    "cancel": _move(
        (Status.DRAFT, Status.REQUESTED, Status.ACCEPTED, Status.ON_HOLD), Status.CANCELLED, Party.REFERRER
    ),
}

ACTION_LABELS = {
    "create": _("Draft created"),
    "request": _("Referral sent"),
    "accept": _("Accepted with an appointment"),
    "propose": _("Another date proposed"),
    "agree": _("Proposed date agreed"),
    "reject": _("Declined"),
    "arrive": _("Patient arrived"),
    "no_show": _("Patient did not come"),
    "complete": _("Completed with a summary"),
    "cancel": _("Cancelled"),
    "message": _("New message"),
    "remind": _("Waiting for an answer for more than 24 hours"),
}


class Referral(models.Model):
    """A request that another institution take over (part of) a patient's care (a FHIR Task)."""

    referrer = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="referrals_written")
    from_institution = models.ForeignKey(
        Institution, on_delete=models.PROTECT, related_name="referrals_out", verbose_name=_("referring institution")
    )
    to_institution = models.ForeignKey(
        Institution, on_delete=models.PROTECT, related_name="referrals_in", verbose_name=_("receiving institution")
    )
    direction = models.CharField(_("direction"), max_length=8, choices=Direction.choices)
    urgency = models.CharField(_("urgency"), max_length=16, choices=Urgency.choices, default=Urgency.ROUTINE)
    urgency_rank = models.PositiveSmallIntegerField(default=URGENCY_RANK[Urgency.ROUTINE])
    patient = models.ForeignKey(
        "imaging.Patient", on_delete=models.PROTECT, related_name="referrals", verbose_name=_("patient")
    )
    studies = models.ManyToManyField("imaging.Study", blank=True, related_name="referrals", verbose_name=_("studies"))
    reason = models.TextField(_("reason for referral"))
    summary = models.TextField(_("clinical summary"), blank=True)
    wished_date = models.DateField(_("wished date"), null=True, blank=True)
    based_on = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="follow_ups",
        verbose_name=_("follows referral"),
    )
    consult = models.ForeignKey(
        "consults.Consult",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="referrals",
        verbose_name=_("consult"),
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(_("created"))
    requested_at = models.DateTimeField(_("requested"), null=True, blank=True)
    answered_at = models.DateTimeField(_("answered"), null=True, blank=True)
    appointment_at = models.DateTimeField(_("appointment"), null=True, blank=True)
    department = models.CharField(_("department"), max_length=200, blank=True)
    appointment_doctor = models.ForeignKey(
        Doctor,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="referral_appointments",
        verbose_name=_("doctor"),
    )
    proposed_date = models.DateField(_("proposed date"), null=True, blank=True)
    arrived_at = models.DateTimeField(_("arrived"), null=True, blank=True)
    receiving_patient = models.ForeignKey(
        "imaging.Patient",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="referrals_received",
        verbose_name=_("patient at the receiving institution"),
    )
    feedback = models.TextField(_("discharge or feedback summary"), blank=True)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    closed_reason = models.TextField(_("reason"), blank=True)
    # Set once the desk has been reminded of a request waiting more than 24 h.
    reminded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("referral")
        verbose_name_plural = _("referrals")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["to_institution", "status", "urgency_rank", "requested_at"]),
            models.Index(fields=["from_institution", "status"]),
            models.Index(fields=["referrer", "status"]),
            models.Index(fields=["appointment_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()}"

    @property
    def basis(self) -> str:
        """The grant basis that ties study access to this case."""
        return f"referral:{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def urgency_display(self) -> str:
        """The urgency with the answer time it promises ("Urgent · desk answers within 24 h")."""
        return str(URGENCY_WITH_TIME.get(self.urgency, self.urgency))

    @property
    def answer_due_at(self) -> datetime | None:
        if self.requested_at is None:
            return None
        return self.requested_at + ANSWER_WITHIN.get(self.urgency, ANSWER_WITHIN[Urgency.ROUTINE])


class ReferralTransition(models.Model):
    """One move of a referral through the workflow: the history the case page shows."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="transitions")
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    at = models.DateTimeField()
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.referral_id}: {self.from_status} -> {self.to_status}"

    @property
    def label(self) -> str:
        return str(ACTION_LABELS.get(self.action, self.action))


class ReferralMessage(models.Model):
    """The thread between the two sides of a referral."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="referral_messages")
    body = models.TextField(_("message"))
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.author} on {self.referral_id}"


class ReferralNotification(models.Model):
    """An in-app notice of something that happened to a referral that concerns the user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="referral_notifications")
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="notifications")
    verb = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    # The row is its own outbox, as consults.Notification: the e-mail task sets this once
    # the mail went out (or the user has no address); a periodic sweep sends the rest.
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "read_at"]),
            models.Index(fields=["created_at"], condition=models.Q(emailed_at=None), name="referrals_notif_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.verb} {self.referral_id}"

    @property
    def label(self) -> str:
        return str(ACTION_LABELS.get(self.verb, self.verb))


class DeskMember(models.Model):
    """A doctor the institution names to its referral desk (its institution admins are on it anyway)."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="desk_members")
    doctor = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="desk_memberships")
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("referral desk member")
        verbose_name_plural = _("referral desk members")
        constraints = [models.UniqueConstraint(fields=["institution", "doctor"], name="desk_member_unique")]

    def __str__(self) -> str:
        return f"{self.doctor} @ {self.institution}"
