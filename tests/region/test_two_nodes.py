"""Two nodes of a region: each a gunicorn web process and a `dicom_server` on ports and a
DATA_DIR of its own, both on one PostgreSQL database, one RabbitMQ (a real Celery worker
renders) and one S3 bucket (tests/s3.py). Stores go through both nodes (storescu to each
DICOM server, STOW-RS to each web), reads through both (QIDO-RS, WADO-RS and thumbnails on
each web, C-FIND on each DICOM server), and every instance is found exactly once with its
thumbnail (a worker and beat on node one). One node's DICOM server is killed while a modality sends to it and started
again: everything it acknowledged is indexed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread

from imaging import render
from imaging.models import Instance, Study
from tests import factories
from tests.celery_worker import BROKER, new_prefix
from tests.faults.procs_stack import Stack, acknowledged, body_sha256, storescu, wait_for
from tests.faults.procs_world import dimse_world  # noqa: F401  (a fixture)
from tests.imaging import dicomgen
from tests.processes import free_port
from tests.region.nodes import dicomweb, find_studies, retrieved_bodies, storage_check_report, stored_bodies
from tests.s3 import dicom_keys, environment
from tests.s3 import keys as bucket_keys

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]


def _series(folder: Path, n: int, patient_id: str, size: int = 64) -> tuple[str, list[Path]]:
    datasets = dicomgen.make_ct_series(n, size, size, patient_id=patient_id)
    return str(datasets[0].StudyInstanceUID), dicomgen.write_series(datasets, folder)


def _node(folder: Path, env: dict[str, str]) -> Stack:
    folder.mkdir()
    return Stack(folder, **env)


def test_two_nodes_store_and_read_everything_once_and_a_restart_loses_nothing_acknowledged(
    dimse_world: Any,  # noqa: F811
    s3: Any,
    tmp_path: Path,
) -> None:
    reader = factories.make_doctor(institution=dimse_world.clin_a, username="reader")
    env = {**environment(s3.meta.endpoint_url), "CELERY_BROKER_URL": BROKER, "CELERY_QUEUE_PREFIX": new_prefix("nodes")}
    # beat's sweep asks again for the renders a killed server had not handed to the broker yet
    env |= {"RETRY_SWEEP_SECONDS": "5", "RETRY_AFTER_SECONDS": "5"}
    one, two = _node(tmp_path / "node1", env), _node(tmp_path / "node2", env)
    files: dict[str, list[Path]] = {}
    # e is killed mid-store: large enough that the kill lands before the last of its tiny
    # instances is answered (100 were all answered between two looks on a fast machine)
    for name, n in (("a", 30), ("b", 30), ("c", 3), ("d", 3), ("e", 400)):
        study_uid, files[study_uid] = _series(tmp_path / name, n, f"NODES-{name.upper()}", size=32 if n > 50 else 64)
    study_a, study_b, study_c, study_d, study_e = files
    port_one, port_two = free_port(), free_port()
    try:
        one.dicom_server(port_one)
        two.dicom_server(port_two)
        sites = [one.web(), two.web()]
        one.worker()
        one.beat()  # one per region
        clients = dicomweb(reader, *sites)

        # stores through both nodes
        assert storescu(port_one, files[study_a], tmp_path / "a.log").wait(timeout=300) == 0
        assert storescu(port_two, files[study_b], tmp_path / "b.log").wait(timeout=300) == 0
        for client, study_uid in zip(clients, (study_c, study_d), strict=True):
            stored = client.store_instances([dcmread(p) for p in files[study_uid]])
            assert len(stored.ReferencedSOPSequence) == 3 and "FailedSOPSequence" not in stored

        # node two's DICOM server killed while a modality sends to it, then started again
        log = tmp_path / "e-killed.log"
        sending = storescu(port_two, files[study_e], log)
        assert wait_for(lambda: len(acknowledged(log)) >= 20, 120, interval=0.01), log.read_text()[-2000:]
        two.kill("dicom")
        assert sending.wait(timeout=120) != 0  # its association died with the server
        acked = {body_sha256(p)[0] for p in acknowledged(log)}
        assert 20 <= len(acked) < len(files[study_e])
        two.dicom_server(port_two)
        assert wait_for(lambda: acked <= set(Instance.objects.values_list("sop_uid", flat=True)), 120), two.log("dicom")
        assert storescu(port_one, files[study_e], tmp_path / "e-again.log").wait(timeout=300) == 0  # the rest

        # every instance exactly once, with its thumbnail in the bucket (no node keeps its own)
        expected = {uid: sorted(stored_bodies(paths)) for uid, paths in files.items()}
        counts = sorted((uid, len(sops)) for uid, sops in expected.items())
        assert sorted(Instance.objects.values_list("sop_uid", flat=True)) == sorted(
            sop for sops in expected.values() for sop in sops
        )
        assert sorted(Study.objects.values_list("study_uid", "num_instances")) == counts
        assert dicom_keys(s3) == sorted(Instance.objects.values_list("storage_key", flat=True))
        assert wait_for(lambda: not Instance.objects.filter(rendered=False).exists(), 300), one.log("worker")[-3000:]
        rendered = set(bucket_keys(s3, "renders/"))
        for instance in Instance.objects.all():
            assert f"renders/{render.cache_key(instance, render.THUMBNAIL_PX)}" in rendered

        # reads through both nodes
        for node, (site, client, port) in enumerate(zip(sites, clients, (port_one, port_two), strict=True)):
            assert sorted(find_studies(port, tmp_path / f"find-{node}")) == counts
            found = client.search_for_studies(fields=["NumberOfStudyRelatedInstances"])
            assert sorted((s["0020000D"]["Value"][0], s["00201208"]["Value"][0]) for s in found) == counts
            for study_uid, sops in expected.items():
                instances = client.search_for_instances(study_uid, limit=1000)
                assert sorted(i["00080018"]["Value"][0] for i in instances) == sops
                wado = retrieved_bodies(client, study_uid, tmp_path / f"wado-{node}-{study_uid}")
                assert wado == stored_bodies(files[study_uid])
                thumbnail = requests.get(
                    f"{site}/dicomweb/studies/{study_uid}/thumbnail",
                    headers={**client._session.headers, "Accept": "image/jpeg"},
                    timeout=60,
                )
                assert (thumbnail.status_code, thumbnail.content[:2]) == (200, b"\xff\xd8")
        for stack in (one, two):
            assert not list(stack.data_dir.rglob("*.jpg")) and not (stack.data_dir / "dicom").exists()
            assert not list(stack.data_dir.glob("spool/*/*.dcm"))  # nothing left unindexed
        status, report = storage_check_report()
        assert status == 0, report
    finally:
        one.stop_all()
        two.stop_all()
