"""imaging.ingest: the one path from bytes to a stored, indexed instance."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from concurrent.futures import Future
from io import BytesIO
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from pydicom import dcmread
from pydicom import uid as pydicom_uid
from pydicom.dataset import Dataset

from alliance.models import AuditEvent
from imaging import index, ingest, storage
from imaging.ingest import IngestError, ingest_bytes, ingest_path
from imaging.models import Instance, Patient, Series, Study
from tests.imaging.dicomgen import make_ct_series, new_uid, part10_bytes, part10_claiming
from tests.imaging.stored import index_counts, stored_files


def _ingest(data: bytes, clinic, actor, **kwargs):  # type: ignore[no-untyped-def]
    return ingest_bytes(data, institution=clinic, actor=actor, via="test", source="127.0.0.1", **kwargs)


def test_ingest_stores_the_bytes_unchanged_and_indexes_patient_study_series(clinic, actor, dicom_dir):
    slices = make_ct_series(3, 64, 64, patient_id="1001", patient_name="Wang^Fang")
    sent = [part10_bytes(ds) for ds in slices]

    results = [_ingest(data, clinic, actor) for data in sent]

    assert [r.created for r in results] == [True, True, True]
    for data, result in zip(sent, results, strict=True):
        instance = result.instance
        assert storage.local_path(instance).read_bytes() == data
        with storage.open_instance(instance) as fh:
            assert fh.read() == data
        assert instance.sha256 == hashlib.sha256(data).hexdigest()
        assert instance.size_bytes == len(data)
        assert instance.transfer_syntax_uid == pydicom_uid.ExplicitVRLittleEndian
        assert (instance.rows, instance.columns, instance.number_of_frames) == (64, 64, 1)
    study = Study.objects.get()
    assert study.institution == clinic
    assert (study.num_series, study.num_instances, study.size_bytes) == (1, 3, sum(map(len, sent)))
    assert study.modalities == "CT"
    assert str(study.study_date) == "2026-03-14" and study.accession_number == "ACC1001"
    patient = Patient.objects.get()
    assert (patient.issuer, patient.patient_id, patient.name, patient.sex) == (clinic, "1001", "Wang^Fang", "F")
    assert str(patient.birth_date) == "1960-01-01"
    assert Series.objects.get().num_instances == 3
    assert [i.instance_number for i in Instance.objects.all()] == [1, 2, 3]
    assert len(stored_files(dicom_dir)) == 3
    events = AuditEvent.objects.filter(action="instance.store", outcome="success")
    assert events.count() == 3
    assert events.first().detail["via"] == "test"


def test_storage_key_fans_out_by_study_and_keeps_a_study_together_without_a_folder_of_its_own():
    key = storage.storage_key_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    fan = hashlib.sha256(b"1.2.3").hexdigest()
    assert key == f"{fan[:2]}/{fan[2:4]}/1.2.3_1.2.3.4_1.2.3.4.5.dcm"
    other_series = storage.storage_key_for("1.2.3", "1.2.3.9", "1.2.3.9.1")
    assert other_series.rpartition("/")[0] == key.rpartition("/")[0]  # one folder for the study
    longest = storage.storage_key_for("1." + "2" * 62, "1." + "3" * 62, "1." + "4" * 62)
    assert len(longest.rpartition("/")[2]) < 255  # a file name ext4 and S3 both take


def test_same_instance_twice_is_stored_once(clinic, actor, dicom_dir):
    data = part10_bytes(make_ct_series(1, 32, 32)[0])
    first = _ingest(data, clinic, actor)

    again = _ingest(data, clinic, actor)

    assert (again.created, again.identical) == (False, True)
    assert again.instance.pk == first.instance.pk
    assert len(stored_files(dicom_dir)) == 1
    study = Study.objects.get()
    assert (study.num_instances, study.size_bytes) == (1, len(data))
    assert AuditEvent.objects.filter(action="instance.store", detail__duplicate=True).count() == 1


def test_the_same_data_set_under_another_file_meta_is_an_identical_duplicate(clinic, actor, dicom_dir):
    """DIMSE and STOW senders write their own File Meta Information around one instance."""
    ds = make_ct_series(1, 32, 32)[0]
    over_dimse = part10_bytes(ds)
    ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
    ds.file_meta.SourceApplicationEntityTitle = "STOW_CLIENT"
    over_stow = part10_bytes(ds)
    assert over_dimse != over_stow
    first = _ingest(over_dimse, clinic, actor)

    again = _ingest(over_stow, clinic, actor)

    assert (again.created, again.identical) == (False, True)
    assert storage.local_path(again.instance).read_bytes() == over_dimse  # the first copy is kept
    event = AuditEvent.objects.get(action="instance.store", detail__duplicate=True)
    assert event.detail["identical"] is True
    assert (event.detail["sha256"], event.detail["kept_sha256"]) == (
        hashlib.sha256(over_stow).hexdigest(),
        first.instance.sha256,
    )
    assert len(stored_files(dicom_dir)) == 1


def test_same_uid_with_other_bytes_keeps_the_first_copy_and_says_so(clinic, actor):
    ds = make_ct_series(1, 32, 32)[0]
    first = _ingest(part10_bytes(ds), clinic, actor)
    ds.SeriesDescription = "corrected"
    changed = part10_bytes(ds)

    again = _ingest(changed, clinic, actor)

    assert (again.created, again.identical) == (False, False)
    assert storage.local_path(again.instance).read_bytes() != changed
    assert Instance.objects.get().sha256 == first.instance.sha256
    event = AuditEvent.objects.get(detail__identical=False)
    assert event.detail["kept_sha256"] == first.instance.sha256


def test_same_sop_uid_from_another_institution_is_refused(clinic, other_clinic, actor):
    data = part10_bytes(make_ct_series(1, 32, 32)[0])
    _ingest(data, clinic, actor)

    with pytest.raises(IngestError) as caught:
        _ingest(data, other_clinic, actor)

    assert (caught.value.code, caught.value.dicom_status, caught.value.http_status) == ("uid-conflict", 0xA900, 409)
    assert Instance.objects.count() == 1


def test_study_uid_owned_by_another_institution_is_refused_not_merged(clinic, other_clinic, actor, dicom_dir):
    study_uid = new_uid()
    _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid)[0]), clinic, actor)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid)[0]), other_clinic, actor)

    assert (caught.value.code, caught.value.http_status) == ("uid-conflict", 409)
    # the same answer as any other clash: nothing says the UID is another institution's
    assert caught.value.reason == "The UIDs of this instance conflict with stored data; it was not stored"
    assert study_uid not in caught.value.reason and "institution" not in caught.value.reason
    assert Study.objects.get().num_instances == 1
    assert len(stored_files(dicom_dir)) == 1


def test_study_uid_of_another_patient_is_refused(clinic, actor, dicom_dir):
    study_uid = new_uid()
    _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid, patient_id="A")[0]), clinic, actor)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid, patient_id="B")[0]), clinic, actor)

    assert caught.value.code == "uid-conflict"
    assert Patient.objects.count() == 1
    assert len(stored_files(dicom_dir)) == 1


def test_series_uid_already_in_another_study_is_refused(clinic, actor, dicom_dir):
    series_uid = new_uid()
    _ingest(part10_bytes(make_ct_series(1, 32, 32, series_uid=series_uid)[0]), clinic, actor)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(make_ct_series(1, 32, 32, series_uid=series_uid)[0]), clinic, actor)

    assert caught.value.code == "uid-conflict"
    assert index_counts() == (1, 1, 1, 1)
    assert len(stored_files(dicom_dir)) == 1


def test_second_series_and_modality_update_the_study(clinic, actor):
    study_uid = new_uid()
    _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid)[0]), clinic, actor)
    sr = make_ct_series(1, 32, 32, study_uid=study_uid, series_number=2)[0]
    sr.Modality = "OT"
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"

    _ingest(part10_bytes(sr), clinic, actor)

    study = Study.objects.get()
    assert (study.num_series, study.num_instances, study.modalities) == (2, 2, "CT\\OT")


def test_later_instance_updates_the_patient_name(clinic, actor):
    study_uid = new_uid()
    _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid, patient_name="Old")[0]), clinic, actor)
    _ingest(part10_bytes(make_ct_series(1, 32, 32, study_uid=study_uid, patient_name="张^三")[0]), clinic, actor)

    assert Patient.objects.get().name == "张^三"


def test_a_new_study_of_a_known_patient_finds_it_and_a_new_patient_is_made_in_one_statement(clinic, actor):
    first = make_ct_series(1, 32, 32, patient_id="P-7", patient_name="Old")[0]
    _ingest(part10_bytes(first), clinic, actor)
    known = Patient.objects.get(patient_id="P-7")
    assert known.name == "Old"

    _ingest(part10_bytes(make_ct_series(1, 32, 32, patient_id="P-7", patient_name="李^四")[0]), clinic, actor)
    with CaptureQueriesContext(connection) as queries:
        _ingest(part10_bytes(make_ct_series(1, 32, 32, patient_id="P-8", patient_name="王^五")[0]), clinic, actor)

    assert Patient.objects.filter(patient_id="P-7").count() == 1 and Study.objects.count() == 3
    assert Patient.objects.get(patient_id="P-7").name == "李^四"  # brought up to date from the new study
    made = Patient.objects.get(patient_id="P-8")
    assert made.name == "王^五" and made.issuer_id == clinic.pk
    if connection.vendor == "postgresql":
        assert made.pk == known.pk + 1  # the known patient's look-up drew no id
        patient_sql = [q["sql"] for q in queries.captured_queries if '"imaging_patient"' in q["sql"]]
        assert len(patient_sql) == 1, patient_sql


def test_two_hospitals_patient_1001_are_two_patients(clinic, other_clinic, actor):
    _ingest(part10_bytes(make_ct_series(1, 32, 32, patient_id="1001")[0]), clinic, actor)
    _ingest(part10_bytes(make_ct_series(1, 32, 32, patient_id="1001")[0]), other_clinic, actor)

    assert Patient.objects.filter(patient_id="1001").count() == 2


def test_ingest_path_leaves_the_callers_temp_file_alone(clinic, actor, tmp_path, dicom_dir):
    source = tmp_path / "incoming.dcm"
    data = part10_bytes(make_ct_series(1, 32, 32)[0])
    source.write_bytes(data)

    result = ingest_path(source, institution=clinic, actor=actor, via="test")

    assert source.read_bytes() == data
    assert storage.local_path(result.instance).read_bytes() == data
    assert stored_files(dicom_dir) == [storage.local_path(result.instance)]


def test_bare_data_set_is_stored_with_file_meta_in_front_and_its_bytes_unchanged(clinic, actor):
    ds = make_ct_series(1, 32, 32)[0]
    whole = part10_bytes(ds)
    for implicit in (True, False):
        sop_uid = new_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ts = pydicom_uid.ImplicitVRLittleEndian if implicit else pydicom_uid.ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = ts
        whole = part10_bytes(ds)
        bare = whole[whole.index(b"\x08\x00\x05\x00") :]  # from (0008,0005), the first data set element

        result = _ingest(bare, clinic, actor)

        stored = storage.local_path(result.instance).read_bytes()
        assert stored[128:132] == b"DICM" and stored.endswith(bare)
        assert result.instance.transfer_syntax_uid == ts
        assert result.instance.size_bytes == len(stored)


def test_file_meta_without_preamble_gets_the_preamble(clinic, actor):
    data = part10_bytes(make_ct_series(1, 32, 32)[0])

    result = _ingest(data[128 + 4 :], clinic, actor)

    assert storage.local_path(result.instance).read_bytes() == data


# --- bad input: refused with the right status, nothing stored -------------------------


def _ct(**changes: object) -> Dataset:
    ds = make_ct_series(1, 32, 32)[0]
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _without_meta_ts() -> bytes:
    ds = _ct()
    meta = ds.file_meta
    del meta.TransferSyntaxUID
    return part10_claiming(ds, meta)


BAD_INPUTS = {
    "plain text": (lambda: b"this is not a DICOM file, just some text\n" * 10, "not-dicom", 0xC000),
    "empty file": (lambda: b"", "not-dicom", 0xC000),
    "PNG image": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 300, "not-dicom", 0xC000),
    "cut in the pixel data": (lambda: part10_bytes(_ct())[:-100], "truncated", 0xC000),
    "cut in the header": (lambda: part10_bytes(_ct())[:700], "truncated", 0xC000),
    "cut inside an element header": (lambda: part10_bytes(_ct())[: -(32 * 32 * 2 + 5)], "truncated", 0xC000),
    "no SOP Instance UID": (lambda: part10_bytes(_ct(SOPInstanceUID=None)), "missing-attribute", 0xA900),
    "no Study Instance UID": (lambda: part10_bytes(_ct(StudyInstanceUID=None)), "missing-attribute", 0xA900),
    "no Series Instance UID": (lambda: part10_bytes(_ct(SeriesInstanceUID=None)), "missing-attribute", 0xA900),
    "no SOP Class UID": (lambda: part10_bytes(_ct(SOPClassUID=None)), "missing-attribute", 0xA900),
    "no Patient ID": (lambda: part10_bytes(_ct(PatientID=None)), "missing-attribute", 0xA900),
    "empty Patient ID": (lambda: part10_bytes(_ct(PatientID="")), "missing-attribute", 0xA900),
    "blank Patient ID": (lambda: part10_bytes(_ct(PatientID="   ")), "missing-attribute", 0xA900),
    "malformed SOP Instance UID": (lambda: part10_bytes(_ct(SOPInstanceUID="1.2.abc")), "invalid-attribute", 0xA900),
    "worklist SOP class": (
        lambda: part10_bytes(_ct(SOPClassUID="1.2.840.10008.5.1.4.31")),
        "unsupported-sop-class",
        0x0122,
    ),
    "unknown SOP class": (lambda: part10_bytes(_ct(SOPClassUID="1.2.3.4.5")), "unsupported-sop-class", 0x0122),
    "no transfer syntax in file meta": (_without_meta_ts, "missing-attribute", 0xA900),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_refused_with_its_status_and_nothing_is_stored(name, clinic, actor, dicom_dir):
    make, code, dicom_status = BAD_INPUTS[name]

    with pytest.raises(IngestError) as caught:
        _ingest(make(), clinic, actor)

    assert caught.value.code == code
    assert caught.value.dicom_status == dicom_status
    assert caught.value.reason
    assert 400 <= caught.value.http_status < 500
    assert index_counts() == (0, 0, 0, 0)
    assert stored_files(dicom_dir) == []
    refusal = AuditEvent.objects.get(action="instance.store")
    assert (refusal.outcome, refusal.detail["code"]) == ("failure", code)


def test_missing_patient_id_reason_names_the_attribute(clinic, actor):
    with pytest.raises(IngestError, match=r"Patient ID \(0010,0020\)"):
        _ingest(part10_bytes(_ct(PatientID=None)), clinic, actor)


def test_unsupported_transfer_syntax_is_refused(clinic, actor, dicom_dir):
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP referenced: no pixel data in the file

    with pytest.raises(IngestError) as caught:
        _ingest(part10_claiming(ds, ds.file_meta), clinic, actor)

    assert (caught.value.code, caught.value.dicom_status, caught.value.http_status) == (
        "unsupported-transfer-syntax",
        0xC000,
        415,
    )
    assert "JPIP" in caught.value.reason
    assert stored_files(dicom_dir) == []


def test_file_larger_than_the_limit_is_refused_out_of_resources(clinic, actor, dicom_dir, settings):
    data = part10_bytes(_ct())
    settings.DICOM_MAX_FILE_BYTES = len(data) - 1

    with pytest.raises(IngestError) as caught:
        _ingest(data, clinic, actor)

    assert (caught.value.code, caught.value.dicom_status, caught.value.http_status) == ("too-large", 0xA700, 413)
    assert index_counts() == (0, 0, 0, 0) and stored_files(dicom_dir) == []


def test_instance_of_another_study_than_expected_is_refused(clinic, actor, dicom_dir):
    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(_ct()), clinic, actor, expected_study_uid=new_uid())

    assert (caught.value.code, caught.value.dicom_status, caught.value.http_status) == ("study-mismatch", 0xA900, 409)
    assert stored_files(dicom_dir) == []


def test_expected_study_uid_that_matches_is_accepted(clinic, actor):
    ds = _ct()
    assert _ingest(part10_bytes(ds), clinic, actor, expected_study_uid=ds.StudyInstanceUID).created


def test_a_full_disk_is_refused_out_of_resources_with_nothing_indexed(clinic, actor, dicom_dir, monkeypatch):
    def broken(source: Path, key: str, presynced: Future[None] | None = None) -> Future[None]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "start_put", broken)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(_ct()), clinic, actor)

    error = caught.value
    assert (error.code, error.dicom_status, error.http_status) == ("out-of-space", 0xA700, 507)
    assert index_counts() == (0, 0, 0, 0)


def test_failed_fsync_refuses_the_instance_and_removes_the_file(clinic, actor, dicom_dir, monkeypatch):
    def sync_fails(dest: Path, folders: list[Path], presynced: Future[None] | None) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_sync_local", sync_fails)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(_ct()), clinic, actor)

    assert (caught.value.code, caught.value.dicom_status) == ("storage-failed", 0xA700)
    assert index_counts() == (0, 0, 0, 0)
    assert stored_files(dicom_dir) == []


def test_failed_early_sync_of_the_received_data_refuses_the_instance(clinic, actor, dicom_dir, monkeypatch):
    synced: list[Path] = []

    def data_sync_fails(path: Path) -> None:
        synced.append(Path(path))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "fdatasync", data_sync_fails)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(_ct()), clinic, actor)

    assert (caught.value.code, caught.value.dicom_status) == ("storage-failed", 0xA700)
    assert "could not be made durable" in caught.value.reason
    assert len(synced) == 1 and synced[0].parent == storage.temp_dir()  # the received file, before it was placed
    assert index_counts() == (0, 0, 0, 0)
    assert stored_files(dicom_dir) == []


def test_failure_after_the_file_is_placed_removes_the_file_and_every_row(clinic, actor, dicom_dir, monkeypatch):
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit database went away")

    monkeypatch.setattr(index, "_execute_all", fail)  # after patient, study and series rows are written

    with pytest.raises(RuntimeError):
        _ingest(part10_bytes(_ct()), clinic, actor)

    assert index_counts() == (0, 0, 0, 0)
    assert stored_files(dicom_dir) == []


def test_render_task_runs_after_commit(clinic, actor, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = _ingest(part10_bytes(_ct()), clinic, actor)

    assert [getattr(c, "__qualname__", "") for c in callbacks].count("_render_later.<locals>.render") == 1
    result.instance.refresh_from_db()
    assert result.instance.rendered


# --- concurrency on PostgreSQL ----------------------------------------------------------


def _in_threads(count: int, work) -> list[object]:  # type: ignore[no-untyped-def]
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # collected and asserted by the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_stores_of_one_instance_store_it_once(clinic, actor, dicom_dir):
    data = part10_bytes(_ct())

    results = _in_threads(6, lambda i: _ingest(data, clinic, actor))

    assert all(isinstance(r, ingest.IngestResult) for r in results), results
    assert sorted(r.created for r in results) == [False] * 5 + [True]
    assert index_counts() == (1, 1, 1, 1)
    assert Study.objects.get().num_instances == 1
    assert len(stored_files(dicom_dir)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_associations_into_one_new_study_keep_counts_right(clinic, actor, dicom_dir):
    study_uid = new_uid()
    series = [make_ct_series(4, 16, 16, study_uid=study_uid, series_number=n) for n in range(3)]
    sent = [part10_bytes(ds) for one in series for ds in one]

    results = _in_threads(len(sent), lambda i: _ingest(sent[i], clinic, actor))

    assert all(isinstance(r, ingest.IngestResult) and r.created for r in results), results
    study = Study.objects.get()
    assert (study.num_series, study.num_instances, study.size_bytes) == (3, 12, sum(map(len, sent)))
    assert [s.num_instances for s in Series.objects.all()] == [4, 4, 4]
    assert Patient.objects.count() == 1
    assert len(stored_files(dicom_dir)) == 12


@pytest.mark.django_db(transaction=True)
def test_later_instances_of_a_series_count_in_through_the_remembered_parents(clinic, actor, dicom_dir, monkeypatch):
    slices = make_ct_series(5, 16, 16)
    sent = [part10_bytes(ds) for ds in slices]
    first_time = []
    real_parents = index._parents
    monkeypatch.setattr(index, "_parents", lambda *a, **k: first_time.append(1) or real_parents(*a, **k))

    results = [_ingest(data, clinic, actor) for data in sent]

    assert len(first_time) == 1  # instances 2..5 took the short path
    assert all(r.created and r.study.pk == results[0].study.pk for r in results)
    study = Study.objects.get()
    assert (study.num_series, study.num_instances, study.size_bytes) == (1, 5, sum(map(len, sent)))
    assert Series.objects.get().num_instances == 5
    assert study.modalities == "CT" and study.study_date is not None
    stored = AuditEvent.objects.filter(action="instance.store", outcome="success")
    assert sorted(e.object_id for e in stored) == sorted(ds.SOPInstanceUID for ds in slices)
    assert {e.patient for e in stored} == {str(study.patient_id)}
    assert len(stored_files(dicom_dir)) == 5


@pytest.mark.django_db(transaction=True)
def test_a_study_deleted_after_its_first_instance_is_made_again_by_the_next(clinic, actor, dicom_dir):
    first, second = (part10_bytes(ds) for ds in make_ct_series(2, 16, 16))
    _ingest(first, clinic, actor)
    Study.objects.all().delete()  # what the remembered parents pointed at is gone

    result = _ingest(second, clinic, actor)

    assert result.created
    study = Study.objects.get()
    assert (study.num_series, study.num_instances, study.size_bytes) == (1, 1, len(second))
    assert Series.objects.get().num_instances == 1
    assert Instance.objects.get().sop_uid == result.instance.sop_uid


def test_reason_is_english_for_logs_and_localized_for_pages(clinic, actor):
    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(_ct(PatientID=None)), clinic, actor)

    assert caught.value.reason == "Patient ID (0010,0020) is missing or empty"
    with translation.override("zh-hans"):
        assert caught.value.localized_reason == "缺少 Patient ID (0010,0020) 或其为空"
    with translation.override("en"):
        assert caught.value.localized_reason == caught.value.reason


def test_refusal_names_the_instance_when_the_file_does(clinic, actor):
    ds = _ct(PatientID=None)

    with pytest.raises(IngestError) as caught:
        _ingest(part10_bytes(ds), clinic, actor)

    assert caught.value.sop_uid == ds.SOPInstanceUID
    assert AuditEvent.objects.get(outcome="failure").object_id == ds.SOPInstanceUID


def test_ingest_in_a_forked_child_gets_its_own_fsync_pool(clinic, actor, dicom_dir):
    """dicom_server --processes forks; the child must not wait on the parent's threads."""
    _ingest(part10_bytes(_ct()), clinic, actor)  # the parent's pool now has threads
    data = part10_bytes(_ct())
    key = "fork/test.dcm"
    source = dicom_dir.parent / "fork-source.dcm"
    source.write_bytes(data)
    pid = os.fork()
    if pid == 0:  # the child: only the storage layer, no database connection shared
        try:
            storage.put_file(source, key)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung waiting for the parent's fsync threads")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert (dicom_dir / key).read_bytes() == data


# --- the one-round-trip path (a further instance of a series this process has stored) ----


def _known_series(clinic, actor, n: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    """n instances of a new series, the first one stored (so its parents are remembered)."""
    sent = [part10_bytes(ds) for ds in make_ct_series(n, 16, 16)]
    _ingest(sent[0], clinic, actor)
    return sent


def _key_of(data: bytes) -> str:
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    return storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


@pytest.mark.django_db(transaction=True)
def test_a_further_instance_of_a_known_series_is_one_statement_batch_that_commits(
    clinic, actor, dicom_dir, monkeypatch
):
    first, second = _known_series(clinic, actor, 2)
    renders: list[int] = []
    monkeypatch.setattr(ingest, "_enqueue_renders", renders.extend)  # eager Celery would query here

    with CaptureQueriesContext(connection) as queries:
        result = _ingest(second, clinic, actor)

    assert result.created
    assert len(queries) == 1  # counters, audit event and instance row, committed as one
    assert queries[0]["sql"].count("EXECUTE ") == 4  # the two counters, the event, the row (alliance.prepared)
    assert not connection.in_atomic_block
    study = Study.objects.get()
    assert (study.num_instances, study.size_bytes) == (2, len(first) + len(second))
    assert Instance.objects.get(pk=result.instance.pk).storage_key == _key_of(second)
    assert AuditEvent.objects.filter(action="instance.store", object_id=result.instance.sop_uid).count() == 1
    assert renders == [result.instance.pk]


@pytest.mark.django_db(transaction=True)
def test_a_resent_instance_of_a_known_series_is_a_duplicate_and_changes_nothing(clinic, actor, dicom_dir):
    first, second = _known_series(clinic, actor, 2)
    _ingest(second, clinic, actor)

    again = _ingest(second, clinic, actor)

    assert (again.created, again.identical) == (False, True)
    assert Study.objects.get().num_instances == 2
    assert Series.objects.get().num_instances == 2
    assert len(stored_files(dicom_dir)) == 2
    assert (dicom_dir / _key_of(second)).read_bytes() == second


@pytest.mark.django_db(transaction=True)
def test_a_file_no_row_names_is_left_alone_and_the_instance_stored_beside_it(clinic, actor, dicom_dir):
    """What a store that stopped between its file and its commit leaves: the next store of
    that instance must neither take the stray file for the instance nor write over it."""
    first, second = _known_series(clinic, actor, 2)
    stray = dicom_dir / _key_of(second)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half of an earlier attempt")

    result = _ingest(second, clinic, actor)

    assert result.created
    assert stray.read_bytes() == b"half of an earlier attempt"
    instance = Instance.objects.get(pk=result.instance.pk)
    assert instance.storage_key != _key_of(second)
    assert storage.local_path(instance).read_bytes() == second
    assert Study.objects.get().num_instances == 2


@pytest.mark.django_db(transaction=True)
def test_a_failed_one_round_trip_removes_the_file_and_counts_nothing(clinic, actor, dicom_dir, monkeypatch):
    first, second = _known_series(clinic, actor, 2)

    def fail(*args: object, **kwargs: object) -> None:
        raise OperationalError("the server closed the connection")

    monkeypatch.setattr(index, "_execute_all", fail)

    with pytest.raises(IngestError) as caught:
        _ingest(second, clinic, actor)

    assert caught.value.code == "storage-failed"
    assert not (dicom_dir / _key_of(second)).exists()
    assert Study.objects.get().num_instances == 1
    assert Instance.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_stores_of_one_later_instance_store_it_once(clinic, actor, dicom_dir):
    first, second = _known_series(clinic, actor, 2)

    results = _in_threads(6, lambda i: _ingest(second, clinic, actor))

    assert all(isinstance(r, ingest.IngestResult) for r in results), results
    assert sorted(r.created for r in results) == [False] * 5 + [True]
    assert Study.objects.get().num_instances == 2
    assert Series.objects.get().num_instances == 2
    assert len(stored_files(dicom_dir)) == 2
    (kept,) = [r for r in results if r.created]
    assert storage.local_path(Instance.objects.get(pk=kept.instance.pk)).read_bytes() == second


def test_a_local_store_never_puts_a_file_over_another(dicom_dir, tmp_path):
    key = "ab/cd/1.2/1.2.3/1.2.3.4.dcm"
    first, second = tmp_path / "first.dcm", tmp_path / "second.dcm"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    storage.put_file(first, key)

    with pytest.raises(FileExistsError):
        storage.put_file(second, key)

    assert (dicom_dir / key).read_bytes() == b"first"
    beside = storage.alternative_key(key)
    assert beside != key and beside.startswith("ab/cd/1.2/1.2.3/1.2.3.4.") and beside.endswith(".dcm")


@pytest.mark.django_db(transaction=True)
def test_a_render_request_that_fails_after_commit_leaves_the_store_a_success(clinic, actor, monkeypatch):
    """The render is asked for in a robust on_commit callback: the broker failing there must
    not turn a committed store into an error (beat's sweep asks again for owed renders)."""

    def broker_down(instance_ids: list[int]) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(ingest.tasks, "schedule_renders", broker_down)
    slices = make_ct_series(3, 32, 32)

    results = [_ingest(part10_bytes(ds), clinic, actor) for ds in slices]

    assert [r.created for r in results] == [True, True, True]
    assert Instance.objects.count() == 3


def test_a_resend_takes_over_the_copy_an_undecided_commit_kept_instead_of_leaving_an_orphan(clinic, actor, dicom_dir):
    """A store that could not tell whether its commit happened keeps its file (no row names
    it). Sent again, the same bytes take that file over: one file, named by the row."""
    data = part10_bytes(_ct())
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    key = storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    kept = storage.local_path_for_key(key)
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(data)

    result = _ingest(data, clinic, actor)

    assert result.created and result.instance.storage_key == key
    assert stored_files(dicom_dir) == [kept]
    assert kept.read_bytes() == data


def test_a_file_under_the_key_with_other_bytes_is_left_alone_and_the_instance_stored_beside(clinic, actor, dicom_dir):
    data = part10_bytes(_ct())
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    key = storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    stranger = storage.local_path_for_key(key)
    stranger.parent.mkdir(parents=True, exist_ok=True)
    stranger.write_bytes(b"not these bytes")

    result = _ingest(data, clinic, actor)

    assert result.instance.storage_key != key
    assert stranger.read_bytes() == b"not these bytes"
    assert storage.local_path(result.instance).read_bytes() == data


@pytest.mark.django_db(transaction=True)
def test_a_series_another_process_moved_is_not_counted_into_the_study_remembered_here(clinic, actor, dicom_dir):
    """The parents this process remembers do not know of a series move made elsewhere (the web
    process): the one-round-trip insert checks the series is still in the remembered study,
    and the careful path then says the series is in another study, as for any process."""
    first, second, third = _known_series(clinic, actor, 3)
    _ingest(second, clinic, actor)  # the one-round-trip path: the parents are remembered
    series = Series.objects.get()
    elsewhere = make_ct_series(1, 16, 16)
    _ingest(part10_bytes(elsewhere[0]), clinic, actor)
    target = Study.objects.get(study_uid=elsewhere[0].StudyInstanceUID)
    Series.objects.filter(pk=series.pk).update(study=target)  # as series_move in another process
    before = list(Study.objects.order_by("pk").values_list("num_series", "num_instances", "size_bytes"))

    with pytest.raises(IngestError) as caught:
        _ingest(third, clinic, actor)

    assert caught.value.code == "uid-conflict"
    assert list(Study.objects.order_by("pk").values_list("num_series", "num_instances", "size_bytes")) == before
    assert Series.objects.get(pk=series.pk).num_instances == 2
    assert Instance.objects.filter(series=series).count() == 2
    assert not (dicom_dir / _key_of(third)).exists()
    assert not any(remembered[2] == series.pk for remembered in index.known_parents.rows.values())
