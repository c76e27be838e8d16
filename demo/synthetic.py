"""Synthetic studies made by our own code: a chest CT, a chest radiograph and a brain MR.

The anatomy is a handful of ellipses and tubes (body, lungs with vessels, heart, aorta,
spine, ribs, liver; skull, grey and white matter, ventricles, eyes) so that the demo
shows something that looks like a scan, windows as one, and scrolls like one.
Everything is deterministic: the same arguments give the same pixels and the same UIDs
(PS3.5 B.2: UUID-derived "2.25." UIDs from a fixed seed), so loading twice stores once.

The datasets carry the attributes of the CT Image (PS3.3 A.3), Digital X-Ray Image
(A.26, for presentation) and MR Image (A.4) IODs that viewers and our index use.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset, FileMetaDataset

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_UID_NAMESPACE = uuid.UUID("5f0c5b39-4d1e-4a55-9a57-6a1d3c0de3a1")  # this project's synthetic studies


@dataclass(frozen=True)
class PatientInfo:
    """Who the study is of. `name` is a DICOM PN, e.g. "Wang^Xiuying=王^秀英"."""

    patient_id: str
    name: str
    birth_date: dt.date
    sex: str  # "M" or "F"


@dataclass(frozen=True)
class StudyInfo:
    """The study's identity; `seed` makes every UID in it (same seed, same UIDs)."""

    seed: str
    patient: PatientInfo
    date: dt.date
    time: str = "093000"
    accession_number: str = ""
    description: str = ""
    institution_name: str = ""
    referring_physician: str = ""

    def uid(self, *parts: object) -> str:
        """A UUID-derived UID (PS3.5 B.2) from a name-based UUID of the seed and the parts."""
        name = "/".join([self.seed, *map(str, parts)])
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"

    @property
    def study_uid(self) -> str:
        return self.uid("study")


def part10_bytes(ds: Dataset) -> bytes:
    """The dataset as a PS3.10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- shapes ---------------------------------------------------------------------------


class Canvas:
    """A square image over [-1, 1]^2 (x to the image's right, y downwards) that shapes are
    painted on; each shape touches only the pixels of its bounding box."""

    def __init__(self, size: int, background: float) -> None:
        self.size = size
        self.axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        self.image = np.full((size, size), background, dtype=np.float32)

    def _window(self, c: float, r: float) -> slice:
        lo = int(np.searchsorted(self.axis, c - r - 0.05))
        hi = int(np.searchsorted(self.axis, c + r + 0.05))
        return slice(lo, hi)

    def mask(
        self, cx: float, cy: float, a: float, b: float, fold: float = 0.0
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        """Smooth inside-ness of an ellipse (1 inside, 0 outside, a pixel-wide ramp);
        `fold` wrinkles its edge like a cortex."""
        rows, cols = self._window(cy, b * (1 + fold)), self._window(cx, a * (1 + fold))
        x = self.axis[cols][None, :] - cx
        y = self.axis[rows][:, None] - cy
        r = np.sqrt((x / max(a, 1e-6)) ** 2 + (y / max(b, 1e-6)) ** 2)
        if fold:
            theta = np.arctan2(y, x)
            r = r * (1 + fold * np.sin(14 * theta) + fold * 0.6 * np.sin(23 * theta + 1))
        edge = 2.0 / self.size / max(min(a, b), 1e-6)
        return (rows, cols), np.clip((1 - r) / edge + 0.5, 0, 1).astype(np.float32)

    def ellipse(self, cx: float, cy: float, a: float, b: float, value: float, fold: float = 0.0) -> None:
        if a <= 0.002 or b <= 0.002:
            return
        window, inside = self.mask(cx, cy, a, b, fold)
        part = self.image[window]
        part += inside * (value - part)


@lru_cache(maxsize=1)
def _vessel_tracks(count: int = 90) -> np.ndarray:
    """Lung vessels as straight tracks: (x0, y0, dx, dy, radius) fanning out from the hila."""
    rng = np.random.default_rng(20260301)
    side = rng.choice([-1.0, 1.0], size=count)
    start_x = side * rng.uniform(0.12, 0.2, count)
    start_y = rng.uniform(-0.05, 0.12, count)
    angle = rng.uniform(-1.3, 1.3, count)
    spread = rng.uniform(0.2, 0.55, count)
    dx = side * np.cos(angle) * spread
    dy = np.sin(angle) * spread
    radius = rng.uniform(0.006, 0.016, count)
    return np.stack([start_x, start_y, dx, dy, radius], axis=1).astype(np.float32)


# --- chest CT -------------------------------------------------------------------------


def chest_hu(size: int, z: float) -> np.ndarray:
    """One axial slice of the chest phantom in Hounsfield units; z from 0 (lung apex) to 1
    (upper abdomen). Image left is the patient's right, as radiologists read it."""
    c = Canvas(size, -1000)
    widen = 0.9 + 0.1 * float(np.sin(np.pi * min(z * 1.3, 1.0)))
    c.ellipse(0, 0.02, 0.84 * widen, 0.6, -90)  # skin and fat
    c.ellipse(0, 0.03, 0.79 * widen, 0.55, 45)  # muscle
    c.ellipse(0, 0.72, 0.9, 0.03, 150)  # the table
    _lungs(c, z)
    _mediastinum(c, z)
    _abdomen(c, z)
    _skeleton(c, z, widen)
    return c.image


def _lung_size(z: float) -> float:
    apex = float(np.sin(np.pi * min(z / 0.75, 1.0) * 0.5)) ** 0.6
    return apex * (1 - max(0.0, z - 0.8) * 4)


def _lungs(c: Canvas, z: float) -> None:
    grow = _lung_size(z)
    if grow <= 0.02:
        return
    for side in (-1, 1):
        c.ellipse(side * 0.36, -0.01, 0.3 * grow, 0.43 * grow, -860)
    for x0, y0, dx, dy, radius in _vessel_tracks():
        t = (z * 2.7 + x0 * 3) % 1.0  # where along its track this vessel crosses the slice
        window, inside = c.mask(float(x0 + dx * t), float(y0 + dy * t), float(radius), float(radius))
        part = c.image[window]
        part += inside * (part < -600) * 900  # vessels only show inside the lung


def _mediastinum(c: Canvas, z: float) -> None:
    heart = float(np.clip(np.sin(np.pi * (z - 0.4) / 0.45), 0, 1)) if 0.4 < z < 0.85 else 0.0
    if heart > 0:
        c.ellipse(0.1, 0.1, 0.25 * heart, 0.21 * heart, 40)
        c.ellipse(0.16, 0.12, 0.12 * heart, 0.1 * heart, 180)  # left ventricle, with contrast
    if z < 0.45:  # aortic arch above the heart; the trachea behind it
        c.ellipse(-0.04, -0.05, 0.07, 0.07, 230)
        c.ellipse(0.0, 0.08, 0.05, 0.05, 40)
        c.ellipse(0.0, 0.08, 0.035, 0.035, -1000)
    c.ellipse(0.08, 0.32, 0.055, 0.055, 220)  # descending aorta
    c.ellipse(0, -0.5, 0.05, 0.025, 500)  # sternum


def _abdomen(c: Canvas, z: float) -> None:
    liver = float(np.clip((z - 0.7) / 0.3, 0, 1))
    if liver > 0:
        c.ellipse(-0.28, 0.05, 0.42 * liver + 0.05, 0.38 * liver + 0.05, 60)
        c.ellipse(0.35, -0.05, 0.18 * liver, 0.14 * liver, -700)  # stomach gas
        c.ellipse(0.42, 0.2, 0.1 * liver, 0.12 * liver, 45)  # spleen


def _skeleton(c: Canvas, z: float, widen: float) -> None:
    c.ellipse(0, 0.4, 0.1, 0.09, 900)  # vertebral body: cortex
    c.ellipse(0, 0.4, 0.085, 0.075, 260)  # and marrow
    c.ellipse(0, 0.53, 0.045, 0.04, 20)  # spinal canal
    c.ellipse(0, 0.6, 0.02, 0.05, 700)  # spinous process
    for angle in np.linspace(0, 2 * np.pi, 72, endpoint=False):
        near_spine = abs(angle - np.pi / 2) < 0.3
        near_sternum = abs(angle - 3 * np.pi / 2) < 0.45  # costal cartilage there
        # Ribs run obliquely (down towards the front), so each crosses only some slices.
        if near_spine or near_sternum or np.sin(2 * np.pi * (z * 8 + np.sin(angle) * 0.35)) < 0.55:
            continue
        rx, ry = 0.73 * widen * np.cos(angle), 0.03 + 0.49 * np.sin(angle)
        c.ellipse(float(rx), float(ry), 0.03, 0.022, 750)
    if z < 0.2:  # clavicles and scapulae at the top
        for side in (-1, 1):
            c.ellipse(side * 0.4, -0.35, 0.2, 0.035, 800)
            c.ellipse(side * 0.55, 0.35, 0.16, 0.03, 750)


def _stored_ct(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)


def ct_series(study: StudyInfo, *, slices: int = 120, size: int = 512, thickness: float = 2.5) -> list[Dataset]:
    """An axial chest CT of `slices` slices, stored as HU + 1024 (12 bits), soft-tissue window."""
    series_uid = study.uid("ct-series")
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 9, (size, size)).astype(np.float32)
    datasets = []
    for i in range(slices):
        hu = chest_hu(size, i / max(1, slices - 1)) + np.roll(noise, i * 37, axis=(0, 1))
        ds = _image(study, CT_IMAGE_STORAGE, "CT", series_uid, study.uid("ct", i), i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.SeriesDescription = 2, "Chest 2.5mm axial"
        ds.BodyPartExamined = "CHEST"
        ds.KVP, ds.SliceThickness = "120", f"{thickness:g}"
        ds.ImagePositionPatient = [-175, -175, -thickness * i]
        ds.SliceLocation = f"{-thickness * i:g}"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{350 / size:.4g}", f"{350 / size:.4g}"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
        _pixels(ds, _stored_ct(hu), bits_stored=12)
        datasets.append(ds)
    return datasets


# --- chest radiograph -----------------------------------------------------------------


def chest_radiograph(study: StudyInfo, *, rows: int = 1024, columns: int = 880) -> Dataset:
    """A PA chest radiograph: the CT phantom projected front to back (a digitally
    reconstructed radiograph), bones and heart bright on dark lungs (MONOCHROME2)."""
    size, levels = 256, 220
    attenuation = np.empty((levels, size), dtype=np.float32)
    for row in range(levels):
        mu = np.clip(chest_hu(size, row / (levels - 1)) + 1000, 0, None) / 1000
        attenuation[row] = mu.sum(axis=0)
    attenuation /= attenuation.max()
    pad = np.zeros((levels + 40, size), dtype=np.float32)
    pad[20:-20] = attenuation
    image = Image.fromarray((pad**0.7 * 3800 + 150).astype(np.float32)).resize(
        (columns, rows), Image.Resampling.BICUBIC
    )
    pixels = np.clip(np.asarray(image), 0, 4095).astype(np.uint16)
    ds = _image(study, DX_IMAGE_STORAGE, "DX", study.uid("dx-series"), study.uid("dx", 0), 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SeriesNumber, ds.SeriesDescription = 1, "Chest PA"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["R", "F"]
    ds.ImagerPixelSpacing = ds.PixelSpacing = ["0.4", "0.4"]
    ds.KVP = "120"
    ds.WindowCenter, ds.WindowWidth = "2100", "4000"
    _pixels(ds, pixels, bits_stored=12)
    return ds


# --- brain MR -------------------------------------------------------------------------


def brain_t2(size: int, z: float) -> np.ndarray:
    """One axial T2-weighted slice of the head phantom, z from 0 (skull base) to 1 (vertex)."""
    c = Canvas(size, 0)
    scale = float(np.sqrt(max(0.0, 1 - ((z - 0.45) / 0.62) ** 2)))
    if scale <= 0.05:
        return c.image
    a, b = 0.72 * scale, 0.88 * scale
    c.ellipse(0, 0, a, b, 700)  # scalp fat
    c.ellipse(0, 0, a - 0.04, b - 0.04, 60)  # skull
    c.ellipse(0, 0, a - 0.08, b - 0.08, 1800)  # CSF over the brain
    c.ellipse(0, 0, a - 0.11, b - 0.11, 950, fold=0.03)  # grey matter
    c.ellipse(0, 0.02, a - 0.2, b - 0.22, 620, fold=0.05)  # white matter
    if 0.35 < z < 0.75:  # lateral ventricles
        v = float(np.sin(np.pi * (z - 0.35) / 0.4))
        for side in (-1, 1):
            c.ellipse(side * 0.1, -0.05, 0.06 * v, 0.28 * v, 1800)
    if z < 0.3:  # eyes in front, cerebellum behind
        for side in (-1, 1):
            c.ellipse(side * 0.3, -0.75 * scale, 0.12, 0.11, 1700)
            c.ellipse(side * 0.22, 0.55 * scale, 0.22, 0.2, 880)
    return c.image


def mr_series(study: StudyInfo, *, slices: int = 24, size: int = 256, thickness: float = 5.0) -> list[Dataset]:
    """An axial T2-weighted brain MR of `slices` slices."""
    series_uid = study.uid("mr-series")
    rng = np.random.default_rng(11)
    noise = np.abs(rng.normal(0, 25, (size, size))).astype(np.float32)
    datasets = []
    for i in range(slices):
        signal = brain_t2(size, 0.08 + 0.86 * i / max(1, slices - 1)) + np.roll(noise, i * 41, axis=(0, 1))
        ds = _image(study, MR_IMAGE_STORAGE, "MR", series_uid, study.uid("mr", i), i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SeriesNumber, ds.SeriesDescription = 3, "AX T2 FSE"
        ds.BodyPartExamined = "HEAD"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "4000", "100", "16"
        ds.MagneticFieldStrength = "1.5"
        ds.SliceThickness, ds.SpacingBetweenSlices = f"{thickness:g}", f"{thickness + 1:g}"
        ds.ImagePositionPatient = [-115, -115, (thickness + 1) * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{230 / size:.4g}", f"{230 / size:.4g}"]
        ds.WindowCenter, ds.WindowWidth = "900", "1800"
        _pixels(ds, np.clip(signal, 0, 4095).astype(np.uint16), bits_stored=12)
        datasets.append(ds)
    return datasets


# --- common attributes ----------------------------------------------------------------


def _image(study: StudyInfo, sop_class: str, modality: str, series_uid: str, sop_uid: str, number: int) -> Dataset:
    """PS3.3 C.12.1 SOP Common, C.7.1.1 Patient, C.7.2.1 General Study, C.7.3.1 General Series."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom_uid.UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom_uid.UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names carry their ideographic form
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    date = study.date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.time
    ds.AccessionNumber = study.accession_number
    ds.Modality = modality
    ds.Manufacturer = "Alliance Cloud PACS synthetic"
    ds.InstitutionName = study.institution_name
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description
    ds.PatientName = study.patient.name
    ds.PatientID = study.patient.patient_id
    ds.PatientBirthDate = study.patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = study.patient.sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, series_uid
    ds.StudyID = study.accession_number[-8:] or "1"
    ds.InstanceNumber = number
    ds.PositionReferenceIndicator = ""
    ds.FrameOfReferenceUID = study.uid("frame", series_uid)
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int) -> None:
    """PS3.3 C.7.6.3 Image Pixel, unsigned grey values."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
