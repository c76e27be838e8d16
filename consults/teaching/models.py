"""Teaching cases (C10): a de-identified copy of a finished case, for the alliance's doctors.

A case holds no patient data: its images are copies made by consults.teaching.deid (no
identifying attribute, UIDs replaced by keyed hashes), stored under their own prefix of the
DICOM storage and indexed here, not as patient studies; its text is the author's, checked
against the source patient's identifiers (kept only as keyed hashes: `guard`) before it is
published. Nothing here names the source study; the audit trail records that copy was made.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from alliance.models import Alliance, Doctor, Institution


class BodyPart(models.TextChoices):
    HEAD = "head", _("Head and brain")
    NECK = "neck", _("Neck")
    CHEST = "chest", _("Chest")
    HEART = "heart", _("Heart and vessels")
    BREAST = "breast", _("Breast")
    ABDOMEN = "abdomen", _("Abdomen")
    PELVIS = "pelvis", _("Pelvis")
    SPINE = "spine", _("Spine")
    LIMBS = "limbs", _("Limbs and joints")
    OTHER = "other", _("Other")


class Modality(models.TextChoices):
    """The modalities a case is filed under (PS3.3 C.7.3.1.1.1 defined terms, CR with DX)."""

    CT = "CT", "CT"
    MR = "MR", "MR"
    DX = "DX", _("Radiography (DX, CR)")
    MG = "MG", _("Mammography (MG)")
    US = "US", _("Ultrasound (US)")
    XA = "XA", _("Angiography (XA)")
    NM = "NM", _("Nuclear medicine (NM, PT)")
    OT = "OT", _("Other")


class Difficulty(models.TextChoices):
    INTRODUCTORY = "introductory", _("Introductory")
    INTERMEDIATE = "intermediate", _("Intermediate")
    ADVANCED = "advanced", _("Advanced")


class Disease(models.Model):
    """The kept list of diseases a case is tagged with and a quiz's choices are drawn from:
    one list for the deployment, seeded by a migration, kept in Django admin."""

    code = models.SlugField(_("code"), max_length=60, unique=True)
    name = models.CharField(_("name (English)"), max_length=120)
    name_zh = models.CharField(_("name (Chinese)"), max_length=120)
    icd10 = models.CharField(_("ICD-10"), max_length=16, blank=True)
    body_part = models.CharField(_("body part"), max_length=16, choices=BodyPart.choices, blank=True)
    active = models.BooleanField(_("in use"), default=True)

    class Meta:
        verbose_name = _("disease")
        verbose_name_plural = _("diseases")
        ordering = ["body_part", "code"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The name in the reader's language."""
        return self.name_zh if (get_language() or "").startswith("zh") else self.name


class Status(models.TextChoices):
    DRAFT = "draft", _("Draft")
    PUBLISHED = "published", _("Published")
    UNPUBLISHED = "unpublished", _("Withdrawn")


# The states in which the author edits the case (a withdrawn case is edited and published again).
EDITABLE = (Status.DRAFT, Status.UNPUBLISHED)


class TeachingCase(models.Model):
    alliance = models.ForeignKey(Alliance, on_delete=models.PROTECT, related_name="teaching_cases")
    author = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="teaching_cases")
    author_institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT)
    title = models.CharField(_("title"), max_length=200)
    question = models.TextField(_("teaching question"), max_length=4000, blank=True)
    findings = models.TextField(_("findings"), max_length=8000, blank=True)
    diagnosis = models.TextField(_("diagnosis"), max_length=2000, blank=True)
    discussion = models.TextField(_("discussion"), max_length=12000, blank=True)
    modality = models.CharField(_("modality"), max_length=8, choices=Modality.choices, blank=True)
    body_part = models.CharField(_("body part"), max_length=16, choices=BodyPart.choices, blank=True)
    difficulty = models.CharField(
        _("difficulty"), max_length=16, choices=Difficulty.choices, default=Difficulty.INTERMEDIATE
    )
    diseases = models.ManyToManyField(Disease, blank=True, related_name="cases", verbose_name=_("diseases"))
    # The quiz: the right answer and the wrong ones offered beside it (no answer: no quiz).
    answer = models.ForeignKey(
        Disease, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("quiz answer")
    )
    distractors = models.ManyToManyField(Disease, blank=True, related_name="+", verbose_name=_("wrong choices"))
    # Keyed hashes of the source patient's identifiers ([length, hex digest] pairs, see
    # consults.teaching.deid.guard_of): the text is checked against them, nothing reads them back.
    guard = models.JSONField(default=list, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)
    unpublished_at = models.DateTimeField(null=True, blank=True)
    unpublish_reason = models.TextField(blank=True)

    class Meta:
        verbose_name = _("teaching case")
        verbose_name_plural = _("teaching cases")
        indexes = [models.Index(fields=["alliance", "status", "published_at"])]

    def __str__(self) -> str:
        return self.title

    audit_type = "teaching_case"  # how the audit trail names it (alliance.audit.read)

    @property
    def audit_id(self) -> str:
        return str(self.pk)

    @property
    def audit_patient(self) -> str:
        return ""  # a case holds no patient data

    @property
    def has_quiz(self) -> bool:
        return self.answer_id is not None

    @property
    def editable(self) -> bool:
        return self.status in EDITABLE


class BurnedIn(models.TextChoices):
    """Why an image may carry identifying text in its pixels (PS3.15 E.3.1, Clean Pixel Data)."""

    NONE = "", _("Not flagged")
    ATTRIBUTE = "attribute", _("Burned In Annotation is YES")
    MODALITY = "modality", _("Radiographs, ultrasound and other captures often carry burned-in text")
    SOP_CLASS = "sop_class", _("A secondary capture may be a screenshot")


class Cleared(models.TextChoices):
    NO = "", _("Not checked")
    CONFIRMED = "confirmed", _("Checked: no identifying text")
    MASKED = "masked", _("Masked")


class TeachingImage(models.Model):
    """One de-identified instance of a case: its stored copy and what the viewer's DICOMweb needs
    (the attribute names of imaging.models.Instance, so that imaging's WADO-RS views serve it)."""

    case = models.ForeignKey(TeachingCase, on_delete=models.CASCADE, related_name="images")
    study_uid = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=64)
    sop_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64)
    transfer_syntax_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=64, blank=True)  # as cleaned (Clean Descriptors)
    instance_number = models.IntegerField(null=True, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(default=1)
    storage_key = models.CharField(max_length=255, unique=True)
    size_bytes = models.BigIntegerField()
    is_key = models.BooleanField(default=False)
    burned_in = models.CharField(max_length=16, choices=BurnedIn.choices, blank=True)
    cleared = models.CharField(max_length=16, choices=Cleared.choices, blank=True)
    # The rectangles blanked so far, [x, y, width, height] in pixels of the image.
    masks = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["series_number", "series_uid", "instance_number", "id"]
        constraints = [models.UniqueConstraint(fields=["case", "sop_uid"], name="teaching_image_unique")]

    def __str__(self) -> str:
        return self.sop_uid

    @property
    def needs_clearing(self) -> bool:
        return bool(self.burned_in) and not self.cleared


class Comment(models.Model):
    """The discussion thread of a published case."""

    case = models.ForeignKey(TeachingCase, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(Doctor, on_delete=models.PROTECT, related_name="+")
    body = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.case_id}: {self.body[:40]}"


class QuizAttempt(models.Model):
    """A doctor's one answer to a case's quiz; choice None: they asked to see the answer
    without answering (it counts as not answered)."""

    case = models.ForeignKey(TeachingCase, on_delete=models.CASCADE, related_name="attempts")
    doctor = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="quiz_attempts")
    choice = models.ForeignKey(Disease, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    correct = models.BooleanField(default=False)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "doctor"], name="teaching_one_attempt")]

    def __str__(self) -> str:
        return f"{self.doctor_id} on {self.case_id}: {self.correct}"


class CaseView(models.Model):
    """That a doctor opened a case, and how often (the continuing-education counts)."""

    case = models.ForeignKey(TeachingCase, on_delete=models.CASCADE, related_name="views")
    doctor = models.ForeignKey(Doctor, on_delete=models.CASCADE, related_name="teaching_views")
    first_at = models.DateTimeField(auto_now_add=True)
    last_at = models.DateTimeField(auto_now=True)
    count = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "doctor"], name="teaching_one_view_row")]

    def __str__(self) -> str:
        return f"{self.doctor_id} viewed {self.case_id}"
