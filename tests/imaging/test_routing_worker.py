"""Routing through a real Celery worker on the broker (issue 18 item 3 and the routing test of
item 1): a study sent by hand is queued after the commit, the worker sends it to dcmtk's
storescp, and what arrives is the stored bytes; a second delivery of the task sends nothing
again; an item whose task message was lost is found by the sweep, run in the worker, and sent."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from alliance.access import resolve_principal
from imaging.ingest import ingest_bytes
from imaging.routing import services, tasks
from imaging.routing.models import RouteItem, State
from tests import factories
from tests.celery_worker import new_prefix, sender, start_worker, succeeded, wait_for
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.test_routing_peers import digests, ours
from tests.processes import free_port, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]
SEND = "imaging.routing.tasks.send_route_item"
SWEEP = "imaging.routing.tasks.sweep"
SLICES = 12


def _storescp(folder: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    folder.mkdir()
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen(["storescp", "+B", "-aet", "STORESCP", "-od", str(folder), str(port)], env=env)
    wait_for_port(port, proc)
    return port, proc


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """Two storescp instances: the PACS a study is sent to by hand, and the one whose message is lost."""
    first, first_proc = _storescp(tmp_path / "pacs")
    second, second_proc = _storescp(tmp_path / "workstation")
    try:
        yield SimpleNamespace(pacs=(first, tmp_path / "pacs"), workstation=(second, tmp_path / "workstation"))
    finally:
        for proc in (first_proc, second_proc):
            proc.terminate()
            proc.wait(timeout=10)


def _worker(tmp_path: Path, **env: str) -> Iterator[SimpleNamespace]:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    prefix = new_prefix("routing")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        # it reads the stored files where this test's storage keeps them (settings.DATA_DIR)
        proc = start_worker(prefix, out, settings.DATA_DIR, TCP_NODELAY="1", **env)
    try:
        yield SimpleNamespace(app=sender(prefix), log=log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[SimpleNamespace]:
    yield from _worker(tmp_path)


@pytest.fixture
def quick_retry_worker(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A worker whose routing retries come 3 s apart (the backoff's base and cap). On RabbitMQ
    a 3 s countdown crosses two of Celery's delay queues: celery_delayed_1 (2 s), whose
    expired messages go on to celery_delayed_0 (1 s)."""
    yield from _worker(tmp_path, ROUTE_RETRY_BASE_SECONDS="3", ROUTE_RETRY_MAX_SECONDS="3")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_routes_a_study_to_storescp_byte_for_byte_and_sweeps_a_lost_message(
    worker: Any, peers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = factories.make_institution(name="Clinic A", ae_title="CLINA")
    admin = resolve_principal(factories.make_doctor(institution=clinic, roles=["institution_admin"]).user)
    owner = resolve_principal(factories.make_doctor(institution=clinic).user)
    study = None
    for ds in make_ct_series(SLICES, 96, 96, patient_id="RW-1"):
        study = ingest_bytes(part10_bytes(ds), institution=clinic, actor=owner.actor, via="test").study
    assert study is not None

    def destination(name: str, port: int) -> Any:
        values = {"name": name, "kind": "dimse", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}
        return services.destination_save(by=admin, institution=clinic, values=values)

    pacs = destination("PACS", peers.pacs[0])
    workstation = destination("Workstation", peers.workstation[0])
    queued: list[int] = []

    def to_the_broker(pk: int) -> None:
        queued.append(pk)
        worker.app.send_task(SEND, args=[pk])

    monkeypatch.setattr(tasks.send_route_item, "delay", to_the_broker)

    # By hand: queued after route_study's commit, sent by the worker.
    item = services.route_study(by=owner, study=study, destination=pacs)
    assert item is not None and queued == [item.pk]
    sent = wait_for(lambda: RouteItem.objects.get(pk=item.pk).state == State.SENT, timeout=120)
    assert sent, _tail(worker.log)
    item.refresh_from_db()
    assert (item.attempts, item.instances_sent, item.reason) == (1, SLICES, "")
    received = sorted(peers.pacs[1].iterdir())
    assert digests(received) == ours(study)  # the stored bytes, byte for byte

    # The same message again (a redelivery): nothing is sent twice.
    worker.app.send_task(SEND, args=[item.pk])
    assert wait_for(lambda: succeeded(worker.log, SEND) == 2, timeout=120), _tail(worker.log)
    assert sorted(peers.pacs[1].iterdir()) == received

    # A lost message (the broker was down after the commit): the sweep, in the worker, finds it.
    monkeypatch.setattr(tasks.send_route_item, "delay", lambda pk: None)
    lost = services.route_study(by=owner, study=study, destination=workstation)
    assert lost is not None
    stale = timezone.now() - services.REQUEUE_AFTER - timedelta(seconds=1)
    RouteItem.objects.filter(pk=lost.pk).update(updated_at=stale)
    worker.app.send_task(SWEEP)
    swept = wait_for(lambda: RouteItem.objects.get(pk=lost.pk).state == State.SENT, timeout=120)
    assert swept, _tail(worker.log)
    assert digests(sorted(peers.workstation[1].iterdir())) == ours(study)
    assert succeeded(worker.log, SWEEP) == 1


@pytest.mark.django_db(transaction=True)
def test_a_peer_down_for_several_attempts_gets_the_study_from_the_workers_own_retries(
    quick_retry_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retry is a countdown held by the broker (on RabbitMQ, Celery's delay queues). The
    second retry's message carried the first one's dead-letter history (x-death), so when
    celery_delayed_1 passed it on to celery_delayed_0 again, RabbitMQ took it for a cycle
    and kept it in celery_delayed_1 for good (Celery's issues 9867 and 10111): the third
    attempt never came. alliance/celery.py drops that history from every task it sends."""
    worker = quick_retry_worker
    clinic = factories.make_institution(name="Clinic A", ae_title="CLINA")
    admin = resolve_principal(factories.make_doctor(institution=clinic, roles=["institution_admin"]).user)
    owner = resolve_principal(factories.make_doctor(institution=clinic).user)
    study = None
    for ds in make_ct_series(3, 64, 64, patient_id="RW-2"):
        study = ingest_bytes(part10_bytes(ds), institution=clinic, actor=owner.actor, via="test").study
    assert study is not None
    port = free_port()  # nobody listens yet: every attempt is refused, a transient failure
    values = {"name": "Later", "kind": "dimse", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}
    later = services.destination_save(by=admin, institution=clinic, values=values)
    monkeypatch.setattr(tasks.send_route_item, "delay", lambda pk: worker.app.send_task(SEND, args=[pk]))

    item = services.route_study(by=owner, study=study, destination=later)
    assert item is not None
    tried = wait_for(lambda: RouteItem.objects.get(pk=item.pk).attempts >= 3, timeout=120)
    assert tried, f"attempts: {RouteItem.objects.get(pk=item.pk).attempts}\n{_tail(worker.log)}"
    folder = tmp_path / "later"
    folder.mkdir()
    env = {**os.environ, "TCP_NODELAY": "1"}
    peer = subprocess.Popen(["storescp", "+B", "-aet", "STORESCP", "-od", str(folder), str(port)], env=env)
    try:
        wait_for_port(port, peer)
        sent = wait_for(lambda: RouteItem.objects.get(pk=item.pk).state == State.SENT, timeout=60)
        assert sent, _tail(worker.log)  # by a retry: no sweep runs here
        assert digests(sorted(folder.iterdir())) == ours(study)
    finally:
        peer.terminate()
        peer.wait(timeout=10)
