"""Membership of a medical alliance (C1): institutions, their people, desks and devices."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

# PS3.5 6.2: an AE title is 1-16 characters of the default repertoire, no backslash or
# control characters; we also refuse spaces inside so that titles are unambiguous.
ae_title_validator = RegexValidator(
    r"^[A-Za-z0-9_\-.]{1,16}$",
    _("An AE title is 1 to 16 letters, digits, '_', '-' or '.'."),
)


sha256_validator = RegexValidator(
    r"^[0-9a-f]{64}$", _("A SHA-256 fingerprint is 64 hexadecimal digits (colons allowed).")
)


# The capabilities an institution may have switched on (C11), as people read them; the codes
# are alliance.services.ALL_MODULES and alliance.access decides what a switch turns off.
MODULE_LABELS = {
    "image_store": _("Image store"),
    "consults": _("Remote consults"),
    "referrals": _("Referrals"),
    "cloud_film": _("Cloud film"),
    "teaching": _("Teaching files"),
    "screening": _("Screening programmes"),
}


class Alliance(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("alliance")
        verbose_name_plural = _("alliances")

    def __str__(self) -> str:
        return self.name


class Institution(models.Model):
    class Level(models.TextChoices):
        TERTIARY = "tertiary", _("Tertiary hospital")
        SECONDARY = "secondary", _("Secondary / county hospital")
        TOWNSHIP = "township", _("Township health centre")
        COMMUNITY = "community", _("Community health centre")

    alliance = models.ForeignKey(Alliance, on_delete=models.PROTECT, related_name="institutions")
    name = models.CharField(_("name"), max_length=200)
    level = models.CharField(_("level"), max_length=16, choices=Level.choices)
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        verbose_name=_("parent institution"),
    )
    # The called AE title of this institution on our DICOM server.
    ae_title = models.CharField(_("AE title"), max_length=16, unique=True, validators=[ae_title_validator])
    active = models.BooleanField(_("active"), default=True)
    # Members of the institution, for per-object grants (imaging.models.StudyGroupGrant).
    group = models.OneToOneField(Group, on_delete=models.PROTECT, related_name="institution", editable=False)
    # Capabilities switched on for this institution (C11): a set of Module values.
    modules = models.JSONField(_("modules"), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("institution")
        verbose_name_plural = _("institutions")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["alliance", "name"], name="institution_name_unique")]

    def __str__(self) -> str:
        return self.name


class Department(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="departments")
    name = models.CharField(_("name"), max_length=200)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("department")
        verbose_name_plural = _("departments")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["institution", "name"], name="department_name_unique")]

    def __str__(self) -> str:
        return self.name


class Specialty(models.Model):
    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=200)

    class Meta:
        verbose_name = _("specialty")
        verbose_name_plural = _("specialties")
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    CLINICIAN = "clinician", _("Clinician")
    SPECIALIST = "specialist", _("Specialist")
    INSTITUTION_ADMIN = "institution_admin", _("Institution admin")
    ALLIANCE_ADMIN = "alliance_admin", _("Alliance admin")


class Doctor(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="doctor")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="doctors")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, null=True, blank=True, related_name="doctors")
    title = models.CharField(_("title"), max_length=100, blank=True)
    specialties = models.ManyToManyField(Specialty, blank=True, related_name="doctors")
    # A list of Role values; a doctor may hold several (a specialist who is also an admin).
    roles = models.JSONField(_("roles"), default=list)
    active = models.BooleanField(_("active"), default=True)
    # A password an admin set (console: add a doctor, reset a password) is the doctor's own
    # only once they changed it: until then every page leads to the change (alliance.account_gate).
    must_change_password = models.BooleanField(_("must change password at next sign-in"), default=False)
    # Whether the doctor has a confirmed authenticator (django_otp's TOTPDevice), kept by
    # alliance.accounts with the device, so that each request knows it without a query.
    second_factor = models.BooleanField(_("second factor set up"), default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("doctor")
        verbose_name_plural = _("doctors")
        ordering = ["user__username"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.user.get_full_name() or self.user.username

    def has_role(self, role: str) -> bool:
        return role in self.roles


class Pool(models.Model):
    """An institution's specialty desk that receives consults (e.g. the CT reading desk)."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="pools")
    specialty = models.ForeignKey(Specialty, on_delete=models.PROTECT, related_name="pools")
    name = models.CharField(_("name"), max_length=200)
    members = models.ManyToManyField(Doctor, blank=True, related_name="pools")
    # Two-level sign-off (书写 → 审核): a report signed by a member who is not a reviewer is
    # preliminary until one of the reviewers (members too) verifies it.
    two_level_signoff = models.BooleanField(_("two-level sign-off"), default=False)
    reviewers = models.ManyToManyField(Doctor, blank=True, related_name="pools_reviewed", verbose_name=_("reviewers"))
    active = models.BooleanField(_("active"), default=True)
    group = models.OneToOneField(Group, on_delete=models.PROTECT, related_name="pool", editable=False)

    class Meta:
        verbose_name = _("specialist pool")
        verbose_name_plural = _("specialist pools")
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["institution", "name"], name="pool_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.institution})"


class PoolMembership(models.Model):
    """Since when a doctor has been a member of a pool: a pool's grants reach a member only
    for the cases sent to the pool since then (issue #22: joining a desk is no way into its
    earlier cases). Kept beside Pool.members by alliance.services.pool_set_members."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="memberships")
    doctor = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="pool_memberships")
    since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "doctor"], name="pool_membership_unique")]

    def __str__(self) -> str:
        return f"{self.doctor_id} in pool {self.pool_id} since {self.since:%Y-%m-%d %H:%M}"


class PrivilegeChange(models.Model):
    """A change that would give an admin account clinical access (a clinical role, a move of a
    clinical admin to another institution, a seat on a specialist desk): it waits for a second
    admin, who approves or refuses it (alliance.services.privilege_change_*)."""

    class Kind(models.TextChoices):
        ROLES = "roles", _("Roles")
        MOVE = "move", _("Move to another institution")
        POOL = "pool", _("Seat on a specialist desk")

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for a second admin")
        APPROVED = "approved", _("Approved")
        REFUSED = "refused", _("Refused")

    subject = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="privilege_changes")
    kind = models.CharField(_("change"), max_length=8, choices=Kind.choices)
    # roles: {"roles": [...]}; move: {"institution": id, "department": id | None}; pool: {"pool": id}
    payload = models.JSONField(default=dict)
    requested_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(Doctor, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    # The state whose notice was mailed (an outbox: beat's sweep mails the changes where it
    # differs from `state`, their task lost to a broker outage).
    notified_state = models.CharField(max_length=8, blank=True, default="")

    class Meta:
        verbose_name = _("privilege change")
        verbose_name_plural = _("privilege changes")
        ordering = ["-requested_at", "-id"]
        constraints = [
            # One pending change of a kind per doctor: a second request replaces nothing silently.
            models.UniqueConstraint(
                fields=["subject", "kind"], condition=models.Q(state="pending"), name="privilege_change_one_pending"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of doctor {self.subject_id} ({self.state})"


class Device(models.Model):
    """A DICOM application entity of an institution (modality, workstation or PACS)."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="devices")
    ae_title = models.CharField(_("AE title"), max_length=16, unique=True, validators=[ae_title_validator])
    host = models.CharField(_("host"), max_length=255)
    port = models.PositiveIntegerField(_("port"), validators=[MinValueValidator(1), MaxValueValidator(65535)])
    description = models.CharField(_("description"), max_length=200, blank=True)
    active = models.BooleanField(_("active"), default=True)
    # PS3.15 B.1: the SHA-256 of the client certificate the device presents over DICOM TLS, in
    # lower-case hex. When set, the device associates only over TLS with this certificate, from
    # any address (a clinic behind NAT), instead of from its registered host.
    tls_client_sha256 = models.CharField(
        _("pinned client certificate (SHA-256)"), max_length=64, blank=True, validators=[sha256_validator]
    )

    class Meta:
        verbose_name = _("DICOM device")
        verbose_name_plural = _("DICOM devices")
        ordering = ["ae_title"]

    def __str__(self) -> str:
        return self.ae_title


class AuditEvent(models.Model):
    """One append-only audit record (IHE ATNA style). Written only by alliance.audit.record.

    Plain columns rather than foreign keys: a record must outlive what it names, and the
    database refuses UPDATE and DELETE on this table (triggers in migration 0002).
    """

    class Outcome(models.TextChoices):
        SUCCESS = "success", _("success")
        FAILURE = "failure", _("failure")
        DENIED = "denied", _("denied")

    time = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16)  # user, device, share, system, anonymous
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=200, blank=True)
    actor_institution_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    patient = models.CharField(max_length=200, blank=True, db_index=True)
    basis = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_type}:{self.object_id}"


class DeniedReadTally(models.Model):
    """How often one actor was refused one existing object within one minute (alliance.audit.denied).

    A scan of thousands of refused reads writes one audit event per actor, object and minute
    (the first) plus, once the minute is over, one event with the count; the audit table is
    append-only, so the count grows here until then, and the row is deleted once summarised."""

    minute = models.DateTimeField()
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=128)
    count = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "actor_type", "actor_id", "object_type", "object_id"],
                name="denied_read_once_a_minute",
            )
        ]
        default_permissions = ()

    def __str__(self) -> str:
        actor = f"{self.actor_type}:{self.actor_id}"
        return f"{self.minute:%Y-%m-%d %H:%M} {actor} {self.object_type}:{self.object_id} x{self.count}"


class AtnaOutbox(models.Model):
    """Audit events not yet sent to the ATNA collector (alliance.atna). A trigger adds each
    event's id in the transaction that writes the event (migration 0009); the sender removes
    them once sent."""

    event_id = models.BigIntegerField(primary_key=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"ATNA outbox: event {self.event_id}"


def default_film_sheets() -> dict[str, int]:
    """Printed film sheets a study would have cost, by modality (C8 figures)."""
    return {"CT": 2, "MR": 2, "DX": 1, "CR": 1, "DR": 1, "MG": 1, "RF": 1, "XA": 1, "US": 1}


def default_second_factor_required() -> bool:
    """A new alliance's policy (settings.OTP_REQUIRED_DEFAULT: on in production, off in the demo)."""
    return bool(settings.OTP_REQUIRED_DEFAULT)


class AllianceSettings(models.Model):
    """The alliance-wide knobs of its capabilities, one row per alliance (alliance.access.settings_of)."""

    class FilmCheck(models.TextChoices):
        BIRTH_DATE = "dob", _("Date of birth")
        PIN = "pin", _("6-digit PIN printed on the slip")

    alliance = models.OneToOneField(Alliance, on_delete=models.CASCADE, related_name="settings")
    # Governance (C9): how long access lasts once the work that needed it is done.
    reader_access_days = models.PositiveIntegerField(
        _("reader's read-only access after signing (days)"), default=90, validators=[MaxValueValidator(3650)]
    )
    referral_access_days = models.PositiveIntegerField(
        _("receiver's read-only access after a referral is completed (days)"),
        default=90,
        validators=[MaxValueValidator(3650)],
    )
    break_glass_hours = models.PositiveIntegerField(
        _("emergency access lasts (hours)"), default=4, validators=[MinValueValidator(1), MaxValueValidator(72)]
    )
    # Cloud film (C8).
    film_check = models.CharField(
        _("patients prove who they are by"), max_length=8, choices=FilmCheck.choices, default=FilmCheck.BIRTH_DATE
    )
    film_expiry_days = models.PositiveIntegerField(
        _("film links last (days)"), default=30, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    film_max_openings = models.PositiveIntegerField(
        _("openings allowed per film link (0: no limit)"), default=0, validators=[MaxValueValidator(100000)]
    )
    film_on_sign = models.BooleanField(_("a signed consult report makes its film link"), default=True)
    film_show_doctor_names = models.BooleanField(
        _("patients see the names of the doctors who opened their images"), default=False
    )
    film_sheets = models.JSONField(_("film sheets per study, by modality"), default=default_film_sheets)
    film_sheet_cost = models.DecimalField(
        _("cost of one film sheet (yuan)"), max_digits=8, decimal_places=2, default=18
    )
    # Accounts: specialists, institution admins and alliance admins sign in with a second factor.
    second_factor_required = models.BooleanField(
        _("second factor (TOTP) required for specialists, institution admins and alliance admins"),
        default=default_second_factor_required,
    )

    class Meta:
        verbose_name = _("alliance settings")
        verbose_name_plural = _("alliance settings")

    def __str__(self) -> str:
        return f"settings of {self.alliance}"


class ApiToken(models.Model):
    """A REST API token. Only its SHA-256 digest is kept: the key is shown once, when it is made
    (alliance.accounts.token_issue). It stops working when it expires or is revoked."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(_("begins with"), max_length=8, editable=False)
    name = models.CharField(_("name"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("made"))
    expires_at = models.DateTimeField(_("expires"))
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user_id}"

    @property
    def is_expired(self) -> bool:
        from django.utils import timezone

        return self.expires_at <= timezone.now()


class TaskFailure(models.Model):
    """A Celery task that ended in failure (after its retries), kept for the operators: the
    metrics count them by task (imaging.health), the admin lists them. No patient data: the
    task's name, its id and the exception's class and first line."""

    task = models.CharField(max_length=200)
    task_id = models.CharField(max_length=64)
    exception = models.CharField(max_length=500)
    failed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-failed_at"]

    def __str__(self) -> str:
        return f"{self.task} {self.failed_at:%Y-%m-%d %H:%M}"
