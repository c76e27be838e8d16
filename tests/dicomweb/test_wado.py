"""WADO-RS (PS3.18 10.4) through the Django test client: retrieval, metadata, frames, images."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import AuditEvent
from imaging import access, grants
from imaging.dicomweb.multipart import read_parts
from tests.dicomweb.conftest import BASE, store
from tests.imaging.dicomgen import make_ct_series

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'


def parts(response, tmp_path: Path) -> list[bytes]:  # type: ignore[no-untyped-def]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    # id() of a freed response can repeat within a test: a fresh folder every call instead.
    spool = Path(tempfile.mkdtemp(prefix="spool", dir=tmp_path))
    return [p.path.read_bytes() for p in read_parts(io.BytesIO(body), boundary, spool, max_part_bytes=1 << 30)]


def test_study_series_and_instance_come_back_byte_for_byte(owner_client, ct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = owner_client.get(ct.url, HTTP_ACCEPT=DICOM_MULTIPART)
    assert study.status_code == 200 and study.streaming
    assert study.headers["Content-Type"].startswith(DICOM_MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.1")
    body = b"".join(study.streaming_content)
    assert int(study.headers["Content-Length"]) == len(body)
    boundary = study.headers["Content-Type"].split("boundary=")[1].encode()
    assert [
        p.path.read_bytes() for p in read_parts(io.BytesIO(body), boundary, tmp_path, max_part_bytes=1 << 30)
    ] == ct.files
    stored = owner_client.get(ct.url, HTTP_ACCEPT=DICOM_MULTIPART + "; transfer-syntax=*")
    assert parts(stored, tmp_path) == ct.files
    assert parts(owner_client.get(f"{ct.url}/series/{ct.series}"), tmp_path) == ct.files
    assert parts(owner_client.get(ct.instance_url), tmp_path) == ct.files[:1]


def test_implicit_vr_is_sent_as_stored_or_transcoded_to_explicit_little_endian(
    alliance_world, owner_client, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16, transfer_syntax=ImplicitVRLittleEndian)
    [original] = store([ds], alliance_world.clin_a)
    url = f"{BASE}/studies/{ds.StudyInstanceUID}"
    assert parts(owner_client.get(url, HTTP_ACCEPT=DICOM_MULTIPART + "; transfer-syntax=*"), tmp_path) == [original]
    [default] = parts(owner_client.get(url, HTTP_ACCEPT=DICOM_MULTIPART), tmp_path)
    converted = dcmread(io.BytesIO(default))
    assert converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert converted.PixelData == ds.PixelData and converted.SOPInstanceUID == ds.SOPInstanceUID


def test_a_transfer_syntax_that_cannot_be_produced_is_406(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    jpeg = DICOM_MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.4.50"
    response = owner_client.get(ct.url, HTTP_ACCEPT=jpeg)
    assert response.status_code == 406
    assert "transfer-syntax=*" in response.json()["error"]["message"]
    assert owner_client.get(ct.url, HTTP_ACCEPT="application/dicom+json").status_code == 406


def test_metadata_matches_pydicom_json_with_pixel_data_as_bulk_uri(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{ct.url}/metadata")
    assert response.headers["Content-Type"] == "application/dicom+json"
    documents = __import__("json").loads(b"".join(response.streaming_content))
    assert len(documents) == 3
    first, expected = documents[0], ct.datasets[0].to_json_dict()
    pixel = first.pop("7FE00010")
    assert pixel["BulkDataURI"] == f"{settings.SITE_URL}{ct.instance_url}/bulk/7FE00010"
    expected.pop("7FE00010")
    assert first == expected


def test_bulk_data_uri_resolves_to_the_value(owner_client, ct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{ct.instance_url}/bulk/7FE00010", HTTP_ACCEPT=OCTETS)
    assert parts(response, tmp_path) == [ct.datasets[0].PixelData]
    assert owner_client.get(f"{ct.instance_url}/bulk/00100010").status_code == 404
    assert owner_client.get(f"{ct.instance_url}/bulk/nothex").status_code == 400


def test_frames_as_uncompressed_octets(owner_client, ct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{ct.instance_url}/frames/1", HTTP_ACCEPT=OCTETS)
    assert response.status_code == 200
    assert parts(response, tmp_path) == [ct.datasets[0].PixelData]
    assert owner_client.get(f"{ct.instance_url}/frames/0").status_code == 400
    assert owner_client.get(f"{ct.instance_url}/frames/x").status_code == 400
    assert owner_client.get(f"{ct.instance_url}/frames/2").status_code == 404


def test_uncompressed_frames_are_gzipped_for_a_client_that_accepts_it(owner_client, ct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    response = owner_client.get(f"{ct.instance_url}/frames/1", HTTP_ACCEPT=OCTETS, HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in response.headers["Vary"]
    body = gzip.decompress(response.content)
    assert len(response.content) < len(body)
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    [frame] = [p.path.read_bytes() for p in read_parts(io.BytesIO(body), boundary, tmp_path, max_part_bytes=1 << 30)]
    assert frame == ct.datasets[0].PixelData, "the exact pixels, not an approximation"
    plain = owner_client.get(f"{ct.instance_url}/frames/1", HTTP_ACCEPT=OCTETS)
    assert "Content-Encoding" not in plain.headers and "Accept-Encoding" in plain.headers["Vary"]


def test_compressed_frames_as_stored_or_decoded(alliance_world, owner_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    ds.compress(RLELossless)
    store([ds], alliance_world.clin_a)
    url = f"{BASE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
    rle = owner_client.get(url, HTTP_ACCEPT='multipart/related; type="image/dicom-rle"')
    assert rle.headers["Content-Type"].startswith('multipart/related; type="image/dicom-rle"')
    [stored] = parts(rle, tmp_path)
    assert stored[:4] != b"\x00\x00" * 2 and len(stored) < 16 * 16 * 2
    [raw] = parts(owner_client.get(url, HTTP_ACCEPT=OCTETS), tmp_path)
    assert np.array_equal(np.frombuffer(raw, dtype=np.uint16).reshape(16, 16), ds.pixel_array)
    assert owner_client.get(url, HTTP_ACCEPT='multipart/related; type="image/jp2"').status_code == 406
    as_stored = owner_client.get(url, HTTP_ACCEPT=OCTETS + "; transfer-syntax=*", HTTP_ACCEPT_ENCODING="gzip")
    assert as_stored.status_code == 200 and RLELossless in as_stored.headers["Content-Type"]
    assert "Content-Encoding" not in as_stored.headers, "compressed frames are sent as they are"


def test_frames_of_a_deflated_instance_are_labelled_as_the_native_pixels_they_are(  # type: ignore[no-untyped-def]
    alliance_world, owner_client, tmp_path
) -> None:
    [ds] = make_ct_series(1, 16, 16)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # the whole data set deflated, PS3.5 A.5
    store([ds], alliance_world.clin_a)
    url = f"{BASE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
    for accept in (OCTETS, OCTETS + "; transfer-syntax=*"):
        response = owner_client.get(url, HTTP_ACCEPT=accept)
        assert response.status_code == 200, accept
        assert DeflatedExplicitVRLittleEndian not in response.headers["Content-Type"], accept
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert f"transfer-syntax={ExplicitVRLittleEndian}".encode() in body, accept
        boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
        spool = Path(tempfile.mkdtemp(prefix="spool", dir=tmp_path))
        [frame] = [p.path.read_bytes() for p in read_parts(io.BytesIO(body), boundary, spool, max_part_bytes=1 << 30)]
        assert frame == ds.PixelData, "the frame is the native pixels, not deflated bytes"


def test_rendered_jpeg_and_png_with_window_viewport_quality(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    jpeg = owner_client.get(f"{ct.instance_url}/rendered", {"window": "40,400", "viewport": "32,32", "quality": "70"})
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (32, 32)
    png = owner_client.get(f"{ct.instance_url}/frames/1/rendered", HTTP_ACCEPT="image/png")
    assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    for bad in ({"window": "40"}, {"viewport": "0,10"}, {"quality": "101"}, {"window": "a,b"}):
        assert owner_client.get(f"{ct.instance_url}/rendered", bad).status_code == 400
    assert owner_client.get(f"{ct.instance_url}/rendered", HTTP_ACCEPT="image/gif").status_code == 406


def test_thumbnails_of_study_series_and_instance(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    for url in (ct.url, f"{ct.url}/series/{ct.series}", ct.instance_url):
        response = owner_client.get(f"{url}/thumbnail")
        assert response.status_code == 200 and response.content.startswith(b"\xff\xd8")


ROUTES = [
    "{url}",
    "{url}/metadata",
    "{url}/thumbnail",
    "{url}/series/{series}",
    "{url}/series/{series}/metadata",
    "{instance}",
    "{instance}/metadata",
    "{instance}/rendered",
    "{instance}/frames/1",
    "{instance}/bulk/7FE00010",
]


def test_another_clinic_gets_404_on_every_route_until_a_grant(alliance_world, stranger_client, ct) -> None:  # type: ignore[no-untyped-def]
    urls = [r.format(url=ct.url, series=ct.series, instance=ct.instance_url) for r in ROUTES]
    assert [stranger_client.get(u).status_code for u in urls] == [404] * len(urls)
    missing = stranger_client.get(f"{BASE}/studies/1.2.3.4.5")
    assert missing.status_code == 404 and missing.json() == stranger_client.get(ct.url).json()
    study = access.get_study_for(resolve_principal(alliance_world.owner.user), ct.study)
    grants.grant_study(
        study=study, grantee=grants.Grantee.institution(alliance_world.clin_b), basis="consult:9", by=audit.SYSTEM
    )
    assert [stranger_client.get(u).status_code for u in urls] == [200] * len(urls)


def test_one_audit_event_per_retrieval_with_its_basis(alliance_world, owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    before = AuditEvent.objects.count()
    b"".join(owner_client.get(ct.url).streaming_content)
    [event] = AuditEvent.objects.order_by("-pk")[: AuditEvent.objects.count() - before]
    assert (event.action, event.object_id, event.basis) == ("dicomweb.retrieve", ct.study, "own-institution")
    assert event.detail["instances"] == 3


@pytest.mark.parametrize("suffix", ["", "/metadata"])
def test_unknown_series_or_instance_is_404(owner_client, ct, suffix) -> None:  # type: ignore[no-untyped-def]
    assert owner_client.get(f"{ct.url}/series/9.9.9{suffix}").status_code == 404
    assert owner_client.get(f"{ct.url}/series/{ct.series}/instances/9.9.9{suffix}").status_code == 404


@pytest.mark.parametrize(
    "route",
    ["{instance}/frames/1", "{instance}/rendered", "{instance}/frames/1/rendered", "{url}/thumbnail"],
)
def test_privately_cached_pixels_vary_with_the_cookie_and_the_token(owner_client, ct, route) -> None:  # type: ignore[no-untyped-def]
    """A browser keeps its copy per credential: after another sign-in, or with another token,
    it asks again and the access check runs."""
    response = owner_client.get(route.format(url=ct.url, instance=ct.instance_url))
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    vary = {v.strip().lower() for v in response.headers["Vary"].split(",")}
    assert {"cookie", "authorization"} <= vary
