"""Issue 22 item 5: the audit trail is sent to an ATNA collector as DICOM PS3.15 A.5 messages
over RFC 5424 syslog (octet counting over TCP, RFC 6587/5425; TLS per RFC 5425), and nothing
is lost while the collector is away: a local receiver is stopped, events are recorded, it is
started again, and every event arrives exactly once."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from alliance import atna, audit
from alliance.models import AtnaOutbox, AuditEvent
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


class Receiver:
    """A syslog collector on loopback: octet-counted frames over TCP, or over TLS."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port, self.tls = port, tls
        self.frames: list[bytes] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self._server.close()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                with conn:
                    self._read(conn)
            except (OSError, ssl.SSLError):
                continue  # a client that would not trust us, or went away: as a collector would

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while chunk := conn.recv(65536):
            buffer += chunk
            while b" " in buffer:
                length, _, rest = buffer.partition(b" ")
                if len(rest) < int(length):
                    break
                self.frames.append(rest[: int(length)])
                buffer = rest[int(length) :]


def _port() -> int:
    for port in range(18700, 18750):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 18700-18749")


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    port = _port()
    settings.ATNA_SYSLOG_URL = f"tcp://127.0.0.1:{port}"
    yield Receiver(port)


def xml_of(frame: bytes) -> ET.Element:
    header, bom, payload = frame.partition(b"\xef\xbb\xbf")
    assert bom, "RFC 5424: a UTF-8 MSG starts with the BOM"
    assert header.startswith(b"<85>1 ") and b" IHE+RFC-3881 - " in header
    return ET.fromstring(payload)  # noqa: S314 - our own messages


def assert_a5_structure(root: ET.Element) -> None:
    assert root.tag == "AuditMessage"
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") in {"C", "R", "U", "D", "E"}
    assert ident.get("EventOutcomeIndicator") in {"0", "4", "8", "12"} and ident.get("EventDateTime")
    event_id = ident.find("EventID")
    assert event_id is not None and event_id.get("csd-code") and event_id.get("codeSystemName") == "DCM"
    participant = root.find("ActiveParticipant")
    assert participant is not None and participant.get("UserID") and participant.get("UserIsRequestor") == "true"
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID")


def event_ids_of(frames: list[bytes]) -> list[str]:
    """Each message's object id (the test records one object per event)."""
    found = []
    for frame in frames:
        root = xml_of(frame)
        objects = [
            o for o in root.findall("ParticipantObjectIdentification") if o.get("ParticipantObjectTypeCode") == "2"
        ]
        found.append(objects[0].get("ParticipantObjectID") if objects else "")
    return found


def record(n: int, tag: str) -> list[str]:
    ids = [f"{tag}-{i}" for i in range(n)]
    for object_id in ids:
        audit.record(actor=audit.SYSTEM, action="study.view", object_type="study", object_id=object_id)
    return ids


def test_every_event_arrives_exactly_once_across_collector_outages(receiver: Receiver) -> None:
    first = record(3, "away")
    assert atna.send_pending() == 0  # nobody listens: nothing sent, nothing dropped
    assert AtnaOutbox.objects.count() == 3
    receiver.start()
    try:
        assert atna.send_pending() == 3
    finally:
        receiver.stop()
    second = record(4, "away-again")
    assert atna.send_pending() == 0
    receiver.start()
    try:
        third = record(2, "back")
        assert atna.send_pending(batch=2) == 6  # in batches of two
        assert atna.send_pending() == 0
    finally:
        receiver.stop()
    assert sorted(event_ids_of(receiver.frames)) == sorted(first + second + third)
    assert not AtnaOutbox.objects.exists()


def test_messages_have_the_a5_structure_and_map_our_actions(receiver: Receiver, alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a)
    owner = audit.Actor.for_user(alliance_world.owner.user)
    AtnaOutbox.objects.all().delete()  # what making the personas recorded
    audit.record(actor=owner, action="login", source="10.0.0.9")
    audit.record(
        actor=owner, action="study.view", object_type="study", object_id=study.study_uid, patient=str(study.patient_id)
    )
    audit.record(
        actor=owner,
        action="read.denied",
        object_type="study",
        object_id=study.study_uid,
        outcome=AuditEvent.Outcome.DENIED,
    )
    audit.record(actor=owner, action="dicom.find", detail={"keys": {"PatientID": "P-1"}})
    receiver.start()
    try:
        assert atna.send_pending() == 4
    finally:
        receiver.stop()
    messages = [xml_of(frame) for frame in receiver.frames]
    for root in messages:
        assert_a5_structure(root)
    codes = [root.find("EventIdentification/EventID").get("csd-code") for root in messages]  # type: ignore[union-attr]
    assert codes == ["110114", "110103", "110103", "110112"]
    login, view, denied, _ = messages
    assert login.find("ActiveParticipant").get("NetworkAccessPointID") == "10.0.0.9"  # type: ignore[union-attr]
    assert denied.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    objects = {o.get("ParticipantObjectTypeCode"): o for o in view.findall("ParticipantObjectIdentification")}
    assert objects["1"].get("ParticipantObjectID") == str(study.patient_id)  # the patient
    assert objects["2"].get("ParticipantObjectID") == study.study_uid  # the study
    assert objects["2"].find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"  # type: ignore[union-attr]


def test_without_a_collector_the_outbox_does_not_grow(settings: Any) -> None:
    settings.ATNA_SYSLOG_URL = ""
    record(2, "off")
    assert AtnaOutbox.objects.count() == 2
    assert atna.send_pending() == 0
    assert not AtnaOutbox.objects.exists()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "collector.pem", folder / "collector.key"
    subprocess.run(  # noqa: S603
        [
            "/usr/bin/openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_over_tls_with_the_collectors_ca(settings: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = _port()
    settings.ATNA_SYSLOG_URL = f"tls://127.0.0.1:{port}"
    settings.ATNA_SYSLOG_CA = str(cert)
    receiver = Receiver(port, tls=context)
    ids = record(3, "tls")
    receiver.start()
    try:
        assert atna.send_pending() == 3
    finally:
        receiver.stop()
    assert sorted(event_ids_of(receiver.frames)) == sorted(ids)


def test_over_tls_an_unknown_ca_sends_nothing_and_keeps_the_events(settings: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = _port()
    settings.ATNA_SYSLOG_URL = f"tls://127.0.0.1:{port}"
    settings.ATNA_SYSLOG_CA = ""  # the system's CAs do not know this collector
    receiver = Receiver(port, tls=context)
    record(2, "untrusted")
    receiver.start()
    try:
        assert atna.send_pending() == 0
    finally:
        receiver.stop()
    assert AtnaOutbox.objects.count() == 2


def _beat_schedule(**env: str) -> dict[str, Any]:
    import json
    import os
    import sys

    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: [v['task'], v['schedule']] for k, v in s.CELERY_BEAT_SCHEDULE.items()}))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ATNA_")}
    environ.update(DJANGO_SETTINGS_MODULE="alliance.settings", **env)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], env=environ, cwd=root, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_beat_sends_to_the_collector_only_when_one_is_set() -> None:
    tasks = {task: every for task, every in _beat_schedule(ATNA_SYSLOG_URL="tcp://127.0.0.1:6514").values()}
    assert tasks["alliance.tasks.send_atna"] == 10.0
    assert "alliance.tasks.empty_atna_outbox" not in tasks
    tasks = {task: every for task, every in _beat_schedule().values()}
    assert "alliance.tasks.send_atna" not in tasks
    # the trigger still fills the outbox: it is emptied now and then, not every few seconds
    assert tasks["alliance.tasks.empty_atna_outbox"] >= 3600


def test_emptying_the_outbox_keeps_the_audit_trail(settings: Any) -> None:
    from alliance.tasks import empty_atna_outbox

    settings.ATNA_SYSLOG_URL = ""
    record(3, "off")
    assert empty_atna_outbox() == 3
    assert not AtnaOutbox.objects.exists()
    assert AuditEvent.objects.filter(action="study.view", object_id__startswith="off-").count() == 3
