"""The DICOM objects we write into studies are valid (dciodvfy from dicom3tools) and say what they should."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from imaging import key_objects
from imaging.dicom import objects
from tests.imaging.dicomgen import make_ct_series

DCIODVFY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dciodvfy"
CREATOR = objects.Creator("Alliance Cloud PACS", "Cloud PACS", "1", institution="Lead Hospital", station="CLOUDPACS")
READER = objects.Observer("王医生", "Lead Hospital")
MADE = dt.datetime(2026, 12, 3, 8, 30, 5, tzinfo=dt.UTC)


@pytest.fixture
def images() -> list[Dataset]:
    return make_ct_series(3, 16, 16, patient_name="Yang^Zhiqiang", patient_id="P77")


def _doc(series_number: int, predecessor: objects.ImageRef | None = None) -> objects.Document:
    return objects.Document(
        series_uid=objects.new_uid(),
        sop_uid=objects.new_uid(),
        series_number=series_number,
        instance_number=1,
        made_at=MADE,
        predecessor=predecessor,
    )


def _ref(ds: Dataset) -> objects.ImageRef:
    return objects.ImageRef(ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID)


def _errors(ds: Dataset, tmp_path: Path) -> list[str]:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(objects.part10(ds))
    run = subprocess.run([str(DCIODVFY), "-new", str(path)], capture_output=True, text=True, check=False)
    output = run.stdout + run.stderr
    assert output.strip(), "dciodvfy said nothing"
    return [line for line in output.splitlines() if line.startswith("Error")]


def _reread(ds: Dataset) -> Dataset:
    from io import BytesIO

    return pydicom.dcmread(BytesIO(objects.part10(ds)))


def _measurements(images: list[Dataset]) -> list[objects.Measurement]:
    return [
        objects.Measurement(
            _ref(images[0]), "POLYLINE", [(2.0, 3.0), (10.0, 11.5)], [objects.Value(objects.LENGTH, 12.25, objects.MM)]
        ),
        objects.Measurement(
            _ref(images[2]),
            "ELLIPSE",
            [(1.0, 8.0), (15.0, 8.0), (8.0, 4.0), (8.0, 12.0)],
            [objects.Value(objects.AREA, 88.0, objects.MM2), objects.Value(objects.MEAN, 41.5, objects.HU)],
        ),
    ]


def test_key_object_selection_is_valid_and_names_the_marked_images(images: list[Dataset], tmp_path: Path) -> None:
    ds = objects.key_object_selection(
        images[0], creator=CREATOR, doc=_doc(9901), observer=READER, key_images=[_ref(images[2]), _ref(images[0])]
    )
    assert _errors(ds, tmp_path) == []
    back = _reread(ds)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and back.Modality == "KO"
    assert back.StudyInstanceUID == images[0].StudyInstanceUID and back.PatientID == "P77"
    assert back.SeriesInstanceUID != images[0].SeriesInstanceUID
    assert key_objects.key_images_in(back) == [images[2].SOPInstanceUID, images[0].SOPInstanceUID]
    assert back.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == {
        images[0].SOPInstanceUID,
        images[2].SOPInstanceUID,
    }
    assert back.Manufacturer == "Alliance Cloud PACS"
    names = [i.PersonName for i in back.ContentSequence if i.ValueType == "PNAME"]
    assert names == ["王医生"]


def test_measurement_report_is_valid_tid_1500_with_mm_lengths_on_their_images(
    images: list[Dataset], tmp_path: Path
) -> None:
    previous = objects.ImageRef(objects.COMPREHENSIVE_SR, objects.new_uid(), objects.new_uid())
    ds = objects.measurement_report(
        images[0], creator=CREATOR, doc=_doc(9902, previous), observer=READER, measurements=_measurements(images)
    )
    assert _errors(ds, tmp_path) == []
    back = _reread(ds)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and back.Modality == "SR"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert back.ConceptNameCodeSequence[0].CodeValue == "126000"
    prior = back.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert prior.ReferencedSOPInstanceUID == previous.sop_uid
    measurements = key_objects.measurements_in(back)
    length, roi = measurements
    assert length["kind"] == "length" and length["length"] == pytest.approx(12.25)
    assert length["sop_uid"] == images[0].SOPInstanceUID and length["points"] == [[2.0, 3.0], [10.0, 11.5]]
    assert roi["kind"] == "ellipse" and roi["area"] == 88.0 and roi["mean"] == 41.5
    assert roi["sop_uid"] == images[2].SOPInstanceUID
    group = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"][0]
    number = group.ContentSequence[0].ContentSequence[2]
    unit = number.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mm", "UCUM")
    assert number.ContentSequence[0].RelationshipType == "INFERRED FROM"


def test_empty_measurement_report_is_still_valid(images: list[Dataset], tmp_path: Path) -> None:
    ds = objects.measurement_report(images[0], creator=CREATOR, doc=_doc(9902), observer=READER, measurements=[])
    assert _errors(ds, tmp_path) == []
    assert key_objects.measurements_in(_reread(ds)) == []


def test_basic_text_sr_holds_findings_and_impression_verified_by_the_signer(
    images: list[Dataset], tmp_path: Path
) -> None:
    ds = objects.basic_text_report(
        images[0], creator=CREATOR, doc=_doc(9903), observer=READER, findings="右上肺结节。", impression="结节 8 mm。"
    )
    assert _errors(ds, tmp_path) == []
    back = _reread(ds)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11" and back.VerificationFlag == "VERIFIED"
    assert back.VerifyingObserverSequence[0].VerifyingObserverName == "王医生"
    texts = [c.ContentSequence[0].TextValue for c in back.ContentSequence if c.ValueType == "CONTAINER"]
    assert texts == ["右上肺结节。", "结节 8 mm。"]


def test_encapsulated_pdf_is_valid_and_holds_the_pdf(images: list[Dataset], tmp_path: Path) -> None:
    pdf = b"%PDF-1.4\n%odd length\n"
    ds = objects.encapsulated_pdf(images[0], creator=CREATOR, doc=_doc(9904), pdf=pdf, title="会诊报告")
    assert _errors(ds, tmp_path) == []
    back = _reread(ds)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and back.Modality == "DOC"
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert back.EncapsulatedDocument[: back.EncapsulatedDocumentLength] == pdf


def test_encapsulated_pdf_refuses_what_is_not_a_pdf(images: list[Dataset]) -> None:
    with pytest.raises(ValueError, match="not a PDF"):
        objects.encapsulated_pdf(images[0], creator=CREATOR, doc=_doc(9904), pdf=b"<html>", title="x")


def test_derived_uids_are_stable_valid_and_distinct() -> None:
    from imaging.dicom.datasets import is_valid_uid

    first = objects.derived_uid("2.25", "report", 7, "1.2.3")
    assert first == objects.derived_uid("2.25", "report", 7, "1.2.3")
    assert first != objects.derived_uid("2.25", "report", 8, "1.2.3")
    assert is_valid_uid(first) and is_valid_uid(objects.derived_uid("1.2.840.99999", "x"))


def test_an_angle_is_a_number_in_degrees_inferred_from_its_open_polyline(images: list[Dataset], tmp_path: Path) -> None:
    arms = [(2.0, 3.0), (8.0, 8.0), (14.0, 3.0)]
    angle = objects.Measurement(_ref(images[1]), "POLYLINE", arms, [objects.Value(objects.ANGLE, 79.6, objects.DEGREE)])
    ds = objects.measurement_report(images[0], creator=CREATOR, doc=_doc(9902), observer=READER, measurements=[angle])
    assert _errors(ds, tmp_path) == []
    back = _reread(ds)
    (read,) = key_objects.measurements_in(back)
    assert read["kind"] == "angle" and read["angle"] == pytest.approx(79.6)
    assert read["points"] == [list(p) for p in arms] and read["sop_uid"] == images[1].SOPInstanceUID
    group = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"][0]
    number = group.ContentSequence[0].ContentSequence[2]
    assert (number.ConceptNameCodeSequence[0].CodeValue, number.ConceptNameCodeSequence[0].CodingSchemeDesignator) == (
        "1483009",
        "SCT",
    )
    unit = number.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("deg", "UCUM")
    assert number.ContentSequence[0].RelationshipType == "INFERRED FROM"
