"""Studies as DICOM interchange media in a ZIP: what a patient carries to another hospital.

The ZIP holds the stored files byte for byte, under PS3.10 file IDs (components of up to
8 characters from A-Z, 0-9 and _: DICOM/P0000001/ST000001/SE000001/I0000001), and a
DICOMDIR at its root (PS3.10 7.2, PS3.3 Annex F: the Basic Directory IOD with PATIENT,
STUDY, SERIES and IMAGE (or SR DOCUMENT, PRESENTATION, ...) records), which the viewers of
other hospitals read to list and open the studies.

The DICOMDIR is built from the index; only instances that are not images (structured
reports, presentation states, key objects, encapsulated documents) have their file's
header read, for the keys their records need. It is written first; then each file is
copied in chunks. The ZIP is streamed: zipfile writes to a sink that cannot seek (each
entry's sizes and CRC follow it in a data descriptor, ZIP64 where an entry or the whole
file passes 4 GiB), and what it wrote is handed on after every chunk, so memory holds one
chunk and the DICOMDIR, never the ZIP or a temporary file of it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from pydicom import dcmread
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import DIRECTORY_RECORDERS, _four_level_record_type
from pydicom.filewriter import write_dataset, write_file_meta_info

from imaging import storage
from imaging.models import Instance, Patient, Series, Study

CHUNK = 1024 * 1024
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (PS3.4 I.4)
FILE_SET_ID = "ALLIANCE_PACS"  # (0004,1130) CS, at most 16 characters
ROOT = "DICOM"
PREAMBLE = b"\x00" * 128 + b"DICM"
# The SOP classes whose records need keys the index does not hold (their file's header
# is read): everything pydicom's File-set support files under another record than IMAGE,
# and the encapsulated documents and RT plans it recognises by their content.
_ENCAPSULATED = {
    "1.2.840.10008.5.1.4.1.1.104.1",  # PDF
    "1.2.840.10008.5.1.4.1.1.104.2",  # CDA
    "1.2.840.10008.5.1.4.1.1.104.3",  # STL
    "1.2.840.10008.5.1.4.1.1.104.4",  # OBJ
    "1.2.840.10008.5.1.4.1.1.104.5",  # MTL
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
}


def _header_classes() -> frozenset[str]:
    from pydicom.fileset import _FOUR_LEVEL_SOP_CLASSES

    return frozenset(str(uid) for uid in _FOUR_LEVEL_SOP_CLASSES) | _ENCAPSULATED


HEADER_CLASSES = _header_classes()


def media_zip_name(studies: Sequence[Study]) -> str:
    """dicom-20260314-CT.zip for one study; dicom-20260314-3-studies.zip for more (the
    earliest date). ASCII only, nothing about the patient."""
    dates = sorted(s.study_date for s in studies if s.study_date)
    day = dates[0].strftime("%Y%m%d") if dates else "undated"
    if len(studies) == 1:
        modalities = re.sub(r"[^A-Z0-9]+", "-", studies[0].modalities.upper()).strip("-")
        return f"dicom-{day}-{modalities}.zip" if modalities else f"dicom-{day}.zip"
    return f"dicom-{day}-{len(studies)}-studies.zip"


def media_zip(studies: Sequence[Study]) -> Iterator[bytes]:
    """The ZIP of `studies` as chunks of bytes (for a StreamingHttpResponse). The caller
    has decided that the studies may be read and audits it."""
    layout = _layout(studies)
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        directory = dicomdir_bytes(layout)
        with archive.open(_entry("DICOMDIR", len(directory)), "w") as handle:
            handle.write(directory)
        del directory
        yield from sink.drain()
        for patient in layout.patients:
            for study in patient.studies:
                for series in study.series:
                    for leaf in series.leaves:
                        name = "/".join(leaf.file_id)
                        with storage.open_instance(leaf.instance) as source:
                            with archive.open(_entry(name, leaf.instance.size_bytes), "w", force_zip64=False) as handle:
                                while chunk := source.read(CHUNK):
                                    handle.write(chunk)
                                    yield from sink.drain()
                        yield from sink.drain()
    yield from sink.drain()


def _entry(name: str, size: int) -> zipfile.ZipInfo:
    # ZIP times are local times without a zone: the site's, as the pages show them.
    info = zipfile.ZipInfo(name, date_time=timezone.localtime().timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    # The size known in advance lets zipfile choose ZIP64 for an entry of 4 GiB or more.
    info.file_size = size
    info.external_attr = 0o644 << 16
    return info


class _Sink(io.RawIOBase):
    """A write-only stream without seek or tell: zipfile then writes each entry's sizes in a
    data descriptor after its data, and what it wrote is taken out by drain()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            parts, self._parts = self._parts, []
            yield b"".join(parts)


# --- the file-set: who, which studies, which series, which files -------------------------


@dataclass
class _Leaf:
    instance: Instance
    file_id: tuple[str, ...]
    record: Dataset


@dataclass
class _Series:
    series: Series
    leaves: list[_Leaf] = field(default_factory=list)


@dataclass
class _Study:
    study: Study
    series: list[_Series] = field(default_factory=list)


@dataclass
class _Patient:
    patient: Patient
    studies: list[_Study] = field(default_factory=list)


@dataclass
class _Layout:
    patients: list[_Patient]


def _layout(studies: Sequence[Study]) -> _Layout:
    """Patients in order of first appearance, their studies by date, series by number,
    files by instance number; every file gets its file ID and leaf record here."""
    by_patient: dict[int, _Patient] = {}
    ordered = sorted(studies, key=lambda s: (s.study_date or dt.date.min, s.study_time or dt.time.min, s.pk))
    for study in ordered:
        entry = by_patient.setdefault(study.patient_id, _Patient(study.patient))
        entry.studies.append(_Study(study))
    patients = list(by_patient.values())
    for p, patient in enumerate(patients, start=1):
        for s, study_entry in enumerate(patient.studies, start=1):
            all_series = study_entry.study.series.order_by("series_number", "id")
            for e, series in enumerate(all_series, start=1):
                series_entry = _Series(series)
                # series_id too: the related manager sets each row's series from it (one query
                # per file otherwise, the zip's slowest part)
                instances = series.instances.order_by("instance_number", "id").only(
                    "series_id",
                    "sop_uid",
                    "sop_class_uid",
                    "transfer_syntax_uid",
                    "instance_number",
                    "storage_key",
                    "size_bytes",
                )
                for i, instance in enumerate(instances.iterator(chunk_size=2000), start=1):
                    file_id = (ROOT, f"P{p:07d}", f"ST{s:06d}", f"SE{e:06d}", f"I{i:07d}")
                    series_entry.leaves.append(_Leaf(instance, file_id, _leaf_record(instance, file_id, i)))
                if series_entry.leaves:
                    study_entry.series.append(series_entry)
    return _Layout(patients)


def _leaf_record(instance: Instance, file_id: tuple[str, ...], ordinal: int) -> Dataset:
    """The record under a SERIES record that references one file (PS3.3 F.5)."""
    if instance.sop_class_uid in HEADER_CLASSES:
        record = _record_from_header(instance)
    else:
        record = Dataset()
        record.DirectoryRecordType = "IMAGE"
        # Instance Number is Type 1 in an IMAGE record: invented from the order when the
        # file has none, as dcmtk's dcmgpdir --invent does.
        record.InstanceNumber = instance.instance_number if instance.instance_number is not None else ordinal
    record.ReferencedFileID = list(file_id)
    record.ReferencedSOPClassUIDInFile = instance.sop_class_uid
    record.ReferencedSOPInstanceUIDInFile = instance.sop_uid
    record.ReferencedTransferSyntaxUIDInFile = instance.transfer_syntax_uid
    return record


def _record_from_header(instance: Instance) -> Dataset:
    """A leaf record from the file's header, read up to the pixels (none in these files),
    large values (an encapsulated PDF) left unread."""
    with storage.open_instance(instance) as handle:
        ds = dcmread(handle, stop_before_pixels=True, defer_size=64 * 1024)
        kind = _four_level_record_type(ds)
        try:
            record = DIRECTORY_RECORDERS[kind](ds)
        except (ValueError, KeyError):
            record = _record_with_what_there_is(ds, kind)
        record.DirectoryRecordType = kind
        if "SpecificCharacterSet" in ds:
            record.SpecificCharacterSet = ds.SpecificCharacterSet
        # Values deferred above are read now, while the file is open; none are kept.
        for element in record.iterall():
            _ = element.value
    return record


def _record_with_what_there_is(ds: Dataset, kind: str) -> Dataset:
    """A file that lacks one of its record's Type 1 keys still gets a record (of the keys
    it has), so that it is listed; readers open it by its file ID all the same."""
    keys = {
        "SR DOCUMENT": ["InstanceNumber", "CompletionFlag", "VerificationFlag", "ContentDate", "ContentTime"],
        "KEY OBJECT DOC": ["InstanceNumber", "ContentDate", "ContentTime"],
        "PRESENTATION": ["PresentationCreationDate", "PresentationCreationTime", "InstanceNumber", "ContentLabel"],
        "ENCAP DOC": [
            "InstanceNumber",
            "ContentDate",
            "ContentTime",
            "DocumentTitle",
            "MIMETypeOfEncapsulatedDocument",
        ],
    }.get(kind, ["InstanceNumber", "ContentDate", "ContentTime"])
    record = Dataset()
    for keyword in keys:
        if keyword in ds:
            setattr(record, keyword, ds[keyword].value)
    if "ConceptNameCodeSequence" in ds:
        record.ConceptNameCodeSequence = ds.ConceptNameCodeSequence
    return record


# --- the DICOMDIR -----------------------------------------------------------------------


def _patient_record(patient: Patient) -> Dataset:
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    _character_set(record, patient.name)
    record.PatientName = patient.name
    record.PatientID = patient.patient_id
    return record


def _study_record(study: Study, ordinal: int) -> Dataset:
    record = Dataset()
    record.DirectoryRecordType = "STUDY"
    _character_set(record, study.description)
    record.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    record.StudyTime = study.study_time.strftime("%H%M%S") if study.study_time else ""
    record.StudyDescription = study.description
    record.StudyInstanceUID = study.study_uid
    record.StudyID = study.study_id or str(ordinal)  # Type 1: invented when missing
    record.AccessionNumber = study.accession_number
    return record


def _series_record(series: Series, ordinal: int) -> Dataset:
    record = Dataset()
    record.DirectoryRecordType = "SERIES"
    record.Modality = series.modality or "OT"
    record.SeriesInstanceUID = series.series_uid
    record.SeriesNumber = series.series_number if series.series_number is not None else ordinal
    return record


def _character_set(record: Dataset, *texts: str) -> None:
    if any(not text.isascii() for text in texts if text):
        record.SpecificCharacterSet = "ISO_IR 192"


def dicomdir_bytes(layout: _Layout) -> bytes:
    """The DICOMDIR file (PS3.10 7.2): file meta, the File-set identification, and the
    directory records in one sequence, each record's offsets (PS3.3 F.3.2.2) counted in
    bytes from the first byte of the file (the preamble) to the record's Item tag."""
    records: list[Dataset] = []
    # (record, its siblings' list) to link next/lower offsets once positions are known
    top: list[Dataset] = []
    children: dict[int, list[Dataset]] = {}

    def add(record: Dataset, siblings: list[Dataset]) -> Dataset:
        record.OffsetOfTheNextDirectoryRecord = 0
        record.RecordInUseFlag = 0xFFFF
        record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
        records.append(record)
        siblings.append(record)
        children[id(record)] = []
        return record

    for patient in layout.patients:
        patient_record = add(_patient_record(patient.patient), top)
        for s, study in enumerate(patient.studies, start=1):
            study_record = add(_study_record(study.study, s), children[id(patient_record)])
            for e, series in enumerate(study.series, start=1):
                series_record = add(_series_record(series.series, e), children[id(study_record)])
                for leaf in series.leaves:
                    add(leaf.record, children[id(series_record)])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom_uid.UID(MEDIA_STORAGE_DIRECTORY)
    meta.MediaStorageSOPInstanceUID = pydicom_uid.generate_uid()
    meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    meta_buffer = DicomBytesIO()
    write_file_meta_info(meta_buffer, meta, enforce_standard=True)
    prefix = PREAMBLE + meta_buffer.getvalue()

    # Offsets are UL (4 bytes) whatever their values: each record's encoded length is known
    # before they are filled in, hence every record's position.
    encoded = [_item(record) for record in records]
    header_length = len(_file_set_header(0, 0))
    position = len(prefix) + header_length + 12  # after the sequence's tag, VR and length
    offsets: dict[int, int] = {}
    for record, item in zip(records, encoded, strict=True):
        offsets[id(record)] = position
        position += len(item)

    def link(siblings: list[Dataset]) -> None:
        for here, after in zip(siblings, siblings[1:], strict=False):
            here.OffsetOfTheNextDirectoryRecord = offsets[id(after)]
        for record in siblings:
            below = children[id(record)]
            if below:
                record.OffsetOfReferencedLowerLevelDirectoryEntity = offsets[id(below[0])]
                link(below)

    link(top)
    first = offsets[id(top[0])] if top else 0
    last = offsets[id(top[-1])] if top else 0
    out = io.BytesIO()
    out.write(prefix)
    out.write(_file_set_header(first, last))
    # (0004,1220) Directory Record Sequence, SQ of undefined length
    out.write(b"\x04\x00\x20\x12SQ\x00\x00\xff\xff\xff\xff")
    for record in records:
        item = _item(record)
        if out.tell() != offsets[id(record)]:
            raise AssertionError("a directory record moved while its offsets were filled in")
        out.write(item)
    out.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # Sequence Delimitation Item
    return out.getvalue()


def _file_set_header(first: int, last: int) -> bytes:
    ds = Dataset()
    ds.FileSetID = FILE_SET_ID
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    ds.FileSetConsistencyFlag = 0
    return _encode(ds)


def _item(record: Dataset) -> bytes:
    body = _encode(record)
    return b"\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little") + body


def _encode(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()
