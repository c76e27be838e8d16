"""Stored but awkward: instances that are kept as received yet cannot be served whole.

Elements pydicom cannot decode, sequences nested past any sane depth, pixel data that does
not match its transfer syntax, stored files that have gone. Each answer leaves out what it
cannot serve (audited), and never starts a 200 that breaks off.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
from django.urls import reverse
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from alliance import audit
from alliance.models import AuditEvent
from imaging import ingest, storage, tasks
from imaging.dicomweb.dicomjson import nests_deeper
from imaging.dicomweb.multipart import read_parts
from imaging.models import Instance
from tests.conftest import client_for
from tests.dicomweb.conftest import BASE, store
from tests.imaging.dicomgen import make_ct_series, part10_bytes

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
UNKNOWN_VR = (0x00181000, b"ZZ", b"ABCD")  # Device Serial Number with a VR no standard has
BAD_DS = (0x00180050, b"DS", b"abc\\1e9x")  # Slice Thickness: not numbers
BAD_IS = (0x00200013, b"IS", b"1.5x")  # Instance Number: not an integer


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def nested(depth: int) -> bytes:
    """A Content Sequence nested `depth` deep, every length defined (what ingest steps over)."""
    value = b""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(value)) + value
        value = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
    return value


def with_elements(ds: Any, *encoded: bytes) -> bytes:
    """ds as PS3.10 with raw elements written in front of its pixel data."""
    data = part10_bytes(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return data[:at] + b"".join(encoded) + data[at:]


def keep(data: bytes, institution: Any) -> None:
    ingest.ingest_bytes(data, institution=institution, actor=audit.SYSTEM, via="test")


def urls(ds: Any) -> tuple[str, str]:
    study = f"{BASE}/studies/{ds.StudyInstanceUID}"
    return study, f"{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def metadata(client, url: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get(f"{url}/metadata")
    assert response.status_code == 200
    return json.loads(b"".join(response.streaming_content))


def remove_file(sop_uid: str) -> None:
    path = storage.local_path(Instance.objects.get(sop_uid=sop_uid))
    assert path is not None
    path.unlink()


def unservable_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, outcome=AuditEvent.Outcome.FAILURE).order_by("pk"))


@pytest.mark.parametrize(("tag", "vr", "value"), [UNKNOWN_VR, BAD_DS, BAD_IS])
def test_an_element_that_cannot_be_rendered_is_left_out_of_the_metadata(
    alliance_world, owner_client, tag, vr, value, caplog
) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    keep(with_elements(ds, element(tag, vr, value)), alliance_world.clin_a)
    [document] = metadata(owner_client, urls(ds)[1])
    assert f"{tag:08X}" not in document
    assert document["00080018"]["Value"] == [ds.SOPInstanceUID] and document["00100020"]["Value"] == ["P1001"]
    assert "leaves out elements" in caplog.text


def test_sequences_nested_thousands_deep_are_left_out_not_recursed_into(alliance_world, owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    keep(with_elements(ds, nested(3000)), alliance_world.clin_a)
    [document] = metadata(owner_client, urls(ds)[1])
    assert "0040A730" not in document and document["00080018"]["Value"] == [ds.SOPInstanceUID]


def test_sequences_nested_a_few_deep_are_rendered_whole(alliance_world, owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    keep(with_elements(ds, nested(5)), alliance_world.clin_a)
    [document] = metadata(owner_client, urls(ds)[1])
    depth, value = 0, document["0040A730"]
    while value.get("Value"):
        depth, value = depth + 1, value["Value"][0].get("0040A730", {})
    assert depth == 5


def test_the_depth_scan_counts_levels_without_recursion() -> None:
    value = nested(40)[12:]  # the outer sequence's value
    assert nests_deeper(value, implicit=False, little=True, limit=32)
    assert not nests_deeper(nested(10)[12:], implicit=False, little=True, limit=32)
    assert not nests_deeper(b"\x01\x02", implicit=False, little=True, limit=1), "malformed: pydicom decides"


def test_study_metadata_and_retrieval_leave_out_a_missing_file_and_stay_whole(
    alliance_world, owner_client, ct, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    remove_file(ct.sops[1])
    documents = metadata(owner_client, ct.url)
    assert [d["00080018"]["Value"][0] for d in documents] == [ct.sops[0], ct.sops[2]]
    response = owner_client.get(ct.url, HTTP_ACCEPT=DICOM_MULTIPART + "; transfer-syntax=*")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert int(response.headers["Content-Length"]) == len(body)
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    parts = [p.path.read_bytes() for p in read_parts(io.BytesIO(body), boundary, tmp_path, max_part_bytes=1 << 30)]
    assert parts == [ct.files[0], ct.files[2]]
    events = unservable_events("instance.missing")
    assert [(e.object_id, e.detail["via"]) for e in events] == [
        (ct.sops[1], "dicomweb.metadata"),
        (ct.sops[1], "dicomweb.retrieve"),
    ]


def test_a_file_gone_while_a_transcoded_study_streams_is_left_out(alliance_world, owner_client, ct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pydicom.uid import ImplicitVRLittleEndian

    [implicit] = make_ct_series(1, 16, 16, transfer_syntax=ImplicitVRLittleEndian, study_uid=ct.study)
    store([implicit], alliance_world.clin_a)
    response = owner_client.get(ct.url, HTTP_ACCEPT=DICOM_MULTIPART)  # transcoded: no Content-Length
    remove_file(ct.sops[0])  # after the answer started: found when its part is due
    body = b"".join(response.streaming_content)
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    parts = read_parts(io.BytesIO(body), boundary, tmp_path, max_part_bytes=1 << 30)
    assert len(parts) == 3
    assert [e.object_id for e in unservable_events("instance.missing")] == [ct.sops[0]]


def test_an_instance_whose_file_is_gone_is_404_on_every_route(alliance_world, owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    remove_file(ct.sops[0])
    instance = ct.instance_url
    routes = ["", "/metadata", "/frames/1", "/rendered", "/bulk/7FE00010", "/thumbnail"]
    assert [owner_client.get(instance + r).status_code for r in routes] == [404] * len(routes)
    assert len(unservable_events("instance.missing")) == len(routes)


def undecodable(alliance_world) -> Any:  # type: ignore[no-untyped-def]
    """Native pixels under a declared RLE transfer syntax: accepted as sent, never decodable."""
    [ds] = make_ct_series(1, 16, 16)
    data = part10_bytes(ds)
    explicit = ExplicitVRLittleEndian.encode() + b"\x00"
    assert len(RLELossless) == len(ExplicitVRLittleEndian)  # the file meta keeps its length
    keep(data.replace(explicit, RLELossless.encode() + b"\x00", 1), alliance_world.clin_a)
    return ds


def test_pixels_that_cannot_be_decoded_get_404s_a_placeholder_and_no_task_failure(alliance_world, owner_client) -> None:  # type: ignore[no-untyped-def]
    ds = undecodable(alliance_world)
    study, instance = urls(ds)
    assert metadata(owner_client, instance)[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
    for route in ("/frames/1", "/rendered", "/thumbnail"):
        assert owner_client.get(instance + route, HTTP_ACCEPT="*/*").status_code == 404, route
    assert tasks.render_instance(Instance.objects.get(sop_uid=ds.SOPInstanceUID).pk) is False
    page = client_for(alliance_world.owner)
    thumbnail = page.get(reverse("imaging:thumbnail", args=[ds.StudyInstanceUID, ds.SeriesInstanceUID]))
    assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/svg+xml"
    assert page.get(reverse("imaging:study_detail", args=[ds.StudyInstanceUID])).status_code == 200
    assert page.get(reverse("viewer:study", args=[ds.StudyInstanceUID])).status_code == 200


def test_the_viewer_page_opens_when_its_first_slice_is_gone(alliance_world, ct) -> None:  # type: ignore[no-untyped-def]
    for sop in ct.sops:
        remove_file(sop)
    page = client_for(alliance_world.owner)
    response = page.get(reverse("viewer:study", args=[ct.study]))
    assert response.status_code == 200
    thumbnail = page.get(reverse("imaging:thumbnail", args=[ct.study, ct.series]))
    assert thumbnail.headers["Content-Type"] == "image/svg+xml"
    assert unservable_events("instance.missing")


def test_the_render_task_survives_a_missing_file(alliance_world, ct) -> None:  # type: ignore[no-untyped-def]
    remove_file(ct.sops[0])
    ids = list(Instance.objects.order_by("instance_number").values_list("pk", flat=True))
    assert tasks.render_instances(ids) == 2


def test_a_sane_file_is_unchanged_by_all_this(owner_client, ct) -> None:  # type: ignore[no-untyped-def]
    [document] = metadata(owner_client, ct.instance_url)
    expected = ct.datasets[0].to_json_dict()
    expected.pop("7FE00010")
    document.pop("7FE00010")
    assert document == expected


def test_a_search_with_the_database_away_is_503_with_retry_after(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    from imaging.dicomweb import qido

    def away(*args: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(qido.query, "find", away)
    response = owner_client.get(f"{BASE}/studies")
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["message"]
