"""Routing (issue 18 item 1): where an institution forwards studies, the rules that decide
which, and the queue of what is owed to each destination.

A RouteItem is one study owed to one destination, moved through ITEM_MOVES by
imaging.routing.services only; every move is a RouteTransition row. The instances already
acknowledged by the peer are RouteSent rows, so that a retry sends only what is missing and a
study that grows after it was sent is owed only its new instances.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from alliance.models import Institution, Pool, ae_title_validator
from imaging.models import Instance, Study


class Destination(models.Model):
    """An institution's own PACS or workstation: a DICOM AE reached by C-STORE, or a DICOMweb
    service reached by STOW-RS with a bearer token (kept encrypted: imaging.routing.secrets)."""

    class Kind(models.TextChoices):
        DIMSE = "dimse", _("DICOM (C-STORE)")
        STOW = "stow", _("DICOMweb (STOW-RS)")

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="route_destinations")
    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.DIMSE)
    ae_title = models.CharField(_("AE title"), max_length=16, blank=True, validators=[ae_title_validator])
    host = models.CharField(_("host"), max_length=255, blank=True)
    port = models.PositiveIntegerField(
        _("port"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    # Our AE title when we call it ("" : the institution's own AE title on this network).
    calling_ae = models.CharField(_("our calling AE title"), max_length=16, blank=True, validators=[ae_title_validator])
    # A CharField: a URLField's form field warns about Django 6's default scheme.
    url = models.CharField(
        _("DICOMweb URL"), max_length=500, blank=True, validators=[URLValidator(schemes=["http", "https"])]
    )
    token_encrypted = models.TextField(blank=True, editable=False)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("routing destination")
        verbose_name_plural = _("routing destinations")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["institution", "name"], name="route_destination_name_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        """Where it is, as people read it."""
        if self.kind == self.Kind.STOW:
            return self.url
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def our_ae_title(self) -> str:
        return self.calling_ae or self.institution.ae_title

    @property
    def has_token(self) -> bool:
        return bool(self.token_encrypted)


class RouteRule(models.Model):
    """Which studies of (or shared with) the institution go to one of its destinations.

    trigger "study": a study received by the institution, once it is quiet
    (settings.ROUTE_QUIET_SECONDS). trigger "case": the studies of a consult or referral the
    institution sends or receives, when it is requested (with the patient's prior studies
    that the institution's devices may see, when prefetch is on). Every condition that is set
    must hold."""

    class Trigger(models.TextChoices):
        STUDY = "study", _("A study is received")
        CASE = "case", _("A consult or referral is requested")

    class Match(models.TextChoices):
        CONTAINS = "contains", _("contains")
        REGEX = "regex", _("matches the regular expression")

    class CaseKind(models.TextChoices):
        ANY = "", _("Consults and referrals")
        CONSULT = "consult", _("Consults")
        REFERRAL = "referral", _("Referrals")

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="route_rules")
    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="rules")
    name = models.CharField(_("name"), max_length=100)
    active = models.BooleanField(_("active"), default=True)
    trigger = models.CharField(_("when"), max_length=8, choices=Trigger.choices, default=Trigger.STUDY)
    modality = models.CharField(_("modality"), max_length=16, blank=True)
    source_ae = models.CharField(_("sent by the device (AE title)"), max_length=16, blank=True)
    description = models.CharField(_("study description"), max_length=200, blank=True)
    description_match = models.CharField(
        _("description match"), max_length=8, choices=Match.choices, default=Match.CONTAINS
    )
    case_kind = models.CharField(_("cases"), max_length=8, choices=CaseKind.choices, blank=True, default="")
    target_institution = models.ForeignKey(
        Institution,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("sent to the institution"),
    )
    target_pool = models.ForeignKey(
        Pool, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("sent to the desk")
    )
    prefetch = models.BooleanField(_("also send the patient's prior studies"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("routing rule")
        verbose_name_plural = _("routing rules")
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class State(models.TextChoices):
    PENDING = "pending", _("Waiting")
    SENDING = "sending", _("Sending")
    SENT = "sent", pgettext_lazy("routing state", "Sent")
    FAILED = "failed", _("Failed")


@dataclass(frozen=True)
class Move:
    sources: frozenset[str]
    target: str


# The state machine of a RouteItem: a move is allowed from these states only (services check).
ITEM_MOVES: dict[str, Move] = {
    "queue": Move(frozenset({""}), State.PENDING),
    "start": Move(frozenset({State.PENDING, State.FAILED, State.SENDING}), State.SENDING),  # SENDING: a dead lease
    "finish": Move(frozenset({State.SENDING}), State.SENT),
    "fail": Move(frozenset({State.SENDING}), State.FAILED),
    "retry": Move(frozenset({State.FAILED}), State.PENDING),
    "reopen": Move(frozenset({State.SENT}), State.PENDING),  # new instances, or sent again on request
}


class RouteItem(models.Model):
    """One study owed to one destination (unique: a study is never queued twice to one place)."""

    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="items")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="route_items")
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.PENDING)
    # Why it was queued: the rule, the case ("consult:12", also the audit's basis), a person.
    rule = models.ForeignKey(RouteRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="items")
    basis = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    prefetch = models.BooleanField(default=False)  # a prior study sent along with a case
    attempts = models.PositiveIntegerField(default=0)
    instances_sent = models.PositiveIntegerField(default=0)
    instances_total = models.PositiveIntegerField(default=0)
    # The peer's answer to the last attempt: a DIMSE status or an HTTP status, and why.
    peer_status = models.PositiveIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    transient = models.BooleanField(default=False)  # a failure that another attempt may cure
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)  # while SENDING: a worker holds it
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("routing item")
        verbose_name_plural = _("routing items")
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["destination", "study"], name="route_item_once")]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["destination", "state", "updated_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.study_id} -> {self.destination_id} ({self.state})"


class RouteSent(models.Model):
    """An instance the destination acknowledged (C-STORE success or warning, STOW-RS stored)."""

    item = models.ForeignKey(RouteItem, on_delete=models.CASCADE, related_name="sent")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    sent_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "instance"], name="route_sent_once")]

    def __str__(self) -> str:
        return f"{self.instance_id} in {self.item_id}"


class RouteTransition(models.Model):
    """The log of a RouteItem's moves (the state machine's table, not a comment)."""

    item = models.ForeignKey(RouteItem, on_delete=models.CASCADE, related_name="transitions")
    action = models.CharField(max_length=16)
    from_state = models.CharField(max_length=8, blank=True)
    to_state = models.CharField(max_length=8)
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.item_id}: {self.from_state} -> {self.to_state}"


class RouteScan(models.Model):
    """How far the sweep has looked at received studies (one row): studies updated after
    `through` and quiet since are matched against the ingest rules next."""

    through = models.DateTimeField()

    def __str__(self) -> str:
        return f"routed through {self.through:%Y-%m-%d %H:%M:%S}"
