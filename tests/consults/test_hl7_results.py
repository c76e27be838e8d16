"""A signed consult report goes to the requesting institution's HIS as ORU^R01 over MLLP,
through an outbox row written with the signature: a test MLLP server records what it gets and
answers as a HIS would; an ACK AA closes the row, a HIS away or answering AE leaves it pending
for a retry, AR fails it, and nothing is sent twice."""

from __future__ import annotations

import base64
import socketserver
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import hl7
import pytest
from kombu.exceptions import OperationalError

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import hl7 as consult_hl7
from consults import services, tasks
from consults.models import Status
from imaging.hl7 import outbound
from imaging.hl7.models import OutboundMessage
from imaging.hl7.services import his_endpoint_create
from tests.consults.conftest import walk
from tests.factories import store_ct_study
from tests.processes import free_port


class HisServer(socketserver.ThreadingTCPServer):
    """A HIS's MLLP receiver: keeps each message and answers with an ACK of the code it is set to."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.received: list[str] = []
        self.code = "AA"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: HisServer = self.server  # type: ignore[assignment]
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        text = data[1:-2].decode()
        server.received.append(text)
        if server.code == "silent":
            time.sleep(3)  # holds the connection open past the sender's timeout
            return
        reply = hl7.parse(text).create_ack(server.code, message_id="HISACK1", application="HIS", facility="CLINA-HIS")
        self.request.sendall(b"\x0b" + str(reply).encode() + b"\x1c\r")


@pytest.fixture
def his_port() -> int:
    return free_port()


@pytest.fixture
def his(his_port: int) -> Iterator[HisServer]:
    server = HisServer(his_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def clinic_his(world: Any, his_port: int, settings: Any) -> SimpleNamespace:
    settings.HL7_TIMEOUT_SECONDS = 5
    endpoint = his_endpoint_create(
        institution=world.clin_a,
        sending_application="HIS",
        sending_facility="CLINA-HIS",
        host="127.0.0.1",
        port=his_port,
        by=audit.SYSTEM,
    )
    study = store_ct_study(world.clin_a, patient_id="P-1001", patient_name="Huang^Yongqiang")
    return SimpleNamespace(endpoint=endpoint, study=study)


def segments(text: str, name: str) -> list[str]:
    return [s for s in text.split("\r") if s.startswith(name + "|")]


def test_signing_sends_the_report_as_oru_and_records_the_ack(
    world: Any, clinic_his: Any, his: HisServer, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.COMPLETED, study=clinic_his.study)

    (message,) = his.received
    parsed = hl7.parse(message)
    assert (
        str(parsed.extract_field("MSH", 1, 9, 1, 1)) + "^" + str(parsed.extract_field("MSH", 1, 9, 1, 2)) == "ORU^R01"
    )
    assert (str(parsed.extract_field("MSH", 1, 5)), str(parsed.extract_field("MSH", 1, 6))) == ("HIS", "CLINA-HIS")
    assert segments(message, "PID")[0].startswith("PID|1||P-1001^^^CLINA||Huang^Yongqiang")
    obr = parsed.segments("OBR")[0]
    assert (str(obr(3)), str(obr(18)), str(obr(25))) == (f"consult-{consult.pk}", "ACC1001", "F")
    texts = [parsed.unescape(str(s(5))) for s in parsed.segments("OBX") if str(s(2)) == "TX"]
    assert "右上肺结节，直径8毫米。" in texts and "Nodule 8 mm." in texts
    (pdf_obx,) = [s for s in parsed.segments("OBX") if str(s(2)) == "ED"]
    assert base64.b64decode(str(pdf_obx(5)(1)(5))).startswith(b"%PDF")
    row = OutboundMessage.objects.get(consult_id=consult.pk)
    assert (row.state, row.ack_code, row.attempts) == ("sent", "AA", 1)
    assert row.control_id == str(parsed.extract_field("MSH", 1, 10))
    assert AuditEvent.objects.filter(action="hl7.send", outcome="success", object_id=row.control_id).exists()


def test_an_addendum_sends_a_corrected_result(
    world: Any, clinic_his: Any, his: HisServer, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.COMPLETED, study=clinic_his.study)
        services.consult_addendum(
            consult=consult, by=resolve_principal(world.specialist.user), text="Compare in 3 months."
        )

    assert len(his.received) == 2
    corrected = hl7.parse(his.received[1])
    assert str(corrected.segments("OBR")[0](25)) == "C"
    assert "Compare in 3 months." in his.received[1]


def test_the_pdf_is_left_out_when_too_large(
    world: Any, clinic_his: Any, his: HisServer, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.HL7_ORU_PDF_MAX_BYTES = 100
    with django_capture_on_commit_callbacks(execute=True):
        walk(world, Status.COMPLETED, study=clinic_his.study)

    assert "|ED|" not in his.received[0] and "|TX|" in his.received[0]


def test_no_his_no_message(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        walk(world, Status.COMPLETED)

    assert not OutboundMessage.objects.exists()


def test_a_his_away_leaves_the_row_pending_and_the_sweep_sends_it_once_back(
    world: Any, clinic_his: Any, his_port: int
) -> None:
    consult = walk(world, Status.COMPLETED, study=clinic_his.study)  # its on_commit never runs here
    row = OutboundMessage.objects.get(consult_id=consult.pk)

    with pytest.raises(outbound.SendFailed):
        outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.ack_code) == ("pending", 1, "")
    assert "Connection" in row.last_error or "refused" in row.last_error
    first_text = row.message

    server = HisServer(his_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        OutboundMessage.objects.filter(pk=row.pk).update(last_attempt_at=row.created_at - outbound.RETRY_LOST_AFTER)
        assert tasks.send_unsent_results.apply(kwargs={"older_than_seconds": 0}).get() == 1
        assert tasks.send_unsent_results.apply(kwargs={"older_than_seconds": 0}).get() == 0
    finally:
        server.shutdown()
        server.server_close()
    assert server.received == [first_text]  # the same text, the same MSH-10, on the retry
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 2)


def test_a_his_answering_ae_is_retried_and_ar_fails_the_row(world: Any, clinic_his: Any, his: HisServer) -> None:
    consult = walk(world, Status.COMPLETED, study=clinic_his.study)
    row = OutboundMessage.objects.get(consult_id=consult.pk)

    his.code = "AE"
    with pytest.raises(outbound.SendFailed):
        outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru)
    his.code = "AR"
    assert outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru) == "failed"
    assert outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru) == "skipped"

    row.refresh_from_db()
    assert (row.state, row.ack_code, row.attempts, len(his.received)) == ("failed", "AR", 2, 2)


def test_a_his_that_never_answers_times_out_and_the_retries_end(
    world: Any, clinic_his: Any, his: HisServer, settings: Any
) -> None:
    settings.HL7_TIMEOUT_SECONDS = 1
    settings.HL7_SEND_RETRIES = 1
    his.code = "silent"
    consult = walk(world, Status.COMPLETED, study=clinic_his.study)
    row = OutboundMessage.objects.get(consult_id=consult.pk)

    with pytest.raises(outbound.SendFailed):
        outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru)
    assert outbound.deliver(outbound_id=row.pk, build=consult_hl7.build_oru) == "failed"
    row.refresh_from_db()
    assert "Timeout" in row.last_error or "timed out" in row.last_error.lower()


def test_a_broker_away_at_signing_loses_nothing(
    world: Any,
    clinic_his: Any,
    his: HisServer,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.send_result, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        consult = walk(world, Status.COMPLETED, study=clinic_his.study)
    assert OutboundMessage.objects.get(consult_id=consult.pk).state == "pending"

    assert tasks.send_unsent_results.apply(kwargs={"older_than_seconds": 0}).get() == 1
    assert len(his.received) == 1
