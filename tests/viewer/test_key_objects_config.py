"""The viewer page tells its script where the user's key images are kept and which image is
the first key image (the start index the viewer opens on)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from imaging import key_objects
from imaging.dicom import objects
from imaging.models import Instance, Study
from tests.conftest import client_for
from tests.factories import store_ct_study
from tests.viewer.test_views import config_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(alliance_world: Any) -> Study:
    return store_ct_study(alliance_world.clin_a, slices=3)


def _page_config(doctor: Any, study: Study) -> dict[str, Any]:
    response = client_for(doctor).get(reverse("viewer:study", args=[study.study_uid]))
    assert response.status_code == 200
    return config_of(response.content.decode())


def test_without_key_images_the_page_names_none(alliance_world: Any, study: Study) -> None:
    config = _page_config(alliance_world.owner, study)["key_objects"]
    assert config["first"] is None
    assert config["url"] == f"/api/v1/studies/{study.study_uid}/key-objects/" and config["csrf"]
    assert config["strings"]["save"]


def test_first_key_image_is_the_users_own_else_another_readers(alliance_world: Any, study: Study) -> None:
    images = list(Instance.objects.filter(series__study=study).order_by("instance_number"))
    saved = client_for(alliance_world.colleague).post(
        f"/api/v1/studies/{study.study_uid}/key-objects/",
        data=json.dumps({"key_images": [images[2].sop_uid, images[0].sop_uid], "measurements": []}),
        content_type="application/json",
    )
    assert saved.status_code == 201
    expected = {"sop_uid": images[2].sop_uid, "series_uid": images[2].series.series_uid}
    assert _page_config(alliance_world.colleague, study)["key_objects"]["first"] == expected
    assert _page_config(alliance_world.owner, study)["key_objects"]["first"] == expected


def test_the_first_key_image_is_found_reading_one_file(alliance_world: Any, study: Study, monkeypatch: Any) -> None:
    images = list(Instance.objects.filter(series__study=study).order_by("instance_number"))
    saved = client_for(alliance_world.colleague).post(
        f"/api/v1/studies/{study.study_uid}/key-objects/",
        data=json.dumps({"key_images": [images[1].sop_uid], "measurements": []}),
        content_type="application/json",
    )
    assert saved.status_code == 201
    real = key_objects._read
    read: list[str] = []

    def counted(instance: Instance) -> Any:
        read.append(instance.sop_class_uid)
        return real(instance)

    monkeypatch.setattr(key_objects, "_read", counted)
    expected = {"sop_uid": images[1].sop_uid, "series_uid": images[1].series.series_uid}
    for reader in (alliance_world.colleague, alliance_world.owner):
        read.clear()
        assert key_objects.first_key_image(study, reader.user.pk) == expected
        assert read == [objects.KEY_OBJECT_SELECTION]
