"""A signed screening reading stored in its study as DICOM SR (TID 1500), read back with
pydicom, and (where dcmtk is installed) parsed by dsrdump."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydicom
import pytest
from kombu.exceptions import OperationalError

from consults.screening import report_sr, tasks
from consults.screening.models import Reading
from imaging import storage
from imaging.dicom import objects
from imaging.models import Instance
from tests.screening.conftest import enrol, nodule, read, scan, sign

pytestmark = pytest.mark.django_db


def _signed(world: Any) -> Reading:
    round_ = scan(world, enrol(world), study_date=dt.date(2026, 3, 14), slices=3)
    image = _ct_images(round_.study)[1]
    reading = read(
        world,
        round_,
        nodule("RUL", long="9.0", short="8.0", volume=300, sop_uid=image.sop_uid, image_number=2),
        nodule("LLL", "part_solid", "12.0", "10.0", solid=Decimal("6.5"), image_number=3, series_number=1),
        significant=True,
        significant_text="Coronary artery calcification",
        other_findings="Mild emphysema.",
    )
    signed = sign(world, reading)
    report_sr.write_reading_sr(reading=signed)  # what the task does after the signature's commit
    signed.refresh_from_db()
    return signed


def _ct_images(study: Any) -> list[Instance]:
    return list(Instance.objects.filter(series__study=study, series__modality="CT").order_by("instance_number"))


def _dataset(reading: Reading) -> pydicom.Dataset:
    instance = Instance.objects.get(sop_uid=reading.sr_sop_uid)
    with storage.open_instance(instance) as handle:
        return pydicom.dcmread(handle)


def _items(node: Any) -> list[Any]:
    return list(node.get("ContentSequence", []))


def _named(node: Any, code_value: str) -> list[Any]:
    return [
        i
        for i in _items(node)
        if "ConceptNameCodeSequence" in i and i.ConceptNameCodeSequence[0].CodeValue == code_value
    ]


def test_the_reading_is_a_tid_1500_report_in_the_study(world: Any) -> None:
    reading = _signed(world)
    ds = _dataset(reading)
    study = reading.round.study
    assert ds.SOPClassUID == objects.COMPREHENSIVE_SR and ds.Modality == "SR"
    assert ds.StudyInstanceUID == study.study_uid and ds.PatientID == study.patient.patient_id
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert ds.VerificationFlag == "VERIFIED" and ds.CompletionFlag == "COMPLETE"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99CPACS"
    groups = _items(_named(ds, "126010")[0])  # Imaging Measurements
    assert len(groups) == 2
    first = groups[0]
    assert _named(first, "121071")[0].ConceptCodeSequence[0].CodeValue == "27925004"  # Finding: Nodule
    site = _named(first, "363698007")[0]
    assert site.RelationshipType == "HAS CONCEPT MOD" and site.ConceptCodeSequence[0].CodeValue == "42400003"
    numbers = {i.ConceptNameCodeSequence[0].CodeValue: i for i in _items(first) if i.ValueType == "NUM"}
    long_axis = numbers["103339001"].MeasuredValueSequence[0]
    assert float(long_axis.NumericValue) == 9.0 and long_axis.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    mean = numbers["81827009"]
    assert float(mean.MeasuredValueSequence[0].NumericValue) == 8.5
    assert _named(mean, "121401")[0].ConceptCodeSequence[0].CodeValue == "373098007"  # derivation: Mean
    volume = numbers["118565006"].MeasuredValueSequence[0]
    assert float(volume.NumericValue) == 300 and volume.MeasurementUnitsCodeSequence[0].CodeValue == "mm3"
    source = _named(numbers["103339001"], "121112")[0]  # the image it was measured on
    image = _ct_images(study)[1]
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.sop_uid
    evaluations = {i.ConceptNameCodeSequence[0].CodeValue: i for i in _items(first) if i.ValueType == "CODE"}
    assert evaluations["COMPOSITION"].ConceptCodeSequence[0].CodeValue == "SOLID"
    assert evaluations["LUNGRADS"].ConceptCodeSequence[0].CodeValue == "LR4A"
    second_numbers = {i.ConceptNameCodeSequence[0].CodeValue for i in _items(groups[1]) if i.ValueType == "NUM"}
    assert "SOLIDDIAM" in second_numbers  # the part-solid nodule's solid component


def test_the_exam_category_s_and_the_recommendation_are_report_level_evaluations(world: Any) -> None:
    reading = _signed(world)
    ds = _dataset(reading)
    container = _named(ds, "C0034375")[0]  # Qualitative Evaluations
    codes = {i.ConceptNameCodeSequence[0].CodeValue: i for i in _items(container)}
    # 8.5 mm solid (4A) and a part-solid nodule with a 6.5 mm solid component (4A)
    assert codes["LUNGRADS"].ConceptCodeSequence[0].CodeValue == "LR4A" and reading.code == "4AS"
    assert codes["LUNGRADSS"].ConceptCodeSequence[0].CodeMeaning == "Yes"
    assert codes["SFINDING"].TextValue == "Coronary artery calcification"
    assert codes["121071"].TextValue == "Mild emphysema."
    assert codes["121075"].TextValue  # the recommendation, in words
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == reading.round.study.study_uid


def test_writing_twice_stores_one_instance(world: Any) -> None:
    reading = _signed(world)
    before = Instance.objects.filter(series__study=reading.round.study).count()
    again = report_sr.write_reading_sr(reading=reading)
    assert again == reading.sr_sop_uid
    assert Instance.objects.filter(series__study=reading.round.study).count() == before


def test_an_unsigned_reading_is_not_written(world: Any) -> None:
    round_ = scan(world, enrol(world))
    with pytest.raises(ValueError, match="not signed"):
        report_sr.write_reading_sr(reading=read(world, round_, nodule()))


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk's dsrdump is not installed")
def test_dcmtk_dsrdump_reads_the_report(world: Any, tmp_path: Path) -> None:
    reading = _signed(world)
    path = tmp_path / "sr.dcm"
    instance = Instance.objects.get(sop_uid=reading.sr_sop_uid)
    with storage.open_instance(instance) as handle:
        path.write_bytes(handle.read())
    args = ["dsrdump", "+Pc", "+Pt", str(path)]  # with every code, and the template's identification
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Comprehensive SR" in output and "# TID 1500 (DCMR)" in output
    assert '(363698007,SCT,"Finding Site")=(42400003,SCT,"Upper lobe of right lung")' in output
    assert '(103339001,SCT,"Long Axis")="9" (mm,UCUM,"millimeter")' in output
    assert '(118565006,SCT,"Volume")="300" (mm3,UCUM,"cubic millimeter")' in output
    assert '(LR4A,99CPACS,"Lung-RADS 4A")' in output
    assert "error" not in output.lower() and "invalid" not in output.lower(), output


def test_an_sr_lost_with_the_broker_is_written_by_the_sweep(
    world: Any, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_away(*_args: Any) -> None:
        raise OperationalError("[Errno 111] Connection refused")  # what Celery raises, the broker stopped

    round_ = scan(world, enrol(world), study_date=dt.date(2026, 3, 14), slices=3)
    reading = read(world, round_, nodule())
    with monkeypatch.context() as patched:
        patched.setattr(tasks.write_reading_sr, "delay", broker_away)
        with django_capture_on_commit_callbacks(execute=True):  # a robust callback: logged, not raised
            signed = sign(world, reading)
    signed.refresh_from_db()
    assert signed.is_signed and not signed.sr_sop_uid
    assert tasks.write_missing_reading_srs() == 0  # younger than RETRY_AFTER_SECONDS: maybe on its way
    assert tasks.write_missing_reading_srs(older_than_seconds=0) == 1  # eager here: written now
    signed.refresh_from_db()
    assert Instance.objects.filter(sop_uid=signed.sr_sop_uid, series__study=round_.study).exists()
    assert tasks.write_missing_reading_srs(older_than_seconds=0) == 0
