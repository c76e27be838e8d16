"""Issue 16, item 9: an institution admin moves a misfiled series to the right study of the
same patient. The files are rewritten with the new Study Instance UID through the storage
layer (the old ones removed only after the commit), the counts follow, QIDO-RS, WADO-RS
metadata and C-FIND answer the new study, and dicom_storage_check stays clean. Refused:
another patient, institution or issuer, a deleted study, the only series of a study."""

from __future__ import annotations

import json as json_module
import os
import time
from datetime import date, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from alliance import audit, services
from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from imaging import index, ingest, maintenance, storage
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from imaging.figures import roll_up_received_days
from imaging.models import Instance, ReceivedDay, Series, Study
from tests.conftest import client_for
from tests.dicomweb.conftest import store, token_client
from tests.factories import StudyFactory
from tests.imaging.dicomgen import make_ct_series
from tests.imaging.stored import stored_files

pytestmark = pytest.mark.django_db
REASON = "Filed under yesterday's study by the modality operator."


@pytest.fixture
def world(alliance_world: Any, dicom_dir: Path) -> Any:
    """Patient P-88 of clinic A: study A with two series (2 and 1 images), study B with one."""
    w = alliance_world
    a1 = make_ct_series(2, 16, 16, patient_id="P-88", patient_name="Li^Lei", accession_number="ACC-A")
    a2 = make_ct_series(
        1, 16, 16, patient_id="P-88", patient_name="Li^Lei", study_uid=str(a1[0].StudyInstanceUID), series_number=2
    )
    b = make_ct_series(1, 16, 16, patient_id="P-88", patient_name="Li^Lei", accession_number="ACC-B")
    for datasets in (a1, a2, b):
        store(datasets, w.clin_a)
    w.a = Study.objects.get(study_uid=str(a1[0].StudyInstanceUID))
    w.b = Study.objects.get(study_uid=str(b[0].StudyInstanceUID))
    w.moved = Series.objects.get(series_uid=str(a2[0].SeriesInstanceUID))
    w.two = Series.objects.get(series_uid=str(a1[0].SeriesInstanceUID))
    w.dicom_dir = dicom_dir
    return w


def move(w: Any, series: Any = None, target: Any = None, *, by: Any = None, reason: str = REASON) -> Any:
    principal = resolve_principal((by or w.inst_admin_a).user)
    return maintenance.series_move(by=principal, series=series or w.moved, target=target or w.b, reason=reason)


def files_and_keys(w: Any) -> tuple[set[str], set[str]]:
    on_disk = {str(p.relative_to(w.dicom_dir)) for p in stored_files(w.dicom_dir)}
    return on_disk, set(Instance.objects.values_list("storage_key", flat=True))


def storage_check_output() -> str:
    """dicom_storage_check with every file old enough to count as an orphan."""
    from io import StringIO

    out = StringIO()
    call_command("dicom_storage_check", "--older-than", "1", stdout=out)
    return out.getvalue()


def age_files(folder: Path) -> None:
    old = time.time() - 7200
    for path in stored_files(folder):
        os.utime(path, (old, old))


def test_a_moved_series_is_rewritten_and_every_door_answers_the_new_study(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    old_keys = set(Instance.objects.filter(series=world.moved).values_list("storage_key", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        move(world)
    world.a.refresh_from_db()
    world.b.refresh_from_db()
    assert (world.a.num_series, world.a.num_instances) == (1, 2)
    assert (world.b.num_series, world.b.num_instances) == (2, 2)
    assert world.a.size_bytes + world.b.size_bytes == sum(Instance.objects.values_list("size_bytes", flat=True))
    (instance,) = Instance.objects.filter(series=world.moved)
    assert instance.storage_key not in old_keys and world.b.study_uid in instance.storage_key
    with storage.open_instance(instance) as fh:
        ds = pydicom.dcmread(fh)
    assert (ds.StudyInstanceUID, ds.AccessionNumber) == (world.b.study_uid, "ACC-B")
    on_disk, keys = files_and_keys(world)
    assert on_disk == keys and not old_keys & on_disk
    age_files(world.dicom_dir)
    assert "0 orphan file(s) found, 0 instance(s) without a file" in storage_check_output()
    api = token_client(world.owner)
    json = "application/dicom+json"
    series_b = api.get(f"/dicomweb/studies/{world.b.study_uid}/series", HTTP_ACCEPT=json).json()
    assert world.moved.series_uid in [s["0020000E"]["Value"][0] for s in series_b]
    series_a = api.get(f"/dicomweb/studies/{world.a.study_uid}/series", HTTP_ACCEPT=json).json()
    assert world.moved.series_uid not in [s["0020000E"]["Value"][0] for s in series_a]
    metadata = api.get(f"/dicomweb/studies/{world.b.study_uid}/metadata", HTTP_ACCEPT=json)
    assert metadata.status_code == 200
    body = json_module.loads(b"".join(metadata.streaming_content))
    rows = [row for row in body if row["0020000E"]["Value"][0] == world.moved.series_uid]
    assert [row["0020000D"]["Value"][0] for row in rows] == [world.b.study_uid]
    device = services.device_create(institution=world.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM)
    peer = Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(
        root="study", level="SERIES", criteria={"StudyInstanceUID": world.b.study_uid}, keywords=["SeriesInstanceUID"]
    )
    found = {str(ds.SeriesInstanceUID) for ds in DjangoServices(check_host=False).find(peer, query)}
    assert world.moved.series_uid in found
    event = AuditEvent.objects.get(action="series.move")
    assert event.object_id == world.moved.series_uid
    assert event.detail["from"] == world.a.study_uid and event.detail["reason"] == REASON


def refusal(world: Any, case: str) -> dict[str, Any]:
    patient = world.a.patient
    if case == "another patient":
        other = make_ct_series(1, 16, 16, patient_id="P-99", patient_name="Han^Mei")
        store(other, world.clin_a)
        return {"target": Study.objects.get(study_uid=str(other[0].StudyInstanceUID))}
    if case == "another issuer":
        same_id = make_ct_series(1, 16, 16, patient_id="P-88", patient_name="Li^Lei")
        store(same_id, world.clin_b)
        return {"target": Study.objects.get(study_uid=str(same_id[0].StudyInstanceUID))}
    if case == "another institution":
        return {"target": StudyFactory(institution=world.clin_b, patient=patient, series=0)}
    if case == "a deleted study":
        Study.objects.filter(pk=world.b.pk).update(deleted_at=timezone.now(), deleted_reason="duplicate")
        return {}
    if case == "the only series":
        return {"series": Series.objects.get(study=world.b), "target": world.a}
    if case == "its own study":
        return {"target": world.a}
    return {"reason": "  "}


@pytest.mark.parametrize(
    "case",
    [
        "another patient",
        "another issuer",
        "another institution",
        "a deleted study",
        "the only series",
        "its own study",
        "no reason",
    ],
)
def test_a_move_is_refused_and_changes_nothing(world: Any, case: str) -> None:
    arguments = refusal(world, case)
    before = files_and_keys(world), list(Study.objects.order_by("pk").values_list("num_series", "num_instances"))
    with pytest.raises(ValidationError) as refused:
        move(world, **arguments)
    assert set(refused.value.message_dict) == ({"reason"} if case == "no reason" else {"target"})
    assert (
        files_and_keys(world),
        list(Study.objects.order_by("pk").values_list("num_series", "num_instances")),
    ) == before
    assert not AuditEvent.objects.filter(action="series.move").exists()


@pytest.mark.parametrize("persona", ["owner", "hosp_admin", "alliance_admin"])
def test_only_an_admin_of_the_owning_institution_moves_a_series(world: Any, persona: str) -> None:
    with pytest.raises(AccessDenied):
        move(world, by=getattr(world, persona))
    url = f"/imaging/studies/{world.a.study_uid}/series/{world.moved.series_uid}/move/"
    assert client_for(getattr(world, persona)).get(url).status_code in (403, 404)


def test_a_failed_store_leaves_the_old_files_and_index_and_no_new_file(world: Any, monkeypatch: Any) -> None:
    before = files_and_keys(world)
    real = storage.put_file
    calls = []

    def fail_second(source: Path, key: str) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise OSError("disk full")
        real(source, key)

    monkeypatch.setattr(storage, "put_file", fail_second)
    with pytest.raises(OSError, match="disk full"):
        move(world, series=world.two)
    assert files_and_keys(world) == before
    assert Series.objects.get(pk=world.two.pk).study_id == world.a.pk


def test_the_received_day_sums_follow_the_bytes_that_moved(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    Study.objects.filter(pk=world.a.pk).update(received_at=timezone.now() - timedelta(days=20))
    Study.objects.filter(pk=world.b.pk).update(received_at=timezone.now() - timedelta(days=12))
    roll_up_received_days()
    with django_capture_on_commit_callbacks(execute=True):
        move(world)
    kept = sorted(ReceivedDay.objects.values_list("day", "studies", "size_bytes"))
    ReceivedDay.objects.all().delete()
    roll_up_received_days()
    assert sorted(ReceivedDay.objects.values_list("day", "studies", "size_bytes")) == kept


def test_the_page_asks_for_confirmation_before_it_moves(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = client_for(world.inst_admin_a)
    detail = client.get(f"/imaging/studies/{world.a.study_uid}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    url = f"/imaging/studies/{world.a.study_uid}/series/{world.moved.series_uid}/move/"
    assert url in detail
    page = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert world.b.study_uid in page and f'<option value="{world.a.pk}"' not in page
    asked = client.post(url, {"target": world.b.pk, "reason": REASON}, HTTP_ACCEPT_LANGUAGE="en")
    assert asked.status_code == 200 and 'id="series-move-confirm"' in asked.content.decode()
    assert Series.objects.get(pk=world.moved.pk).study_id == world.a.pk
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"target": world.b.pk, "reason": REASON, "confirm": "1"})
    assert done.status_code == 302 and done["Location"].endswith(f"/studies/{world.b.study_uid}/")
    assert Series.objects.get(pk=world.moved.pk).study_id == world.b.pk
    chinese = client.get(f"/imaging/studies/{world.b.study_uid}/series/{world.moved.series_uid}/move/")
    assert "移到另一个检查" in chinese.content.decode()


def test_the_api_moves_a_series_and_explains_a_refusal(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    api = token_client(world.inst_admin_a)
    url = f"/api/v1/series/{world.moved.series_uid}/move/"
    lonely = Series.objects.get(study=world.b)
    refused = api.post(f"/api/v1/series/{lonely.series_uid}/move/", {"study_uid": world.a.study_uid, "reason": REASON})
    assert refused.status_code == 400 and "target" in refused.json()["error"]["fields"]
    with django_capture_on_commit_callbacks(execute=True):
        moved = api.post(url, {"study_uid": world.b.study_uid, "reason": REASON}, format="json")
    assert moved.status_code == 200
    assert moved.json() == {
        "series_uid": world.moved.series_uid,
        "study_uid": world.b.study_uid,
        "from_study_uid": world.a.study_uid,
        "instances": 1,
    }
    assert token_client(world.owner).post(url, {"study_uid": world.a.study_uid, "reason": REASON}).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_after_a_move_the_series_next_instances_go_where_their_study_uid_says(alliance_world: Any) -> None:
    """Ingest remembers a series' parents; a move forgets them (on commit). A further instance
    naming the target study lands there, counted there; one still naming the old study is
    refused (the series is in another study now), and nothing is counted under the old study."""
    w = alliance_world
    a1 = make_ct_series(2, 16, 16, patient_id="P-88", patient_name="Li^Lei")
    a2 = make_ct_series(
        3, 16, 16, patient_id="P-88", patient_name="Li^Lei", study_uid=str(a1[0].StudyInstanceUID), series_number=2
    )
    b = make_ct_series(1, 16, 16, patient_id="P-88", patient_name="Li^Lei", accession_number="ACC-B")
    store([*a1, a2[0], *b], w.clin_a)
    moved = Series.objects.get(series_uid=str(a2[0].SeriesInstanceUID))
    assert any(remembered[2] == moved.pk for remembered in index.known_parents.rows.values())
    source = Study.objects.get(study_uid=str(a1[0].StudyInstanceUID))
    target = Study.objects.get(study_uid=str(b[0].StudyInstanceUID))
    principal = resolve_principal(w.inst_admin_a.user)

    maintenance.series_move(by=principal, series=moved, target=target, reason=REASON)

    assert not any(remembered[2] == moved.pk for remembered in index.known_parents.rows.values())
    a2[1].StudyInstanceUID = target.study_uid
    store([a2[1]], w.clin_a)
    with pytest.raises(ingest.IngestError) as caught:
        store([a2[2]], w.clin_a)
    assert caught.value.code == "uid-conflict"
    counts = {s.pk: (s.num_series, s.num_instances, s.size_bytes) for s in Study.objects.all()}
    sizes = {
        pk: sum(Instance.objects.filter(series__study_id=pk).values_list("size_bytes", flat=True)) for pk in counts
    }
    assert counts[source.pk] == (1, 2, sizes[source.pk])
    assert counts[target.pk] == (2, 3, sizes[target.pk])
    assert Series.objects.get(pk=moved.pk).num_instances == 2
    assert {i.series.study_id for i in Instance.objects.filter(series=moved).select_related("series")} == {target.pk}


def moved_file(series: Series) -> Any:
    (instance,) = Instance.objects.filter(series=series)
    with storage.open_instance(instance) as fh:
        return pydicom.dcmread(fh)


def test_a_moved_file_takes_every_study_attribute_of_its_new_study_in_a_character_set_that_holds_them(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    latin = make_ct_series(
        1, 16, 16, patient_id="P-88", patient_name="Li^Lei", study_uid=world.a.study_uid, series_number=3
    )
    latin[0].SpecificCharacterSet = "ISO_IR 100"
    latin[0].SeriesDescription = "Schädel axial"
    store(latin, world.clin_a)
    series = Series.objects.get(series_uid=str(latin[0].SeriesInstanceUID))
    Study.objects.filter(pk=world.b.pk).update(
        study_date=date(2026, 5, 2), study_time=dt_time(8, 5, 30), referring_physician="王^医生", description="头部 CT"
    )
    with django_capture_on_commit_callbacks(execute=True):
        move(world, series=series)
    ds = moved_file(series)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert (ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName) == ("20260502", "080530", "王^医生")
    assert (ds.AccessionNumber, ds.StudyID, ds.StudyDescription) == ("ACC-B", world.b.study_id, "头部 CT")
    assert (ds.SeriesDescription, ds.PatientName) == ("Schädel axial", "Li^Lei")


def test_a_moved_file_carries_no_study_attribute_its_new_study_lacks(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Study.objects.filter(pk=world.b.pk).update(
        study_date=None, study_time=None, referring_physician="", accession_number="", study_id="", description=""
    )
    with django_capture_on_commit_callbacks(execute=True):
        move(world)
    ds = moved_file(world.moved)
    assert ds.StudyInstanceUID == world.b.study_uid
    assert {keyword: ds[keyword].value for keyword in maintenance.STUDY_ATTRIBUTES} == dict.fromkeys(
        maintenance.STUDY_ATTRIBUTES, ""
    )


@pytest.mark.django_db(transaction=True)
def test_the_files_are_rewritten_before_any_row_is_locked_and_the_studies_are_locked_before_the_series(
    world: Any, monkeypatch: Any
) -> None:
    real = storage.put_file
    inside: list[bool] = []

    def put_file(source: Path, key: str) -> None:
        inside.append(connection.in_atomic_block)
        real(source, key)

    monkeypatch.setattr(storage, "put_file", put_file)
    with CaptureQueriesContext(connection) as queries:
        move(world, series=world.two)
    assert inside == [False, False]
    locks = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"]]
    tables = [Study._meta.db_table, Series._meta.db_table, Instance._meta.db_table]
    assert [next(t for t in tables if f'FROM "{t}"' in sql) for sql in locks] == tables


def test_an_instance_that_arrives_during_the_rewrite_stops_the_move_and_its_new_files_go(
    world: Any, monkeypatch: Any
) -> None:
    more = make_ct_series(
        2, 16, 16, patient_id="P-88", patient_name="Li^Lei", study_uid=world.a.study_uid, series_number=4
    )
    store(more[:1], world.clin_a)
    series = Series.objects.get(series_uid=str(more[0].SeriesInstanceUID))
    before = files_and_keys(world)
    real = storage.put_file

    def put_file(source: Path, key: str) -> None:
        real(source, key)
        store(more[1:], world.clin_a)  # the modality sends the next slice meanwhile

    monkeypatch.setattr(storage, "put_file", put_file)
    with pytest.raises(ValidationError) as refused:
        move(world, series=series)
    assert set(refused.value.message_dict) == {"series"}
    on_disk, keys = files_and_keys(world)
    assert on_disk == keys and len(keys) == len(before[1]) + 1
    assert Series.objects.get(pk=series.pk).study_id == world.a.pk
    assert Study.objects.get(pk=world.a.pk).num_instances == 5
    assert not AuditEvent.objects.filter(action="series.move").exists()


def test_a_failure_in_the_index_change_removes_the_new_files(world: Any, monkeypatch: Any) -> None:
    before = files_and_keys(world)

    def fail(*args: Any) -> None:
        raise RuntimeError("the index could not be changed")

    monkeypatch.setattr(maintenance, "_follow", fail)
    with pytest.raises(RuntimeError):
        move(world, series=world.two)
    assert files_and_keys(world) == before
    assert Series.objects.get(pk=world.two.pk).study_id == world.a.pk


def test_an_old_file_that_cannot_be_deleted_leaves_the_move_done_and_the_others_deleted(
    world: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    old_keys = sorted(Instance.objects.filter(series=world.two).values_list("storage_key", flat=True))
    real = storage.delete_key

    def delete_key(key: str) -> None:
        if key == old_keys[0]:
            raise PermissionError("read-only")
        real(key)

    monkeypatch.setattr(storage, "delete_key", delete_key)
    with django_capture_on_commit_callbacks(execute=True):
        move(world, series=world.two)
    on_disk, _keys = files_and_keys(world)
    assert old_keys[0] in on_disk and old_keys[1] not in on_disk
    assert Series.objects.get(pk=world.two.pk).study_id == world.b.pk


@pytest.mark.parametrize("kind", ["KO", "SR", "an SR class under another modality"])
def test_a_key_object_or_report_series_is_not_moved(world: Any, kind: str) -> None:
    if kind == "an SR class under another modality":
        Series.objects.filter(pk=world.moved.pk).update(modality="OT")
        Instance.objects.filter(series=world.moved).update(sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11")
    else:
        Series.objects.filter(pk=world.moved.pk).update(modality=kind)
    before = files_and_keys(world)
    with translation.override("en"), pytest.raises(ValidationError) as refused:
        move(world)
    assert "Key-object and report series" in refused.value.message_dict["series"][0]
    assert files_and_keys(world) == before
    assert Series.objects.get(pk=world.moved.pk).study_id == world.a.pk
    page = client_for(world.inst_admin_a).get(f"/imaging/studies/{world.a.study_uid}/", HTTP_ACCEPT_LANGUAGE="en")
    assert f"/series/{world.moved.series_uid}/move/" not in page.content.decode()
    assert f"/series/{world.two.series_uid}/move/" in page.content.decode()


def test_the_api_refuses_a_series_or_study_out_of_sight_as_missing_and_records_the_denied_read(world: Any) -> None:
    hidden = make_ct_series(1, 16, 16, patient_id="B-7", patient_name="Zhou^Jie")
    store(hidden, world.clin_b)
    theirs = Series.objects.get(series_uid=str(hidden[0].SeriesInstanceUID))
    api = token_client(world.inst_admin_a)
    refused = api.post(f"/api/v1/series/{theirs.series_uid}/move/", {"study_uid": world.a.study_uid, "reason": REASON})
    missing = api.post("/api/v1/series/1.2.3.404/move/", {"study_uid": world.a.study_uid, "reason": REASON})
    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()
    (event,) = AuditEvent.objects.filter(action=audit.DENIED_READ, object_id=theirs.series_uid)
    assert (event.object_type, event.patient) == ("series", str(theirs.study.patient_id))
    other_study = api.post(
        f"/api/v1/series/{world.moved.series_uid}/move/", {"study_uid": theirs.study.study_uid, "reason": REASON}
    )
    assert other_study.status_code == 404
    assert AuditEvent.objects.filter(action=audit.DENIED_READ, object_id=theirs.study.study_uid).count() == 1
    assert Series.objects.get(pk=world.moved.pk).study_id == world.a.pk
