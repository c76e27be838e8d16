"""Saving key images and measurements through /api/v1/studies/<uid>/key-objects/: ingest,
read back, supersede, bad input, and who may save."""

from __future__ import annotations

import json
from typing import Any

import pydicom
import pytest

from alliance.models import AuditEvent
from consults.models import Status
from imaging import storage
from imaging.dicom import objects
from imaging.models import Instance, Study
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import store_ct_study

pytestmark = pytest.mark.django_db


def _url(study: Study) -> str:
    return f"/api/v1/studies/{study.study_uid}/key-objects/"


def _images(study: Study) -> list[str]:
    return list(
        Instance.objects.filter(series__study=study, series__modality="CT")
        .order_by("instance_number")
        .values_list("sop_uid", flat=True)
    )


def _length(sop_uid: str, mm: float = 21.5) -> dict[str, Any]:
    return {"kind": "length", "sop_uid": sop_uid, "points": [[10, 12], [30, 40.5]], "length": mm, "label": "L1"}


def _post(client: Any, study: Study, body: dict[str, Any]) -> Any:
    # In English, so the reasons read as the test names them (the default language is zh-hans).
    return client.post(_url(study), data=json.dumps(body), content_type="application/json", HTTP_ACCEPT_LANGUAGE="en")


@pytest.fixture
def study(world: Any) -> Study:
    return store_ct_study(world.clin_a, slices=3)


@pytest.fixture
def reading(world: Any, study: Study) -> Any:
    return walk(world, Status.IN_PROGRESS, study=study)


def test_reader_saves_kos_and_sr_into_the_study_through_ingest(world: Any, study: Study, reading: Any) -> None:
    images = _images(study)
    response = _post(
        client_for(world.specialist), study, {"key_images": [images[1]], "measurements": [_length(images[2])]}
    )
    assert response.status_code == 201, response.content
    assert response.json()["key_images"] == [images[1]]
    assert response.json()["measurements"][0]["length"] == 21.5
    made = Instance.objects.filter(series__study=study, series__modality__in=["KO", "SR"]).select_related("series")
    assert sorted(i.series.modality for i in made) == ["KO", "SR"]
    assert {i.sop_class_uid for i in made} == {objects.KEY_OBJECT_SELECTION, objects.COMPREHENSIVE_SR}
    with storage.open_instance(made[0]) as handle:
        ds = pydicom.dcmread(handle)
    assert ds.StudyInstanceUID == study.study_uid and ds.PatientID == study.patient.patient_id
    assert AuditEvent.objects.filter(action="instance.store", detail__via="key-objects").count() == 2
    assert AuditEvent.objects.filter(action="study.key_objects.save", object_id=study.study_uid).count() == 1


def test_saving_again_supersedes_the_previous_documents(world: Any, study: Study, reading: Any) -> None:
    images = _images(study)
    client = client_for(world.specialist)
    assert _post(client, study, {"key_images": [images[0]], "measurements": [_length(images[0])]}).status_code == 201
    first_sr = Instance.objects.get(series__study=study, series__modality="SR")
    response = _post(client, study, {"key_images": [images[2], images[1]], "measurements": []})
    assert response.status_code == 201
    read = client.get(_url(study)).json()
    assert read["key_images"] == [images[2], images[1]] and read["measurements"] == []
    latest_sr = Instance.objects.filter(series__study=study, series__modality="SR").order_by("-instance_number")[0]
    assert latest_sr.instance_number == 2
    with storage.open_instance(latest_sr) as handle:
        ds = pydicom.dcmread(handle)
    predecessor = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first_sr.sop_uid


def test_each_reader_has_their_own_documents(world: Any, study: Study, reading: Any) -> None:
    images = _images(study)
    assert (
        _post(client_for(world.specialist), study, {"key_images": [images[0]], "measurements": []}).status_code == 201
    )
    assert _post(client_for(world.owner), study, {"key_images": [images[2]], "measurements": []}).status_code == 201
    assert client_for(world.specialist).get(_url(study)).json()["key_images"] == [images[0]]
    assert client_for(world.owner).get(_url(study)).json()["key_images"] == [images[2]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"key_images": ["1.2.3.4"], "measurements": []}, "No image"),
        ({"key_images": "x", "measurements": []}, "key_images"),
        ({"key_images": [], "measurements": [{"kind": "angle"}]}, "Each measurement names its image"),
        ({"key_images": [], "measurements": []}, "Nothing to save"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_writes_nothing(
    world: Any, study: Study, reading: Any, body: dict[str, Any], message: str
) -> None:
    response = _post(client_for(world.specialist), study, body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert not Instance.objects.filter(series__study=study, series__modality__in=["KO", "SR"]).exists()


def test_an_angle_is_saved_and_read_back_in_degrees(world: Any, study: Study, reading: Any) -> None:
    sop = _images(study)[1]
    angle = {"kind": "angle", "sop_uid": sop, "points": [[10, 40], [30, 12], [50, 40]], "angle": 71.1, "label": ""}
    client = client_for(world.specialist)
    assert _post(client, study, {"key_images": [], "measurements": [angle]}).status_code == 201
    (read,) = client.get(_url(study)).json()["measurements"]
    assert (read["kind"], read["sop_uid"], read["points"]) == ("angle", sop, [[10, 40], [30, 12], [50, 40]])
    assert read["angle"] == pytest.approx(71.1)
    two_points = {**angle, "points": [[10, 40], [30, 12]]}
    refused = _post(client, study, {"key_images": [], "measurements": [two_points]})
    assert refused.status_code == 400 and "3 points" in refused.json()["error"]["message"]


def test_length_without_two_points_or_a_number_is_refused(world: Any, study: Study, reading: Any) -> None:
    sop = _images(study)[0]
    client = client_for(world.specialist)
    bad_points = {**_length(sop), "points": [[1, 2]]}
    assert (
        "2 points" in _post(client, study, {"key_images": [], "measurements": [bad_points]}).json()["error"]["message"]
    )
    bad_value = {**_length(sop), "length": "long"}
    assert "number" in _post(client, study, {"key_images": [], "measurements": [bad_value]}).json()["error"]["message"]


def test_stranger_gets_404(world: Any, study: Study, reading: Any) -> None:
    client = client_for(world.stranger)
    assert client.get(_url(study)).status_code == 404
    assert _post(client, study, {"key_images": _images(study)[:1], "measurements": []}).status_code == 404


def test_colleague_of_the_owning_clinic_may_save(world: Any, study: Study) -> None:
    response = _post(client_for(world.colleague), study, {"key_images": _images(study)[:1], "measurements": []})
    assert response.status_code == 201


def test_specialist_not_reading_gets_404_and_one_who_claimed_after_signing_may_not_save(
    world: Any, study: Study
) -> None:
    walk(world, Status.COMPLETED, study=study)
    assert (
        _post(client_for(world.outsider_specialist), study, {"key_images": [], "measurements": []}).status_code == 404
    )
    reader = client_for(world.specialist)
    assert reader.get(_url(study)).json()["may_save"] is False
    assert _post(reader, study, {"key_images": _images(study)[:1], "measurements": []}).status_code == 403


def test_hospital_admin_sees_nothing_and_alliance_admin_gets_404(world: Any, study: Study, reading: Any) -> None:
    for doctor in (world.alliance_admin, world.hosp_admin):
        assert _post(client_for(doctor), study, {"key_images": [], "measurements": []}).status_code == 404


def test_anonymous_is_refused(study: Study) -> None:
    from django.test import Client

    assert Client().post(_url(study), data="{}", content_type="application/json").status_code in (401, 403)
