"""Issue 20, item 3: no path back to the patient.

Studies are made into published teaching cases, and every published file is scanned (every
element at any depth, private ones and the file meta included, and the file's raw bytes), as
is the case's text, for every identifying value of the original: the names, IDs, dates of
birth, accession numbers, institution names and UIDs it held, and what the index knew of the
patient. Any hit fails. The identifying values are gathered here, by this test's own reading
of the originals, not by the product's code.

Sources: the demo's studies (demo/: a chest CT, a chest radiograph, a brain MR of a clinic's
patients) and files bundled with pydicom (CT, enhanced CT, MR with overlays, CR, US, NM with
sequences and private attributes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement

from consults.teaching import services
from consults.teaching.models import TeachingCase
from demo import imaging as demo_imaging
from demo import synthetic
from imaging import storage
from imaging.ingest import ingest_bytes
from imaging.models import Study
from tests.factories import SYSTEM
from tests.imaging.dicomgen import part10_bytes
from tests.teaching.conftest import ready

pytestmark = pytest.mark.django_db

# CT with 179 private attributes; enhanced CT (2 frames, functional group sequences); MR with
# private attributes and overlays; CR in JPEG 2000; US with 75 private attributes and region
# sequences; NM in JPEG with private attributes.
PYDICOM_FILES = (
    "CT_small.dcm",
    "eCT_Supplemental.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "RG3_J2KR.dcm",
    "OBXXXX1A.dcm",
    "JPEG-LL.dcm",
)
IDENTIFYING_KEYWORDS = {
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
}
# Codes, numbers and dates are not where a name or an ID is written; dates are checked apart
# (only the profile's dummy date may be left).
NOT_TEXT = {"CS", "IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "AT", "DA", "DT", "TM"}
TEXT = {
    "question": "A smoker with cough for three weeks: what do you see?",
    "findings": "Findings as read on the images.",
    "diagnosis": "As discussed below.",
    "discussion": "Compare with the prior film when one exists.",
}


def _elements(ds: pydicom.Dataset) -> Iterator[DataElement]:
    yield from ds.file_meta.iterall()
    yield from ds.iterall()


def _strings(element: DataElement) -> list[str]:
    value = element.value
    values = list(value) if isinstance(value, pydicom.multival.MultiValue | list) else [value]
    return [str(v) for v in values if v not in (None, "") and not isinstance(v, bytes)]


def identifying_values(original: pydicom.Dataset, study: Study) -> set[str]:
    """What identifies the patient in the original and the index, at least three characters long;
    minus the standard's defined terms the original itself used as codes (a test file's patient
    called "Perfusion" does not make the image type PERFUSION identifying)."""
    found = {study.patient.name, study.patient.patient_id, study.accession_number, study.institution.name}
    codes = set()
    for element in _elements(original):
        if element.tag.is_private:
            continue
        if element.VR == "CS":
            codes.update(s.casefold() for s in _strings(element))
        elif element.VR == "PN":
            for name in _strings(element):
                found.add(name)
                found.update(part for group in name.split("=") for part in group.split("^"))
        elif element.VR == "UI" and not element.keyword.endswith(("ClassUID", "SyntaxUID")):
            found.update(u for u in _strings(element) if not u.startswith("1.2.840.10008."))
        elif element.keyword in IDENTIFYING_KEYWORDS:
            found.update(_strings(element))
    return {v.strip() for v in found if len(v.strip()) >= 3 and v.strip().casefold() not in codes}


def leaks(values: set[str], image_path: Path, case: TeachingCase) -> list[str]:
    hits = []
    raw = image_path.read_bytes()
    copy = pydicom.dcmread(image_path)
    for value in values:
        folded = value.casefold()
        encoded = value.encode("utf-8", "replace")
        if len(value) >= 6 and (encoded in raw or value.upper().encode("utf-8", "replace") in raw):
            hits.append(f"bytes: {value}")
        for element in _elements(copy):
            if element.tag.is_private:
                hits.append(f"private {element.tag}")
            if element.VR in NOT_TEXT:
                continue
            if any(folded in s.casefold() for s in _strings(element)):
                hits.append(f"{element.keyword or element.tag}: {value}")
        for field in ("title", "question", "findings", "diagnosis", "discussion"):
            if folded in getattr(case, field).casefold():
                hits.append(f"case {field}: {value}")
    dates = [s for e in _elements(copy) if e.VR in ("DA", "DT") for s in _strings(e)]
    hits += [f"a date kept: {d}" for d in dates if not d.startswith("0001")]
    return hits


def publish_case_of(study: Study, author: Any, by: Any) -> TeachingCase:
    series = list(study.series.values_list("series_uid", flat=True))
    case = services.case_create(by=by, study=study, series_uids=series, key_sop_uids=[], title="An interesting case")
    flagged = list(case.images.exclude(burned_in=""))
    if flagged:
        services.images_confirm(case=case, by=by, images=flagged)
    case = ready(case, by, modality=case.modality, **TEXT)
    return services.case_publish(case=case, by=by)


def check(study: Study, originals: list[pydicom.Dataset], teaching: SimpleNamespace) -> TeachingCase:
    case = publish_case_of(study, teaching.author, teaching.by)
    values: set[str] = set()
    for original in originals:
        values |= identifying_values(original, study)
    assert values, "nothing identifying to look for: the test would prove nothing"
    images = list(case.images.all())
    assert len(images) == len(originals)
    for image in images:
        path = storage.local_path_for_key(image.storage_key)
        assert path is not None
        assert leaks(values, path, case) == [], image.sop_uid
    return case


@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_no_published_pydicom_sample_leads_back_to_its_patient(teaching: Any, name: str) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    original = pydicom.dcmread(path)
    study = ingest_bytes(path.read_bytes(), institution=teaching.world.hosp, actor=SYSTEM, via="test").study
    check(study, [original], teaching)


@pytest.mark.parametrize("kind", ["ct", "dx", "mr"])
def test_no_published_demo_study_leads_back_to_its_patient(teaching: Any, kind: str) -> None:
    hosp = teaching.world.hosp
    demo = next(s for s in demo_imaging.demo_studies_for(hosp) if s.kind == kind)
    originals = {
        "ct": lambda: synthetic.ct_series(demo.info, slices=3, size=64),
        "dx": lambda: [synthetic.chest_radiograph(demo.info, rows=128, columns=110)],
        "mr": lambda: synthetic.mr_series(demo.info, slices=3, size=64),
    }[kind]()
    for ds in originals:
        ingest_bytes(part10_bytes(ds), institution=hosp, actor=SYSTEM, via="test")
    study = Study.objects.get(study_uid=originals[0].StudyInstanceUID)
    case = check(study, originals, teaching)
    assert demo.info.patient.name.split("=")[1].replace("^", "") not in str(case.findings)


def test_the_scan_finds_an_original_and_text_naming_the_patient(teaching: Any, tmp_path: Path) -> None:
    """The scan itself can fail: on the original file and on a case whose text names the patient."""
    path = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    original = pydicom.dcmread(path)
    study = ingest_bytes(path.read_bytes(), institution=teaching.world.hosp, actor=SYSTEM, via="test").study
    values = identifying_values(original, study)
    clean = TeachingCase(title="t", question="q", findings="f", diagnosis="d", discussion="")
    found = leaks(values, path, clean)
    assert any(hit.startswith("bytes: ") for hit in found) and any(hit.startswith("private") for hit in found)
    assert any(hit.startswith("PatientName") for hit in found) and any("a date kept" in hit for hit in found)
    named = TeachingCase(title="t", question="q", findings=f"Seen as {original.PatientID}", diagnosis="d")
    copy = tmp_path / "copy.dcm"
    original.remove_private_tags()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        delattr(original, keyword)
    original.save_as(copy)
    assert any(hit.startswith("case findings") for hit in leaks(values, copy, named))
