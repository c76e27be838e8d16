"""imaging/spool.py: DIMSE instances answered once durable in the spool, indexed right after.

The indexer is the real thread with its own database connection (hence transactional
tests); recovery reads folders laid out as a process that stopped would leave them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO, StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DataError, InterfaceError, OperationalError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from pydicom import dcmread

from alliance import audit
from alliance.models import AuditEvent
from imaging import index, ingest, spool, storage
from imaging.ingest import Spooling, ingest_bytes, receive_path
from imaging.models import Instance, Patient, Series, Study
from imaging.received import index_failed, read
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import stored_files

pytestmark = pytest.mark.django_db(transaction=True)


def _sender(clinic) -> spool.Sender:  # type: ignore[no-untyped-def]
    return spool.Sender(clinic.pk, audit.Actor("device", "7", "CT_CLINA", clinic.pk), "dimse", "10.0.0.5:4100")


def _known_series(clinic, n: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    """n instances of a new series, the first stored the ordinary way (its parents known)."""
    sent = [part10_bytes(ds) for ds in make_ct_series(n, 16, 16)]
    ingest_bytes(sent[0], institution=clinic, actor=_sender(clinic).actor, via="dimse", source="10.0.0.5:4100")
    return sent


def _received(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _new_batches(monkeypatch) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    """Each call of ingest.index_spooled_new from now on: its entries, and whether they were
    indexed together."""
    together: list[tuple[int, bool]] = []
    new = ingest.index_spooled_new

    def spy(entries, **kwargs):  # type: ignore[no-untyped-def]
        done = new(entries, **kwargs)
        together.append((len(entries), done))
        return done

    monkeypatch.setattr(ingest, "index_spooled_new", spy)
    return together


@pytest.fixture
def owner(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(spool, "LINGER_SECONDS", 3600.0)  # gathers until someone waits: one batch
    owner = spool.Spool()
    yield owner
    owner.close()


def test_new_studies_of_one_device_on_several_associations_are_indexed_in_one_commit_each_with_its_source(
    clinic, dicom_dir, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    """A modality sending on four associations at once is four senders (each its own port),
    one device: the first instances of their new studies go in one commit, and each audit
    event names the association it came on. Another device's go in a commit of their own."""
    together = _new_batches(monkeypatch)
    monkeypatch.setattr(ingest, "_enqueue_renders", lambda pks: None)
    actor = _sender(clinic).actor
    other = audit.Actor("device", "8", "DR_CLINA", clinic.pk)
    senders = [spool.Sender(clinic.pk, actor, "dimse", f"10.0.0.5:{4100 + i}") for i in range(3)]
    senders.append(spool.Sender(clinic.pk, other, "dimse", "10.0.0.6:4100"))
    associations = [owner.association(sender) for sender in senders]
    sent = {}
    for i, (sender, association) in enumerate(zip(senders, associations, strict=True)):
        data = part10_bytes(make_ct_series(1, 16, 16, patient_id=f"M-{i}")[0])
        answer = receive_path(
            _received(tmp_path, data, f"rx-{i}.dcm"),
            institution=clinic,
            actor=sender.actor,
            via="dimse",
            source=sender.source,
            spooling=Spooling(owner, association),
        )
        assert answer is None  # answered from the spool
        sent[hashlib.sha256(data).hexdigest()] = sender
    assert Instance.objects.count() == 0  # the indexer lingers (owner): nothing indexed yet

    assert all(owner.wait_for(association) for association in associations)

    assert sorted(together) == [(1, True), (3, True)]  # one commit for the device, one for the other
    for digest, sender in sent.items():
        instance = Instance.objects.get(sha256=digest)
        event = AuditEvent.objects.get(action="instance.store", object_id=instance.sop_uid)
        assert (event.actor_id, event.source, event.detail["via"]) == (sender.actor.id, sender.source, "dimse")
    assert len(stored_files(dicom_dir)) == 4


def test_further_instances_are_answered_from_the_spool_and_indexed_in_one_commit(
    clinic, dicom_dir, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 6)
    batches: list[int] = []
    together = ingest.index_spooled_series

    def spy(entries, **kwargs):  # type: ignore[no-untyped-def]
        batches.append(len(entries))
        return together(entries, **kwargs)

    monkeypatch.setattr(ingest, "index_spooled_series", spy)
    renders: list[list[int]] = []
    monkeypatch.setattr(ingest, "_enqueue_renders", renders.append)
    association = owner.association(_sender(clinic))
    spooling = Spooling(owner, association)

    answers = []
    for i, data in enumerate(sent[1:]):
        path = _received(tmp_path, data, f"rx-{i}.dcm")
        answers.append(
            receive_path(
                path, institution=clinic, actor=_sender(clinic).actor, via="dimse", source="x", spooling=spooling
            )
        )
        path.unlink()  # what pynetdicom does after the handler: the spool holds its own link
    assert answers == [None] * 5  # answered without waiting for the index
    assert association.pending > 0 or Instance.objects.count() == 6

    assert owner.wait_for(association)

    assert batches == [5]
    spooled = list(Instance.objects.order_by("pk").values_list("pk", flat=True))[1:]
    assert renders == [spooled]  # their rendering asked for once, for the run
    study = Study.objects.get()
    assert (study.num_instances, study.size_bytes) == (6, sum(map(len, sent)))
    assert Series.objects.get().num_instances == 6
    for data in sent:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert storage.local_path(instance).read_bytes() == data
    events = AuditEvent.objects.filter(action="instance.store").exclude(
        object_id=Instance.objects.order_by("pk")[0].sop_uid
    )
    assert [(e.actor_name, e.source, e.detail["via"]) for e in events] == [("CT_CLINA", "10.0.0.5:4100", "dimse")] * 5
    assert sorted(p.name for p in owner.folder.iterdir()) == [".lock", "a0.json"]  # the entries are gone
    owner.finish(association)  # the association ended: its sender record goes too
    assert sorted(p.name for p in owner.folder.iterdir()) == [".lock"]
    assert len(stored_files(dicom_dir)) == 6


def test_new_studies_are_answered_from_the_spool_and_indexed_together_their_further_instances_behind(
    clinic, dicom_dir, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    """Neither study nor series in the index: nothing but a parallel store of the same UIDs
    could make the index refuse them, so they are answered once durable in the spool. The
    first instance of each new series is indexed with the others' in one commit, and a
    further instance of a new series follows its first into the spool, even before the
    first is indexed."""
    studies = [make_ct_series(2 if i == 0 else 1, 16, 16, patient_id=f"N-{i}") for i in range(3)]
    sent = [part10_bytes(ds) for series in studies for ds in series]  # study 0 has two instances
    together = _new_batches(monkeypatch)
    renders: list[list[int]] = []
    monkeypatch.setattr(ingest, "_enqueue_renders", renders.append)
    association = owner.association(_sender(clinic))

    answers = [
        receive_path(
            _received(tmp_path, data, f"rx-{i}.dcm"),
            institution=clinic,
            actor=_sender(clinic).actor,
            via="dimse",
            source="10.0.0.5:4100",
            spooling=Spooling(owner, association),
        )
        for i, data in enumerate(sent)
    ]
    assert answers == [None] * 4  # all answered from the spool, the second of study 0 behind its first
    assert Instance.objects.count() == 0  # the indexer lingers (owner): nothing indexed yet

    assert owner.wait_for(association)

    assert together == [(3, True)]  # the three first instances of new series in one commit
    assert owner._new == {}
    assert sorted(Study.objects.values_list("num_series", "num_instances")) == [(1, 1), (1, 1), (1, 2)]
    for data in sent:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert storage.local_path(instance).read_bytes() == data
        event = AuditEvent.objects.get(action="instance.store", object_id=instance.sop_uid)
        assert (event.actor_name, event.source, event.outcome) == (
            "CT_CLINA",
            "10.0.0.5:4100",
            AuditEvent.Outcome.SUCCESS,
        )
    assert sorted(pk for run in renders for pk in run) == sorted(Instance.objects.values_list("pk", flat=True))
    assert len(stored_files(dicom_dir)) == 4
    assert not spool.refused_dir().exists()
    assert sorted(p.name for p in owner.folder.iterdir()) == [".lock", "a0.json"]


def test_a_file_no_row_names_under_a_new_study_s_key_leaves_the_batch_to_one_by_one(
    clinic, dicom_dir, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    """A store that stopped before its commit left other bytes under a new study's key: the
    batch links nothing and is indexed one by one, that instance beside the file left there."""
    studies = [make_ct_series(1, 16, 16, patient_id=f"O-{i}") for i in range(3)]
    sent = [part10_bytes(series[0]) for series in studies]
    ds = studies[1][0]
    key = storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    orphan = storage.local_path_for_key(key)
    assert orphan is not None
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a store that stopped")
    together = _new_batches(monkeypatch)

    _spool_all(owner, clinic, tmp_path, [series[0] for series in studies], "orphan")

    assert together == [(3, False)]
    for data in sent:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert storage.local_path(instance).read_bytes() == data
    assert Instance.objects.get(sop_uid=ds.SOPInstanceUID).storage_key != key
    assert orphan.read_bytes() == b"left by a store that stopped"  # left alone
    assert len(stored_files(dicom_dir)) == 4
    assert sorted(p.name for p in owner.folder.iterdir()) == [".lock", "a0.json"]


@contextmanager
def _indexer_statements() -> Iterator[list[str]]:
    """The SQL the spool's indexer thread sends meanwhile (its own connection)."""
    statements: list[str] = []
    execute = CursorWrapper.execute

    def counted(self, sql, params=None):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "dicom-indexer":
            statements.append(sql)
        return execute(self, sql, params)

    CursorWrapper.execute = counted  # type: ignore[method-assign]
    try:
        yield statements
    finally:
        CursorWrapper.execute = execute  # type: ignore[method-assign]


def _spool_all(owner, clinic, tmp_path, datasets, prefix):  # type: ignore[no-untyped-def]
    association = owner.association(_sender(clinic))
    for i, ds in enumerate(datasets):
        answer = receive_path(
            _received(tmp_path, part10_bytes(ds), f"{prefix}-{i}.dcm"),
            institution=clinic,
            actor=_sender(clinic).actor,
            via="dimse",
            source="10.0.0.5:4100",
            spooling=Spooling(owner, association),
        )
        assert answer is None  # answered from the spool
    assert owner.wait_for(association)


def test_new_studies_indexed_together_bring_their_patients_up_to_date_as_one_by_one_would(clinic, tmp_path, owner):  # type: ignore[no-untyped-def]
    """The new studies of a batch are written a statement per table, not per study: a patient
    who comes with two of them is created once, from the first file, and the second file's
    demographics fill what the first left blank and change what differs, as one store after
    the other would; a patient already in the index is read, brought up to date the same way,
    unless an admin corrected the record."""
    known = Patient.objects.create(issuer=clinic, patient_id="K-1", name="Known^Before", sex="")
    corrected = Patient.objects.create(
        issuer=clinic, patient_id="C-1", name="Corrected^Name", sex="F", corrected_at=timezone.now()
    )
    datasets = []
    for patient_id, name, sex in (
        ("T-1", "Twice^First", ""),
        ("K-1", "Known^After", "M"),
        ("T-1", "Twice^Second", "F"),
        ("C-1", "Device^Name", "M"),
    ):
        (ds,) = make_ct_series(1, 16, 16, patient_id=patient_id, patient_name=name)
        ds.PatientSex = sex
        datasets.append(ds)

    _spool_all(owner, clinic, tmp_path, datasets, "pt")

    assert Study.objects.count() == 4
    assert Patient.objects.filter(issuer=clinic).count() == 3  # T-1 once, for both of its studies
    twice = Patient.objects.get(issuer=clinic, patient_id="T-1")
    assert (twice.name, twice.sex) == ("Twice^Second", "F")
    known.refresh_from_db()
    assert (known.name, known.sex) == ("Known^After", "M")
    corrected.refresh_from_db()
    assert (corrected.name, corrected.sex) == ("Corrected^Name", "F")
    for ds in datasets:
        instance = Instance.objects.select_related("series__study__patient").get(sop_uid=ds.SOPInstanceUID)
        study = instance.series.study
        assert study.patient.patient_id == ds.PatientID
        assert (study.num_series, study.num_instances, instance.series.num_instances) == (1, 1, 1)
        assert study.size_bytes == instance.size_bytes
        assert (study.accession_number, study.modalities) == (ds.AccessionNumber, "CT")
        event = AuditEvent.objects.get(action="instance.store", object_id=ds.SOPInstanceUID)
        assert event.patient == str(study.patient_id)
    for i, ds in enumerate(datasets):  # a further instance of each series takes the one round trip
        attributes = read(_received(tmp_path, part10_bytes(ds), f"again-{i}.dcm"), None).attributes
        assert index.known_parents.get(index.known_key(attributes, clinic)) is not None


def test_a_batch_of_new_studies_costs_the_same_statements_however_many_it_holds(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    """Two new studies or eight: one round trip for the locks, what is stored already and the
    patients; one for the audit events, the studies, their series and the instances (and the
    transaction's BEGIN and COMMIT)."""
    renders: list[list[int]] = []
    monkeypatch.setattr(ingest, "_enqueue_renders", renders.append)  # the renders' own queries aside
    counts = []
    _spool_all(owner, clinic, tmp_path, make_ct_series(1, 16, 16, patient_id="first"), "first")  # the sender read
    for n, prefix in ((2, "a"), (8, "b")):
        datasets = [make_ct_series(1, 16, 16, patient_id=f"{prefix}-{i}")[0] for i in range(n)]
        with _indexer_statements() as statements:
            _spool_all(owner, clinic, tmp_path, datasets, prefix)
        counts.append(len(statements))
        assert Study.objects.filter(study_uid__in=[ds.StudyInstanceUID for ds in datasets]).count() == n
    assert counts == [2, 2]
    assert sorted(len(batch) for batch in renders) == [1, 2, 8]


def test_a_batch_of_new_studies_runs_as_statements_the_indexer_s_session_prepared(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    """Parsing and planning a batch's statements cost PostgreSQL more than running them: the first
    batch of a size prepares them as it sends them, a later one only executes them; a batch
    larger than PREPARED_ROWS is sent as text (each size's plan would stay in the session)."""
    monkeypatch.setattr(index, "PREPARED_ROWS", 2)
    monkeypatch.setattr(ingest, "_enqueue_renders", lambda pks: None)  # the renders' own queries aside
    _spool_all(owner, clinic, tmp_path, make_ct_series(1, 16, 16, patient_id="first"), "first")  # the sender read
    sent = {}
    for prefix, n in (("a", 2), ("b", 2), ("c", 3)):
        datasets = [make_ct_series(1, 16, 16, patient_id=f"{prefix}-{i}")[0] for i in range(n)]
        with _indexer_statements() as statements:
            _spool_all(owner, clinic, tmp_path, datasets, prefix)
        sent[prefix] = statements
        assert Study.objects.filter(study_uid__in=[ds.StudyInstanceUID for ds in datasets]).count() == n
        assert Patient.objects.filter(issuer=clinic, patient_id__startswith=f"{prefix}-").count() == n
    assert len(sent["a"]) == len(sent["b"]) == len(sent["c"]) == 2
    assert all("PREPARE " in sql for sql in sent["a"])
    assert all(sql.startswith("EXECUTE ") and "PREPARE" not in sql and "INSERT" not in sql for sql in sent["b"])
    assert not any("PREPARE" in sql for sql in sent["c"])
    assert any('INSERT INTO "imaging_instance"' in sql for sql in sent["c"])


def test_a_further_instance_spooled_behind_a_first_an_earlier_batch_indexed_does_not_hold_back_new_studies(
    clinic, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    """A five-instance study's second instance is spooled as new while its first waits to be
    indexed; when the first is indexed in one batch and the second falls into the next, the
    second goes with its series' run (its parents known by then), not with that batch's new
    studies, which it would make fall back to one store at a time."""
    monkeypatch.setattr(spool, "BATCH", 2)  # [A1, B1], then [A2, C1]
    together = _new_batches(monkeypatch)
    a1, a2 = make_ct_series(2, 16, 16, patient_id="A")
    (b1,) = make_ct_series(1, 16, 16, patient_id="B")
    (c1,) = make_ct_series(1, 16, 16, patient_id="C")
    association = owner.association(_sender(clinic))

    def receive(ds, name):  # type: ignore[no-untyped-def]
        answer = receive_path(
            _received(tmp_path, part10_bytes(ds), name),
            institution=clinic,
            actor=_sender(clinic).actor,
            via="dimse",
            source="10.0.0.5:4100",
            spooling=Spooling(owner, association),
        )
        assert answer is None

    receive(a1, "a1.dcm")
    receive(b1, "b1.dcm")
    path = _received(tmp_path, part10_bytes(a2), "a2.dcm")
    parsed = read(path, None)  # as _spooled puts it while A1 still waits: behind its first, new
    assert owner.put(path, parsed, association, index.known_key(parsed.attributes, clinic), new=True)
    receive(c1, "c1.dcm")
    assert owner.wait_for(association)

    assert together == [(2, True), (1, True)]
    assert Study.objects.get(study_uid=a1.StudyInstanceUID).num_instances == 2
    assert Instance.objects.filter(sop_uid__in=[ds.SOPInstanceUID for ds in (a1, a2, b1, c1)]).count() == 4
    assert not spool.refused_dir().exists()


def test_a_new_series_of_a_known_study_is_indexed_before_its_answer(clinic, other_clinic, tmp_path, owner):  # type: ignore[no-untyped-def]
    """The study is in the index: it may be another institution's, and the sender must hear so."""
    theirs = make_ct_series(1, 16, 16, patient_id="B-1")[0]
    ingest_bytes(part10_bytes(theirs), institution=other_clinic, actor=_sender(other_clinic).actor, via="test")
    ours = make_ct_series(1, 16, 16, study_uid=theirs.StudyInstanceUID)[0]  # another series of that study

    refused = _receive_refused(owner, clinic, tmp_path, part10_bytes(ours))

    assert refused.code == "uid-conflict"
    assert not [p for p in owner.folder.iterdir() if p.suffix == ".dcm"]
    assert not spool.refused_dir().exists()
    mine = make_ct_series(2, 16, 16)
    ingest_bytes(part10_bytes(mine[0]), institution=clinic, actor=_sender(clinic).actor, via="test")
    index.known_parents.rows.clear()  # as in a process that has not stored it
    other_series = make_ct_series(1, 16, 16, study_uid=mine[0].StudyInstanceUID)[0]
    result = _receive(owner, clinic, tmp_path, part10_bytes(other_series), owner.association(_sender(clinic)))
    assert result is not None and result.created  # indexed before its answer
    assert Study.objects.get(study_uid=mine[0].StudyInstanceUID).num_series == 2


def test_an_instance_of_a_new_study_still_in_the_spool_with_another_patient_is_refused_before_its_answer(
    clinic, tmp_path, owner
):  # type: ignore[no-untyped-def]
    """The spool holds a new study's first instance; another instance of that study names
    another Patient ID. It waits for the spool to index the first, then takes the careful
    path: the refusal is its own, told to its sender, and nothing is set aside."""
    first = make_ct_series(1, 16, 16, patient_id="P-1")[0]
    other = make_ct_series(1, 16, 16, patient_id="P-2", study_uid=first.StudyInstanceUID)[0]
    association = owner.association(_sender(clinic))
    assert _receive(owner, clinic, tmp_path, part10_bytes(first), association) is None  # spooled

    with pytest.raises(ingest.IngestError) as refused:
        _receive(owner, clinic, tmp_path, part10_bytes(other), association)

    assert refused.value.code == "uid-conflict"
    assert Instance.objects.get().sop_uid == first.SOPInstanceUID  # indexed before the refusal
    assert not spool.refused_dir().exists()
    assert owner._new == {} and owner._new_uids == {}


def test_a_new_study_stored_meanwhile_by_another_institution_is_set_aside_and_the_others_are_indexed(
    clinic, other_clinic, tmp_path, owner
):  # type: ignore[no-untyped-def]
    """The race the look-up cannot see: between the answer and the indexer, another
    institution stores the same Study Instance UID, or another study the same Series
    Instance UID. The sender was told success: each file is kept in DATA_DIR/refused,
    audited; the new studies that came with them are not lost with them."""
    first, second, third, fourth = (make_ct_series(1, 16, 16, patient_id=f"R-{i}")[0] for i in range(4))
    association = owner.association(_sender(clinic))
    sent = [part10_bytes(ds) for ds in (first, second, third, fourth)]
    for i, data in enumerate(sent):
        spooling = Spooling(owner, association)
        path = _received(tmp_path, data, f"rx-{i}.dcm")
        answer = receive_path(
            path, institution=clinic, actor=_sender(clinic).actor, via="dimse", source="x", spooling=spooling
        )
        assert answer is None
    theirs = make_ct_series(1, 16, 16, patient_id="B-9", study_uid=second.StudyInstanceUID)[0]
    ingest_bytes(part10_bytes(theirs), institution=other_clinic, actor=_sender(other_clinic).actor, via="test")
    elsewhere = make_ct_series(1, 16, 16, patient_id="R-9", series_uid=fourth.SeriesInstanceUID)[0]
    ingest_bytes(part10_bytes(elsewhere), institution=clinic, actor=_sender(clinic).actor, via="test")

    assert owner.wait_for(association)

    assert sorted(p.read_bytes() for p in spool.refused_dir().iterdir()) == sorted([sent[1], sent[3]])
    assert Study.objects.get(study_uid=second.StudyInstanceUID).institution == other_clinic
    assert not Instance.objects.filter(sop_uid=second.SOPInstanceUID).exists()
    for ds, data in ((first, sent[0]), (third, sent[2])):
        instance = Instance.objects.get(sop_uid=ds.SOPInstanceUID)
        assert instance.series.study.institution == clinic
        assert storage.local_path(instance).read_bytes() == data
    assert not Instance.objects.filter(sop_uid=fourth.SOPInstanceUID).exists()
    assert not Study.objects.filter(study_uid=fourth.StudyInstanceUID).exists()  # nothing half-made
    failures = AuditEvent.objects.filter(action="instance.store", outcome=AuditEvent.Outcome.FAILURE)
    assert sorted((f.object_id, f.detail["code"]) for f in failures) == sorted(
        [(second.SOPInstanceUID, "uid-conflict"), (fourth.SOPInstanceUID, "uid-conflict")]
    )
    assert not [p for p in owner.folder.iterdir() if p.suffix == ".dcm"]


def test_a_new_study_answered_before_the_stop_is_indexed_on_recovery(clinic, dicom_dir, owner):  # type: ignore[no-untyped-def]
    """A crash after the answer, before the indexer: the entry and its sender record are
    durable in the spool folder; the next start indexes the new study from them."""
    ds = make_ct_series(1, 16, 16, patient_id="C-1")[0]
    data = part10_bytes(ds)
    stopped = spool.root() / "0123456789ab-99997"
    stopped.mkdir(parents=True)
    (stopped / "a0.json").write_bytes(_sender(clinic).to_json())
    (stopped / "a0-0.dcm").write_bytes(data)

    assert spool.recover() == 1

    instance = Instance.objects.get(sop_uid=ds.SOPInstanceUID)
    assert instance.series.study.study_uid == ds.StudyInstanceUID
    assert storage.local_path(instance).read_bytes() == data
    event = AuditEvent.objects.get(action="instance.store", object_id=ds.SOPInstanceUID)
    assert (event.actor_name, event.source) == ("CT_CLINA", "10.0.0.5:4100")
    assert not stopped.exists()


def test_what_a_stopped_process_left_is_indexed_with_its_sender_and_a_live_folder_is_left_alone(
    clinic, dicom_dir, owner
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 3)
    stopped = spool.root() / "0123456789ab-99999"
    stopped.mkdir(parents=True)
    (stopped / "a4.json").write_bytes(_sender(clinic).to_json())
    (stopped / "a4-0.dcm").write_bytes(sent[1])
    (stopped / "a4-1.dcm").write_bytes(sent[2])
    (stopped / "a4-2.dcm").write_bytes(sent[0])  # indexed before the stop, which left the entry
    (stopped / "a5-0.dcm").write_bytes(b"never answered: no sender record")
    live = owner.association(_sender(clinic))
    (owner.folder / f"{live.name}-0.dcm").write_bytes(b"a live process's entry")

    assert spool.recover() == 3

    assert not stopped.exists()
    assert (owner.folder / f"{live.name}-0.dcm").read_bytes() == b"a live process's entry"
    assert Study.objects.get().num_instances == 3
    for data in sent[1:]:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert storage.local_path(instance).read_bytes() == data
        event = AuditEvent.objects.get(action="instance.store", object_id=instance.sop_uid)
        assert (event.actor_type, event.actor_id, event.actor_name, event.source) == (
            "device",
            "7",
            "CT_CLINA",
            "10.0.0.5:4100",
        )
    assert len(stored_files(dicom_dir)) == 3
    assert AuditEvent.objects.filter(action="instance.store").count() == 3  # no duplicate event for sent[0]


def test_an_entry_linked_into_place_before_the_stop_is_stored_under_its_own_key(clinic, dicom_dir, owner):  # type: ignore[no-untyped-def]
    """The indexer links a run into place, then commits its rows: a stop in between leaves the
    entry's file under its key with no row. Recovery stores it there, not beside it."""
    sent = _known_series(clinic, 2)
    stopped = spool.root() / "0123456789ab-99998"
    stopped.mkdir(parents=True)
    (stopped / "a0.json").write_bytes(_sender(clinic).to_json())
    entry = stopped / "a0-0.dcm"
    entry.write_bytes(sent[1])
    ds = dcmread(BytesIO(sent[1]), stop_before_pixels=True)
    key = storage.storage_key_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    placed = storage.local_path_for_key(key)
    assert placed is not None
    placed.parent.mkdir(parents=True, exist_ok=True)
    os.link(entry, placed)  # what put_durable_files did before the stop

    assert spool.recover() == 1

    instance = Instance.objects.get(sha256=hashlib.sha256(sent[1]).hexdigest())
    assert instance.storage_key == key
    assert placed.read_bytes() == sent[1]
    assert len(stored_files(dicom_dir)) == 2  # no second copy beside it, no orphan


def test_a_refusal_only_the_index_finds_keeps_the_file_aside_and_is_audited(clinic, other_clinic, tmp_path, owner):  # type: ignore[no-untyped-def]
    """The SOP Instance UID is already another institution's: the sender was answered with
    success, so the file is kept in DATA_DIR/refused, not deleted."""
    sent = _known_series(clinic, 2)
    theirs = make_ct_series(1, 16, 16, patient_id="B-1")[0]
    ours = make_ct_series(2, 16, 16)[1]
    taken = part10_bytes(theirs)
    ingest_bytes(taken, institution=other_clinic, actor=_sender(other_clinic).actor, via="test")
    # an instance of clinic A's known series that reuses clinic B's SOP Instance UID
    known = dcmread(BytesIO(sent[0]))
    ours.StudyInstanceUID, ours.SeriesInstanceUID = known.StudyInstanceUID, known.SeriesInstanceUID
    ours.SOPInstanceUID = theirs.SOPInstanceUID
    ours.file_meta.MediaStorageSOPInstanceUID = theirs.SOPInstanceUID
    clash = part10_bytes(ours)

    association = _spool_one(owner, clinic, tmp_path, clash)  # answered: success
    assert owner.wait_for(association)

    kept = list(spool.refused_dir().iterdir())
    assert [p.read_bytes() for p in kept] == [clash]
    assert Instance.objects.get(sop_uid=theirs.SOPInstanceUID).series.study.institution == other_clinic
    assert Study.objects.get(institution=clinic).num_instances == 1
    failure = AuditEvent.objects.get(action="instance.store", outcome=AuditEvent.Outcome.FAILURE)
    assert failure.detail["code"] == "uid-conflict"
    assert not [p for p in owner.folder.iterdir() if p.suffix == ".dcm"]


def test_a_spool_folder_is_locked_by_its_process(owner) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(owner.folder / ".lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _receive(owner, clinic, tmp_path, data: bytes, association, name: str = "rx.dcm"):  # type: ignore[no-untyped-def]
    """receive_path as the DIMSE server calls it, on `association` of the spool `owner`."""
    return receive_path(
        _received(tmp_path, data, name),
        institution=clinic,
        actor=_sender(clinic).actor,
        via="dimse",
        source="x",
        spooling=Spooling(owner, association),
    )


def _spool_one(owner, clinic, tmp_path, data: bytes):  # type: ignore[no-untyped-def]
    association = owner.association(_sender(clinic))
    assert _receive(owner, clinic, tmp_path, data, association) is None  # answered from the spool
    return association


def test_the_database_failing_is_waited_out_not_taken_for_a_refusal(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 2)
    monkeypatch.setattr(spool, "_RETRY_SECONDS", 0.0)
    real = ingest.index_spooled
    failures = [ingest.IngestError("storage-failed", "the index could not be updated (%(error)s)", error="down")]

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ingest.IngestError("storage-failed", "the index could not be updated (%(error)s)", error="down")

    monkeypatch.setattr(ingest, "index_spooled_series", down)  # the run together fails: one by one
    monkeypatch.setattr(ingest, "index_spooled", flaky)  # which fails once more, then holds
    association = _spool_one(owner, clinic, tmp_path, sent[1])
    assert owner.wait_for(association)
    assert failures == []
    assert Instance.objects.count() == 2
    assert not spool.refused_dir().exists()


def test_an_entry_whose_values_the_database_refuses_on_a_fresh_connection_too_is_set_aside_not_waited_for(
    clinic, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    """A file whose own values break a rule of the index (a defect: ingest checks them first)
    fails the same way every time: waiting it out would hold every instance behind it, and the
    spool would refuse new ones, for good. Tried again on a fresh connection, then set aside,
    audited; the instances behind it are indexed."""
    sent = _known_series(clinic, 3)
    monkeypatch.setattr(spool, "_RETRY_SECONDS", 3600.0)  # a stall would hang the test
    poison = dcmread(BytesIO(sent[1]), stop_before_pixels=True).SOPInstanceUID
    real = ingest._store
    tries: list[str] = []

    def refusing(received, **kwargs):  # type: ignore[no-untyped-def]
        if received.attributes.sop_uid == poison:
            tries.append(poison)
            try:
                raise DataError("value too long for type character varying(64)")
            except DataError as exc:
                raise index_failed(exc) from exc
        return real(received, **kwargs)

    monkeypatch.setattr(ingest, "index_spooled_series", lambda *a, **k: None)  # each on its own
    monkeypatch.setattr(ingest, "_store", refusing)
    association = owner.association(_sender(clinic))
    for i, data in enumerate(sent[1:]):
        assert _receive(owner, clinic, tmp_path, data, association, name=f"p{i}.dcm") is None  # from the spool
    assert owner.wait_for(association)

    assert tries == [poison, poison]
    assert not owner.stalled
    assert [p.read_bytes() for p in spool.refused_dir().iterdir()] == [sent[1]]
    assert Instance.objects.count() == 2  # the first and the one behind the refused file
    assert not Instance.objects.filter(sop_uid=poison).exists()
    refusals = AuditEvent.objects.filter(action="instance.store", outcome=AuditEvent.Outcome.FAILURE)
    assert {event.object_id for event in refusals} == {poison}


def test_an_entry_whose_institution_has_gone_is_set_aside(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 2)
    gone = spool.Sender(10**6, _sender(clinic).actor, "dimse", "x")
    association = owner.association(gone)
    monkeypatch.setattr(index, "known_key", lambda a, institution: ("same",))  # spooled as if known
    monkeypatch.setattr(index.known_parents, "get", lambda key: (1, 1, 1))
    receive_path(
        _received(tmp_path, sent[1], "rx.dcm"),
        institution=clinic,
        actor=gone.actor,
        via="dimse",
        source="x",
        spooling=Spooling(owner, association),
    )
    assert owner.wait_for(association)
    assert [p.read_bytes() for p in spool.refused_dir().iterdir()] == [sent[1]]
    assert Instance.objects.count() == 1
    failure = AuditEvent.objects.get(action="instance.store", outcome=AuditEvent.Outcome.FAILURE)
    assert (failure.actor_name, failure.detail["code"]) == ("CT_CLINA", "set-aside")
    assert "no longer exists" in failure.detail["reason"]


def test_a_spool_on_another_file_system_leaves_the_instance_to_be_indexed_first(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 2)

    def cross_device(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(owner, "put", cross_device)
    result = receive_path(
        _received(tmp_path, sent[1], "rx.dcm"),
        institution=clinic,
        actor=_sender(clinic).actor,
        via="dimse",
        source="x",
        spooling=Spooling(owner, owner.association(_sender(clinic))),
    )
    assert result is not None and result.created
    assert Instance.objects.count() == 2


def test_a_query_waits_for_what_was_spooled_before_it_not_for_what_keeps_arriving(owner) -> None:  # type: ignore[no-untyped-def]
    """drain() (C-FIND, C-MOVE, C-GET) must not wait on a modality that keeps sending."""
    with owner._changed:
        owner._unfinished.update({5, 9})
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(owner.drain(timeout=3600)))
    waiter.start()

    def finish(number: int, *, arriving: int | None = None) -> None:
        with owner._changed:
            owner._unfinished.discard(number)
            if arriving is not None:
                owner._unfinished.add(arriving)
            owner._changed.notify_all()

    finish(5, arriving=12)
    waiter.join(0.2)
    assert waiter.is_alive()  # 9 was spooled before the query and is not indexed yet
    finish(9)
    waiter.join(3600)
    assert result == [True]
    assert owner._unfinished == {12}
    finish(12)


def _connection_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise InterfaceError("connection already closed")


def test_a_lost_connection_while_indexing_is_retried_not_set_aside(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    """psycopg2 raises InterfaceError on a broken connection, which is no DatabaseError."""
    sent = _known_series(clinic, 2)
    real = ingest.index_spooled
    lost = [True]

    def once_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
        if lost:
            lost.pop()
            _connection_lost()
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "index_spooled_series", _connection_lost)
    monkeypatch.setattr(ingest, "index_spooled", once_lost)
    association = _spool_one(owner, clinic, tmp_path, sent[1])
    assert owner.wait_for(association)
    assert lost == []
    assert Instance.objects.count() == 2
    assert not spool.refused_dir().exists()
    assert not AuditEvent.objects.filter(outcome=AuditEvent.Outcome.FAILURE).exists()


def test_the_indexer_survives_an_error_it_did_not_expect_and_indexes_the_run_again(
    clinic, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 3)
    real = spool._index_run
    failures = [RuntimeError("a defect")]

    def failing_once(run, health):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return real(run, health)

    monkeypatch.setattr(spool, "_index_run", failing_once)
    first = _spool_one(owner, clinic, tmp_path, sent[1])
    assert owner.wait_for(first)
    second = _spool_one(owner, clinic, tmp_path, sent[2])  # the indexer is still there
    assert owner.wait_for(second)
    assert failures == []
    assert Instance.objects.count() == 3
    assert owner._thread.is_alive()


def test_setting_a_file_aside_without_the_database_does_not_end_the_indexer(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    """The set-aside's audit event meets the lost connection: logged, and the indexer lives on."""
    sent = _known_series(clinic, 3)
    gone = spool.Sender(10**6, _sender(clinic).actor, "dimse", "x")
    monkeypatch.setattr(index, "known_key", lambda a, institution: ("same",))  # spooled as if known
    monkeypatch.setattr(index.known_parents, "get", lambda key: (1, 1, 1))
    monkeypatch.setattr(spool.audit, "record", _connection_lost)
    association = owner.association(gone)
    assert _receive(owner, clinic, tmp_path, sent[1], association) is None
    assert owner.wait_for(association)
    assert [p.read_bytes() for p in spool.refused_dir().iterdir()] == [sent[1]]
    assert owner._thread.is_alive()


def _receive_refused(owner, clinic, tmp_path, data: bytes) -> ingest.IngestError:  # type: ignore[no-untyped-def]
    with pytest.raises(ingest.IngestError) as refused:
        _receive(owner, clinic, tmp_path, data, owner.association(_sender(clinic)))
    return refused.value


def test_while_the_indexer_waits_out_the_database_new_instances_are_refused_and_releases_do_not_wait(
    clinic, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 3)
    monkeypatch.setattr(spool, "_RETRY_SECONDS", 0.01)
    database_down = threading.Event()
    database_down.set()
    real = ingest.index_spooled

    def unless_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        if database_down.is_set():
            raise OperationalError("could not connect to server: Connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "index_spooled_series", unless_down)
    monkeypatch.setattr(ingest, "index_spooled", unless_down)
    association = _spool_one(owner, clinic, tmp_path, sent[1])  # answered: the indexer had not failed yet
    released: list[bool] = []
    waiter = threading.Thread(target=lambda: released.append(owner.wait_for(association, timeout=3600)))
    waiter.start()
    waiter.join(120)  # the release is answered once the indexer is stalled, not after the hour
    assert released == [False]
    assert owner.stalled

    refused = _receive_refused(owner, clinic, tmp_path, sent[2])
    assert (refused.code, refused.dicom_status) == ("storage-failed", 0xA700)
    assert [p.name for p in owner.folder.iterdir() if p.suffix == ".dcm"] == [f"{association.name}-0.dcm"]

    database_down.clear()
    with owner._changed:  # wait_for answers at once while stalled: wait for the indexer itself
        assert owner._changed.wait_for(lambda: association.pending == 0, 3600)
    assert not owner.stalled
    assert Instance.objects.count() == 2
    assert _spool_one(owner, clinic, tmp_path, sent[2]) is not None  # taken again once indexing works
    assert not spool.refused_dir().exists()


def test_past_its_bound_the_spool_takes_nothing_and_the_instance_is_indexed_before_its_answer(clinic, tmp_path, owner):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 3)
    owner.max_entries = 1
    association = _spool_one(owner, clinic, tmp_path, sent[1])  # lingers: one entry unindexed

    result = _receive(owner, clinic, tmp_path, sent[2], association)

    assert result is not None and result.created  # indexed on the receiving thread
    assert owner.wait_for(association)
    assert Instance.objects.count() == 3


def test_an_ended_association_keeps_its_sender_record_until_its_instances_are_indexed(clinic, tmp_path, owner):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 2)
    association = _spool_one(owner, clinic, tmp_path, sent[1])
    owner.finish(association)  # at once: it does not wait for the indexer
    assert (owner.folder / f"{association.name}.json").exists()
    assert owner.wait_for(association)
    assert sorted(p.name for p in owner.folder.iterdir()) == [".lock"]


def test_dicom_storage_check_reports_what_a_running_server_has_not_indexed_yet(clinic, tmp_path, owner) -> None:  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 2)
    association = _spool_one(owner, clinic, tmp_path, sent[1])  # lingers, as behind a stalled indexer
    out = StringIO()
    with pytest.raises(SystemExit) as failed:
        call_command("dicom_storage_check", stdout=out)
    assert failed.value.code == 1
    assert f"not indexed yet by the running dicom_server (received 0 s ago): {owner.folder}" in out.getvalue()
    assert "1 spooled instance(s) not indexed yet" in out.getvalue()

    assert owner.wait_for(association)
    out = StringIO()
    call_command("dicom_storage_check", stdout=out)
    assert "not indexed yet" not in out.getvalue()


def test_a_run_of_a_series_moved_since_its_parents_were_remembered_is_left_to_the_careful_path(
    clinic, dicom_dir, tmp_path
):  # type: ignore[no-untyped-def]
    """A series moved to another study (by another process) since this process remembered its
    parents: the run's one commit fails as a whole, nothing is counted or placed, and the
    entries go one by one (where the careful path sorts each out)."""
    sent = _known_series(clinic, 3)
    series = Series.objects.get()
    elsewhere = make_ct_series(1, 16, 16)
    ingest_bytes(part10_bytes(elsewhere[0]), institution=clinic, actor=_sender(clinic).actor, via="dimse")
    Series.objects.filter(pk=series.pk).update(study=Study.objects.get(study_uid=elsewhere[0].StudyInstanceUID))
    before = list(Study.objects.order_by("pk").values_list("num_series", "num_instances", "size_bytes"))
    entries = []
    for number, data in enumerate(sent[1:]):
        path = _received(tmp_path, data, f"{number}.dcm")
        parsed = read(path, None)
        entries.append((path, parsed, index.known_key(parsed.attributes, clinic)))
    sender = _sender(clinic)

    together = ingest.index_spooled_series(
        entries, institution=clinic, actor=sender.actor, via=sender.via, source=sender.source
    )

    assert together is None
    assert list(Study.objects.order_by("pk").values_list("num_series", "num_instances", "size_bytes")) == before
    assert Instance.objects.filter(series=series).count() == 1
    assert len(stored_files(dicom_dir)) == 2
    assert not any(remembered[2] == series.pk for remembered in index.known_parents.rows.values())


def test_a_batch_right_after_a_commit_is_not_preceded_by_a_health_check(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The indexer's batches follow each other within milliseconds: the connection that just
    committed one is not sent Django's health check round trip before the next; one that has
    been idle longer (a database restart takes longer) is."""
    from django.db import connection, connections

    checks: list[int] = []
    wrapper_class = type(connections["default"])
    is_usable = wrapper_class.is_usable
    monkeypatch.setattr(wrapper_class, "is_usable", lambda self: checks.append(1) or is_usable(self))

    def batch() -> None:
        spool._connection_checked()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    connection.ensure_connection()
    connection.alliance_used_well = (connection.connection, time.monotonic() - 60)
    batch()
    assert checks == [1]  # idle a minute: checked
    spool._committed_now()
    batch()
    assert checks == [1]  # committed a moment ago: not checked again


def test_a_batch_holding_an_instance_stored_already_leaves_no_patient_behind(clinic, dicom_dir, tmp_path):  # type: ignore[no-untyped-def]
    """The batch's patients are made in the round trip that finds what is stored already: when
    one of its instances is (a resend), the batch is rolled back whole before anything is
    placed, its new patients with it, and each entry goes on its own."""
    stored, fresh = make_ct_series(1, 16, 16, patient_id="S-1")[0], make_ct_series(1, 16, 16, patient_id="N-1")[0]
    ingest_bytes(part10_bytes(stored), institution=clinic, actor=_sender(clinic).actor, via="dimse")
    entries = []
    for number, ds in enumerate((fresh, stored)):
        path = _received(tmp_path, part10_bytes(ds), f"{number}.dcm")
        parsed = read(path, None)
        entries.append((path, parsed, index.known_key(parsed.attributes, clinic), "10.0.0.5:4100"))
    sender = _sender(clinic)

    together = ingest.index_spooled_new(entries, institution=clinic, actor=sender.actor, via=sender.via)

    assert together is False
    assert not Patient.objects.filter(patient_id="N-1").exists()
    assert not Instance.objects.filter(sop_uid=fresh.SOPInstanceUID).exists()
    assert len(stored_files(dicom_dir)) == 1


def test_a_new_study_s_entry_is_synced_on_the_answering_thread_before_its_answer(clinic, tmp_path, owner, monkeypatch):  # type: ignore[no-untyped-def]
    """The received data is synced, then the spool folder, on the thread that answers, before
    receive_path returns (the answer): no hand-off to another thread, and nothing answered
    that a crash could lose."""
    data = part10_bytes(make_ct_series(1, 16, 16, patient_id="SYNC-1")[0])
    events: list[tuple[str, str, str]] = []
    real_fdatasync, real_fsync_dir = storage.fdatasync, storage.fsync_dir

    def fdatasync(path: Path) -> None:
        events.append(("fdatasync", Path(path).parent.name, threading.current_thread().name))
        real_fdatasync(path)

    def fsync_dir(path: Path) -> None:
        events.append(("fsync_dir", Path(path).name, threading.current_thread().name))
        real_fsync_dir(path)

    monkeypatch.setattr(storage, "fdatasync", fdatasync)
    monkeypatch.setattr(storage, "fsync_dir", fsync_dir)
    association = owner.association(_sender(clinic))
    answer = receive_path(
        _received(tmp_path, data, "rx-sync.dcm"),
        institution=clinic,
        actor=_sender(clinic).actor,
        via="dimse",
        source="10.0.0.5:4100",
        spooling=Spooling(owner, association),
    )
    answered = list(events)
    assert answer is None  # answered from the spool
    here = threading.current_thread().name
    assert answered == [
        ("fdatasync", owner.folder.name, here),  # the entry's data (a link to the received file)
        ("fsync_dir", owner.folder.name, here),  # then its name in the spool folder
    ]
    assert owner.wait_for(association)
    assert Instance.objects.get().sha256 == hashlib.sha256(data).hexdigest()
