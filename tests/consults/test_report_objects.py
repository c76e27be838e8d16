"""The signed report goes into the case's studies as an Encapsulated PDF and a Basic Text SR,
once per report version; the report PDF shows the reader's key images as thumbnails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.utils import timezone

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import report_objects, services, tasks
from consults.models import ReportVersion, Status
from imaging import storage
from imaging.dicom import objects
from imaging.models import Instance, Study
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import StudyFactory, make_doctor, store_ct_study

DCIODVFY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dciodvfy"


@pytest.fixture
def study(world: Any) -> Study:
    return store_ct_study(world.clin_a, slices=3, patient_name="Yang^Zhiqiang")


def _sign(world: Any, consult: Any) -> ReportVersion:
    return services.consult_sign(
        consult=consult, by=resolve_principal(world.specialist.user), findings="右上肺结节。", impression="结节 8 mm。"
    )


def _report_instances(study: Study) -> dict[str, Instance]:
    rows = Instance.objects.filter(series__study=study, series__modality__in=["DOC", "SR"]).select_related("series")
    return {i.sop_class_uid: i for i in rows}


def _dataset(instance: Instance) -> pydicom.Dataset:
    with storage.open_instance(instance) as handle:
        return pydicom.dcmread(handle)


@pytest.mark.django_db
def test_signing_writes_the_pdf_and_text_sr_into_the_study_after_commit(
    world: Any, study: Study, django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    consult = walk(world, Status.IN_PROGRESS, study=study)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version = _sign(world, consult)
    assert _report_instances(study) == {}  # nothing before the signing has committed
    for callback in callbacks:
        callback()
    found = _report_instances(study)
    assert set(found) == {objects.ENCAPSULATED_PDF, objects.BASIC_TEXT_SR}
    pdf_ds = _dataset(found[objects.ENCAPSULATED_PDF])
    assert pdf_ds.EncapsulatedDocument.startswith(b"%PDF") and pdf_ds.StudyInstanceUID == study.study_uid
    assert pdf_ds.PatientID == study.patient.patient_id and pdf_ds.InstanceNumber == version.number
    sr = _dataset(found[objects.BASIC_TEXT_SR])
    texts = [c.ContentSequence[0].TextValue for c in sr.ContentSequence if c.ValueType == "CONTAINER"]
    assert texts == ["右上肺结节。", "结节 8 mm。"]
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == world.specialist.display_name
    for instance in found.values():
        path = storage.local_path(instance)
        assert path is not None
        check = subprocess.run([str(DCIODVFY), "-new", str(path)], capture_output=True, text=True, check=False)
        assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], check.stderr
    assert AuditEvent.objects.filter(action="consult.report_into_study", object_id=str(consult.pk)).count() == 1


@pytest.mark.django_db
def test_writing_the_same_version_twice_writes_nothing_more(world: Any, study: Study) -> None:
    consult = walk(world, Status.IN_PROGRESS, study=study)
    version = _sign(world, consult)
    assert len(report_objects.report_into_studies(version=version)) == 2
    assert report_objects.report_into_studies(version=version) == []
    assert Instance.objects.filter(series__study=study, series__modality__in=["DOC", "SR"]).count() == 2


@pytest.mark.django_db
def test_an_unsigned_version_is_refused(world: Any, study: Study) -> None:
    consult = walk(world, Status.IN_PROGRESS, study=study)
    draft = ReportVersion.objects.get(report__consult=consult)
    with pytest.raises(ValueError, match="not signed"):
        report_objects.report_into_studies(version=draft)


@pytest.mark.integration  # poppler's pdfimages counts the images in the PDF
@pytest.mark.django_db
def test_report_pdf_shows_the_readers_key_images_as_thumbnails(world: Any, study: Study, tmp_path: Path) -> None:
    consult = walk(world, Status.IN_PROGRESS, study=study)
    images = list(
        Instance.objects.filter(series__study=study).order_by("instance_number").values_list("sop_uid", flat=True)
    )
    saved = client_for(world.specialist).post(
        f"/api/v1/studies/{study.study_uid}/key-objects/",
        data=json.dumps({"key_images": [images[0], images[2]], "measurements": []}),
        content_type="application/json",
    )
    assert saved.status_code == 201
    _sign(world, consult)
    response = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf")
    assert response.status_code == 200
    path = tmp_path / "report.pdf"
    path.write_bytes(response.content)
    listed = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    jpegs = [line for line in listed.splitlines()[2:] if " jpeg " in line]
    assert len(jpegs) == 2, listed
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "关键图像" in text or "Key images" in text


@pytest.mark.integration
@pytest.mark.django_db
def test_report_pdf_without_key_images_has_no_thumbnails(world: Any, study: Study, tmp_path: Path) -> None:
    consult = walk(world, Status.COMPLETED, study=study)
    response = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf")
    path = tmp_path / "report.pdf"
    path.write_bytes(response.content)
    listed = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    assert not [line for line in listed.splitlines()[2:] if " jpeg " in line]


def _addendum(world: Any, consult: Any, text: str = "补充：左肺未见异常。") -> ReportVersion:
    return services.consult_addendum(consult=consult, by=resolve_principal(world.specialist.user), text=text)


@pytest.mark.django_db
def test_an_addendum_goes_into_the_study_after_commit_as_its_own_pdf_and_text_sr(
    world: Any, study: Study, django_capture_on_commit_callbacks: Any
) -> None:
    consult = walk(world, Status.COMPLETED, study=study)
    with django_capture_on_commit_callbacks(execute=True):
        version = _addendum(world, consult)
    uids = report_objects.report_uids(version, study)
    assert Instance.objects.filter(sop_uid__in=[uids["pdf"], uids["sr"]]).count() == 2
    sr = _dataset(Instance.objects.get(sop_uid=uids["sr"]))
    assert sr.ContentSequence[-2].ContentSequence[0].TextValue.startswith("补充：左肺未见异常。")


@pytest.mark.django_db
def test_the_pdf_of_a_version_shows_the_report_as_it_stood_then(world: Any, study: Study, monkeypatch: Any) -> None:
    consult = walk(world, Status.COMPLETED, study=study)
    first = ReportVersion.objects.get(report__consult=consult, number=1)
    _addendum(world, consult)
    printed: list[list[int]] = []
    render = report_objects.pdf.render_report

    def spy(consult: Any, case: dict[str, Any], request: Any = None) -> bytes:
        printed.append([v.number for v in case["signed_versions"]])
        return render(consult, case, request)

    monkeypatch.setattr(report_objects.pdf, "render_report", spy)
    Instance.objects.filter(sop_uid__in=report_objects.report_uids(first, study).values()).delete()
    assert report_objects.report_into_studies(version=first)
    assert printed == [[1]]


@pytest.mark.django_db
def test_the_sweep_writes_the_report_objects_a_lost_task_left_out_once(
    world: Any, study: Study, django_capture_on_commit_callbacks: Any
) -> None:
    consult = walk(world, Status.IN_PROGRESS, study=study)
    with django_capture_on_commit_callbacks(execute=False):  # the broker was away at the commit
        version = _sign(world, consult)
    with django_capture_on_commit_callbacks(execute=False):
        addendum = _addendum(world, consult)
    assert _report_instances(study) == {}
    assert tasks.write_missing_report_objects(older_than_seconds=3600) == 0  # too young: may be on its way
    assert tasks.write_missing_report_objects(older_than_seconds=0) == 2
    for written in (version, addendum):
        uids = report_objects.report_uids(written, study)
        assert Instance.objects.filter(sop_uid__in=[uids["pdf"], uids["sr"]]).count() == 2
    assert tasks.write_missing_report_objects(older_than_seconds=0) == 0  # a second run finds them all


@pytest.mark.django_db
def test_the_sweep_leaves_a_preliminary_report_and_a_study_without_images_alone(
    world: Any, study: Study, django_capture_on_commit_callbacks: Any
) -> None:
    empty = StudyFactory(institution=world.clin_a, series=0)  # no image to copy the patient from
    walk(world, Status.COMPLETED, study=empty)
    assert tasks.write_missing_report_objects(older_than_seconds=0) == 0
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior")
    world.pool.members.add(senior)
    world.pool.reviewers.add(senior)
    world.pool.two_level_signoff = True
    world.pool.save()
    consult = walk(world, Status.IN_PROGRESS, study=study)
    with django_capture_on_commit_callbacks(execute=False):
        _sign(world, consult)  # preliminary: waits for the reviewer
    assert tasks.write_missing_report_objects(older_than_seconds=0) == 0
    with django_capture_on_commit_callbacks(execute=False):
        services.consult_verify(consult=consult, by=resolve_principal(senior.user))
    assert tasks.write_missing_report_objects(older_than_seconds=0) == 1


def test_the_report_objects_sweep_is_a_beat_job(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["report-objects"]
    assert entry["task"] == "consults.tasks.write_missing_report_objects"


@pytest.mark.django_db
def test_under_two_level_sign_off_the_text_sr_is_verified_by_the_reviewer_and_written_by_the_junior(
    world: Any, study: Study, django_capture_on_commit_callbacks: Any
) -> None:
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior")
    world.pool.members.add(senior)
    world.pool.reviewers.add(senior)
    world.pool.two_level_signoff = True
    world.pool.save()
    consult = walk(world, Status.IN_PROGRESS, study=study)
    _sign(world, consult)
    with django_capture_on_commit_callbacks(execute=True):
        version = services.consult_verify(consult=consult, by=resolve_principal(senior.user))
    sr = _dataset(_report_instances(study)[objects.BASIC_TEXT_SR])
    [verifier] = sr.VerifyingObserverSequence
    assert verifier.VerifyingObserverName == senior.display_name
    review_at = timezone.localtime(version.reviews.get().at).strftime("%Y%m%d%H%M%S")
    assert verifier.VerificationDateTime == review_at
    assert sr.AuthorObserverSequence[0].PersonName == world.specialist.display_name
