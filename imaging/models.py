"""The image index (C2): what the DICOM files in storage are, and who may see them.

The files themselves are kept byte-for-byte in the "dicom" storage; these rows index
the attributes that queries need. Attribute names follow PS3.3.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from alliance import audit
from alliance.models import Institution


def person_name(pn: str) -> str:
    """A DICOM person name as people write it: "黄永强 (Huang Yongqiang)" for "Huang^Yongqiang=黄^永强".

    PS3.5 6.2.1.1: component groups alphabetic=ideographic=phonetic, each of
    family^given^middle^prefix^suffix. Ideographic names are written without spaces.
    """
    groups = (pn.split("=") + ["", ""])[:2]
    alphabetic, ideographic = (
        sep.join(part for part in group.split("^") if part.strip()).strip()
        for group, sep in zip(groups, (" ", ""), strict=True)
    )
    if alphabetic and ideographic:
        return f"{ideographic} ({alphabetic})"
    return ideographic or alphabetic


class Patient(models.Model):
    """PS3.3 C.7.1.1 Patient Module. Identity is (issuer, patient ID): the issuer is the
    institution whose devices assigned the ID, so two hospitals' "1001" are two people."""

    issuer = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="patients")
    patient_id = models.CharField(_("patient ID"), max_length=64)  # (0010,0020) LO
    name = models.CharField(_("patient name"), max_length=324, blank=True)  # (0010,0010) PN
    birth_date = models.DateField(_("birth date"), null=True, blank=True)  # (0010,0030) DA
    sex = models.CharField(_("sex"), max_length=16, blank=True)  # (0010,0040) CS
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when an admin corrected the demographics (imaging.maintenance); ingest then keeps them.
    corrected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("patient")
        verbose_name_plural = _("patients")
        constraints = [models.UniqueConstraint(fields=["issuer", "patient_id"], name="patient_identity_unique")]
        indexes = [models.Index(fields=["name"]), models.Index(fields=["patient_id"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.patient_id})"

    @property
    def display_name(self) -> str:
        return person_name(self.name)

    @property
    def sex_display(self) -> str:
        """(0010,0040) in the reader's language: M, F and O are the enumerated values
        (PS3.3 C.7.1.1); anything else is shown as sent."""
        return str(_SEXES.get(self.sex.strip().upper(), self.sex))


_SEXES = {"M": _("male"), "F": _("female"), "O": _("other")}


# PS3.3 C.7.3.1.1.1: modalities of objects that accompany images rather than being them.
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "OT"})


class Study(models.Model):
    """PS3.3 C.7.2.1 General Study Module, plus counts kept up to date by ingest."""

    study_uid = models.CharField(_("Study Instance UID"), max_length=64, unique=True)  # (0020,000D)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="studies")
    study_date = models.DateField(_("study date"), null=True, blank=True)  # (0008,0020)
    study_time = models.TimeField(_("study time"), null=True, blank=True)  # (0008,0030)
    accession_number = models.CharField(_("accession number"), max_length=16, blank=True)  # (0008,0050)
    study_id = models.CharField(_("study ID"), max_length=16, blank=True)  # (0020,0010)
    description = models.CharField(_("description"), max_length=64, blank=True)  # (0008,1030)
    referring_physician = models.CharField(_("referring physician"), max_length=324, blank=True)  # (0008,0090)
    # (0008,0061) Modalities in Study, as "CT\\SR": the multi-valued string as stored in DICOM.
    modalities = models.CharField(_("modalities"), max_length=64, blank=True)
    num_series = models.PositiveIntegerField(default=0)
    num_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    received_at = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Soft delete by an institution admin (imaging.maintenance): hidden from every door at once,
    # its files kept until the retention job (purge_deleted_studies) removes them.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_reason = models.TextField(blank=True, default="", db_default="")  # raw inserts (index.py) omit it

    class Meta:
        verbose_name = _("study")
        verbose_name_plural = _("studies")
        indexes = [
            models.Index(fields=["institution", "study_date"]),
            models.Index(fields=["study_date"]),
            models.Index(fields=["accession_number"]),
            # The figures' studies and bytes received per institution and month, answered
            # from the index alone (PostgreSQL's INCLUDE; other databases index the keys).
            models.Index(
                fields=["received_at", "institution"], include=["size_bytes"], name="imaging_figures_received"
            ),
        ]
        permissions = [("read_study", "May read the study's images and metadata")]

    def __str__(self) -> str:
        return f"{self.study_uid} {self.description}"

    audit_type = "study"  # how the audit trail names a read of it (alliance.audit.read)

    @property
    def audit_id(self) -> str:
        return self.study_uid

    @property
    def audit_patient(self) -> str:
        return str(self.patient_id)

    @property
    def referring_physician_name(self) -> str:
        return person_name(self.referring_physician)

    @property
    def modality_list(self) -> list[str]:
        return [m for m in self.modalities.split("\\") if m]

    @property
    def principal_modality(self) -> str:
        """The imaging modality the study is of: the first that is not a document or a
        presentation object (SR, KO, PR, DOC, OT), else the first, else ""."""
        modalities = self.modality_list
        images = [m for m in modalities if m not in NON_IMAGE_MODALITIES]
        return (images or modalities or [""])[0]


class ReceivedDay(models.Model):
    """Studies and bytes an institution received on one day (in settings.TIME_ZONE): the
    figures' roll-up of closed days, so that a year of a region is summed from a few
    thousand rows instead of 1.5 million studies. Derived data only, rewritten by
    imaging.figures.roll_up_received_days; the days after the last roll-up are summed live."""

    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    studies = models.PositiveIntegerField()
    size_bytes = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "institution"], name="imaging_received_day_unique")]

    def __str__(self) -> str:
        return f"{self.institution_id} {self.day}: {self.studies}"


class Series(models.Model):
    """PS3.3 C.7.3.1 General Series Module."""

    series_uid = models.CharField(_("Series Instance UID"), max_length=64, unique=True)  # (0020,000E)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    modality = models.CharField(_("modality"), max_length=16, blank=True)  # (0008,0060)
    series_number = models.IntegerField(_("series number"), null=True, blank=True)  # (0020,0011)
    description = models.CharField(_("description"), max_length=64, blank=True)  # (0008,103E)
    body_part = models.CharField(_("body part"), max_length=16, blank=True)  # (0018,0015)
    num_instances = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("series")
        verbose_name_plural = _("series")
        ordering = ["series_number", "id"]
        indexes = [models.Index(fields=["study", "series_number"]), models.Index(fields=["modality"])]

    def __str__(self) -> str:
        return f"{self.modality} {self.series_number} {self.description}"

    audit_type = "series"

    @property
    def audit_id(self) -> str:
        return self.series_uid

    @property
    def audit_patient(self) -> str:
        return str(self.study.patient_id)


class Instance(models.Model):
    """PS3.3 C.12.1 SOP Common Module and C.7.6.1 General Image Module; the file's place in storage."""

    sop_uid = models.CharField(_("SOP Instance UID"), max_length=64, unique=True)  # (0008,0018)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_class_uid = models.CharField(max_length=64)  # (0008,0016)
    transfer_syntax_uid = models.CharField(max_length=64)  # (0002,0010)
    instance_number = models.IntegerField(null=True, blank=True)  # (0020,0013)
    rows = models.PositiveIntegerField(null=True, blank=True)  # (0028,0010)
    columns = models.PositiveIntegerField(null=True, blank=True)  # (0028,0011)
    number_of_frames = models.PositiveIntegerField(default=1)  # (0028,0008)
    storage_key = models.CharField(max_length=255, unique=True)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)
    # Thumbnail and preview are rendered after ingest by a Celery task; an instance with no
    # frame to show (a report, a bad codec) is marked unrenderable instead. Until one of the
    # two is set a render is owed, and a periodic sweep asks for it again (a request lost
    # with the broker or a killed process costs a delay, not the thumbnail).
    rendered = models.BooleanField(default=False)
    # db_default: a server of the previous release (a rolling upgrade) inserts rows without it
    unrenderable = models.BooleanField(default=False, db_default=False)

    class Meta:
        verbose_name = _("instance")
        verbose_name_plural = _("instances")
        ordering = ["instance_number", "id"]
        indexes = [
            models.Index(fields=["series", "instance_number"]),
            # Only the owed renders: small, and what the sweep reads oldest first.
            models.Index(
                fields=["received_at"],
                condition=models.Q(rendered=False, unrenderable=False),
                name="imaging_instance_render_owed",
            ),
        ]

    def __str__(self) -> str:
        return self.sop_uid

    audit_type = "instance"

    @property
    def audit_id(self) -> str:
        return self.sop_uid

    @property
    def audit_patient(self) -> str:
        return str(self.series.study.patient_id)


class StudyGroupGrant(GroupObjectPermissionBase):
    """A grant of a study to a group (an institution's or a pool's members), for one case.

    django-guardian's direct foreign-key object permission (group, permission, study), plus
    what a case needs: the basis ("consult:12"), an expiry and a revocation. Only
    imaging.grants writes these; only imaging.access reads them. Guardian's permission
    backend is not installed: it would ignore the expiry and the revocation (README,
    architecture notes).
    """

    content_object = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="group_grants")
    basis = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A grant to an institution's DICOM devices only, not to its doctors: a consult's studies
    # sent to the receiving institution's own PACS (imaging.routing), which may then find and
    # retrieve them as the case's; its doctors still see them only through the case's own grants.
    devices_only = models.BooleanField(default=False, db_default=False)

    class Meta(GroupObjectPermissionBase.Meta):
        abstract = False
        unique_together = [("group", "permission", "content_object", "basis")]

    def __str__(self) -> str:
        return f"{self.basis}: group {self.group_id} on study {self.content_object_id}"


class StudyUserGrant(UserObjectPermissionBase):
    """A grant of a study to one user (a named specialist, or break-glass access)."""

    content_object = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="user_grants")
    basis = models.CharField(max_length=64, db_index=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta(UserObjectPermissionBase.Meta):
        abstract = False
        unique_together = [("user", "permission", "content_object", "basis")]

    def __str__(self) -> str:
        return f"{self.basis}: user {self.user_id} on study {self.content_object_id}"


class FilmLink(models.Model):
    """A patient's cloud film (C8): a link to one patient's studies, opened on a phone after a
    check of date of birth or PIN. Its handle (the QR) and its short code (typed) are random,
    kept here only as hashes; see imaging.films for how they are made, checked and audited.

    kind "patient": made by the institution (or by signing a consult) for the patient;
    kind "share": made by the patient from their own link, for another doctor, 1 to 7 days.
    """

    class Kind(models.TextChoices):
        PATIENT = "patient", _("Patient's link")
        SHARE = "share", _("Shared with a doctor")

    class Verify(models.TextChoices):
        BIRTH_DATE = "dob", _("Date of birth")
        PIN = "pin", _("PIN")

    handle_hash = models.CharField(max_length=64, unique=True)
    code_hash = models.CharField(max_length=64, unique=True)
    pin_hash = models.CharField(max_length=128, blank=True)
    # A random seed from which the server (with its key) derives the handle, code and PIN
    # again, for a reprinted slip or the QR on a report PDF; useless without the key.
    seed = models.CharField(max_length=64)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.PATIENT)
    verify = models.CharField(_("check"), max_length=8, choices=Verify.choices, default=Verify.BIRTH_DATE)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="film_links")
    studies = models.ManyToManyField(Study, related_name="film_links")
    # The case the link was made for ("consult:12", "referral:7"); "" for a study.
    case = models.CharField(_("case"), max_length=64, blank=True, db_index=True)
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="shares")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="film_links")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="film_links_created"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"))
    max_openings = models.PositiveIntegerField(_("openings allowed"), default=0)  # 0: no limit
    openings = models.PositiveIntegerField(_("openings"), default=0)
    last_opened_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    # Wrong answers in a row; at the limit the link is locked until locked_until.
    failed_attempts = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("film link")
        verbose_name_plural = _("film links")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"film link {self.pk} ({self.kind})"

    audit_type = "film"

    @property
    def case_label(self) -> str:
        """The case in words ("Consult #3"), not its basis code."""
        kind, _sep, number = self.case.partition(":")
        labels = {"consult": _("Consult #%(n)s"), "referral": _("Referral #%(n)s")}
        return str(labels[kind] % {"n": number}) if kind in labels else self.case

    @property
    def audit_id(self) -> str:
        return str(self.pk)

    @property
    def actor(self) -> audit.Actor:
        """What its holder does is audited with the link as the actor (type "share")."""
        return audit.Actor("share", str(self.pk), f"film:{self.kind}", self.institution_id)

    @property
    def audit_patient(self) -> str:
        return str(self.patient_id)


class FilmAttemptSource(models.Model):
    """Wrong film answers from one network address, across links (the per-source lockout)."""

    source = models.CharField(max_length=255, unique=True)
    failed_attempts = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.source}: {self.failed_attempts}"


class FilmSaving(models.Model):
    """Printed film not needed: a study opened by its patient through a film link, counted
    once per study (a study belongs to one patient), at the sheets and cost of that day."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="film_saving")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="film_savings")
    link = models.ForeignKey(FilmLink, on_delete=models.SET_NULL, null=True, blank=True, related_name="savings")
    sheets = models.PositiveIntegerField()
    cost = models.DecimalField(max_digits=10, decimal_places=2)
    counted_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.study_id}: {self.sheets} sheets"


class PatientLink(models.Model):
    """The alliance's cross-reference: one person known under two issuers' IDs.

    Recorded when a receiving hospital names its own ID for a referred patient. Never a
    merge: both Patient rows stay as they are, and a link only lets a viewer find the other
    side's studies that the viewer may see anyway (imaging.selectors.linked_studies).
    """

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="links_out")
    linked = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="links_in")
    basis = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("patient cross-reference")
        verbose_name_plural = _("patient cross-references")
        constraints = [
            models.UniqueConstraint(fields=["patient", "linked"], name="patient_link_unique"),
            models.CheckConstraint(condition=~models.Q(patient=models.F("linked")), name="patient_link_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} <-> {self.linked_id}"


class BreakGlassReview(models.Model):
    """One emergency access to a study outside the doctor's grants (break-glass), and its review
    by an admin of the institution that owns the study. The grant itself is a StudyUserGrant
    with basis "break-glass:<this id>"; every step is also in the (append-only) audit trail,
    which cannot hold the review's changing state."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for review")
        APPROVED = "approved", _("Approved")
        FLAGGED = "flagged", _("Flagged")

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="break_glass")
    # The study's institution when the glass was broken: whose admin reviews it.
    owner_institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="break_glass_reviews")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="break_glass")
    user_institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="break_glass_opened")
    reason = models.TextField(_("reason"))
    opened_at = models.DateTimeField(_("opened"))
    expires_at = models.DateTimeField(_("access until"))
    state = models.CharField(_("review"), max_length=16, choices=State.choices, default=State.PENDING)
    comment = models.TextField(_("comment"), blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)  # the admins' e-mail (an outbox row)

    class Meta:
        verbose_name = _("emergency access")
        verbose_name_plural = _("emergency accesses")
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["owner_institution", "state", "opened_at"])]

    def __str__(self) -> str:
        return f"{self.basis} by user {self.user_id} on study {self.study_id}"

    @property
    def basis(self) -> str:
        return f"break-glass:{self.pk}"


class ScheduledStep(models.Model):
    """A scheduled procedure step of an institution's modality worklist (PS3.4 K.6, PS3.3 C.4.10
    Scheduled Procedure Step, C.4.11 Requested Procedure, C.4.12 Imaging Service Request).

    Written only by imaging.worklist. The patient demographics are kept as ordered (they are what
    the modality receives); the Patient row is the identity (issuer, patient ID). One step per
    requested procedure: the accession number names both on the modality.
    """

    class Status(models.TextChoices):
        # PS3.3 C.4.10.1: Scheduled Procedure Step Status (0040,0020), and MPPS's outcome
        SCHEDULED = "scheduled", pgettext_lazy("worklist", "Scheduled")
        IN_PROGRESS = "in-progress", pgettext_lazy("worklist", "In progress")
        COMPLETED = "completed", pgettext_lazy("worklist", "Completed")
        DISCONTINUED = "discontinued", pgettext_lazy("worklist", "Discontinued")

    class Source(models.TextChoices):
        CONSULT = "consult", _("Consult")
        REFERRAL = "referral", _("Referral")
        API = "api", _("REST API")
        WEB = "web", _("Worklist page")
        FHIR = "fhir", _("FHIR order")
        HL7 = "hl7", _("HL7 order")

    # From each status, the statuses it may move to (imaging.worklist checks every change).
    TRANSITIONS = {
        Status.SCHEDULED: {Status.IN_PROGRESS, Status.COMPLETED, Status.DISCONTINUED},
        Status.IN_PROGRESS: {Status.COMPLETED, Status.DISCONTINUED},
        Status.COMPLETED: set(),
        Status.DISCONTINUED: set(),
    }

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="scheduled_steps")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="scheduled_steps")
    patient_name = models.CharField(_("patient name"), max_length=324, blank=True)  # (0010,0010) PN
    birth_date = models.DateField(_("birth date"), null=True, blank=True)  # (0010,0030) DA
    sex = models.CharField(_("sex"), max_length=16, blank=True)  # (0010,0040) CS
    accession_number = models.CharField(_("accession number"), max_length=16)  # (0008,0050) SH
    requested_procedure_id = models.CharField(_("requested procedure ID"), max_length=16)  # (0040,1001) SH
    procedure_description = models.CharField(_("procedure"), max_length=64, blank=True)  # (0032,1060) LO
    study_uid = models.CharField(_("Study Instance UID"), max_length=64, unique=True)  # (0020,000D) UI
    modality = models.CharField(_("modality"), max_length=16)  # (0008,0060) CS
    station_ae = models.CharField(_("scheduled station AE title"), max_length=16, blank=True)  # (0040,0001) AE
    scheduled_at = models.DateTimeField(_("scheduled start"))  # (0040,0002) DA + (0040,0003) TM
    performing_physician = models.CharField(_("performing physician"), max_length=324, blank=True)  # (0040,0006)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    # The case that asked for the exam (plain ids: imaging sits below consults and referrals).
    consult_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    referral_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # What happened on the modality: the MPPS instance (N-CREATE) and the study that arrived.
    mpps_uid = models.CharField(max_length=64, blank=True, db_index=True)
    study = models.ForeignKey(Study, on_delete=models.SET_NULL, null=True, blank=True, related_name="scheduled_steps")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("scheduled procedure step")
        verbose_name_plural = _("scheduled procedure steps")
        ordering = ["scheduled_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["institution", "accession_number"], name="scheduled_step_accession_unique"),
        ]
        indexes = [
            # the worklist query: an institution's steps of one status in a time window; a patient
            # name prefix has an index of its own (migration 0012: UPPER(name), for LIKE 'X%')
            models.Index(fields=["institution", "status", "scheduled_at"], name="imaging_worklist_window"),
        ]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.modality} {self.scheduled_at:%Y-%m-%d %H:%M} ({self.status})"

    audit_type = "scheduled_step"

    @property
    def audit_id(self) -> str:
        return str(self.pk)

    @property
    def audit_patient(self) -> str:
        return str(self.patient_id)

    @property
    def step_id(self) -> str:
        """(0040,0009) Scheduled Procedure Step ID, SH: unique within the institution."""
        return f"SPS{self.pk}"

    @property
    def patient_display(self) -> str:
        return person_name(self.patient_name)

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.SCHEDULED, self.Status.IN_PROGRESS)


class ScheduledStepChange(models.Model):
    """The transition log of a scheduled step: every status it took, when, by whom and why."""

    step = models.ForeignKey(ScheduledStep, on_delete=models.CASCADE, related_name="changes")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    at = models.DateTimeField()
    actor = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"step {self.step_id}: {self.from_status or '-'} -> {self.to_status}"


class PerformedProcedureStep(models.Model):
    """A modality performed procedure step (PS3.4 F.7, PS3.3 C.4.13-C.4.14) a device of the
    institution reported with MPPS N-CREATE and N-SET; it moves the scheduled steps it names."""

    class Status(models.TextChoices):
        # (0040,0252) Performed Procedure Step Status
        IN_PROGRESS = "IN PROGRESS", pgettext_lazy("worklist", "In progress")
        COMPLETED = "COMPLETED", pgettext_lazy("worklist", "Completed")
        DISCONTINUED = "DISCONTINUED", pgettext_lazy("worklist", "Discontinued")

    sop_uid = models.CharField(max_length=64, unique=True)  # its SOP Instance UID
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="performed_steps")
    device_ae = models.CharField(max_length=16)  # who reported it
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    steps = models.ManyToManyField(ScheduledStep, blank=True, related_name="performed")
    modality = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"MPPS {self.sop_uid} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.IN_PROGRESS


class StorageCommitment(models.Model):
    """One storage commitment request of a device (PS3.4 J.3) and the report we owe it: which
    instances we hold durably and indexed, which not, and whether the report reached it."""

    class State(models.TextChoices):
        PENDING = "pending", _("Report pending")
        DELIVERED = "delivered", _("Report delivered")
        FAILED = "failed", _("Report not delivered")

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="storage_commitments")
    device = models.ForeignKey("alliance.Device", on_delete=models.PROTECT, related_name="storage_commitments")
    transaction_uid = models.CharField(max_length=64, db_index=True)  # (0008,1195)
    committed = models.JSONField(default=list)  # [[SOP Class UID, SOP Instance UID], ...]
    failed = models.JSONField(default=list)  # [[SOP Class UID, SOP Instance UID, Failure Reason], ...]
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due (after a failed one's backoff, or when the sweep queued it
    # again), and how long a worker holds the report while it sends it: the sweep queues again
    # what is still pending well past the one with no live hold (imaging.commitment.owed_again).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sending_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["requested_at"], condition=models.Q(state="pending"), name="imaging_commitment_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"commitment {self.transaction_uid} ({self.state})"
