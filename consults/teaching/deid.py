"""De-identified copies of images for teaching cases (DICOM PS3.15 Annex E).

The profile is the Basic Application Level Confidentiality Profile (E.2) with the Clean
Descriptors Option (E.3.5); Retain Longitudinal Temporal Information (with full or modified
dates) is off, so dates and times go as the basic profile says (removed, emptied or a dummy);
Retain Safe Private, UIDs, Device, Institution and Patient Characteristics are off too.

Which attribute gets which action is the standard's Table E.1-1, as the kept library
dicom-anonymizer (KitwareMedical; pinned in requirements.txt) ships it, generated from the
standard's own table (edition 2026c here). Of the three libraries considered it is the one that
carries the profile itself and works with our pydicom 3.0:
- dicom-anonymizer: the basic-profile table per edition, every action replaceable per tag,
  repeating groups (overlays, curves) and private attributes handled; depends on pydicom and
  tqdm only.
- deid (pydicom/deid): a recipe engine; the basic profile would be a recipe written here by
  hand (its bundled recipes are pixel filters), and it brings matplotlib into the servers.
- dicognito: replaces values with plausible fakes and shifts dates by a random offset; a good
  anonymiser, but not the profile's table (it keeps descriptions the profile removes).

What this module does beside the library's table:
- UIDs (action U, and D on a UID): HMAC-SHA256 of the UID keyed with settings.TEACHING_UID_KEY,
  as 2.25.<128-bit integer> (the PS3.5 B.2 form), so that one study's copies keep their series
  together, references between them stay valid, and nobody without the key can tell the source.
- Sequences: X/Z/U* (Referenced and Source Image Sequence) are kept with the UIDs inside them
  replaced; a sequence the table empties or replaces is emptied, one it removes is removed; the
  table is applied again inside every item that remains, at any depth (the library acts on one
  level of a data set).
- Clean Descriptors (the "Clean Desc. Opt." column): a text value is kept with every
  identifying value of the data set taken out (names, IDs, birth date, accession number,
  institution) and every run of four or more digits; a sequence the option would clean is
  removed instead (the basic action).
- Private attributes removed; the file meta information written afresh; Patient Identity
  Removed YES, De-identification Method and its Code Sequence (DCM 113100, 113105, and 113101
  once a mask cleaned the pixels), Longitudinal Temporal Information Modified REMOVED.
- Burned-in text is flagged, not guessed at: Burned In Annotation YES, a radiograph (DX, CR),
  ultrasound or other capture (US, OT), or a secondary capture class. The author confirms such
  an image or blanks rectangles of it (apply_masks) before the case is published.
- A copy is checked against the identifying values of its original before it is kept
  (find_leaks); one that still holds any is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dicomanonymizer import simpledicomanonymizer as library
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from django.conf import settings
from pydicom import uid as pydicom_uid
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

PROFILE_EDITION = "dicomfields_2026c"
Action = Callable[[Dataset, Any], None]


class DeidentificationError(Exception):
    """The image could not be de-identified (or a copy still held an identifying value)."""


# --- keyed UIDs -------------------------------------------------------------------------


def keyed_uid(uid: str) -> str:
    """The UID that replaces `uid` in every copy: the same for the same UID, unlinkable without the key."""
    digest = hmac.new(settings.TEACHING_UID_KEY.encode(), uid.strip().encode("ascii", "replace"), hashlib.sha256)
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


def is_standard_uid(uid: str) -> bool:
    """A UID of the standard (a SOP class, a transfer syntax, a coding scheme): not identifying."""
    return str(uid).startswith("1.2.840.10008.")


def _hash_uids(element: DataElement) -> None:
    if isinstance(element.value, MultiValue | list):
        element.value = [keyed_uid(v) if v and not is_standard_uid(v) else v for v in element.value]
    elif element.value and not is_standard_uid(element.value):
        element.value = keyed_uid(element.value)


# --- identifying values ------------------------------------------------------------------

# Values (besides person names, every one of which is identifying) that identify the patient,
# the visit or the place: collected from the original before it is de-identified.
IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "StationName",
        "DeviceSerialNumber",
    }
)
# UIDs of a kind, not of an instance: a class (a vendor's private SOP class), a syntax, the software.
NOT_INSTANCE_UIDS = ("ClassUID", "SyntaxUID")
# What the profile itself writes in place of a value: never counted as a leak of one.
PLACEHOLDERS = frozenset({"anonymized", "anonymous", "00010101", "000000.00"})


@dataclass
class Identifiers:
    """The identifying values of an original: texts (names, IDs, dates of birth, places) and UIDs."""

    texts: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)

    def add_text(self, value: Any) -> None:
        text = " ".join(str(value).split())
        if len(text) >= 2 and text.casefold() not in PLACEHOLDERS:
            self.texts.add(text)

    def add_name(self, value: Any) -> None:
        for variant in name_variants(str(value)):
            self.add_text(variant)

    def add_date(self, value: Any) -> None:
        for variant in date_variants(str(value)):
            self.add_text(variant)

    @property
    def all(self) -> set[str]:
        return self.texts | self.uids


def name_variants(pn: str) -> Iterator[str]:
    """A DICOM person name as it may be written: whole, each component group with and without
    separators, each component of two or more characters (PS3.5 6.2.1)."""
    yield pn
    for group in pn.split("="):
        parts = [p.strip() for p in group.split("^") if p.strip()]
        if not parts:
            continue
        yield " ".join(parts)
        yield "".join(parts)
        yield " ".join(reversed(parts))
        yield from (p for p in parts if len(p) >= 2)


def date_variants(da: str) -> Iterator[str]:
    """A DA value (YYYYMMDD) as people write it."""
    digits = re.sub(r"\D", "", da)
    if len(digits) != 8:
        return
    yield digits
    y, m, d = digits[:4], digits[4:6], digits[6:]
    for sep in ("-", "/", "."):
        yield f"{y}{sep}{m}{sep}{d}"
    yield f"{y}年{int(m)}月{int(d)}日"
    yield f"{y}年{m}月{d}日"


def identifying_values(ds: Dataset, known: Iterable[str] = ()) -> Identifiers:
    """Every identifying value of the original (at any depth, file meta included), with `known`
    ones from elsewhere (the index's patient name and ID, the institution's name)."""
    found = Identifiers()
    for value in known:
        found.add_name(value)
    for element in _elements(ds):
        if element.tag.is_private or element.value in (None, ""):
            continue
        if element.VR == "PN":
            for name in _values(element):
                found.add_name(name)
        elif element.VR == "UI" and not element.keyword.endswith(NOT_INSTANCE_UIDS):
            found.uids.update(str(u) for u in _values(element) if u and not is_standard_uid(u))
        elif element.keyword == "PatientBirthDate":
            for date in _values(element):
                found.add_date(date)
        elif element.keyword in IDENTIFYING_KEYWORDS:
            for value in _values(element):
                found.add_text(value)
    return found


def _elements(ds: Dataset) -> Iterator[DataElement]:
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from meta.iterall()
    yield from ds.iterall()


def _values(element: DataElement) -> list[Any]:
    value = element.value
    return list(value) if isinstance(value, MultiValue | list) else [value]


# --- the profile ---------------------------------------------------------------------------

# Table E.1-1, "Clean Desc. Opt." column: the attributes of text VRs the Clean Descriptors Option
# cleans (C) instead of the basic action (the option's sequences keep the basic action).
CLEAN_DESCRIPTORS = (
    (0x0008, 0x1030),  # Study Description
    (0x0008, 0x103E),  # Series Description
    (0x0018, 0x1030),  # Protocol Name
    (0x0008, 0x1080),  # Admitting Diagnoses Description
    (0x0008, 0x2111),  # Derivation Description
    (0x0008, 0x4000),  # Identifying Comments
    (0x0010, 0x2000),  # Medical Alerts
    (0x0010, 0x2110),  # Allergies
    (0x0010, 0x2180),  # Occupation
    (0x0010, 0x21B0),  # Additional Patient History
    (0x0010, 0x4000),  # Patient Comments
    (0x0012, 0x0051),  # Clinical Trial Time Point Description
    (0x0012, 0x0072),  # Clinical Trial Series Description
    (0x0016, 0x002B),  # Maker Note
    (0x0016, 0x004B),  # Device Setting Description
    (0x0018, 0x0010),  # Contrast/Bolus Agent
    (0x0018, 0x11BB),  # Acquisition Field Of View Label
    (0x0018, 0x1400),  # Acquisition Device Processing Description
    (0x0018, 0x4000),  # Acquisition Comments
    (0x0018, 0x9185),  # Respiratory Motion Compensation Technique Description
    (0x0018, 0x937B),  # Multi-energy Acquisition Description
    (0x0018, 0x937F),  # Decomposition Description
    (0x0018, 0x9424),  # Acquisition Protocol Description
    (0x0018, 0x9937),  # Requested Series Description
    (0x0018, 0xA003),  # Contribution Description
    (0x0020, 0x4000),  # Image Comments
    (0x0020, 0x9158),  # Frame Comments
    (0x0032, 0x1030),  # Reason for Study
    (0x0032, 0x1060),  # Requested Procedure Description
    (0x0032, 0x1066),  # Reason for Visit
    (0x0032, 0x1070),  # Requested Contrast Agent
    (0x0032, 0x4000),  # Study Comments
    (0x0038, 0x0040),  # Discharge Diagnosis Description
    (0x0038, 0x0062),  # Service Episode Description
    (0x0038, 0x0500),  # Patient State
    (0x0038, 0x4000),  # Visit Comments
    (0x0040, 0x0007),  # Scheduled Procedure Step Description
    (0x0040, 0x0254),  # Performed Procedure Step Description
    (0x0040, 0x0280),  # Comments on the Performed Procedure Step
    (0x0040, 0x0310),  # Comments on Radiation Dose
    (0x0040, 0x051A),  # Container Description
    (0x0040, 0x0600),  # Specimen Short Description
    (0x0040, 0x0602),  # Specimen Detailed Description
    (0x0040, 0x1002),  # Reason for the Requested Procedure
    (0x0040, 0x1400),  # Requested Procedure Comments
    (0x0040, 0x2001),  # Reason for the Imaging Service Request
    (0x0040, 0x2400),  # Imaging Service Request Comments
    (0x0050, 0x0021),  # Long Device Description
    (0x2200, 0x0002),  # Label Text
    (0x3006, 0x0002),  # Structure Set Label
    (0x3006, 0x0004),  # Structure Set Name
    (0x3006, 0x0006),  # Structure Set Description
    (0x3006, 0x0026),  # ROI Name
    (0x3006, 0x0028),  # ROI Description
    (0x3006, 0x0038),  # ROI Generation Description
    (0x3006, 0x0085),  # ROI Observation Label
    (0x3006, 0x0088),  # ROI Observation Description
    (0x300A, 0x0002),  # RT Plan Label
    (0x300A, 0x0003),  # RT Plan Name
    (0x300A, 0x0004),  # RT Plan Description
    (0x300A, 0x000E),  # Prescription Description
    (0x300A, 0x0016),  # Dose Reference Description
    (0x300A, 0x0072),  # Fraction Group Description
    (0x300A, 0x00C3),  # Beam Description
    (0x300A, 0x00DD),  # Bolus Description
    (0x300A, 0x0196),  # Fixation Device Description
    (0x300A, 0x01A6),  # Shielding Device Description
    (0x300A, 0x01B2),  # Setup Technique Description
    (0x300A, 0x02EB),  # Compensator Description
    (0x300A, 0x0608),  # Treatment Position Group Label
    (0x300A, 0x0619),  # Radiation Dose Identification Label
    (0x300A, 0x0623),  # Radiation Dose In-Vivo Measurement Label
    (0x300A, 0x062A),  # RT Tolerance Set Label
    (0x300A, 0x0676),  # Equipment Frame of Reference Description
    (0x300A, 0x067C),  # Radiation Generation Mode Label
    (0x300A, 0x067D),  # Radiation Generation Mode Description
    (0x300A, 0x0734),  # Treatment Tolerance Violation Description
    (0x300A, 0x0742),  # Interlock Description
    (0x300A, 0x0783),  # Interlock Origin Description
    (0x300C, 0x0113),  # Reason for Omission Description
    (0x3010, 0x000F),  # Conceptual Volume Combination Description
    (0x3010, 0x0017),  # Conceptual Volume Description
    (0x3010, 0x0033),  # User Content Label
    (0x3010, 0x0034),  # User Content Long Label
    (0x3010, 0x0035),  # Entity Label
    (0x3010, 0x0036),  # Entity Name
    (0x3010, 0x0037),  # Entity Description
    (0x3010, 0x0038),  # Entity Long Label
    (0x3010, 0x0054),  # RT Prescription Label
    (0x3010, 0x0056),  # RT Treatment Approach Label
    (0x3010, 0x005A),  # RT Physician Intent Narrative
    (0x3010, 0x005C),  # Reason for Superseding
    (0x3010, 0x0061),  # Prior Treatment Dose Description
    (0x3010, 0x0077),  # Treatment Site
    (0x3010, 0x007A),  # Treatment Technique Notes
    (0x3010, 0x007B),  # Prescription Notes
    (0x3010, 0x007F),  # Fractionation Notes
    (0x4008, 0x010B),  # Interpretation Text
    (0x4008, 0x0115),  # Interpretation Diagnosis Description
    (0x4008, 0x0300),  # Impressions
    (0x4008, 0x4000),  # Results Comments
)
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"})


def _get(dataset: Dataset, tag: Any) -> DataElement | None:
    element = dataset.get(tag)
    return element if isinstance(element, DataElement) else None


def _keyed(dataset: Dataset, tag: Any) -> None:
    """U: the keyed UID; a sequence keeps its items, whose UIDs the table replaces in turn."""
    element = _get(dataset, tag)
    if element is not None and element.VR == "UI":
        _hash_uids(element)


def _remove(dataset: Dataset, tag: Any) -> None:
    if _get(dataset, tag) is not None:
        del dataset[tag]


def _wrapped(action: Action, *, removable: bool) -> Action:
    """A library action with sequences and UIDs handled as the module docstring says."""

    def run(dataset: Dataset, tag: Any) -> None:
        element = _get(dataset, tag)
        if element is None:
            return
        if element.VR == "SQ":
            if removable:
                del dataset[tag]
            else:
                element.value = Sequence()
        elif element.VR == "UI" and action in (library.replace, library.empty_or_replace):
            _hash_uids(element)
        else:
            action(dataset, tag)

    return run


def _cleaner(pattern: re.Pattern[str]) -> Action:
    """C (Clean Descriptors): the text kept without any identifying value."""

    def clean(dataset: Dataset, tag: Any) -> None:
        element = _get(dataset, tag)
        if element is None:
            return
        if element.VR not in TEXT_VRS:
            del dataset[tag]
            return
        cleaned = [scrub(str(v), pattern) for v in _values(element)]
        element.value = cleaned if len(cleaned) > 1 else cleaned[0]

    return clean


def scrub_pattern(texts: Iterable[str]) -> re.Pattern[str]:
    """Every identifying text (longest first) and every run of four or more digits."""
    escaped = [re.escape(t) for t in sorted(set(texts), key=len, reverse=True)]
    return re.compile("|".join([*escaped, r"\d{4,}"]), re.IGNORECASE)


def scrub(text: str, pattern: re.Pattern[str]) -> str:
    return " ".join(pattern.sub(" ", text).split()).strip(" ^-_,;:/")


def profile_rules(identifiers: Identifiers) -> dict[Any, Action]:
    """Table E.1-1's basic-profile action for every attribute, as run here, with the Clean
    Descriptors Option over it."""
    table = dicom_anonymization_database_selector(PROFILE_EDITION)
    actions: list[tuple[str, Action]] = [
        ("D_TAGS", _wrapped(library.replace, removable=False)),
        ("Z_TAGS", _wrapped(library.empty, removable=False)),
        ("Z_D_TAGS", _wrapped(library.empty_or_replace, removable=False)),
        ("X_TAGS", _remove),
        ("X_Z_TAGS", _remove),
        ("X_D_TAGS", _remove),
        ("X_Z_D_TAGS", _remove),
        ("U_TAGS", _keyed),
        ("X_Z_U_STAR_TAGS", _keyed),
    ]
    rules: dict[Any, Action] = {}
    for category, action in actions:
        rules.update(dict.fromkeys(table[category], action))
    clean = _cleaner(scrub_pattern(identifiers.texts))
    rules.update(dict.fromkeys(CLEAN_DESCRIPTORS, clean))
    return rules


def _apply(ds: Dataset, rules: dict[Any, Action]) -> None:
    """The table on this level, then inside every item of every sequence left."""
    try:
        library.anonymize_dataset(ds, None, delete_private_tags=True, base_rules_gen=lambda: dict(rules))
    except (NotImplementedError, ValueError, TypeError, KeyError) as exc:
        raise DeidentificationError(f"{type(exc).__name__}: {exc}") from None
    for element in list(ds):
        if element.VR == "SQ" and element.value:
            for item in element.value:
                _apply(item, rules)


# --- the copy ------------------------------------------------------------------------------

SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
# A computed radiograph (CR) is flagged as a digital one (DX) is.
FLAGGED_MODALITIES = frozenset({"DX", "CR", "US", "OT"})


def burned_in_reason(ds: Dataset) -> str:
    """Why the pixels may carry identifying text (a consults.teaching.models.BurnedIn value)."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "attribute"
    if str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES:
        return "sop_class"
    if str(ds.get("Modality", "")).strip().upper() in FLAGGED_MODALITIES:
        return "modality"
    return ""


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _record_method(ds: Dataset) -> None:
    """PS3.15 E.1.1: what was done, in the data set itself (CID 7050 codes)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Basic Profile; Clean Descriptors"
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code("113100", "Basic Application Confidentiality Profile"), _code("113105", "Clean Descriptors Option")]
    )
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def _new_file_meta(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom_uid.UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


@dataclass(frozen=True)
class Outcome:
    """What de-identifying an instance found: why its pixels may carry identifying text ("" if
    there is no reason to think so), and the identifying values its original held."""

    burned_in: str
    identifiers: Identifiers


def deidentify(ds: Dataset, known: Iterable[str] = ()) -> Outcome:
    """De-identify `ds` (a whole instance as read from storage) in place. Raises
    DeidentificationError when it cannot be done or the copy still holds an identifying value."""
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise DeidentificationError("the instance has no SOP Instance UID or SOP Class UID")
    identifiers = identifying_values(ds, known)
    reason = burned_in_reason(ds)
    meta = getattr(ds, "file_meta", None)
    stored = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    _apply(ds, profile_rules(identifiers))
    library.dictionary.clear()  # the library's own UID map: unused here, never left to grow
    _scrub_kept(ds, identifiers)
    _record_method(ds)
    deflated = stored in ("", pydicom_uid.DeflatedExplicitVRLittleEndian)
    _new_file_meta(ds, pydicom_uid.ExplicitVRLittleEndian if deflated else stored)
    leaks = find_leaks(ds, identifiers)
    if leaks:
        raise DeidentificationError("identifying values left in " + ", ".join(sorted(set(leaks))[:5]))
    return Outcome(reason, identifiers)


def _scrub_kept(ds: Dataset, identifiers: Identifiers) -> None:
    """An identifying text the profile keeps (an institution's name inside the Manufacturer, a
    patient's name in a kept comment) is taken out as Clean Descriptors would; a name, whole."""
    if not identifiers.texts:
        return
    pattern = scrub_pattern(identifiers.texts)
    texts = [t.casefold() for t in identifiers.texts]
    for element in ds.iterall():
        if element.VR not in SCRUBBED_VRS or element.value in (None, ""):
            continue
        values = _values(element)
        if any(_holds(v, texts) for v in values):
            cleaned = ["" if element.VR == "PN" else scrub(str(v), pattern) for v in values]
            element.value = cleaned if len(cleaned) > 1 else cleaned[0]


SCRUBBED_VRS = frozenset({"AE", "LO", "LT", "SH", "ST", "UC", "UT", "PN"})
# Not text a person's name or an identifier is written in: sequences (their items are walked),
# numbers, and CS values, the standard's defined terms ("ORIGINAL", "PERFUSION").
UNCHECKED_VRS = frozenset({"SQ", "CS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "IS", "DS"})


def find_leaks(ds: Dataset, identifiers: Identifiers) -> list[str]:
    """Where (as keywords or tags) a de-identified data set still holds an identifying value:
    every element at any depth, private and file meta ones included; pixel data excepted."""
    texts = [t.casefold() for t in identifiers.all]
    found = []
    for element in _elements(ds):
        if element.tag == Tag(0x7FE0, 0x0010) or element.VR in UNCHECKED_VRS:
            continue
        if any(_holds(value, texts) for value in _values(element)):
            found.append(element.keyword or str(element.tag))
    return found


def _holds(value: Any, texts: list[str]) -> bool:
    if isinstance(value, bytes):
        text = value.decode("latin-1").casefold()
        return any(len(t) >= 6 and t in text for t in texts)
    text = str(value).casefold()
    if text.strip() in PLACEHOLDERS:
        return False
    return any(t in text if len(t) >= 3 else t == text.strip() for t in texts)


# --- masks ----------------------------------------------------------------------------------


def apply_masks(ds: Dataset, rects: list[tuple[int, int, int, int]]) -> None:
    """Blank the rectangles (x, y, width, height in pixels) in every frame, store the pixels
    uncompressed, and give the changed image a new SOP Instance UID (derived from the old one
    and the rectangles: a mask made twice gives the same image). Raises DeidentificationError
    when the pixels cannot be decoded."""
    try:
        pixels = np.array(ds.pixel_array)  # a writable copy, colour as RGB
    except Exception as exc:  # noqa: BLE001 - pydicom's pixel handlers raise many kinds
        raise DeidentificationError(f"the pixels cannot be decoded: {exc}") from None
    frames = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]
    photometric = str(ds.PhotometricInterpretation)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    blank = 0 if colour else (frames.max() if photometric == "MONOCHROME1" else frames.min())
    for x, y, width, height in rects:
        frames[:, y : y + height, x : x + width] = blank
    ds.set_pixel_data(
        pixels,
        photometric_interpretation="RGB" if colour else photometric,
        bits_stored=int(ds.BitsStored),
        generate_instance_uid=False,
    )
    ds.SOPInstanceUID = keyed_uid(f"{ds.SOPInstanceUID}/mask/{sorted(rects)}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.BurnedInAnnotation = "NO"
    methods = ds.get("DeidentificationMethodCodeSequence") or Sequence()
    if not any(item.get("CodeValue") == "113101" for item in methods):
        methods.append(_code("113101", "Clean Pixel Data Option"))
    ds.DeidentificationMethodCodeSequence = methods


# --- the case's text --------------------------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def _digest(text: str) -> str:
    return hmac.new(settings.TEACHING_UID_KEY.encode(), f"guard:{text}".encode(), hashlib.sha256).hexdigest()


def _guarded(text: str) -> bool:
    """Long enough to mean something: not a short number ("10 mm"), not one letter."""
    return len(text) >= 5 if text.isdigit() else len(text) >= 2


def guard_of(texts: Iterable[str]) -> list[list[Any]]:
    """Keyed hashes of identifying texts, [length, digest] each: enough to find them in a text
    later, nothing to read them back from."""
    normal = {_normal(t) for t in texts}
    return sorted([len(t), _digest(t)] for t in normal if _guarded(t))


def guard_hits(text: str, guard: list[list[Any]]) -> bool:
    """Whether the text contains one of the guarded identifying texts: anywhere for Chinese
    characters, as a whole word where the text is in letters or digits ("Li" is not in "liver")."""
    normal = _normal(text)
    by_length: dict[int, set[str]] = {}
    for length, digest in guard:
        by_length.setdefault(int(length), set()).add(str(digest))
    return any(
        _digest(normal[i : i + length]) in digests and _whole(normal, i, i + length)
        for length, digests in by_length.items()
        for i in range(len(normal) - length + 1)
    )


def _whole(text: str, start: int, end: int) -> bool:
    def word(char: str) -> bool:
        return char.isascii() and char.isalnum()

    left = not word(text[start]) or start == 0 or not word(text[start - 1])
    right = not word(text[end - 1]) or end == len(text) or not word(text[end])
    return left and right
