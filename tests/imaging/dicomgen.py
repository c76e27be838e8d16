"""Generated DICOM test data: a CT series with a simple phantom, any size (reusable).

make_ct_series(3) gives three Datasets of a 512x512 CT series ready to write as PS3.10;
write_series(datasets, folder) writes them; part10_bytes(ds) gives one file's bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def new_uid() -> str:
    return pydicom_uid.generate_uid()


@lru_cache(maxsize=4)
def _phantom(rows: int, cols: int) -> np.ndarray:
    """Air around a water disc with a bone ring, as stored values (HU + 1024)."""
    y, x = np.ogrid[:rows, :cols]
    r = np.hypot((y - rows / 2) / (rows / 2), (x - cols / 2) / (cols / 2))
    hu = np.full((rows, cols), -1000, dtype=np.int32)
    hu[r < 0.8] = 0
    hu[(r >= 0.7) & (r < 0.8)] = 1000
    return (hu + 1024).astype(np.uint16)


def make_ct_series(
    n: int,
    rows: int = 512,
    cols: int = 512,
    *,
    patient_id: str = "P1001",
    patient_name: str = "Test^Patient",
    study_uid: str | None = None,
    series_uid: str | None = None,
    accession_number: str = "ACC1001",
    study_description: str = "CT chest",
    series_number: int = 1,
    study_date: dt.date | None = None,
    transfer_syntax: str = pydicom_uid.ExplicitVRLittleEndian,
) -> list[Dataset]:
    """n slices of one CT series (PS3.3 A.3 CT Image IOD, the attributes the index uses)."""
    study_uid = study_uid or new_uid()
    series_uid = series_uid or new_uid()
    study_date = study_date or dt.date(2026, 3, 14)
    base = _phantom(rows, cols)
    return [
        _ct_slice(
            i,
            base,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            accession_number=accession_number,
            study_description=study_description,
            series_number=series_number,
            study_date=study_date,
            transfer_syntax=transfer_syntax,
        )
        for i in range(n)
    ]


def _ct_slice(i: int, base: np.ndarray, *, transfer_syntax: str, study_date: dt.date, **ids: object) -> Dataset:
    sop_uid = new_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.AccessionNumber = ids["accession_number"]
    ds.Modality = "CT"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyDescription = ids["study_description"]
    ds.SeriesDescription = "Axial 5mm"
    ds.PatientName = ids["patient_name"]
    ds.PatientID = ids["patient_id"]
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "5"
    ds.StudyInstanceUID = ids["study_uid"]
    ds.SeriesInstanceUID = ids["series_uid"]
    ds.StudyID = "1"
    ds.SeriesNumber = ids["series_number"]
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [-250, -250, -5.0 * i]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = base.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    pixels = base.copy()
    pixels[: 8 + i % 32, : 8 + i % 32] = 2048  # a marker that differs per slice
    ds.PixelData = pixels.tobytes()
    ds.set_original_encoding(
        transfer_syntax == pydicom_uid.ImplicitVRLittleEndian,
        transfer_syntax != pydicom_uid.ExplicitVRBigEndian,
    )
    return ds


def part10_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10_bytes(ds))
        paths.append(path)
    return paths


def part10_claiming(ds: Dataset, meta: FileMetaDataset) -> bytes:
    """The data set in explicit VR little endian behind whatever file meta `meta` says
    (for files whose meta is wrong or incomplete on purpose)."""
    meta_buffer = DicomBytesIO()
    write_file_meta_info(meta_buffer, meta, enforce_standard=False)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return b"\x00" * 128 + b"DICM" + meta_buffer.getvalue() + body.getvalue()


def deflate_bomb(inflated_mb: int, *, ds: Dataset | None = None) -> bytes:
    """A PS3.10 file in Deflated Explicit VR Little Endian (PS3.5 A.5) whose data set, a valid
    CT header followed by Pixel Data of zeros, inflates to about `inflated_mb` MB while the
    file stays about a thousand times smaller. Built without holding the inflated bytes: after
    a full flush the compressor encodes each megabyte of zeros the same way, so one is repeated."""
    ds = (
        ds if ds is not None else make_ct_series(1, 8, 8, transfer_syntax=pydicom_uid.DeflatedExplicitVRLittleEndian)[0]
    )
    megabyte = 1024 * 1024
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, 2 * inflated_mb  # 16-bit pixels: 2 frames a megabyte
    del ds.PixelData
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, ds)
    pixel_data = b"\xe0\x7f\x10\x00OW\x00\x00" + (inflated_mb * megabyte).to_bytes(4, "little")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = compressor.compress(header.getvalue() + pixel_data) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = compressor.compress(b"\x00" * megabyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    deflated = start + zeros * inflated_mb + compressor.flush()
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + deflated + b"\x00" * (len(deflated) % 2)
