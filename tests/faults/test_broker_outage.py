"""The broker stopped while instances arrive over C-STORE and STOW and while a consult moves:
every sender is answered as usual, and once the broker is back the thumbnails are rendered
and the notification is mailed (beat's sweeps); the storage check is clean and every
instance comes back byte for byte over C-GET. Once on a private redis-server that loses what
it held, once on a private RabbitMQ node (its own node name, ports and data: the machine's
shared broker is never touched) stopped in the middle of a run, with the DICOM server, the
web, beat and a worker running through the outage, and its quorum queues keeping across the
restart what was queued before it."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import requests
from kombu import Connection

from alliance import audit, services
from alliance.models import PrivilegeChange
from alliance.queues import KINDS, is_rabbitmq
from consults.models import Notification, Status
from imaging import render, storage
from imaging.models import Instance, Study
from tests.celery_worker import BROKER
from tests.consults.conftest import walk
from tests.factories import make_doctor
from tests.faults.procs_stack import (
    PrivateRabbitMQ,
    PrivateRedis,
    Stack,
    body_sha256,
    retrieved_with_getscu,
    storage_check,
    storescu,
    wait_for,
)
from tests.imaging import dicomgen
from tests.processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
BOUNDARY = "procs-outage-boundary"


def _stow(site: str, token: str, files: list[Path]) -> requests.Response:
    parts = [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() for p in files]
    body = b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }
    return requests.post(f"{site}/dicomweb/studies", data=body, headers=headers, timeout=300)


def _series(folder: Path, n: int, patient_id: str) -> tuple[str, list[Path]]:
    datasets = dicomgen.make_ct_series(n, 64, 64, patient_id=patient_id)
    return str(datasets[0].StudyInstanceUID), dicomgen.write_series(datasets, folder)


def test_a_broker_outage_delays_renders_and_mail_and_loses_none(alliance_world: Any, tmp_path: Path) -> None:
    world = alliance_world
    services.device_create(institution=world.clin_a, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    token = services.token_create(doctor=world.owner, by=audit.SYSTEM).key
    dimse_study, dimse_files = _series(tmp_path / "dimse", 30, "PB-1")
    stow_study, stow_files = _series(tmp_path / "stow", 10, "PB-2")
    redis = PrivateRedis(tmp_path)
    redis.start()
    stack = Stack(tmp_path, CELERY_BROKER_URL=redis.url, RETRY_SWEEP_SECONDS="2", RETRY_AFTER_SECONDS="1")
    port = free_port()
    try:
        stack.dicom_server(port)
        site = stack.web()
        redis.stop()

        assert storescu(port, dimse_files, tmp_path / "storescu.log").wait(timeout=300) == 0
        assert _stow(site, token, stow_files).status_code == 200
        consult = walk(world, Status.DRAFT, study=Study.objects.get(study_uid=dimse_study))
        moved = requests.post(
            f"{site}/api/v1/consults/{consult.pk}/request/", headers={"Authorization": f"Token {token}"}, timeout=60
        )
        assert moved.status_code == 200, moved.text[:2000]

        redis.start()
        stack.worker()
        stack.beat()
        every = Instance.objects.filter(series__study__study_uid__in=[dimse_study, stow_study])
        all_rendered = wait_for(lambda: every.filter(rendered=True).count() == len(dimse_files) + len(stow_files))
        assert all_rendered, stack.log("worker")[-3000:]
        mailed = Notification.objects.filter(consult=consult, user=world.specialist.user).exclude(emailed_at=None)
        assert wait_for(mailed.exists), stack.log("worker")[-3000:]
        assert f"[Consult #{consult.pk}]" in stack.log("worker")

        assert retrieved_with_getscu(port, dimse_study, tmp_path / "get-1") == dict(map(body_sha256, dimse_files))
        assert retrieved_with_getscu(port, stow_study, tmp_path / "get-2") == dict(map(body_sha256, stow_files))
        status, report, orphans = storage_check()
        assert (status, orphans) == (0, []), report
    finally:
        stack.stop_all()
        redis.stop()


# --- RabbitMQ ---------------------------------------------------------------------------

RENDER_QUEUE = "render"
NOT_QUEUED = "could not queue the rendering"  # imaging.tasks._Batcher.flush, the broker away


def _queued_renders(rabbit: PrivateRabbitMQ) -> set[int]:
    """The instance ids of every render_instances message waiting in the render queue, read
    without taking them: the messages are fetched unacknowledged and go back to the queue
    when the channel closes."""
    ids: set[int] = set()
    with Connection(rabbit.url, connect_timeout=10) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(RENDER_QUEUE, no_ack=False)) is not None:
            if message.headers.get("task") == "imaging.tasks.render_instances":
                args, _kwargs, _embed = json.loads(message.body)
                ids.update(args[0])
    return ids


def _rendered(instance: Instance) -> bool:
    return storage.cached_render(render.cache_key(instance, render.THUMBNAIL_PX)) is not None


def test_rabbitmq_stopped_mid_run_delays_follow_up_work_and_loses_none(alliance_world: Any, tmp_path: Path) -> None:
    if not PrivateRabbitMQ.SERVER.exists():
        if is_rabbitmq(BROKER):  # the suite runs on RabbitMQ: its server must be here (.ci/install-system-packages)
            pytest.fail(f"{PrivateRabbitMQ.SERVER} is missing while CONSULTS_TEST_BROKER_URL is RabbitMQ")
        pytest.skip("rabbitmq-server is not installed")
    world = alliance_world
    services.device_create(institution=world.clin_a, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    world.specialist.user.email = "specialist@hosp.example"
    world.specialist.user.save()
    token = services.token_create(doctor=world.owner, by=audit.SYSTEM).key
    admin_token = services.token_create(doctor=world.hosp_admin, by=audit.SYSTEM).key
    second_admin = make_doctor(
        institution=world.hosp, roles=["institution_admin", "specialist"], username="admin2", email="admin2@hosp.test"
    )
    before_study, before_files = _series(tmp_path / "before", 10, "RB-0")
    held_study, held_files = _series(tmp_path / "held", 10, "RB-1")
    dimse_study, dimse_files = _series(tmp_path / "dimse", 30, "RB-2")
    stow_study, stow_files = _series(tmp_path / "stow", 10, "RB-3")
    after_study, after_files = _series(tmp_path / "after", 5, "RB-4")
    rabbit = PrivateRabbitMQ(tmp_path)
    rabbit.start()
    stack = Stack(tmp_path, CELERY_BROKER_URL=rabbit.url, RETRY_SWEEP_SECONDS="2", RETRY_AFTER_SECONDS="1")
    everything_but_renders = tuple(kind for kind in KINDS if kind != RENDER_QUEUE)
    port = free_port()
    try:
        stack.dicom_server(port)
        site = stack.web()
        stack.worker("renderer", queues=(RENDER_QUEUE,))
        stack.worker("worker", queues=everything_but_renders)  # lives through the outage
        stack.beat()  # likewise
        every = Instance.objects.filter(series__study__study_uid__in=[before_study])
        assert storescu(port, before_files, tmp_path / "before.log").wait(timeout=300) == 0
        assert wait_for(lambda: every.filter(rendered=True).count() == len(before_files)), stack.log("renderer")[-3000:]

        # what the broker holds when it stops: renders queued while nobody takes them
        stack.kill("renderer", signal.SIGTERM)
        assert storescu(port, held_files, tmp_path / "held.log").wait(timeout=300) == 0
        held = set(Instance.objects.filter(series__study__study_uid=held_study).values_list("pk", flat=True))
        assert len(held) == len(held_files)
        assert wait_for(lambda: held <= _queued_renders(rabbit), 60), stack.log("dicom")[-3000:]

        rabbit.stop()  # the DICOM server, the web, beat and the worker keep running
        assert storescu(port, dimse_files, tmp_path / "storescu.log").wait(timeout=300) == 0
        assert _stow(site, token, stow_files).status_code == 200
        consult = walk(world, Status.DRAFT, study=Study.objects.get(study_uid=dimse_study))
        moved = requests.post(
            f"{site}/api/v1/consults/{consult.pk}/request/", headers={"Authorization": f"Token {token}"}, timeout=60
        )
        assert moved.status_code == 200, moved.text[:2000]
        seated = requests.patch(  # an admin seated on a desk waits for a second admin, who are told
            f"{site}/api/v1/pools/{world.pool.pk}/",
            json={"members": [world.specialist.pk, second_admin.pk]},
            headers={"Authorization": f"Token {admin_token}"},
            timeout=60,
        )
        assert seated.status_code == 202, seated.text[:2000]  # answered as usual: the change stands
        assert wait_for(lambda: NOT_QUEUED in stack.log("dicom"), 60), stack.log("dicom")[-3000:]
        delayed = Instance.objects.filter(series__study__study_uid__in=[held_study, dimse_study, stow_study])
        assert delayed.count() == len(held_files) + len(dimse_files) + len(stow_files)
        assert not delayed.filter(rendered=True).exists()  # nobody could render them: the broker is away
        mailed = Notification.objects.filter(consult=consult, user=world.specialist.user).exclude(emailed_at=None)
        assert not mailed.exists()
        change = PrivilegeChange.objects.get(subject=second_admin)
        assert change.notified_state == ""

        rabbit.start()  # the same node on the same data
        assert held <= _queued_renders(rabbit)  # kept by the quorum queue across the restart
        stack.worker("renderer", queues=(RENDER_QUEUE,))
        assert wait_for(lambda: delayed.filter(rendered=True).count() == delayed.count()), stack.log("renderer")[-3000:]
        assert wait_for(mailed.exists), stack.log("worker")[-3000:]
        notified = PrivilegeChange.objects.filter(pk=change.pk, notified_state=PrivilegeChange.State.PENDING)
        assert wait_for(notified.exists), stack.log("worker")[-3000:]
        assert second_admin.user.email in stack.log("worker")  # the console backend's mail

        # and once it is back, the servers queue their follow-up at once again
        failures = stack.log("dicom").count(NOT_QUEUED)
        assert storescu(port, after_files, tmp_path / "after.log").wait(timeout=300) == 0
        every = Instance.objects.filter(series__study__study_uid__in=[before_study, after_study])
        assert wait_for(lambda: every.filter(rendered=True).count() == len(before_files) + len(after_files))
        assert stack.log("dicom").count(NOT_QUEUED) == failures

        # as if there had been no outage: every thumbnail, the mail once, every byte
        assert all(stack.procs[name].poll() is None for name in ("dicom", "web", "worker", "beat"))
        assert stack.log("worker").count(f"Subject: [Consult #{consult.pk}]") == 1
        instances = list(Instance.objects.all())
        assert len(instances) == sum(map(len, (before_files, held_files, dimse_files, stow_files, after_files)))
        assert all(i.rendered and not i.unrenderable and _rendered(i) for i in instances)
        for name, study_uid, files in (("held", held_study, held_files), ("dimse", dimse_study, dimse_files)):
            assert retrieved_with_getscu(port, study_uid, tmp_path / f"get-{name}") == dict(map(body_sha256, files))
        assert retrieved_with_getscu(port, stow_study, tmp_path / "get-stow") == dict(map(body_sha256, stow_files))
        status, report, orphans = storage_check()
        assert (status, orphans) == (0, []), report
    finally:
        stack.stop_all()
        rabbit.stop()
