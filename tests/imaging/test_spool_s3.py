"""The DIMSE write-ahead spool with the DICOM storage on S3 (tests/s3.py starts SeaweedFS): the
spool stays a local folder; its indexer uploads a run of a series and indexes it in one
commit, and drops the entries only once their objects are in the bucket. With the bucket
unreachable the indexer keeps what was answered and the spool refuses new instances."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from alliance import audit
from imaging import ingest, spool, storage
from imaging.ingest import IngestError, Spooling, ingest_bytes, receive_path
from imaging.models import Instance, Series, Study
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.processes import until
from tests.s3 import BUCKET, dicom_keys, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _sender(clinic) -> spool.Sender:  # type: ignore[no-untyped-def]
    return spool.Sender(clinic.pk, audit.Actor("device", "7", "CT_CLINA", clinic.pk), "dimse", "10.0.0.5:4100")


def _known_series(clinic, n: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    sent = [part10_bytes(ds) for ds in make_ct_series(n, 32, 32)]
    ingest_bytes(sent[0], institution=clinic, actor=_sender(clinic).actor, via="dimse", source="10.0.0.5:4100")
    return sent


def _receive(owner: spool.Spool, association, clinic, tmp_path: Path, data: bytes, name: str):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return receive_path(
            path,
            institution=clinic,
            actor=_sender(clinic).actor,
            via="dimse",
            source="10.0.0.5:4100",
            spooling=Spooling(owner, association),
        )
    finally:
        path.unlink()  # what pynetdicom does after the handler: the spool holds its own link


@pytest.fixture
def owner(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(spool, "LINGER_SECONDS", 3600.0)  # gathers until someone waits: one batch
    monkeypatch.setattr(spool, "_RETRY_SECONDS", 0.2)
    owner = spool.Spool()
    yield owner
    owner.close()


def _entries(owner: spool.Spool) -> list[str]:
    return sorted(p.name for p in owner.folder.iterdir() if p.suffix == ".dcm")


def test_further_instances_are_spooled_locally_then_uploaded_and_indexed_together(
    s3, clinic, tmp_path, owner, monkeypatch
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 6)
    batches: list[int] = []
    together = ingest.index_spooled_series

    def spy(entries, **kwargs):  # type: ignore[no-untyped-def]
        result = together(entries, **kwargs)
        batches.append(len(result) if result is not None else 0)
        return result

    monkeypatch.setattr(ingest, "index_spooled_series", spy)
    association = owner.association(_sender(clinic))

    answers = [_receive(owner, association, clinic, tmp_path, data, f"rx-{i}") for i, data in enumerate(sent[1:])]

    assert answers == [None] * 5  # answered once durable in the local spool
    assert len(_entries(owner)) + Instance.objects.count() - 1 >= 5
    assert owner.wait_for(association)
    assert batches == [5]
    assert _entries(owner) == []
    study = Study.objects.get()
    assert (study.num_instances, study.size_bytes, Series.objects.get().num_instances) == (6, sum(map(len, sent)), 6)
    instances = list(Instance.objects.all())
    assert dicom_keys(s3) == sorted(i.storage_key for i in instances)
    for data in sent:
        instance = Instance.objects.get(sha256=hashlib.sha256(data).hexdigest())
        assert s3.get_object(Bucket=BUCKET, Key=instance.storage_key)["Body"].read() == data


def test_with_the_bucket_away_the_spool_keeps_what_it_answered_and_refuses_more_until_it_returns(
    s3, s3_endpoint, clinic, tmp_path, owner, settings
):  # type: ignore[no-untyped-def]
    sent = _known_series(clinic, 5)
    association = owner.association(_sender(clinic))
    options = settings.STORAGES["dicom"]["OPTIONS"]
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {
            **settings.STORAGES["dicom"],
            "OPTIONS": {**options, "endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}"},
        },
    }

    answers = [_receive(owner, association, clinic, tmp_path, data, f"rx-{i}") for i, data in enumerate(sent[1:3])]
    assert answers == [None, None]
    assert not owner.wait_for(association, timeout=30)  # stalled: the uploads fail
    assert owner.stalled
    with pytest.raises(IngestError) as refused:
        _receive(owner, association, clinic, tmp_path, sent[3], "rx-refused")
    assert (refused.value.code, refused.value.dicom_status) == ("storage-failed", 0xA700)
    assert len(_entries(owner)) == 2  # what was answered stays
    assert Instance.objects.count() == 1  # nothing half-indexed
    assert len(dicom_keys(s3)) == 1

    settings.STORAGES = {**settings.STORAGES, "dicom": {**settings.STORAGES["dicom"], "OPTIONS": options}}

    assert until(lambda: association.pending == 0 and not owner.stalled)  # wait_for returns while stalled
    assert _entries(owner) == []
    assert Instance.objects.count() == 3
    assert dicom_keys(s3) == sorted(Instance.objects.values_list("storage_key", flat=True))
    assert _receive(owner, association, clinic, tmp_path, sent[4], "rx-after") is None
    assert owner.wait_for(association)
    assert Study.objects.get().num_instances == 4
    assert storage.places_exclusively() is False
