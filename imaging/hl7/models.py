"""The hospital information systems an institution exchanges HL7 v2 with, and the outbox of
what we send them."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from alliance.models import Institution


class HisEndpoint(models.Model):
    """A HIS (or RIS) of one institution: the orders it sends name it in MSH-3 (sending
    application) and MSH-4 (sending facility), and become that institution's worklist steps;
    the results of the institution's consults go back to it over MLLP at host:port."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="his_endpoints")
    sending_application = models.CharField(_("sending application (MSH-3)"), max_length=180)
    sending_facility = models.CharField(_("sending facility (MSH-4)"), max_length=180)
    host = models.CharField(_("result host"), max_length=255, blank=True)
    port = models.PositiveIntegerField(_("result port"), null=True, blank=True)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("HIS endpoint")
        verbose_name_plural = _("HIS endpoints")
        constraints = [
            models.UniqueConstraint(fields=["sending_application", "sending_facility"], name="his_endpoint_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.sending_application}@{self.sending_facility} ({self.institution})"

    @property
    def receives_results(self) -> bool:
        return self.active and bool(self.host) and self.port is not None


class OutboundMessage(models.Model):
    """One HL7 message owed to a HIS: written in the transaction of what it reports (so it is
    never lost), sent by a Celery task that retries with backoff, and done once the HIS has
    acknowledged it (its ACK is kept). `key` makes the same result one row, sent once; the
    text is built before the first attempt and sent unchanged (same MSH-10) on every retry."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Acknowledged")
        FAILED = "failed", _("Failed")

    endpoint = models.ForeignKey(HisEndpoint, on_delete=models.PROTECT, related_name="outbound")
    key = models.CharField(max_length=128, unique=True)  # e.g. "oru:consult:12:v3"
    kind = models.CharField(max_length=16)  # MSH-9, e.g. ORU^R01
    # What it reports (plain ids: imaging sits below the apps whose objects these are).
    consult_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    version_id = models.BigIntegerField(null=True, blank=True)
    patient = models.CharField(max_length=200, blank=True)  # the audit trail's patient key(s)
    control_id = models.CharField(max_length=20, blank=True)  # MSH-10
    message = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    ack_code = models.CharField(max_length=2, blank=True)  # MSA-1 of the HIS's answer
    ack_text = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("outbound HL7 message")
        verbose_name_plural = _("outbound HL7 messages")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(state="pending"), name="hl7_outbound_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.state})"
