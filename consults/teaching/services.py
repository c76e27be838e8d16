"""Every write to a teaching case. Keyword-only, atomic, one audit event each.

Making a case reads a study (the audit trail names it, and the patient, once: nothing else
does) and writes de-identified copies of the chosen images under "teaching/<case>/" in the
DICOM storage (imaging.storage), never as a patient study. A copy's file is written before
its row; if anything fails the files written so far are removed again, and files a change
leaves behind (a masked image's unmasked copy, a removed series) are removed after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from pydicom import dcmread
from pydicom.dataset import Dataset

from alliance import audit
from alliance.access import AccessDenied, Principal
from alliance.models import Doctor
from consults.teaching import access, deid
from consults.teaching.models import (
    BodyPart,
    CaseView,
    Cleared,
    Comment,
    Difficulty,
    Disease,
    Modality,
    QuizAttempt,
    Status,
    TeachingCase,
    TeachingImage,
)
from imaging import access as imaging_access
from imaging import storage
from imaging.dicom import part10
from imaging.models import Instance, Study

# A case's text, and what the author is told when it names the patient.
TEXT_FIELDS = ("title", "question", "findings", "diagnosis", "discussion")
REQUIRED_TO_PUBLISH = ("title", "question", "findings", "diagnosis")
MAX_DISTRACTORS = 5
# The index's modalities a case may be filed under (CR with DX, PT with NM).
MODALITY_OF = {"CR": Modality.DX, "PT": Modality.NM}


def _doctor(by: Principal) -> Doctor:
    if by.doctor is None:
        raise AccessDenied(_("Only a doctor of the alliance may do this."))
    return by.doctor


def _record(by: Principal, action: str, case: TeachingCase, **fields: Any) -> None:
    audit.record(
        actor=by.actor,
        action=f"teaching.{action}",
        object_type=TeachingCase.audit_type,
        object_id=case.pk,
        basis=fields.pop("basis", access.LIBRARY_BASIS),
        **fields,
    )


def _delete_after_commit(keys: Iterable[str]) -> None:
    doomed = list(keys)

    def delete() -> None:
        for key in doomed:
            storage.delete_key(key)

    transaction.on_commit(delete)


# --- making a case --------------------------------------------------------------------------


@transaction.atomic
def case_create(
    *, by: Principal, study: Study, series_uids: Iterable[str], key_sop_uids: Iterable[str], title: str
) -> TeachingCase:
    """A draft case with de-identified copies of the chosen series (all their images) and key
    images (alone, or marked within a chosen series)."""
    doctor = _doctor(by)
    if not access.may_copy_from(by, study):
        raise AccessDenied(_("You may not make a teaching case of this study."))
    title = _required(title, "title", _("Give the case a title."))
    chosen = _chosen(study, set(series_uids), set(key_sop_uids))
    if not chosen:
        raise ValidationError({"series": _("Choose at least one series or key image.")})
    if len(chosen) > settings.TEACHING_MAX_IMAGES:
        raise ValidationError(
            {"series": _("A case holds at most %(n)s images; choose fewer.") % {"n": settings.TEACHING_MAX_IMAGES}}
        )
    case = TeachingCase.objects.create(
        alliance_id=doctor.institution.alliance_id,
        author=doctor,
        author_institution_id=doctor.institution_id,
        title=title,
        modality=_modality_of(study),
    )
    known = [study.patient.name, study.patient.patient_id, study.accession_number, study.institution.name]
    written: list[str] = []
    try:
        texts: set[str] = set()
        for instance, is_key in chosen:
            image, found = _copy(case, instance, is_key=is_key, known=known)
            written.append(image.storage_key)
            texts |= found.texts
        case.guard = deid.guard_of(texts | {study.study_uid})
        case.save(update_fields=["guard"])
        _record(
            by,
            "create",
            case,
            patient=str(study.patient_id),
            basis=imaging_access.basis_for(by, study),
            detail={"study": study.study_uid, "images": len(chosen)},
        )
    except BaseException:
        for key in written:
            storage.delete_key(key)
        raise
    return case


def _chosen(study: Study, series_uids: set[str], key_sop_uids: set[str]) -> list[tuple[Instance, bool]]:
    """The images to copy, in series and instance order, each with whether it is a key image."""
    images = Instance.objects.filter(series__study=study, rows__isnull=False).select_related("series")
    wanted = images.filter(series__series_uid__in=series_uids) | images.filter(sop_uid__in=key_sop_uids)
    ordered = wanted.distinct().order_by("series__series_number", "series_id", "instance_number", "pk")
    return [(instance, instance.sop_uid in key_sop_uids) for instance in ordered]


def _modality_of(study: Study) -> str:
    modality = study.principal_modality
    modality = MODALITY_OF.get(modality, modality)
    return modality if modality in Modality.values else Modality.OT


def _read(instance: Instance | TeachingImage) -> Dataset:
    """A stored file whole (a deflated one inflated within the store's limits)."""
    limits = part10.InflateLimits.of(settings)
    with storage.open_instance(instance) as handle, part10.readable(handle, limits, storage.temp_dir()) as source:  # type: ignore[arg-type]
        return dcmread(source)


def _store(ds: Dataset, key: str) -> int:
    """Write the data set under `key` in the DICOM storage; its size in bytes."""
    path = storage.temp_dir() / f"teaching-{uuid.uuid4().hex}.dcm"
    try:
        ds.save_as(path, enforce_file_format=True)
        size = path.stat().st_size
        storage.put_file(path, key)
    finally:
        path.unlink(missing_ok=True)
    return size


def _copy(
    case: TeachingCase, instance: Instance, *, is_key: bool, known: list[str]
) -> tuple[TeachingImage, deid.Identifiers]:
    try:
        ds = _read(instance)
        outcome = deid.deidentify(ds, known)
    except deid.DeidentificationError as exc:
        raise ValidationError(
            {"series": _("Image %(n)s could not be de-identified (%(why)s); leave it out.") % _named(instance, exc)}
        ) from None
    except Exception as exc:  # noqa: BLE001 - a file gone, or bytes pydicom cannot read
        raise ValidationError(
            {"series": _("Image %(n)s could not be read (%(why)s); leave it out.") % _named(instance, exc)}
        ) from None
    key = f"teaching/{case.pk}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    size = _store(ds, key)
    image = TeachingImage.objects.create(
        case=case,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality=str(ds.get("Modality", ""))[:16],
        series_number=instance.series.series_number,
        series_description=str(ds.get("SeriesDescription", "") or "")[:64],
        instance_number=instance.instance_number,
        rows=instance.rows,
        columns=instance.columns,
        number_of_frames=instance.number_of_frames,
        storage_key=key,
        size_bytes=size,
        is_key=is_key,
        burned_in=outcome.burned_in,
    )
    return image, outcome.identifiers


def _named(instance: Instance, exc: Exception) -> dict[str, Any]:
    number = instance.instance_number if instance.instance_number is not None else "?"
    return {"n": f"{instance.series.series_number or '?'}/{number}", "why": str(exc)[:200]}


def _required(value: str, field: str, message: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError({field: message})
    return value


# --- editing -----------------------------------------------------------------------------------


def _check_editable(case: TeachingCase, by: Principal) -> None:
    if not access.may_edit(by, case):
        raise AccessDenied(_("Only the author edits a draft or withdrawn case."))


@transaction.atomic
def case_update(
    *,
    case: TeachingCase,
    by: Principal,
    title: str,
    question: str = "",
    findings: str = "",
    diagnosis: str = "",
    discussion: str = "",
    modality: str = "",
    body_part: str = "",
    difficulty: str = Difficulty.INTERMEDIATE,
    diseases: Iterable[Disease] = (),
    answer: Disease | None = None,
    distractors: Iterable[Disease] = (),
) -> TeachingCase:
    """The author's text and tags, and the quiz (an answer and the wrong choices beside it)."""
    _check_editable(case, by)
    distractors = [d for d in distractors if answer is None or d.pk != answer.pk]
    _check_choice(modality, Modality.values, "modality")
    _check_choice(body_part, BodyPart.values, "body_part")
    _check_choice(difficulty, Difficulty.values, "difficulty")
    if answer is not None and not 2 <= len(distractors) <= MAX_DISTRACTORS:
        raise ValidationError({"distractors": _("A quiz offers 2 to 5 wrong choices beside the answer.")})
    case.title = _required(title, "title", _("Give the case a title."))
    case.question, case.findings = question.strip(), findings.strip()
    case.diagnosis, case.discussion = diagnosis.strip(), discussion.strip()
    case.modality, case.body_part, case.difficulty, case.answer = modality, body_part, difficulty, answer
    case.save()
    case.diseases.set(list(diseases))
    case.distractors.set(distractors if answer is not None else [])
    _record(by, "edit", case)
    return case


def _check_choice(value: str, allowed: list[str], field: str) -> None:
    if value and value not in allowed:
        raise ValidationError({field: _("Choose one of the listed values.")})


@transaction.atomic
def images_confirm(*, case: TeachingCase, by: Principal, images: list[TeachingImage]) -> int:
    """The author looked at flagged images and found no identifying text in their pixels."""
    _check_editable(case, by)
    if not images:
        raise ValidationError({"images": _("No flagged image waits for a check.")})
    for image in images:
        _flagged_image_of(case, image)
    TeachingImage.objects.filter(pk__in=[i.pk for i in images]).update(cleared=Cleared.CONFIRMED)
    _record(by, "confirm", case, detail={"images": [i.sop_uid for i in images][:50], "count": len(images)})
    return len(images)


@transaction.atomic
def image_mask(
    *, case: TeachingCase, image: TeachingImage, by: Principal, rect: tuple[int, int, int, int]
) -> TeachingImage:
    """Blank a rectangle of the image (every frame): a new copy in place of the old one."""
    _check_editable(case, by)
    _flagged_image_of(case, image)
    rect = _valid_rect(image, rect)
    try:
        ds = _read(image)
        deid.apply_masks(ds, [rect])
    except deid.DeidentificationError as exc:
        raise ValidationError({"mask": _("This image cannot be masked (%(why)s).") % {"why": exc}}) from None
    old_key, new_key = image.storage_key, f"teaching/{case.pk}/{image.series_uid}/{ds.SOPInstanceUID}.dcm"
    image.size_bytes = _store(ds, new_key)
    try:
        image.storage_key, image.sop_uid = new_key, str(ds.SOPInstanceUID)
        image.transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
        image.masks = [*image.masks, list(rect)]
        image.cleared = Cleared.MASKED
        image.save()
        _record(by, "mask", case, detail={"image": image.sop_uid, "rect": list(rect)})
    except BaseException:
        storage.delete_key(new_key)
        raise
    _delete_after_commit([old_key])
    return image


def _flagged_image_of(case: TeachingCase, image: TeachingImage) -> None:
    if image.case_id != case.pk or not image.burned_in:
        raise ValidationError({"mask": _("Only an image flagged for burned-in text is confirmed or masked.")})


def _valid_rect(image: TeachingImage, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, width, height = (int(v) for v in rect)
    rows, columns = image.rows or 0, image.columns or 0
    if width < 1 or height < 1 or x < 0 or y < 0 or x + width > columns or y + height > rows:
        raise ValidationError(
            {"mask": _("The rectangle must lie within the image (%(w)s × %(h)s pixels).") % {"w": columns, "h": rows}}
        )
    return x, y, width, height


@transaction.atomic
def series_remove(*, case: TeachingCase, by: Principal, series_uid: str) -> int:
    """Leave a series (its copies) out of the case; how many images went."""
    _check_editable(case, by)
    images = case.images.filter(series_uid=series_uid)
    keys = list(images.values_list("storage_key", flat=True))
    if not keys:
        raise ValidationError({"series": _("The case has no such series.")})
    images.delete()
    _delete_after_commit(keys)
    _record(by, "remove_series", case, detail={"series": series_uid, "images": len(keys)})
    return len(keys)


# --- publishing ---------------------------------------------------------------------------


def publish_problems(case: TeachingCase) -> dict[str, str]:
    """What stops the case from being published, by field (empty: it may be)."""
    problems: dict[str, str] = {}
    for field in REQUIRED_TO_PUBLISH:
        if not getattr(case, field).strip():
            problems[field] = _("Write this before publishing.")
    for field in TEXT_FIELDS:
        if field not in problems and deid.guard_hits(getattr(case, field), case.guard):
            problems[field] = _(
                "This names the patient (a name, an ID, the date of birth, the accession number, the "
                "institution or a UID of the study): take it out."
            )
    if not case.images.exists():
        problems["images"] = _("The case has no images.")
    elif case.images.filter(burned_in__gt="", cleared="").exists():
        problems["images"] = _("Check every flagged image for burned-in text: confirm it or mask it.")
    if not case.modality or not case.body_part:
        problems["modality" if not case.modality else "body_part"] = _("Tag the case before publishing.")
    return problems


@transaction.atomic
def case_publish(*, case: TeachingCase, by: Principal) -> TeachingCase:
    """The case goes to the alliance's library, for every doctor of the alliance."""
    if not access.may_publish(by, case):
        raise AccessDenied(_("Only the author publishes a draft or withdrawn case."))
    problems = publish_problems(case)
    if problems:
        raise ValidationError(problems)
    case.status = Status.PUBLISHED
    case.published_at = timezone.now()
    case.unpublished_at, case.unpublish_reason = None, ""
    case.save(update_fields=["status", "published_at", "unpublished_at", "unpublish_reason", "updated_at"])
    _record(by, "publish", case, detail={"images": case.images.count()})
    return case


@transaction.atomic
def case_unpublish(*, case: TeachingCase, by: Principal, reason: str) -> TeachingCase:
    """Withdraw a published case from the library (its author may edit and publish it again)."""
    if not access.may_unpublish(by, case):
        raise AccessDenied(_("Only the author or the alliance admin withdraws a case."))
    reason = _required(reason, "reason", _("Say why the case is withdrawn."))
    case.status = Status.UNPUBLISHED
    case.unpublished_at, case.unpublish_reason = timezone.now(), reason
    case.save(update_fields=["status", "unpublished_at", "unpublish_reason", "updated_at"])
    _record(by, "unpublish", case, detail={"reason": reason})
    return case


@transaction.atomic
def case_discard(*, case: TeachingCase, by: Principal) -> None:
    """Throw a draft away with its copies."""
    if not access.may_discard(by, case):
        raise AccessDenied(_("Only the author discards a draft."))
    keys = list(case.images.values_list("storage_key", flat=True))
    _record(by, "discard", case, detail={"title": case.title, "images": len(keys)})
    case.delete()
    _delete_after_commit(keys)


# --- reading and learning ------------------------------------------------------------------


@transaction.atomic
def case_viewed(*, case: TeachingCase, by: Principal, source: str = "", via: str = "") -> None:
    """A doctor opened the case: audited, and counted for their continuing education (an
    author reading their own case learns nothing new)."""
    doctor = _doctor(by)
    if case.author_id != doctor.pk:
        rows = CaseView.objects.filter(case=case, doctor=doctor)
        if not rows.update(count=F("count") + 1, last_at=timezone.now()):
            CaseView.objects.get_or_create(case=case, doctor=doctor)
    _record(by, "view", case, source=source, detail={"via": via} if via else None)


@transaction.atomic
def comment_post(*, case: TeachingCase, by: Principal, body: str) -> Comment:
    doctor = _doctor(by)
    if not access.may_discuss(by, case):
        raise AccessDenied(_("Only a published case is discussed."))
    body = _required(body, "body", _("Write something first."))
    if len(body) > 4000:
        raise ValidationError({"body": _("At most 4000 characters.")})
    comment = Comment.objects.create(case=case, author=doctor, body=body)
    _record(by, "comment", case, detail={"comment": comment.pk})
    return comment


@transaction.atomic
def quiz_answer(*, case: TeachingCase, by: Principal, choice: Disease | None) -> QuizAttempt:
    """A doctor's one answer to the quiz (None: they asked for the answer without answering)."""
    doctor = _doctor(by)
    if not access.may_take_quiz(by, case):
        raise AccessDenied(_("This case has no quiz for you."))
    offered = {case.answer_id, *case.distractors.values_list("pk", flat=True)}
    if choice is not None and choice.pk not in offered:
        raise ValidationError({"choice": _("Choose one of the answers offered.")})
    correct = choice is not None and choice.pk == case.answer_id
    try:
        with transaction.atomic():
            attempt = QuizAttempt.objects.create(case=case, doctor=doctor, choice=choice, correct=correct)
    except IntegrityError:
        raise ValidationError({"choice": _("You have answered this quiz already.")}) from None
    _record(by, "quiz", case, detail={"answered": choice is not None, "correct": correct})
    return attempt
