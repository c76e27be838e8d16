"""A small synthetic CT series for the viewer's tests: a body ellipse with two lungs and a
spine whose size changes along z, stored as HU + 1024 in 16 bits (Explicit VR Little Endian)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

PIXEL_SPACING_MM = 0.7


@dataclass(frozen=True)
class CtSpec:
    slices: int = 24
    size: int = 256
    spacing: float = PIXEL_SPACING_MM
    patient_name: str = "WANG^FANG"
    patient_id: str = "PID-7001"
    rle: bool = False  # store the frames RLE Lossless compressed (PS3.5 Annex G)


def phantom(size: int, z: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y = (y - size / 2) / (size / 2)
    x = (x - size / 2) / (size / 2)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[(x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1.0] = 40.0
    lung = 0.22 + 0.1 * np.sin(z * 0.35)
    for cx in (-0.38, 0.38):
        hu[((x - cx) / lung) ** 2 + ((y + 0.05) / (lung * 1.3)) ** 2 <= 1.0] = -820.0
    hu[(x**2 + (y - 0.45) ** 2) <= (0.08 + 0.04 * np.cos(z * 0.5)) ** 2] = 700.0
    return np.clip(hu + 1024.0, 0, 4095).astype("<u2")


def ct_series(spec: CtSpec | None = None) -> list[Dataset]:
    spec = spec or CtSpec()
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    return [_slice(spec, i, study_uid, series_uid, frame_uid) for i in range(spec.slices)]


def _slice(spec: CtSpec, i: int, study_uid: str, series_uid: str, frame_uid: str) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = (
        spec.patient_name,
        spec.patient_id,
        "F",
        "19600102",
    )
    ds.StudyDate, ds.StudyTime, ds.StudyDescription, ds.AccessionNumber = "20260301", "101500", "CT CHEST", "A7001"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "CT", 2, "AXIAL 1.0", i + 1
    ds.ImagePositionPatient = [-spec.size * spec.spacing / 2, -spec.size * spec.spacing / 2, -float(i)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = -float(i)
    ds.SliceThickness = 1.0
    ds.PixelSpacing = [spec.spacing, spec.spacing]
    ds.Rows = ds.Columns = spec.size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = phantom(spec.size, float(i)).tobytes()
    if spec.rle:
        ds.compress(RLELossless)
    return ds
