"""Study maintenance by an institution admin (issue 16, item 9): corrections of the index,
each an atomic, audited service. A patient correction leaves the stored files byte for byte
as the device wrote them; what is answered from the index (pages, the REST API, QIDO-RS,
C-FIND) shows the correction. Moving a misfiled series rewrites its files as well (their
Study Instance UID is part of what WADO-RS serves): the new files are stored under new keys
before the index changes, and the old ones are removed only once the change is committed."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import Error as DatabaseFailure
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal
from imaging import index, storage
from imaging.access import may_correct_patient, may_delete_study, may_move_series
from imaging.models import Instance, Patient, ReceivedDay, Series, Study

log = logging.getLogger(__name__)

SEXES = ("", "M", "F", "O")  # PS3.3 C.7.1.1 (0010,0040)


@transaction.atomic
def patient_correct(
    *, by: Principal, patient: Patient, name: str, birth_date: date | None, sex: str, reason: str
) -> Patient:
    """Correct a patient's name, birth date and sex within its issuer; the reason is required."""
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if not may_correct_patient(by, patient):
        raise AccessDenied(_("Only an admin of the institution that issued the Patient ID corrects the patient."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the patient's details are corrected.")})
    if sex not in SEXES:
        raise ValidationError({"sex": _("Choose male, female, other or unknown.")})
    new = {"name": name.strip()[:324], "birth_date": birth_date, "sex": sex}
    changed = {k: [str(getattr(patient, k) or ""), str(v or "")] for k, v in new.items() if getattr(patient, k) != v}
    if not changed:
        return patient
    for field, value in new.items():
        setattr(patient, field, value)
    patient.corrected_at = timezone.now()
    patient.save(update_fields=[*new, "corrected_at"])
    audit.record(
        actor=by.actor,
        action="patient.correct",
        object_type="patient",
        object_id=patient.patient_id,
        patient=str(patient.pk),
        detail={**changed, "reason": reason},
    )
    return patient


RETENTION_DAYS = 30  # a deleted study's files are kept this long (issue 16, item 9)


@transaction.atomic
def study_delete(*, by: Principal, study: Study, reason: str) -> Study:
    """Soft delete: the study disappears from every page, API, DICOMweb and DICOM answer at
    once; its rows and files stay for RETENTION_DAYS, then purge_deleted_studies removes them."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if not may_delete_study(by, study):
        raise AccessDenied(_("Only an admin of the institution that owns the study deletes it."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the study is deleted.")})
    study.deleted_at, study.deleted_reason = timezone.now(), reason
    study.save(update_fields=["deleted_at", "deleted_reason"])
    audit.record(
        actor=by.actor,
        action="study.delete",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        detail={"reason": reason, "files_until": (study.deleted_at + timedelta(days=RETENTION_DAYS)).isoformat()},
    )
    return study


def purge_deleted_studies(*, now: datetime | None = None) -> int:
    """The retention job: studies deleted more than RETENTION_DAYS ago lose their rows, then
    their files (after the commit, so that a failed purge leaves both). Safe to run twice."""
    cutoff = (now or timezone.now()) - timedelta(days=RETENTION_DAYS)
    purged = 0
    for pk in Study.objects.filter(deleted_at__lt=cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            study = Study.objects.select_for_update().filter(pk=pk, deleted_at__lt=cutoff).first()
            if study is None:
                continue
            keys = list(Instance.objects.filter(series__study=study).values_list("storage_key", flat=True))
            audit.record(
                actor=audit.SYSTEM,
                action="study.purge",
                object_type="study",
                object_id=study.study_uid,
                patient=str(study.patient_id),
                detail={"instances": len(keys), "deleted_at": study.deleted_at.isoformat() if study.deleted_at else ""},
            )
            study.delete()
            transaction.on_commit(partial(_delete_files, keys))
        purged += 1
    return purged


def _delete_files(keys: list[str]) -> None:
    for key in keys:
        storage.delete_key(key)


# --- moving a misfiled series ---------------------------------------------------------

# The study-level attributes a moved instance takes from its new study (PS3.3 C.7.2.1 General
# Study, beside the Study Instance UID): the target's values, empty where it has none, so that
# the file says what the index answers for its study.
STUDY_ATTRIBUTES = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
)
# Key Object Selection and Structured Report series (PS3.3 A.35: the SR IODs, the KOS among
# them) are documents about their study: they reference its instances by the study's UID and
# record what was read in it. Moved, they would speak of images that are not there.
UNMOVABLE_MODALITIES = frozenset({"KO", "SR"})
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
# Character sets that hold any value (PS3.3 C.12.1.1.2): a file in another one is switched
# to UTF-8 when a value it takes from its new study is more than ASCII.
UNIVERSAL_CHARACTER_SETS = frozenset({"ISO_IR 192", "GB18030"})


def move_targets(study: Study) -> QuerySet[Study]:
    """The studies a series of `study` may move to: the same patient's other studies of the
    same institution, not deleted (what series_move accepts)."""
    return (
        Study.objects.filter(patient_id=study.patient_id, institution_id=study.institution_id, deleted_at__isnull=True)
        .exclude(pk=study.pk)
        .order_by("-study_date", "-pk")
    )


def unmovable_series(series: Sequence[Series]) -> set[int]:
    """The primary keys of the key-object and report series among `series`, which may not move
    to another study: by their modality, or by an instance of an SR class (one query)."""
    unmovable = {s.pk for s in series if s.modality.upper() in UNMOVABLE_MODALITIES}
    rest = [s.pk for s in series if s.pk not in unmovable]
    if rest:
        documents = Instance.objects.filter(series_id__in=rest, sop_class_uid__startswith=SR_SOP_CLASS_PREFIX)
        unmovable.update(documents.values_list("series_id", flat=True).distinct())
    return unmovable


def _refuse(message: str) -> ValidationError:
    return ValidationError({"target": message})


def _changed() -> ValidationError:
    return ValidationError({"series": _("The series or one of the studies changed during the move: try again.")})


@dataclass(frozen=True)
class _Move:
    """What a move was checked against and rewrote the files for: the swap goes ahead only
    if the rows still say so."""

    series: Series
    source: Study
    target: Study
    reason: str
    instances: tuple[Instance, ...]
    attributes: dict[str, str]  # the target's STUDY_ATTRIBUTES


def _files_of(instances: Iterable[Instance]) -> list[tuple[int, str, str]]:
    """What a move rewrites: each instance's file, as (pk, storage key, sha256)."""
    return [(i.pk, i.storage_key, i.sha256) for i in instances]


def series_move(*, by: Principal, series: Series, target: Study, reason: str) -> Series:
    """Move a misfiled series to the right study of the same patient, issuer and institution.

    Each instance's file is rewritten with the target's Study Instance UID and its other
    study-level attributes (STUDY_ATTRIBUTES) and stored under a new key of its new place,
    before any row is locked: the rewrite and its fsyncs take as long as the series is big.
    Then one short transaction (_series_move_swap) locks the two studies (in the order
    ingest locks rows: studies, then the series), checks that nothing changed meanwhile, and
    points the index at the new files; the two studies' counts, sizes and modalities follow,
    and the figures' received-day sums with them. The old files are deleted after the commit.
    A failure before it leaves the old files and the old index, the new files removed again
    (or, if the process dies, left as orphans dicom_storage_check reports).
    Refused: another patient, issuer or institution, a deleted study, the series' own study,
    the only series of a study (delete the study instead, or move the other series the other
    way), a key-object or report series, and a series or study that changed during the move
    (a new instance arrived: try again)."""
    move = _checked_move(by, series, target, reason)
    rewritten = _rewrite_files(move)
    try:
        return _series_move_swap(by=by, move=move, rewritten=rewritten)
    except BaseException:
        _discard([key for key, _size, _sha256 in rewritten.values()])
        raise


def _check_move(by: Principal, series: Series, source: Study, target: Study, reason: str) -> str:
    """The refusals of series_move, as they stand for these rows; the reason, stripped."""
    if not may_move_series(by, source):
        raise AccessDenied(_("Only an admin of the institution that owns the study moves its series."))
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the series is moved.")})
    if target.pk == source.pk:
        raise _refuse(_("The series is already in this study."))
    if target.deleted_at is not None:
        raise _refuse(_("The target study is deleted."))
    if target.institution_id != source.institution_id:
        raise _refuse(_("The target study belongs to another institution."))
    if target.patient_id != source.patient_id:
        raise _refuse(_("The target study is of another patient (or another issuer of the Patient ID)."))
    if Series.objects.filter(study=source).count() < 2:
        raise _refuse(_("This is the only series of its study: delete the study instead, or move the other way."))
    if unmovable_series([series]):
        raise ValidationError(
            {"series": _("Key-object and report series stay with the study they describe: they cannot be moved.")}
        )
    return reason


def _checked_move(by: Principal, series: Series, target: Study, reason: str) -> _Move:
    series = Series.objects.select_related("study").get(pk=series.pk)
    target = Study.objects.get(pk=target.pk)
    reason = _check_move(by, series, series.study, target, reason)
    instances = tuple(Instance.objects.filter(series=series).order_by("pk"))
    return _Move(series, series.study, target, reason, instances, study_attributes(target))


def _rewrite_files(move: _Move) -> dict[int, tuple[str, int, str]]:
    """Every instance's file rewritten for the target and stored durably under a new key:
    instance pk -> (key, size, sha256). On a failure the files already stored are removed."""
    rewritten: dict[int, tuple[str, int, str]] = {}
    try:
        for instance in move.instances:
            rewritten[instance.pk] = _store_rewritten(instance, move.series, move.target.study_uid, move.attributes)
    except BaseException:
        for new_key, _size, _new_sha256 in rewritten.values():
            _delete_quietly(new_key)
        raise
    return rewritten


@transaction.atomic
def _series_move_swap(*, by: Principal, move: _Move, rewritten: dict[int, tuple[str, int, str]]) -> Series:
    """The index's side of series_move, once the files are rewritten: the studies locked first
    (by primary key), then the series and its instances, as ingest locks a study before its
    series; the move checked again on the locked rows; then the rows changed."""
    locked = Study.objects.select_for_update().filter(pk__in=[move.source.pk, move.target.pk]).order_by("pk")
    studies = {study.pk: study for study in locked}
    series = Series.objects.select_for_update().get(pk=move.series.pk)
    source, target = studies[move.source.pk], studies[move.target.pk]
    if series.study_id != source.pk:
        raise _changed()
    _check_move(by, series, source, target, move.reason)
    instances = list(Instance.objects.select_for_update().filter(series=series).order_by("pk"))
    if _files_of(instances) != _files_of(move.instances):
        raise _changed()
    if study_attributes(target) != move.attributes:
        raise _changed()
    old_keys = [i.storage_key for i in instances]
    old_size = sum(i.size_bytes for i in instances)
    for instance in instances:
        instance.storage_key, instance.size_bytes, instance.sha256 = rewritten[instance.pk]
    Instance.objects.bulk_update(instances, ["storage_key", "size_bytes", "sha256"])
    series.study = target
    series.save(update_fields=["study"])
    _follow(source, -1, -len(instances), -old_size)
    _follow(target, 1, len(instances), sum(i.size_bytes for i in instances))
    transaction.on_commit(_old_files_deleter(old_keys), robust=True)
    # This process's ingest must not count further instances of the series into its old
    # study (other processes find the move out at their next insert: imaging.index).
    transaction.on_commit(partial(index.known_parents.forget_series, series.pk))
    audit.record(
        actor=by.actor,
        action="series.move",
        object_type="series",
        object_id=series.series_uid,
        patient=str(source.patient_id),
        detail={
            "from": source.study_uid,
            "to": target.study_uid,
            "instances": len(instances),
            "reason": move.reason,
        },
    )
    return series


def study_attributes(study: Study) -> dict[str, str]:
    """The study's STUDY_ATTRIBUTES as a file carries them (DA, TM and the strings), "" where
    the index has no value."""
    time = study.study_time
    return {
        "StudyDate": study.study_date.strftime("%Y%m%d") if study.study_date else "",
        "StudyTime": "" if time is None else time.strftime("%H%M%S.%f" if time.microsecond else "%H%M%S"),
        "AccessionNumber": study.accession_number,
        "ReferringPhysicianName": study.referring_physician,
        "StudyID": study.study_id,
        "StudyDescription": study.description,
    }


def _store_rewritten(
    instance: Instance, series: Series, study_uid: str, attributes: dict[str, str]
) -> tuple[str, int, str]:
    """The instance's file with the target study's identity, stored durably under a new key
    no other file holds; (key, size, sha256)."""
    with storage.open_instance(instance) as fh:
        ds = pydicom.dcmread(fh)
    ds.StudyInstanceUID = study_uid
    _fit_character_set(ds, attributes.values())
    for keyword in STUDY_ATTRIBUTES:
        setattr(ds, keyword, attributes[keyword])
    staging = storage.temp_dir() / f"move-{uuid.uuid4().hex}.dcm"
    try:
        ds.save_as(staging, enforce_file_format=True)
        data = staging.read_bytes()
        new_key = storage.storage_key_for(study_uid, series.series_uid, instance.sop_uid)
        if not storage.places_exclusively():  # object storage replaces: never a key another move may use
            new_key = storage.alternative_key(new_key)
        try:
            storage.put_file(staging, new_key)
        except FileExistsError:  # a file no row names (a move that died), or another move's
            new_key = storage.alternative_key(new_key)
            storage.put_file(staging, new_key)
    finally:
        Path(staging).unlink(missing_ok=True)
    return new_key, len(data), hashlib.sha256(data).hexdigest()


def _fit_character_set(ds: pydicom.Dataset, values: Iterable[str]) -> None:
    """Make the file's Specific Character Set (0008,0005) hold the values about to be written:
    UTF-8 when one is more than ASCII and the file's set is not one that holds everything.
    Every text already in the file is decoded first, so that it is written again in UTF-8,
    in sequences too."""
    if all(value.isascii() for value in values):
        return
    current = ds.get("SpecificCharacterSet") or ""
    if isinstance(current, str) and current in UNIVERSAL_CHARACTER_SETS:
        return
    ds.decode()
    ds.SpecificCharacterSet = "ISO_IR 192"


def _discard(keys: list[str]) -> None:
    """The new files of a move that failed, unless a row names them (the failure hid a commit
    whose answer was lost); kept, and logged, when the database cannot tell."""
    try:
        named = set(Instance.objects.filter(storage_key__in=keys).values_list("storage_key", flat=True))
    except DatabaseFailure:
        log.exception("cannot tell whether a series move committed; its new files are kept: %s", ", ".join(keys))
        return
    for key in keys:
        if key not in named:
            _delete_quietly(key)


def _old_files_deleter(keys: list[str]) -> Callable[[], None]:
    """The on_commit callback removing a moved series' old files (named: Django logs a robust
    callback that failed by its __qualname__)."""

    def delete_old_files() -> None:
        for key in keys:
            _delete_quietly(key)

    return delete_old_files


def _delete_quietly(key: str) -> None:
    try:
        storage.delete_key(key)
    except Exception:  # the others still go; dicom_storage_check reports what is left
        log.exception("could not delete %s; remove it by hand", key)


def _follow(study: Study, series: int, instances: int, size: int) -> None:
    """A study's counts, size and modalities after a series left or joined it, and its
    received day's sum in the figures' roll-up (imaging.figures)."""
    modalities: list[str] = []
    for modality in Series.objects.filter(study=study).order_by("pk").values_list("modality", flat=True):
        if modality and modality not in modalities and len("\\".join([*modalities, modality])) <= 64:
            modalities.append(modality)
    Study.objects.filter(pk=study.pk).update(
        num_series=F("num_series") + series,
        num_instances=F("num_instances") + instances,
        size_bytes=F("size_bytes") + size,
        modalities="\\".join(modalities),
        updated_at=timezone.now(),
    )
    day = study.received_at.astimezone(ZoneInfo(settings.TIME_ZONE)).date()
    ReceivedDay.objects.filter(institution_id=study.institution_id, day=day).update(size_bytes=F("size_bytes") + size)
