"""A reader's key images and measurements, kept in the study as DICOM.

Saving writes a Key Object Selection document (KO series) and a TID 1500 Measurement Report
(SR series) through imaging.ingest, like any instance a modality sends, so QIDO-RS, WADO-RS
and C-GET return them. Each reader has one KO and one SR series per study, with UIDs derived
from the study and the reader, so a save finds them again without a table.

Saving again supersedes: the new instances get the next instance number in the reader's
series and the SR names the one it replaces (Predecessor Documents Sequence). Nothing is
deleted, because a record a hospital may already have retrieved must not silently vanish,
and a PACS reading the series sees the history; what is current is the highest instance
number (a save without key images writes only the SR, which then stands alone). An empty
measurement list still writes an SR, with no measurements, so clearing them is recorded too.

The DICOM objects are the record; reading back parses our own documents (no mirror).
Who may save is decided by the caller (consults.access.may_save_key_objects), which knows
the consult.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pydicom
from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _
from pydicom.dataset import Dataset

from alliance import audit
from alliance.access import Principal
from imaging import ingest, storage
from imaging.dicom import objects
from imaging.models import Instance, Study

log = logging.getLogger(__name__)

KO_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
MAX_KEY_IMAGES = 200
MAX_MEASUREMENTS = 200
NON_IMAGE_CLASSES = frozenset(
    {objects.KEY_OBJECT_SELECTION, objects.COMPREHENSIVE_SR, objects.BASIC_TEXT_SR, objects.ENCAPSULATED_PDF}
)
SHAPES = {"length": ("POLYLINE", 2), "angle": ("POLYLINE", 3), "ellipse": ("ELLIPSE", 4), "rectangle": ("POLYLINE", 5)}
VALUE_CONCEPTS = {
    "length": (objects.LENGTH, objects.MM),
    "angle": (objects.ANGLE, objects.DEGREE),
    "area": (objects.AREA, objects.MM2),
    "mean": (objects.MEAN, None),
    "sd": (objects.STANDARD_DEVIATION, None),
}
CONCEPT_NAMES = {concept[0]: name for name, (concept, _unit) in VALUE_CONCEPTS.items()}


class KeyObjectsInvalid(ValueError):
    """What the viewer sent cannot be saved; the message says why (shown to the reader)."""


@dataclass
class Saved:
    key_images: list[str]
    measurements: int
    instances: list[str]


def creator(institution_name: str = "") -> objects.Creator:
    """Our system, as the device that made the objects (General Equipment)."""
    return objects.Creator(
        manufacturer=settings.DICOM_MANUFACTURER,
        model=settings.DICOM_MODEL_NAME,
        software_version=settings.DICOM_SOFTWARE_VERSION,
        uid_root=settings.DICOM_UID_ROOT,
        institution=institution_name,
        station=settings.DICOM_AE_TITLE,
    )


def observer_of(principal: Principal) -> objects.Observer:
    """The reader as a DICOM person name (their display name as one component)."""
    doctor = principal.doctor
    name = doctor.display_name if doctor is not None else principal.user.get_username()
    organization = doctor.institution.name if doctor is not None else ""
    return objects.Observer(name=str(name).replace("^", " ")[:64], organization=organization[:64])


def reader_series_uids(study: Study, user_id: Any) -> tuple[str, str]:
    """The reader's KO and SR series in this study: the same UIDs on every save."""
    root = settings.DICOM_UID_ROOT
    return (
        objects.derived_uid(root, "key-images", study.study_uid, user_id),
        objects.derived_uid(root, "measurements", study.study_uid, user_id),
    )


def source_dataset(instance: Instance) -> Dataset:
    """An image's header: the Patient and Study modules the new objects copy."""
    with storage.open_instance(instance) as handle:
        return pydicom.dcmread(handle, stop_before_pixels=True)


# --- validating what the viewer sent -------------------------------------------------------


def _images_of(study: Study, sop_uids: set[str]) -> dict[str, Instance]:
    found = Instance.objects.filter(series__study=study, sop_uid__in=sop_uids).select_related("series")
    images = {i.sop_uid: i for i in found if i.sop_class_uid not in NON_IMAGE_CLASSES}
    missing = sorted(sop_uids - images.keys())
    if missing:
        raise KeyObjectsInvalid(_("No image %(uid)s in this study.") % {"uid": missing[0]})
    return images


def _ref(instance: Instance, frame: int | None = None) -> objects.ImageRef:
    return objects.ImageRef(instance.sop_class_uid, instance.sop_uid, instance.series.series_uid, frame)


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise KeyObjectsInvalid(_("%(what)s must be a number.") % {"what": what})
    return float(raw)


def _points(raw: Any, count: int) -> list[tuple[float, float]]:
    if not isinstance(raw, list) or len(raw) != count:
        raise KeyObjectsInvalid(_("A measurement of this kind needs %(count)d points.") % {"count": count})
    points = []
    for point in raw:
        if not isinstance(point, list) or len(point) != 2:
            raise KeyObjectsInvalid(_("A point is a pair of numbers (column, row)."))
        points.append((_number(point[0], "x"), _number(point[1], "y")))
    return points


def _values(raw: dict[str, Any], modality_unit: tuple[str, str, str]) -> list[objects.Value]:
    values = []
    for name, (concept, unit) in VALUE_CONCEPTS.items():
        if raw.get(name) is not None:
            values.append(objects.Value(concept, _number(raw[name], name), unit or modality_unit))
    if not values:
        raise KeyObjectsInvalid(_("A measurement needs a value (length, angle, area, mean or sd)."))
    return values


def _measurement(raw: Any, images: dict[str, Instance]) -> objects.Measurement:
    if not isinstance(raw, dict):
        raise KeyObjectsInvalid(_("Each measurement is an object."))
    kind = raw.get("kind")
    if kind not in SHAPES:
        raise KeyObjectsInvalid(_("Unknown measurement kind %(kind)s.") % {"kind": str(kind)[:20]})
    graphic_type, count = SHAPES[kind]
    instance = images[raw["sop_uid"]]
    frame = raw.get("frame")
    if frame is not None and (not isinstance(frame, int) or not 1 <= frame <= instance.number_of_frames):
        raise KeyObjectsInvalid(_("No such frame in that image."))
    unit = objects.HU if instance.series.modality == "CT" else objects.NO_UNITS
    points = _points(raw.get("points"), count - 1 if kind == "rectangle" else count)
    if kind == "rectangle":
        points.append(points[0])  # PS3.3 C.18.6.1.1: a closed POLYLINE repeats its first point
    label = raw.get("label") or ""
    return objects.Measurement(_ref(instance, frame), graphic_type, points, _values(raw, unit), label=str(label)[:64])


def _parse_request(study: Study, key_images: Any, measurements: Any) -> tuple[list[Instance], list[Any]]:
    if not isinstance(key_images, list) or not all(isinstance(u, str) for u in key_images):
        raise KeyObjectsInvalid(_("key_images must be a list of SOP Instance UIDs."))
    if not isinstance(measurements, list):
        raise KeyObjectsInvalid(_("measurements must be a list."))
    if len(key_images) > MAX_KEY_IMAGES or len(measurements) > MAX_MEASUREMENTS:
        raise KeyObjectsInvalid(_("Too many key images or measurements in one save."))
    named = [m.get("sop_uid") for m in measurements if isinstance(m, dict)]
    if not all(isinstance(u, str) for u in named):
        raise KeyObjectsInvalid(_("Each measurement names its image (sop_uid)."))
    images = _images_of(study, set(key_images) | {str(u) for u in named})
    ordered = list(dict.fromkeys(key_images))
    return [images[u] for u in ordered], [_measurement(m, images) for m in measurements]


# --- saving ------------------------------------------------------------------------------------


def key_objects_save(*, study: Study, by: Principal, key_images: Any, measurements: Any) -> Saved:
    """Write the reader's key images and measurements into the study (see the module doc).

    Not one transaction: each instance is committed by ingest (which must run outside any
    transaction), then the save itself is audited once."""
    marked, measured = _parse_request(study, key_images, measurements)
    if not marked and not measured and not _has_saved(study, by):
        raise KeyObjectsInvalid(_("Nothing to save: mark a key image or keep a measurement first."))
    ko_uid, sr_uid = reader_series_uids(study, by.user.pk)
    number = _next_number(ko_uid, sr_uid)
    previous_sr = Instance.objects.filter(series__series_uid=sr_uid).order_by("-instance_number").first()
    source = source_dataset(_source_image(study, marked))
    made = creator(by.institution.name if by.institution else "")
    observer = observer_of(by)
    now = timezone.localtime()
    written = []
    if marked:
        doc = _document(ko_uid, KO_SERIES_NUMBER, number, now, _("Key images"))
        ds = objects.key_object_selection(
            source, creator=made, doc=doc, observer=observer, key_images=[_ref(i) for i in marked]
        )
        written.append(_ingest(ds, study, by))
    doc = _document(sr_uid, SR_SERIES_NUMBER, number, now, _("Measurements"))
    doc.predecessor = _ref(previous_sr) if previous_sr is not None else None
    ds = objects.measurement_report(source, creator=made, doc=doc, observer=observer, measurements=measured)
    written.append(_ingest(ds, study, by))
    audit.record(
        actor=by.actor,
        action="study.key_objects.save",
        object_type="study",
        object_id=study.study_uid,
        patient=study.audit_patient,
        detail={"key_images": len(marked), "measurements": len(measured), "instances": written},
    )
    return Saved([i.sop_uid for i in marked], len(measured), written)


def _has_saved(study: Study, by: Principal) -> bool:
    return Instance.objects.filter(series__series_uid__in=reader_series_uids(study, by.user.pk)).exists()


def any_image(study: Study) -> Instance | None:
    """An image of the study, whose header the new objects copy their patient and study from."""
    return (
        Instance.objects.filter(series__study=study)
        .exclude(sop_class_uid__in=NON_IMAGE_CLASSES)
        .select_related("series")
        .order_by("pk")
        .first()
    )


def _source_image(study: Study, marked: list[Instance]) -> Instance:
    found = marked[0] if marked else any_image(study)
    if found is None:
        raise KeyObjectsInvalid(_("The study has no image to measure."))
    return found


def _next_number(*series_uids: str) -> int:
    top = Instance.objects.filter(series__series_uid__in=series_uids).aggregate(top=Max("instance_number"))["top"]
    return (top or 0) + 1


def _document(series_uid: str, series_number: int, number: int, now: Any, description: str) -> objects.Document:
    return objects.Document(
        series_uid=series_uid,
        sop_uid=objects.new_uid(settings.DICOM_UID_ROOT),
        series_number=series_number,
        instance_number=number,
        made_at=now,
        series_description=description[:64],
    )


def _ingest(ds: Dataset, study: Study, by: Principal) -> str:
    result = ingest.ingest_bytes(
        objects.part10(ds),
        institution=study.institution,
        actor=by.actor,
        via="key-objects",
        expected_study_uid=study.study_uid,
    )
    return result.instance.sop_uid


# --- reading back ------------------------------------------------------------------------------


def key_objects_of(study: Study, user_id: Any) -> dict[str, Any]:
    """The reader's current key images and measurements, parsed from their latest documents,
    with the series of every image they name (series_of: SOP Instance UID -> Series UID)."""
    ko_uid, sr_uid = reader_series_uids(study, user_id)
    found: dict[str, Any] = {"key_images": [], "measurements": [], "saved_at": None}
    for instance in _latest(study, [ko_uid, sr_uid]):
        ds = _read(instance)
        found["saved_at"] = f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"
        if instance.sop_class_uid == objects.KEY_OBJECT_SELECTION:
            found["key_images"] = key_images_in(ds)
        else:
            found["measurements"] = measurements_in(ds)
    named = set(found["key_images"]) | {m["sop_uid"] for m in found["measurements"]}
    rows = Instance.objects.filter(series__study=study, sop_uid__in=named).values_list("sop_uid", "series__series_uid")
    found["series_of"] = dict(rows)
    return found


def first_key_image(study: Study, user_id: Any) -> dict[str, str] | None:
    """Where the viewer opens: the user's own first key image (their latest save's Key Object
    Selection), else the first of the latest one any reader saved in the study; None when
    there is none. The index picks the document; one file is read."""
    ko_uid, sr_uid = reader_series_uids(study, user_id)
    own = [i for i in _latest(study, [ko_uid, sr_uid]) if i.sop_class_uid == objects.KEY_OBJECT_SELECTION]
    document = own[0] if own else _latest_key_objects(study)
    uids = key_images_in(_read(document)) if document is not None else []
    image = Instance.objects.filter(series__study=study, sop_uid__in=uids[:1]).select_related("series").first()
    return {"sop_uid": image.sop_uid, "series_uid": image.series.series_uid} if image is not None else None


def _latest_key_objects(study: Study) -> Instance | None:
    """The Key Object Selection saved last in the study, by any reader."""
    documents = Instance.objects.filter(series__study=study, sop_class_uid=objects.KEY_OBJECT_SELECTION)
    return documents.order_by("-received_at", "-pk").first()


def _latest(study: Study, series_uids: list[str]) -> list[Instance]:
    rows = Instance.objects.filter(series__study=study, series__series_uid__in=series_uids)
    top = rows.aggregate(top=Max("instance_number"))["top"]
    return list(rows.filter(instance_number=top)) if top is not None else []


def _read(instance: Instance) -> Dataset:
    with storage.open_instance(instance) as handle:
        return pydicom.dcmread(handle)


def key_images_in(ds: Dataset) -> list[str]:
    """The images a Key Object Selection names, in its order."""
    return [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in ds.get("ContentSequence", [])
        if item.get("ValueType") == "IMAGE" and item.get("RelationshipType") == "CONTAINS"
    ]


def measurements_in(ds: Dataset) -> list[dict[str, Any]]:
    """The measurements of one of our TID 1500 reports, in the form the viewer sends them."""
    found = []
    for item in _children_named(ds, objects.IMAGING_MEASUREMENTS[0]):
        for group in item.get("ContentSequence", []):
            parsed = _group(group)
            if parsed is not None:
                found.append(parsed)
    return found


def _children_named(node: Dataset, code_value: str) -> list[Dataset]:
    return [item for item in node.get("ContentSequence", []) if _concept(item) == code_value]


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _group(group: Dataset) -> dict[str, Any] | None:
    scoord = None
    measured: dict[str, Any] = {}
    label = ""
    for item in group.get("ContentSequence", []):
        kind = item.get("ValueType")
        if kind == "TEXT" and _concept(item) == objects.TRACKING_IDENTIFIER[0]:
            label = str(item.TextValue)
        elif kind == "SCOORD":
            scoord = item
        elif kind == "NUM":
            name = CONCEPT_NAMES.get(_concept(item))
            if name is not None:
                measured[name] = float(item.MeasuredValueSequence[0].NumericValue)
            for child in item.get("ContentSequence", []):
                scoord = child if child.get("ValueType") == "SCOORD" else scoord
    if scoord is None:
        return None
    return {**_shape(scoord), **measured, "label": label}


def _kind_of(graphic_type: str, points: list[list[float]]) -> str:
    """Our shapes by their graphic: an ellipse, a closed polyline (a rectangle), or an open
    one of two points (a length) or three (an angle's arms, the vertex in the middle)."""
    if graphic_type == "ELLIPSE":
        return "ellipse"
    if objects.is_closed([(p[0], p[1]) for p in points]):
        return "rectangle"
    return "length" if len(points) == 2 else "angle"


def _shape(scoord: Dataset) -> dict[str, Any]:
    data = [float(v) for v in scoord.GraphicData]
    points = [[data[i], data[i + 1]] for i in range(0, len(data) - 1, 2)]
    image = scoord.ContentSequence[0].ReferencedSOPSequence[0]
    kind = _kind_of(str(scoord.GraphicType), points)
    shape: dict[str, Any] = {"kind": kind, "sop_uid": str(image.ReferencedSOPInstanceUID)}
    shape["points"] = points[:-1] if kind == "rectangle" else points
    if "ReferencedFrameNumber" in image:
        shape["frame"] = int(image.ReferencedFrameNumber)
    return shape
