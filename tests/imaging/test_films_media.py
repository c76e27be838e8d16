"""Through a verified film link: the viewer's DICOMweb answers from the stored files, and
"download for another hospital" streams the DICOM media ZIP (imaging.media), audited."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse
from pydicom import dcmread

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from imaging import films
from tests.factories import store_ct_study


def _opened(world: Any, slices: int = 3) -> tuple[Client, films.Issued, Any]:
    study = store_ct_study(world.clin_a, slices=slices)
    made = films.film_create(studies=[study], by=resolve_principal(world.owner.user), verify="dob")
    client = Client()
    assert client.post(made.path, {"answer": "1960-01-01"}).status_code == 303
    return client, made, study


def test_the_link_downloads_its_studies_as_streamed_dicom_media(alliance_world: Any) -> None:
    client, made, study = _opened(alliance_world)
    response = client.get(reverse("films:download", args=[made.handle]))
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/zip" and "attachment" in response["Content-Disposition"]
    assert response["Cache-Control"].startswith("no-store") and response["Referrer-Policy"] == "no-referrer"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))  # type: ignore[arg-type]
    names = archive.namelist()
    assert "DICOMDIR" in names and sum(n.startswith("DICOM/") for n in names) == 3
    assert dcmread(io.BytesIO(archive.read("DICOMDIR"))).DirectoryRecordSequence
    event = AuditEvent.objects.get(action="film.download")
    assert event.actor_type == "share" and event.actor_id == str(made.link.pk)
    assert event.object_id == study.study_uid


def test_the_viewer_reads_metadata_and_frames_through_the_links_dicomweb(alliance_world: Any) -> None:
    client, made, study = _opened(alliance_world)
    base = f"/film/{made.handle}/dicomweb/studies/{study.study_uid}"
    metadata = client.get(base + "/metadata", HTTP_ACCEPT="application/dicom+json")
    assert metadata.status_code == 200 and metadata["Cache-Control"].startswith("no-store")
    first = json.loads(b"".join(metadata.streaming_content))[0]  # type: ignore[arg-type]
    found = client.get(f"/film/{made.handle}/dicomweb/studies", HTTP_ACCEPT="application/dicom+json")
    retrieve_url = json.loads(found.content)[0]["00081190"]["Value"][0]
    assert retrieve_url.endswith(f"/film/{made.handle}/dicomweb/studies/{study.study_uid}")  # its own base
    series, sop = first["0020000E"]["Value"][0], first["00080018"]["Value"][0]
    frames = client.get(
        f"{base}/series/{series}/instances/{sop}/frames/1",
        HTTP_ACCEPT="multipart/related; type=application/octet-stream",
    )
    assert frames.status_code == 200
    # One viewing, one event: the frames the viewer fetches are part of the page's "study.view".
    page = client.get(reverse("films:study", args=[made.handle, study.study_uid]))
    assert page.status_code == 200 and b'"layout": "touch"' in page.content
    assert not AuditEvent.objects.filter(action="dicomweb.frames").exists()
