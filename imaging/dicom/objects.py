"""DICOM objects the system writes itself into a study (pydicom only, no ORM):

- a Key Object Selection document (PS3.3 A.35.4, TID 2010) naming the reader's key images;
- a Comprehensive SR "Imaging Measurement Report" (PS3.16 TID 1500) with the reader's
  measurements, each a TID 300 measurement (UCUM units) tied to its image by an SCOORD;
- a TID 1500 report of structured findings (a screening reading's nodules): each finding a
  TID 1501 measurement group with its finding, finding site, measurements and qualitative
  evaluations, and the report's own qualitative evaluations;
- an Encapsulated PDF (PS3.3 A.45.1) holding a signed report;
- a Basic Text SR (PS3.3 A.35.1, TID 2000 layout) holding its findings and impression.

Each copies the Patient and General Study modules from an instance of the study (`source`),
so the new series sits in the same study for any PACS, and names our system as the device
that made it (`Creator`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

# PS3.3 C.7.1.1 and C.7.2.1: what makes the new instance belong to the patient and study.
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
# Type 2 of those modules: present, empty when the source has no value.
TYPE_2 = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    }
)
UUID_ROOT = "2.25"  # PS3.5 B.2: UIDs made from a UUID need no registered root


@dataclass(frozen=True)
class Creator:
    """Our system as the equipment that made an object (PS3.3 C.7.5.1 General Equipment)."""

    manufacturer: str
    model: str
    software_version: str
    uid_root: str = UUID_ROOT
    institution: str = ""
    station: str = ""


@dataclass(frozen=True)
class Observer:
    """The person whose document it is (TID 1002 Person Observer)."""

    name: str  # DICOM PN, "Family^Given"
    organization: str = ""


@dataclass(frozen=True)
class Verification:
    """Who verified a document and when (PS3.3 C.17.2 Verifying Observer): its author, or under
    two-level sign-off the reviewer who approved it."""

    observer: Observer
    at: dt.datetime


@dataclass(frozen=True)
class ImageRef:
    sop_class_uid: str
    sop_uid: str
    series_uid: str
    frame: int | None = None  # 1-based, for a multi-frame image


@dataclass(frozen=True)
class Value:
    """One number of a measurement: what (TID 300 concept), how much and in which UCUM unit."""

    concept: tuple[str, str, str]
    number: float
    unit: tuple[str, str, str]


@dataclass(frozen=True)
class Measurement:
    """A length (POLYLINE of two points) or a planar ROI (ELLIPSE / closed POLYLINE) on one
    image, in image pixel coordinates (column, row; PS3.3 C.18.6.1.2)."""

    image: ImageRef
    graphic_type: str
    points: Sequence[tuple[float, float]]
    values: Sequence[Value]
    label: str = ""
    tracking_uid: str = ""


@dataclass
class Document:
    """Identity of a new instance: its series and place, and when it was made."""

    series_uid: str
    sop_uid: str
    series_number: int
    instance_number: int
    made_at: dt.datetime
    series_description: str = ""
    predecessor: ImageRef | None = None
    extra: dict[str, str] = field(default_factory=dict)


# Codes (PS3.16): (value, scheme, meaning).
SCT = "SCT"
DCM = "DCM"
UCUM = "UCUM"
LENGTH = ("410668003", SCT, "Length")
AREA = ("42798000", SCT, "Area")
MEAN = ("373098007", SCT, "Mean")
STANDARD_DEVIATION = ("386136009", SCT, "Standard Deviation")
ANGLE = ("1483009", SCT, "Angle")
MM = ("mm", UCUM, "millimeter")
MM2 = ("mm2", UCUM, "square millimeter")
MM3 = ("mm3", UCUM, "cubic millimeter")
HU = ("[hnsf'U]", UCUM, "Hounsfield unit")
NO_UNITS = ("1", UCUM, "no units")
DEGREE = ("deg", UCUM, "degree")
OF_INTEREST = ("113000", DCM, "Of Interest")
KEY_OBJECT_DESCRIPTION = ("113012", DCM, "Key Object Description")
IMAGING_MEASUREMENT_REPORT = ("126000", DCM, "Imaging Measurement Report")
LANGUAGE_OF_CONTENT = ("121049", DCM, "Language of Content Item and Descendants")
OBSERVER_TYPE = ("121005", DCM, "Observer Type")
PERSON = ("121006", DCM, "Person")
DEVICE = ("121007", DCM, "Device")
PERSON_OBSERVER_NAME = ("121008", DCM, "Person Observer Name")
DEVICE_OBSERVER_UID = ("121012", DCM, "Device Observer UID")
DEVICE_OBSERVER_NAME = ("121013", DCM, "Device Observer Name")
PROCEDURE_REPORTED = ("121058", DCM, "Procedure reported")
IMAGING_PROCEDURE = ("363679005", SCT, "Imaging procedure")
IMAGE_LIBRARY = ("111028", DCM, "Image Library")
IMAGE_LIBRARY_GROUP = ("126200", DCM, "Image Library Group")
IMAGING_MEASUREMENTS = ("126010", DCM, "Imaging Measurements")
MEASUREMENT_GROUP = ("125007", DCM, "Measurement Group")
TRACKING_IDENTIFIER = ("112039", DCM, "Tracking Identifier")
TRACKING_UID = ("112040", DCM, "Tracking Unique Identifier")
IMAGE_REGION = ("111030", DCM, "Image Region")
DIAGNOSTIC_IMAGING_REPORT = ("18748-4", "LN", "Diagnostic imaging report")
FINDING_SITE = ("363698007", SCT, "Finding Site")
DERIVATION = ("121401", DCM, "Derivation")
SOURCE_OF_MEASUREMENT = ("121112", DCM, "Source of Measurement")
QUALITATIVE_EVALUATIONS = ("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
FINDINGS = ("121070", DCM, "Findings")
FINDING = ("121071", DCM, "Finding")
IMPRESSIONS = ("121072", DCM, "Impressions")
IMPRESSION = ("121073", DCM, "Impression")
ENGLISH = ("en-US", "RFC5646", "English (United States)")
CHINESE = ("zh-CN", "RFC5646", "Chinese (China)")


# --- UIDs ---------------------------------------------------------------------------


def new_uid(root: str = UUID_ROOT) -> str:
    """A fresh UID under our root (a UUID under 2.25 when no organisation root is set)."""
    return derived_uid(root, uuid.uuid4().hex)


def derived_uid(root: str, *names: object) -> str:
    """The same UID every time for the same names: a second run of the same work makes
    the same instance, which the store then finds instead of storing it twice."""
    digest = hashlib.sha256("\x1f".join(str(n) for n in names).encode()).digest()
    if root == UUID_ROOT:
        return f"{UUID_ROOT}.{uuid.UUID(bytes=digest[:16], version=5).int}"
    number = str(int.from_bytes(digest[:16], "big"))
    return f"{root}.{number}"[:64].rstrip(".")


# --- the parts every object shares --------------------------------------------------------


def code(concept: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = concept
    return item


def _base(source: Dataset, creator: Creator, doc: Document, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese names and report text
    for keyword in PATIENT_AND_STUDY:
        if keyword in source:
            ds[keyword] = source[keyword]
        elif keyword in TYPE_2:
            setattr(ds, keyword, "")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = doc.sop_uid
    ds.Modality = modality
    ds.SeriesInstanceUID = doc.series_uid
    ds.SeriesNumber = doc.series_number
    if doc.series_description:
        ds.SeriesDescription = doc.series_description
    ds.InstanceNumber = doc.instance_number
    ds.ContentDate = doc.made_at.strftime("%Y%m%d")
    ds.ContentTime = doc.made_at.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.Manufacturer = creator.manufacturer
    ds.ManufacturerModelName = creator.model
    ds.SoftwareVersions = creator.software_version
    if creator.institution:
        ds.InstitutionName = creator.institution[:64]
    if creator.station:
        ds.StationName = creator.station[:16]
    return ds


def _referenced_series(images: Iterable[ImageRef]) -> DicomSequence:
    """PS3.3 C.17.2.1 Hierarchical Series Reference: the instances, grouped by series."""
    by_series: dict[str, list[ImageRef]] = {}
    for image in images:
        by_series.setdefault(image.series_uid, [])
        if all(seen.sop_uid != image.sop_uid for seen in by_series[image.series_uid]):
            by_series[image.series_uid].append(image)
    series_items = []
    for series_uid, refs in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = DicomSequence([_sop_ref(ref, with_frame=False) for ref in refs])
        series_items.append(item)
    return DicomSequence(series_items)


def _evidence(study_uid: str, images: Iterable[ImageRef]) -> DicomSequence:
    """PS3.3 C.17.2.3 Current Requested Procedure Evidence Sequence: what the document cites."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedSeriesSequence = _referenced_series(images)
    return DicomSequence([item])


def _sop_ref(ref: ImageRef, *, with_frame: bool = True) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_uid
    if with_frame and ref.frame is not None:
        item.ReferencedFrameNumber = ref.frame
    return item


def _item(relationship: str | None, value_type: str, concept: tuple[str, str, str] | None) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if concept is not None:
        item.ConceptNameCodeSequence = DicomSequence([code(concept)])
    return item


def _container(relationship: str | None, concept: tuple[str, str, str], children: list[Dataset]) -> Dataset:
    item = _item(relationship, "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    if children:
        item.ContentSequence = DicomSequence(children)
    return item


def _text(relationship: str, concept: tuple[str, str, str], text: str) -> Dataset:
    item = _item(relationship, "TEXT", concept)
    item.TextValue = text
    return item


def _code_item(relationship: str, concept: tuple[str, str, str], value: tuple[str, str, str]) -> Dataset:
    item = _item(relationship, "CODE", concept)
    item.ConceptCodeSequence = DicomSequence([code(value)])
    return item


def _image(relationship: str, ref: ImageRef, concept: tuple[str, str, str] | None = None) -> Dataset:
    item = _item(relationship, "IMAGE", concept)
    item.ReferencedSOPSequence = DicomSequence([_sop_ref(ref)])
    return item


def _observer_context(observer: Observer, creator: Creator, device_uid: str) -> list[Dataset]:
    """TID 1002 Observer Context: the reader (a person) and our system (a device)."""
    person = _item("HAS OBS CONTEXT", "PNAME", PERSON_OBSERVER_NAME)
    person.PersonName = observer.name
    device = _item("HAS OBS CONTEXT", "UIDREF", DEVICE_OBSERVER_UID)
    device.UID = device_uid
    device_name = _item("HAS OBS CONTEXT", "TEXT", DEVICE_OBSERVER_NAME)
    device_name.TextValue = creator.model
    return [
        _code_item("HAS OBS CONTEXT", OBSERVER_TYPE, PERSON),
        person,
        _code_item("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        device,
        device_name,
    ]


def _template(identifier: str) -> DicomSequence:
    item = Dataset()
    item.MappingResource = "DCMR"
    item.TemplateIdentifier = identifier
    return DicomSequence([item])


def _sr_document(
    ds: Dataset, doc: Document, observer: Observer, creator: Creator, *, verified: Verification | None
) -> None:
    """PS3.3 C.17.2 SR Document General Module; `observer` is the author, `verified` None for an
    unverified document."""
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"
    if verified:
        verifier = Dataset()
        verifier.VerifyingObserverName = verified.observer.name
        verifier.VerifyingObserverIdentificationCodeSequence = DicomSequence([])
        organization = verified.observer.organization or creator.institution or creator.manufacturer
        verifier.VerifyingOrganization = organization
        verifier.VerificationDateTime = verified.at.strftime("%Y%m%d%H%M%S")
        ds.VerifyingObserverSequence = DicomSequence([verifier])
    author = Dataset()
    author.ObserverType = "PSN"
    author.PersonName = observer.name
    author.PersonIdentificationCodeSequence = DicomSequence([])
    author.InstitutionName = observer.organization or creator.institution
    author.InstitutionCodeSequence = DicomSequence([])
    author.InstitutionalDepartmentName = ""
    ds.AuthorObserverSequence = DicomSequence([author])
    ds.PerformedProcedureCodeSequence = DicomSequence([])
    if doc.predecessor is not None:
        # PS3.3 C.17.2.2: this document replaces the one it names (saved again by the reader).
        prior = Dataset()
        prior.StudyInstanceUID = ds.StudyInstanceUID
        prior.ReferencedSeriesSequence = _referenced_series([doc.predecessor])
        ds.PredecessorDocumentsSequence = DicomSequence([prior])


def _language(language: str) -> Dataset:
    return _code_item("HAS CONCEPT MOD", LANGUAGE_OF_CONTENT, CHINESE if language.startswith("zh") else ENGLISH)


# --- the objects ------------------------------------------------------------------------------


def key_object_selection(
    source: Dataset,
    *,
    creator: Creator,
    doc: Document,
    observer: Observer,
    key_images: Sequence[ImageRef],
    description: str = "",
    language: str = "en",
) -> Dataset:
    """PS3.3 A.35.4 Key Object Selection Document, content TID 2010 ("Of Interest")."""
    if not key_images:
        raise ValueError("a key object selection needs at least one image")
    ds = _base(source, creator, doc, KEY_OBJECT_SELECTION, "KO")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(ds.StudyInstanceUID, key_images)
    children = [_language(language), *_observer_context(observer, creator, _device_uid(creator, doc))]
    if description:
        children.append(_text("CONTAINS", KEY_OBJECT_DESCRIPTION, description))
    children += [_image("CONTAINS", ref) for ref in key_images]
    _root(ds, OF_INTEREST, "2010", children)
    return ds


def measurement_report(
    source: Dataset,
    *,
    creator: Creator,
    doc: Document,
    observer: Observer,
    measurements: Sequence[Measurement],
    language: str = "en",
) -> Dataset:
    """PS3.16 TID 1500 Measurement Report in a Comprehensive SR (PS3.3 A.35.3)."""
    ds = _base(source, creator, doc, COMPREHENSIVE_SR, "SR")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    _sr_document(ds, doc, observer, creator, verified=None)
    images = [m.image for m in measurements]
    if images:  # an empty report (the reader removed every measurement) cites nothing
        ds.CurrentRequestedProcedureEvidenceSequence = _evidence(ds.StudyInstanceUID, images)
    library = _container(
        "CONTAINS", IMAGE_LIBRARY, [_container("CONTAINS", IMAGE_LIBRARY_GROUP, _library_images(images))]
    )
    groups = [_measurement_group(m, index, doc) for index, m in enumerate(measurements, start=1)]
    children = [
        _language(language),
        *_observer_context(observer, creator, _device_uid(creator, doc)),
        _code_item("HAS CONCEPT MOD", PROCEDURE_REPORTED, IMAGING_PROCEDURE),
        library,
        _container("CONTAINS", IMAGING_MEASUREMENTS, groups),
    ]
    _root(ds, IMAGING_MEASUREMENT_REPORT, "1500", children)
    return ds


def _library_images(images: Sequence[ImageRef]) -> list[Dataset]:
    seen: dict[str, ImageRef] = {}
    for image in images:
        seen.setdefault(image.sop_uid, image)
    return [_image("CONTAINS", ref) for ref in seen.values()]


def _measurement_group(m: Measurement, index: int, doc: Document) -> Dataset:
    """TID 1501 (a length or an angle, on an open polyline: the SCOORD is what each number
    was inferred from) or TID 1410 (a planar ROI, an ellipse or a closed polyline: the SCOORD
    is the group's Image Region)."""
    tracking = _text("HAS OBS CONTEXT", TRACKING_IDENTIFIER, m.label or f"Measurement {index}")
    tracking_uid = _item("HAS OBS CONTEXT", "UIDREF", TRACKING_UID)
    tracking_uid.UID = m.tracking_uid or derived_uid(UUID_ROOT, doc.sop_uid, index)
    children = [tracking, tracking_uid]
    if m.graphic_type == "ELLIPSE" or is_closed(m.points):
        children.append(_scoord("CONTAINS", m, IMAGE_REGION))
        children += [_number(v) for v in m.values]
    else:
        for value in m.values:
            number = _number(value)
            number.ContentSequence = DicomSequence([_scoord("INFERRED FROM", m, None)])
            children.append(number)
    return _container("CONTAINS", MEASUREMENT_GROUP, children)


def is_closed(points: Sequence[tuple[float, float]]) -> bool:
    """A closed POLYLINE repeats its first point last (PS3.3 C.18.6.1.1): it bounds a region
    (three corners at least; an angle's three points are open even when its arms end together)."""
    return len(points) > 3 and tuple(points[0]) == tuple(points[-1])


def _number(value: Value) -> Dataset:
    """TID 300 Measurement: a NUM with its unit (PS3.3 C.18.1 Numeric Measurement Macro)."""
    item = _item("CONTAINS", "NUM", value.concept)
    measured = Dataset()
    measured.NumericValue = _decimal_string(value.number)
    measured.FloatingPointValue = float(value.number)
    measured.MeasurementUnitsCodeSequence = DicomSequence([code(value.unit)])
    item.MeasuredValueSequence = DicomSequence([measured])
    return item


def _decimal_string(number: float) -> str:
    """DS holds at most 16 characters."""
    text = f"{number:.6g}"
    return text if len(text) <= 16 else f"{number:.6e}"


def _scoord(relationship: str, m: Measurement, concept: tuple[str, str, str] | None) -> Dataset:
    """PS3.3 C.18.6 Spatial Coordinates, selected from the image they are drawn on."""
    item = _item(relationship, "SCOORD", concept)
    item.GraphicType = m.graphic_type
    item.GraphicData = [float(v) for point in m.points for v in point]
    item.ContentSequence = DicomSequence([_image("SELECTED FROM", m.image)])
    return item


def _device_uid(creator: Creator, doc: Document) -> str:
    return doc.extra.get("device_uid") or derived_uid(creator.uid_root, "device", creator.model)


def _root(ds: Dataset, concept: tuple[str, str, str], template: str, children: list[Dataset]) -> None:
    """PS3.3 C.17.3 SR Document Content: the root CONTAINER and its template."""
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([code(concept)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentTemplateSequence = _template(template)
    ds.ContentSequence = DicomSequence(children)


@dataclass(frozen=True)
class Evaluation:
    """A qualitative evaluation: a coded answer (CODE) or words (TEXT) to a concept."""

    concept: tuple[str, str, str]
    code: tuple[str, str, str] | None = None
    text: str = ""


@dataclass(frozen=True)
class FindingValue:
    """One number of a finding (TID 300): what, how much, in which UCUM unit, how it was derived
    (e.g. Mean), and the image it was measured on (a Measurement's SCOORD, or just the image)."""

    concept: tuple[str, str, str]
    number: float
    unit: tuple[str, str, str]
    derivation: tuple[str, str, str] | None = None
    image: ImageRef | None = None
    drawn: Measurement | None = None


@dataclass(frozen=True)
class FindingGroup:
    """One finding (TID 1501 Measurement Group): a nodule, where it is, its sizes, what it is."""

    label: str
    tracking_uid: str
    finding: tuple[str, str, str]
    site: tuple[str, str, str] | None
    values: Sequence[FindingValue]
    evaluations: Sequence[Evaluation] = ()


@dataclass(frozen=True)
class CodingScheme:
    """A private coding scheme the document uses (PS3.3 C.12.1.1.2, designators "99...")."""

    designator: str
    name: str
    responsible: str


def findings_report(
    source: Dataset,
    *,
    creator: Creator,
    doc: Document,
    observer: Observer,
    groups: Sequence[FindingGroup],
    evaluations: Sequence[Evaluation] = (),
    schemes: Sequence[CodingScheme] = (),
    language: str = "en",
) -> Dataset:
    """PS3.16 TID 1500 Measurement Report of structured findings, signed by its reader
    (verified), in a Comprehensive SR (PS3.3 A.35.3)."""
    ds = _base(source, creator, doc, COMPREHENSIVE_SR, "SR")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    _sr_document(ds, doc, observer, creator, verified=Verification(observer, doc.made_at))  # the reader who signed it
    if schemes:
        ds.CodingSchemeIdentificationSequence = DicomSequence([_scheme(s) for s in schemes])
    images = [v.image for g in groups for v in g.values if v.image is not None]
    if images:
        ds.CurrentRequestedProcedureEvidenceSequence = _evidence(ds.StudyInstanceUID, images)
    library = _container(
        "CONTAINS", IMAGE_LIBRARY, [_container("CONTAINS", IMAGE_LIBRARY_GROUP, _library_images(images))]
    )
    children = [
        _language(language),
        *_observer_context(observer, creator, _device_uid(creator, doc)),
        _code_item("HAS CONCEPT MOD", PROCEDURE_REPORTED, IMAGING_PROCEDURE),
        library,
        _container("CONTAINS", IMAGING_MEASUREMENTS, [_finding_group(g) for g in groups]),
    ]
    if evaluations:
        children.append(_container("CONTAINS", QUALITATIVE_EVALUATIONS, [_evaluation(e) for e in evaluations]))
    _root(ds, IMAGING_MEASUREMENT_REPORT, "1500", children)
    return ds


def _scheme(scheme: CodingScheme) -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = scheme.designator
    item.CodingSchemeName = scheme.name[:64]
    item.CodingSchemeResponsibleOrganization = scheme.responsible[:64]
    return item


def _finding_group(group: FindingGroup) -> Dataset:
    """TID 1501: tracking, the finding, its site (HAS CONCEPT MOD), its numbers, its evaluations."""
    tracking_uid = _item("HAS OBS CONTEXT", "UIDREF", TRACKING_UID)
    tracking_uid.UID = group.tracking_uid
    children = [
        _text("HAS OBS CONTEXT", TRACKING_IDENTIFIER, group.label[:64]),
        tracking_uid,
        _code_item("CONTAINS", FINDING, group.finding),
    ]
    if group.site is not None:
        children.append(_code_item("HAS CONCEPT MOD", FINDING_SITE, group.site))
    children += [_finding_number(v) for v in group.values]
    children += [_evaluation(e) for e in group.evaluations]
    return _container("CONTAINS", MEASUREMENT_GROUP, children)


def _finding_number(value: FindingValue) -> Dataset:
    item = _number(Value(value.concept, value.number, value.unit))
    modifiers = []
    if value.derivation is not None:
        modifiers.append(_code_item("HAS CONCEPT MOD", DERIVATION, value.derivation))
    if value.drawn is not None:
        modifiers.append(_scoord("INFERRED FROM", value.drawn, None))
    elif value.image is not None:
        modifiers.append(_image("INFERRED FROM", value.image, SOURCE_OF_MEASUREMENT))
    if modifiers:
        item.ContentSequence = DicomSequence(modifiers)
    return item


def _evaluation(evaluation: Evaluation) -> Dataset:
    if evaluation.code is not None:
        return _code_item("CONTAINS", evaluation.concept, evaluation.code)
    return _text("CONTAINS", evaluation.concept, evaluation.text)


def basic_text_report(
    source: Dataset,
    *,
    creator: Creator,
    doc: Document,
    observer: Observer,
    findings: str,
    impression: str,
    language: str = "zh",
    verification: Verification | None = None,
) -> Dataset:
    """PS3.3 A.35.1 Basic Text SR, the signed report's findings and impression laid out as
    TID 2000 (sections of TEXT items); written by `observer` and verified by them when they
    signed it, unless `verification` names the reviewer who verified it."""
    ds = _base(source, creator, doc, BASIC_TEXT_SR, "SR")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    _sr_document(ds, doc, observer, creator, verified=verification or Verification(observer, doc.made_at))
    children = [_language(language), *_observer_context(observer, creator, _device_uid(creator, doc))[:2]]
    if findings.strip():
        children.append(_container("CONTAINS", FINDINGS, [_text("CONTAINS", FINDING, findings)]))
    children.append(_container("CONTAINS", IMPRESSIONS, [_text("CONTAINS", IMPRESSION, impression)]))
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([code(DIAGNOSTIC_IMAGING_REPORT)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(children)
    return ds


def encapsulated_pdf(source: Dataset, *, creator: Creator, doc: Document, pdf: bytes, title: str) -> Dataset:
    """PS3.3 A.45.1 Encapsulated PDF: the report as printed, in a DOC series."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("not a PDF document")
    ds = _base(source, creator, doc, ENCAPSULATED_PDF, "DOC")
    ds.ConversionType = "WSD"  # PS3.3 C.8.6.1: made on a workstation
    ds.AcquisitionDateTime = doc.made_at.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the report names the patient
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = DicomSequence([code(DIAGNOSTIC_IMAGING_REPORT)])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)  # PS3.3 C.24.2: before the pad byte
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def part10(ds: Dataset) -> bytes:
    """The data set as a PS3.10 file in Explicit VR Little Endian."""
    from io import BytesIO

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
