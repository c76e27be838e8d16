"""A screening programme (C12): the alliance's low-dose CT lung screening for its clinics.

A Programme names its participating clinics and the specialist pool that reads. A clinic
enrols a Participant (one issuer's patient, with their recorded consent); each planned CT is a
Round, due on a date: the baseline at enrolment, the next one from the previous reading's
Lung-RADS category. A Round's scan is a normal study of the image store, tagged to it (matched
by patient and date window, or by hand from the study page). A specialist of the pool reads it
with a structured form: a Reading with its Nodules, categorised by consults.screening.lungrads.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from alliance.models import Alliance, Doctor, Institution, Pool
from consults.screening import lungrads


class Programme(models.Model):
    alliance = models.ForeignKey(Alliance, on_delete=models.PROTECT, related_name="screening_programmes")
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    modality = models.CharField(_("modality"), max_length=16, default="CT")
    reading_pool = models.ForeignKey(
        Pool, on_delete=models.PROTECT, related_name="screening_programmes", verbose_name=_("reading pool")
    )
    institutions = models.ManyToManyField(
        Institution, related_name="screening_programmes", verbose_name=_("participating institutions")
    )
    # A scan up to this many days after its due date is on time; a round unscanned past it is overdue.
    window_days = models.PositiveSmallIntegerField(_("window (days)"), default=30)
    active = models.BooleanField(_("open for enrolment"), default=True)
    created_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("screening programme")
        verbose_name_plural = _("screening programmes")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["alliance", "name"], name="screening_programme_name_unique")]

    def __str__(self) -> str:
        return self.name


class Consent(models.TextChoices):
    WRITTEN = "written", _("Signed consent form")
    VERBAL = "verbal", _("Verbal consent before a witness")
    ELECTRONIC = "electronic", _("Electronic consent")
    REPRESENTATIVE = "representative", _("Signed by a legal representative")


class Participant(models.Model):
    """One person screened by one programme: an issuer's patient (imaging.Patient, identity
    (issuer, patient ID)); their studies under a linked identity (imaging.PatientLink) count too."""

    class State(models.TextChoices):
        ACTIVE = "active", _("Taking part")
        WITHDRAWN = "withdrawn", _("Withdrawn")

    programme = models.ForeignKey(Programme, on_delete=models.PROTECT, related_name="participants")
    patient = models.ForeignKey("imaging.Patient", on_delete=models.PROTECT, related_name="screening")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="screening_participants")
    enrolled_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="screening_enrolled")
    enrolled_at = models.DateTimeField(_("enrolled"))
    # Consent: who gave it, when and how, and who recorded it (enrolled_by).
    consent_by = models.CharField(_("consent given by"), max_length=200)
    consent_at = models.DateTimeField(_("consent given"))
    consent_method = models.CharField(_("how consent was given"), max_length=16, choices=Consent.choices)
    consent_note = models.TextField(_("consent note"), blank=True)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.ACTIVE)
    withdrawn_at = models.DateTimeField(_("withdrawn"), null=True, blank=True)
    withdrawn_reason = models.TextField(_("reason"), blank=True)

    class Meta:
        verbose_name = _("participant")
        verbose_name_plural = _("participants")
        ordering = ["-enrolled_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["programme", "patient"], name="screening_participant_unique"),
        ]
        indexes = [models.Index(fields=["institution", "state"])]

    def __str__(self) -> str:
        return f"{self.programme_id}: {self.patient_id}"

    audit_type = "screening-participant"  # how the audit trail names a read of it

    @property
    def audit_id(self) -> str:
        return str(self.pk)

    @property
    def audit_patient(self) -> str:
        return str(self.patient_id)

    @property
    def basis(self) -> str:
        """What a reader of the programme sees the participant on (the audit trail's basis)."""
        return f"screening-programme:{self.programme_id}"


class Round(models.Model):
    """One planned screening CT of a participant: baseline, annual, short-interval or work-up."""

    class Kind(models.TextChoices):
        BASELINE = "baseline", _("Baseline CT")
        ANNUAL = "annual", _("Annual CT")
        INTERVAL = "interval", _("Short-interval CT")
        WORKUP = "workup", _("Diagnostic work-up")

    class Match(models.TextChoices):
        AUTO = "auto", _("matched by patient and date")
        MANUAL = "manual", _("tagged by hand")

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveSmallIntegerField()  # 1: baseline
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    due_date = models.DateField(_("due"))
    # A study of the participant dated from this day on may be this round's scan.
    window_start = models.DateField()
    opened_at = models.DateTimeField()
    invited_at = models.DateTimeField(_("invited"), null=True, blank=True)
    invited_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    invitation_note = models.CharField(_("how the participant was invited"), max_length=200, blank=True)
    study = models.OneToOneField(
        "imaging.Study", on_delete=models.PROTECT, null=True, blank=True, related_name="screening_round"
    )
    scanned_on = models.DateField(_("scanned"), null=True, blank=True)
    match = models.CharField(max_length=8, choices=Match.choices, blank=True)
    tagged_at = models.DateTimeField(null=True, blank=True)
    tagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Reminders to the clinic, each sent once (consults.screening.services.rounds_remind).
    reminded_before_at = models.DateTimeField(null=True, blank=True)
    reminded_after_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("screening round")
        verbose_name_plural = _("screening rounds")
        ordering = ["participant", "number"]
        constraints = [models.UniqueConstraint(fields=["participant", "number"], name="screening_round_unique")]
        indexes = [
            # The open rounds (unscanned, not cancelled) by due date: invitations, reminders, overdue.
            models.Index(
                fields=["due_date"],
                condition=models.Q(study__isnull=True, cancelled_at__isnull=True),
                name="screening_round_open_due",
            ),
        ]

    def __str__(self) -> str:
        return f"round {self.number} of participant {self.participant_id}"

    @property
    def basis(self) -> str:
        """The grant basis that opens the round's scan to the reading pool."""
        return f"screening-round:{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.study_id is None and self.cancelled_at is None


class Reading(models.Model):
    """A specialist's structured reading of a round's scan; final once signed."""

    round = models.OneToOneField(Round, on_delete=models.PROTECT, related_name="reading")
    reader = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="screening_readings")
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    incomplete = models.CharField(
        _("exam incomplete"),
        max_length=16,
        blank=True,
        choices=[("", _("No: the exam is complete")), *lungrads.INCOMPLETE_LABELS.items()],
    )
    other_findings = models.TextField(_("other findings"), blank=True)
    significant = models.BooleanField(_("clinically significant finding other than lung cancer (S)"), default=False)
    significant_text = models.TextField(_("the significant finding"), blank=True)
    # Computed by lungrads when saved; final when signed.
    category = models.CharField(_("Lung-RADS category"), max_length=2, blank=True)
    signed_at = models.DateTimeField(_("signed"), null=True, blank=True)
    next_due = models.DateField(_("next due"), null=True, blank=True)
    # The structured findings as DICOM SR (TID 1500) in the study, once written.
    sr_sop_uid = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name = _("screening reading")
        verbose_name_plural = _("screening readings")
        indexes = [models.Index(fields=["signed_at"])]

    def __str__(self) -> str:
        return f"reading of round {self.round_id}"

    @property
    def code(self) -> str:
        """The category as reported, with the S modifier: "4A", "2S"."""
        return f"{self.category}S" if self.significant and self.category else self.category

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    @property
    def positive(self) -> bool:
        return self.is_signed and self.category in lungrads.POSITIVE

    @property
    def category_label(self) -> str:
        return str(lungrads.CATEGORY_LABELS.get(self.category, self.category))

    @property
    def management(self) -> lungrads.Management | None:
        return lungrads.MANAGEMENT.get(self.category)

    def referral_reason(self) -> str:
        """The reason of a referral made from this result (referrals' "refer" prefill)."""
        management = self.management
        return gettext("Lung cancer screening CT: Lung-RADS %(category)s. Recommended: %(management)s.") % {
            "category": self.code,
            "management": management.text if management is not None else "",
        }

    def referral_summary(self) -> str:
        """The findings in words, one line each, for the referral's clinical summary."""
        lines = [n.summary for n in self.nodules.order_by("number")]
        if self.significant_text:
            lines.append(gettext("Significant other finding (S): %(text)s") % {"text": self.significant_text})
        if self.other_findings:
            lines.append(self.other_findings)
        return "\n".join(lines)


class Lobe(models.TextChoices):
    RUL = "RUL", _("Right upper lobe")
    RML = "RML", _("Right middle lobe")
    RLL = "RLL", _("Right lower lobe")
    LUL = "LUL", _("Left upper lobe")
    LLL = "LLL", _("Left lower lobe")


class Nodule(models.Model):
    """One finding of a reading: where, how big, what kind, and its Lung-RADS category."""

    reading = models.ForeignKey(Reading, on_delete=models.CASCADE, related_name="nodules")
    number = models.PositiveSmallIntegerField()  # "Nodule 2": kept across rounds for a matched nodule
    prior = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="follow_up", verbose_name=_("same as")
    )
    lobe = models.CharField(_("lobe"), max_length=3, choices=Lobe.choices)
    kind = models.CharField(_("type"), max_length=16, choices=list(lungrads.KIND_LABELS.items()))
    series_number = models.IntegerField(_("series"), null=True, blank=True)
    image_number = models.IntegerField(_("image (slice)"), null=True, blank=True)
    # The image the size was measured on (a saved viewer measurement), when known.
    sop_uid = models.CharField(max_length=64, blank=True)
    long_axis_mm = models.DecimalField(_("long axis (mm)"), max_digits=5, decimal_places=1, null=True, blank=True)
    short_axis_mm = models.DecimalField(_("short axis (mm)"), max_digits=5, decimal_places=1, null=True, blank=True)
    mean_mm = models.DecimalField(_("mean diameter (mm)"), max_digits=5, decimal_places=1, null=True, blank=True)
    solid_mm = models.DecimalField(_("solid component (mm)"), max_digits=5, decimal_places=1, null=True, blank=True)
    volume_mm3 = models.PositiveIntegerField(_("volume (mm³)"), null=True, blank=True)
    feature = models.CharField(_("feature"), max_length=16, blank=True, choices=list(lungrads.FEATURE_LABELS.items()))
    airway_level = models.CharField(
        _("airway level"), max_length=16, blank=True, choices=list(lungrads.AIRWAY_LEVEL_LABELS.items())
    )
    cyst = models.CharField(_("cyst"), max_length=32, blank=True, choices=list(lungrads.CYST_LABELS.items()))
    suspicious = models.BooleanField(_("features that raise the suspicion of cancer (4X)"), default=False)
    category = models.CharField(_("category"), max_length=2)
    change = models.CharField(_("change"), max_length=16, choices=list(lungrads.CHANGE_LABELS.items()))

    class Meta:
        ordering = ["reading", "number"]
        constraints = [models.UniqueConstraint(fields=["reading", "number"], name="screening_nodule_number_unique")]

    def __str__(self) -> str:
        return f"nodule {self.number} of reading {self.reading_id}"

    @property
    def summary(self) -> str:
        """ "Nodule 1: right upper lobe, solid, 9.5 mm, new (Lung-RADS 4A)"."""
        size = f", {self.mean_mm} mm" if self.mean_mm is not None else ""
        solid = f" ({gettext('solid component')} {self.solid_mm} mm)" if self.solid_mm is not None else ""
        return gettext("Nodule %(n)d: %(lobe)s, %(kind)s%(size)s%(solid)s, %(change)s (Lung-RADS %(category)s)") % {
            "n": self.number,
            "lobe": self.get_lobe_display(),
            "kind": self.get_kind_display(),
            "size": size,
            "solid": solid,
            "change": self.get_change_display(),
            "category": self.category,
        }

    @property
    def finding(self) -> lungrads.Finding:
        return lungrads.Finding(
            kind=self.kind,
            mean=self.mean_mm,
            solid=self.solid_mm,
            feature=self.feature,
            airway_level=self.airway_level,
            cyst=self.cyst,
            suspicious=self.suspicious,
        )


class ScreeningNotification(models.Model):
    """An in-app notice to a doctor about a participant (a reminder, a result); its own e-mail
    outbox, as consults.Notification is."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="screening_notifications")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="notifications")
    round = models.ForeignKey(Round, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications")
    verb = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "read_at"]),
            models.Index(fields=["created_at"], condition=models.Q(emailed_at=None), name="screening_notif_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.verb} {self.participant_id}"

    @property
    def label(self) -> str:
        return str(VERB_LABELS.get(self.verb, self.verb))


VERB_LABELS = {
    "due_soon": _("Screening CT due soon"),
    "past_due": _("Screening CT past its due date"),
    "result": _("Screening result signed"),
}
