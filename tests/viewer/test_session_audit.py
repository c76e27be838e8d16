"""The viewer's image reads are covered by its one "study.view" event (imaging.viewer.session)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from alliance.models import AuditEvent
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def frame_url(study: Any) -> str:
    instance = study.series.get().instances.first()
    return (
        f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}/instances/{instance.sop_uid}/frames/1"
    )


def dicomweb_events(study: Any) -> list[str]:
    rows = AuditEvent.objects.filter(object_id=study.study_uid, action__startswith="dicomweb.")
    return list(rows.values_list("action", flat=True))


def test_frames_read_after_opening_the_viewer_write_no_event_each(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.owner)
    client.get(reverse("viewer:study", args=[ct_study.study_uid]))
    for _ in range(3):
        assert (
            client.get(frame_url(ct_study), HTTP_ACCEPT="multipart/related; type=application/octet-stream").status_code
            == 200
        )
    assert dicomweb_events(ct_study) == []
    assert AuditEvent.objects.filter(action="study.view", object_id=ct_study.study_uid).count() == 1


def test_frames_read_without_opening_the_viewer_are_audited(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.colleague)
    client.get(frame_url(ct_study), HTTP_ACCEPT="multipart/related; type=application/octet-stream")
    assert dicomweb_events(ct_study) == ["dicomweb.frames"]


def test_whole_file_downloads_stay_audited_after_opening(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.owner)
    client.get(reverse("viewer:study", args=[ct_study.study_uid]))
    response = client.get(
        f"/dicomweb/studies/{ct_study.study_uid}", HTTP_ACCEPT="multipart/related; type=application/dicom"
    )
    b"".join(response.streaming_content)
    assert dicomweb_events(ct_study) == ["dicomweb.retrieve"]
