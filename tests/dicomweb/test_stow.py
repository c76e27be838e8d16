"""STOW-RS (PS3.18 10.5) through the Django test client: statuses, response body, bad input."""

from __future__ import annotations

import errno
import io
import struct
import threading
from xml.etree import ElementTree

import pytest
from django.conf import settings

from alliance.models import AuditEvent
from imaging.models import Instance, Study
from tests.dicomweb.conftest import BASE, token_client
from tests.imaging.dicomgen import make_ct_series, part10_bytes

BOUNDARY = "stow-boundary-1"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> bytes:
    return typed_multipart([(part_type, part) for part in parts])


def typed_multipart(parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for part_type, part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(client, url: str, body: bytes, content_type: str = CONTENT_TYPE):  # type: ignore[no-untyped-def]
    return client.generic("POST", url, body, content_type=content_type, HTTP_ACCEPT="application/dicom+json")


def referenced(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [item["00081155"]["Value"][0] for item in response.json().get("00081199", {}).get("Value", [])]


def failures(response) -> list[int]:  # type: ignore[no-untyped-def]
    return [item["00081197"]["Value"][0] for item in response.json().get("00081198", {}).get("Value", [])]


def test_all_stored_is_200_with_references_and_exact_media_type(alliance_world, owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert referenced(response) == [ds.SOPInstanceUID for ds in datasets]
    body = response.json()
    assert body["00081190"]["Value"] == [f"{settings.SITE_URL}{BASE}/studies/{datasets[0].StudyInstanceUID}"]
    study = Study.objects.get(study_uid=datasets[0].StudyInstanceUID)
    assert study.institution == alliance_world.clin_a and study.num_instances == 2


def test_a_chunked_body_is_read_from_the_raw_input(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    body = multipart([part10_bytes(ds) for ds in datasets])
    response = owner_client.generic(
        "POST",
        f"{BASE}/studies",
        b"",
        content_type=CONTENT_TYPE,
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body)},
    )
    assert response.status_code == 200
    assert referenced(response) == [ds.SOPInstanceUID for ds in datasets]


def test_storing_into_a_named_study_refuses_other_studies_with_409(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    response = post(owner_client, f"{BASE}/studies/1.2.3.999", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 409
    assert failures(response) == [0xA900, 0xA900]
    assert response.json()["00081198"]["Value"][0]["00081155"]["Value"] == [datasets[0].SOPInstanceUID]
    assert not Instance.objects.exists()


def test_some_stored_some_not_is_202_with_failure_reasons(owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    response = post(
        owner_client, f"{BASE}/studies/{ds.StudyInstanceUID}", multipart([part10_bytes(ds), b"not dicom at all"])
    )
    assert response.status_code == 202
    assert referenced(response) == [ds.SOPInstanceUID]
    assert failures(response) == [0xC000]
    assert "Warning" in response.headers
    assert Instance.objects.count() == 1


def test_a_part_of_another_media_type_fails_alone(owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    body = typed_multipart([("application/dicom", part10_bytes(ds)), ("application/json", b"{}")])
    response = post(owner_client, f"{BASE}/studies", body)
    assert response.status_code == 202 and failures(response) == [0xC000]


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=x', "text/plain"],
)
def test_wrong_media_type_is_415(owner_client, content_type) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    assert post(owner_client, f"{BASE}/studies", part10_bytes(ds), content_type).status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"--stow-boundary-1--\r\n",
        b"no boundary anywhere",
        b"--stow-boundary-1\r\nContent-Type: application/dicom\r\n\r\ntruncated without a closing line",
    ],
)
def test_empty_or_malformed_body_is_400_and_stores_nothing(owner_client, body) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    truncated = multipart([part10_bytes(ds)])[:-30] if body.startswith(b"--stow-boundary-1\r\n") else body
    response = post(owner_client, f"{BASE}/studies", truncated)
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert not Instance.objects.exists()


def test_missing_boundary_is_400(owner_client) -> None:  # type: ignore[no-untyped-def]
    response = post(owner_client, f"{BASE}/studies", b"x", 'multipart/related; type="application/dicom"')
    assert response.status_code == 400


def test_storing_again_is_idempotent(owner_client) -> None:  # type: ignore[no-untyped-def]
    body = multipart([part10_bytes(ds) for ds in make_ct_series(1, 16, 16)])
    assert post(owner_client, f"{BASE}/studies", body).status_code == 200
    assert post(owner_client, f"{BASE}/studies", body).status_code == 200
    assert Instance.objects.count() == 1


def test_who_may_store(alliance_world, client) -> None:  # type: ignore[no-untyped-def]
    body = multipart([part10_bytes(ds) for ds in make_ct_series(1, 16, 16)])
    assert post(client, f"{BASE}/studies", body).status_code == 401
    assert post(token_client(alliance_world.alliance_admin), f"{BASE}/studies", body).status_code == 403
    assert not Instance.objects.exists()


def test_another_clinics_study_uid_is_refused(alliance_world, owner_client, stranger_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    assert post(owner_client, f"{BASE}/studies", multipart([part10_bytes(datasets[0])])).status_code == 200
    response = post(stranger_client, f"{BASE}/studies", multipart([part10_bytes(datasets[1])]))
    assert response.status_code == 409
    assert Instance.objects.count() == 1


def test_one_audit_event_for_the_request(owner_client) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(3, 16, 16)
    post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    [event] = AuditEvent.objects.filter(action="dicomweb.store")
    assert event.object_id == datasets[0].StudyInstanceUID and event.detail["stored"] == 3


# --- every outcome is a PS3.18 answer, never a 500 --------------------------------------


class Broken(io.RawIOBase):
    """A request body whose reads fail as a server's input does: bad chunked framing, a stall."""

    def __init__(self, error: BaseException, after: bytes = b"") -> None:
        self.error, self.after = error, after

    def read(self, size: int = -1) -> bytes:
        if self.after:
            chunk, self.after = self.after, b""
            return chunk
        raise self.error


def post_stream(client, stream, **extra):  # type: ignore[no-untyped-def]
    return client.generic(
        "POST",
        f"{BASE}/studies",
        b"",
        content_type=CONTENT_TYPE,
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream},
        **extra,
    )


def test_a_missing_content_type_is_415_with_a_reason(owner_client) -> None:  # type: ignore[no-untyped-def]
    body = multipart([part10_bytes(ds) for ds in make_ct_series(1, 16, 16)])
    response = owner_client.generic("POST", f"{BASE}/studies", body, content_type="")
    assert response.status_code == 415
    assert "multipart/related" in response.json()["error"]["message"]


def test_bad_chunked_framing_is_400_and_a_stalled_body_408(owner_client) -> None:  # type: ignore[no-untyped-def]
    from gunicorn.http.errors import InvalidChunkSize

    start = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nDICM".encode()
    framing = post_stream(owner_client, Broken(InvalidChunkSize(b"zz"), after=start))
    assert framing.status_code == 400 and "could not be read" in framing.json()["error"]["message"]
    stalled = post_stream(owner_client, Broken(TimeoutError("timed out"), after=start))
    assert stalled.status_code == 408
    assert not Instance.objects.exists()


def test_a_part_that_defeats_the_uid_reader_still_gets_its_failure_item(owner_client) -> None:  # type: ignore[no-untyped-def]
    [ds] = make_ct_series(1, 16, 16)
    response = post(owner_client, f"{BASE}/studies", multipart([nested_undefined_length(ds, 3000)]))
    assert response.status_code == 409
    [item] = response.json()["00081198"]["Value"]
    assert item["00081197"]["Value"] == [0xC000]
    assert item["00081150"]["Value"] == [ds.SOPClassUID], "named from the file meta, not the data set"


def nested_undefined_length(ds, depth: int) -> bytes:  # type: ignore[no-untyped-def]
    """ds as PS3.10 with a sequence nested `depth` deep (undefined lengths) before its pixels."""
    item, item_end = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF), struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    head, end = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF), struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = b""
    for _ in range(depth):
        nested = head + item + nested + item_end + end
    data = part10_bytes(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return data[:at] + nested + data[at:]


def fail_after(monkeypatch, successes: int, error: BaseException) -> list[str]:  # type: ignore[no-untyped-def]
    """ingest_path works `successes` times, then raises `error`; the stored SOP UIDs are listed."""
    from imaging import ingest

    original, stored, started = ingest.ingest_path, [], []
    lock = threading.Lock()

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            started.append(1)
            if len(started) > successes:
                raise error
        result = original(*args, **kwargs)
        with lock:
            stored.append(result.instance.sop_uid)
        return result

    monkeypatch.setattr(ingest, "ingest_path", flaky)
    return stored


def test_database_lost_mid_request_lists_the_stored_parts_and_fails_the_rest(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.db import InterfaceError

    datasets = make_ct_series(6, 16, 16)
    stored = fail_after(monkeypatch, 2, InterfaceError("connection already closed"))
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 202
    assert referenced(response) == stored == [ds.SOPInstanceUID for ds in datasets[:2]]
    assert set(Instance.objects.values_list("sop_uid", flat=True)) == set(stored)
    failed = response.json()["00081198"]["Value"]
    assert [f["00081155"]["Value"][0] for f in failed] == [ds.SOPInstanceUID for ds in datasets[2:]]
    assert failures(response) == [0xA700] * 4
    assert int(response.headers["Retry-After"]) > 0


def test_parts_of_a_series_are_stored_together_and_a_bad_one_fails_alone(
    transactional_db, alliance_world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Outside a transaction the parts go through ingest_paths: the first of the new series
    alone (it makes the parents), the further good ones in one commit; the bad part is
    reported, audited as refused, and costs the others nothing."""
    from imaging import index
    from imaging.storage import local_path

    together, original = [], index.write_series

    def spy(received, *args, **kwargs):  # type: ignore[no-untyped-def]
        together.append([r.attributes.sop_uid for r in received])
        return original(received, *args, **kwargs)

    monkeypatch.setattr(index, "write_series", spy)
    datasets = make_ct_series(5, 16, 16)
    files = [part10_bytes(ds) for ds in datasets]
    body = multipart([*files[:2], b"not dicom at all", *files[2:]])
    response = post(token_client(alliance_world.owner), f"{BASE}/studies", body)
    sops = [ds.SOPInstanceUID for ds in datasets]
    assert response.status_code == 202
    assert referenced(response) == sops and failures(response) == [0xC000]
    assert together == [sops[1:]]
    assert sorted(Instance.objects.values_list("sop_uid", flat=True)) == sorted(sops)
    assert all(local_path(i).read_bytes() == files[sops.index(i.sop_uid)] for i in Instance.objects.all())
    study = Study.objects.get(study_uid=datasets[0].StudyInstanceUID)
    assert study.num_instances == 5 and study.series.get().num_instances == 5
    events = AuditEvent.objects.filter(action="instance.store")
    assert sorted(e.object_id for e in events.filter(outcome=AuditEvent.Outcome.SUCCESS)) == sorted(sops)
    assert events.filter(outcome=AuditEvent.Outcome.FAILURE).count() == 1


def test_the_database_lost_while_a_batch_commits_leaves_none_of_it(
    transactional_db, alliance_world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The connection dies inside the one statement that indexes the batch (after the counters
    and the audit events, before the instance rows): none of the batch is indexed, none of its
    files is left in the store, and the answer fails each of them with 0xA700 and Retry-After."""
    from imaging import index, storage

    original = index._insert_instances_sql

    def dies_midway(instances, *args, **kwargs):  # type: ignore[no-untyped-def]
        sql, params = original(instances, *args, **kwargs)
        if len(instances) == 1:  # the first of the series, stored alone
            return sql, params
        return "SELECT pg_terminate_backend(pg_backend_pid()); " + sql, params

    monkeypatch.setattr(index, "_insert_instances_sql", dies_midway)
    datasets = make_ct_series(6, 16, 16)
    response = post(
        token_client(alliance_world.owner), f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets])
    )
    sops = [ds.SOPInstanceUID for ds in datasets]
    assert response.status_code == 202 and int(response.headers["Retry-After"]) > 0
    assert referenced(response) == sops[:1]  # the first of the series, stored alone
    assert failures(response) == [0xA700] * 5
    assert [f["00081155"]["Value"][0] for f in response.json()["00081198"]["Value"]] == sops[1:]
    assert list(Instance.objects.values_list("sop_uid", flat=True)) == sops[:1]
    study = Study.objects.get(study_uid=datasets[0].StudyInstanceUID)
    assert study.num_instances == 1 and study.series.get().num_instances == 1
    assert not AuditEvent.objects.filter(action="instance.store", object_id__in=sops[1:], outcome="success").exists()
    store = storage.local_path(Instance.objects.get()).parent
    assert sorted(store.iterdir()) == [storage.local_path(Instance.objects.get())]


def test_database_away_from_the_first_part_is_503_with_every_part_failed(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    datasets = make_ct_series(3, 16, 16)
    fail_after(monkeypatch, 0, OperationalError("server closed the connection unexpectedly"))
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert failures(response) == [0xA700] * 3 and referenced(response) == []


def test_database_away_before_the_body_is_read_is_503(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    from imaging.dicomweb import stow

    def away(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(stow.access, "upload_institution_of", away)
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(make_ct_series(1, 16, 16)[0])]))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["message"]


def test_an_unexpected_error_on_one_part_fails_that_part_alone(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(2, 16, 16)
    fail_after(monkeypatch, 1, KeyError("something unforeseen"))
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(ds) for ds in datasets]))
    assert response.status_code == 202
    assert referenced(response) == [datasets[0].SOPInstanceUID] and failures(response) == [0x0110]


def test_a_full_disk_while_spooling_is_507(owner_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from imaging.dicomweb import stow

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stow.tempfile, "TemporaryDirectory", full)
    response = post(owner_client, f"{BASE}/studies", multipart([part10_bytes(make_ct_series(1, 16, 16)[0])]))
    assert response.status_code == 507 and "Retry-After" in response.headers


def test_the_response_is_dicom_xml_when_asked(owner_client) -> None:  # type: ignore[no-untyped-def]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from dicomweb_client.web import _load_xml_dataset

    [ds] = make_ct_series(1, 16, 16)
    body = multipart([part10_bytes(ds), b"not dicom"])
    response = owner_client.generic(
        "POST", f"{BASE}/studies", body, content_type=CONTENT_TYPE, HTTP_ACCEPT="application/dicom+xml"
    )
    assert response.status_code == 202 and response.headers["Content-Type"] == "application/dicom+xml"
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own answer
    assert root.tag == "{http://dicom.nema.org/PS3.19/models/NativeDICOM}NativeDicomModel"
    parsed = _load_xml_dataset(root)
    assert [item.ReferencedSOPInstanceUID for item in parsed.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert [int(item.FailureReason) for item in parsed.FailedSOPSequence] == [0xC000]


def test_bodies_over_the_caps_are_413(owner_client, settings) -> None:  # type: ignore[no-untyped-def]
    datasets = make_ct_series(3, 16, 16)
    body = multipart([part10_bytes(ds) for ds in datasets])
    settings.DICOMWEB_MAX_PARTS = 2
    assert post(owner_client, f"{BASE}/studies", body).status_code == 413
    settings.DICOMWEB_MAX_PARTS = 100
    settings.DICOMWEB_MAX_BODY_BYTES = len(body) - 1
    declared = post(owner_client, f"{BASE}/studies", body)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]["message"]
    assert post_stream(owner_client, io.BytesIO(body)).status_code == 413, "a chunked body has no declared length"
    assert not Instance.objects.exists()


def test_a_warning_header_never_carries_control_characters() -> None:
    from imaging.dicomweb.stow import _header_safe

    assert _header_safe('bad "value"\r\nX-Injected: 1\x00') == "bad 'value'  X-Injected: 1 "
