"""HL7 v2 orders from a registered HIS into the modality worklist: ORM^O01 and OMI^O23 become
scheduled steps and are answered AA; a malformed message is answered AE or AR with an ERR
segment naming the segment and field; and the real `manage.py hl7_listener` process does the
same over a socket (MLLP) for a client that frames its message by hand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import hl7
import pytest
from django.conf import settings

from alliance import audit
from alliance.models import AuditEvent
from imaging.hl7 import orders
from imaging.hl7.services import his_endpoint_create
from imaging.models import ScheduledStep
from tests import factories
from tests.imaging.test_dicom_server import database_url
from tests.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

ORM = (
    "MSH|^~\\&|HIS|CLINA-HIS|CLOUDPACS|ALLIANCE|20260301083000||ORM^O01|MSG0001|P|2.3.1\r"
    "PID|1||P-1001^^^CLINA||Huang^Yongqiang||19600101|M\r"
    "PV1|1|O\r"
    "ORC|NW|PL-77|FI-77||SC||^^^20260302093000\r"
    + "|".join(
        ["OBR", "1", "PL-77", "FI-77", "CT-CHEST^CT chest plain^L", *[""] * 13, "ACC-77", "RP-77", *[""] * 4, "CT"]
    )
    + "\r"
)
OMI = (
    "MSH|^~\\&|HIS|CLINA-HIS|CLOUDPACS|ALLIANCE|20260301083000||OMI^O23^OMI_O23|MSG0002|P|2.5\r"
    "PID|1||P-1002||Li^Na||19750505|F\r"
    "ORC|NW|PL-88\r"
    "TQ1|1||||||20260303101500\r"
    "OBR|1|PL-88||US-ABD^Abdominal ultrasound\r"
    "IPC|ACC-88|RP-88|1.2.3.4.88|SPS-88|US||||CLINAUS\r"
)


@pytest.fixture
def his(db: Any) -> SimpleNamespace:
    alliance = factories.AllianceFactory(name="HL7 Alliance")
    hosp = factories.make_institution(alliance=alliance, level="tertiary", ae_title="HOSP", name="Hospital")
    clin_a = factories.make_institution(alliance=alliance, ae_title="CLINA", name="Clinic A", parent=hosp)
    endpoint = his_endpoint_create(
        institution=clin_a, sending_application="HIS", sending_facility="CLINA-HIS", by=audit.SYSTEM
    )
    return SimpleNamespace(clin_a=clin_a, hosp=hosp, endpoint=endpoint)


def answer(text: str) -> hl7.Message:
    return hl7.parse(orders.receive(text, peer="192.0.2.7"))


def msa(reply: hl7.Message) -> tuple[str, str]:
    return str(reply.extract_field("MSA", 1, 1)), str(reply.extract_field("MSA", 1, 2))


def err_location(reply: hl7.Message) -> str:
    """ERR-2 (v2.5 error location) as segment^sequence^field."""
    return "^".join(str(reply.extract_field("ERR", 1, 2, 1, c)) for c in (1, 2, 3))


def test_an_orm_order_becomes_a_worklist_step_and_is_acknowledged(his: Any) -> None:
    reply = answer(ORM)

    assert msa(reply) == ("AA", "MSG0001")
    step = ScheduledStep.objects.get(institution=his.clin_a, accession_number="ACC-77")
    assert (step.modality, step.requested_procedure_id, step.procedure_description) == ("CT", "RP-77", "CT chest plain")
    assert (step.patient.patient_id, step.patient.issuer, step.patient_name) == (
        "P-1001",
        his.clin_a,
        "Huang^Yongqiang",
    )
    assert step.sex == "M" and str(step.birth_date) == "1960-01-01"
    assert step.scheduled_at == datetime(2026, 3, 2, 9, 30, tzinfo=ZoneInfo(settings.TIME_ZONE))
    assert step.source == ScheduledStep.Source.HL7
    assert str(reply.extract_field("MSH", 1, 9, 1, 1)) == "ACK"


def test_an_omi_order_takes_the_ipc_fields(his: Any) -> None:
    assert msa(answer(OMI))[0] == "AA"

    step = ScheduledStep.objects.get(accession_number="ACC-88")
    assert (step.modality, step.station_ae, step.requested_procedure_id) == ("US", "CLINAUS", "RP-88")
    assert step.scheduled_at == datetime(2026, 3, 3, 10, 15, tzinfo=ZoneInfo(settings.TIME_ZONE))


def test_the_same_order_sent_twice_is_one_step(his: Any) -> None:
    assert msa(answer(ORM))[0] == msa(answer(ORM))[0] == "AA"
    assert ScheduledStep.objects.filter(accession_number="ACC-77").count() == 1


def test_a_cancel_takes_the_step_off_the_worklist(his: Any) -> None:
    answer(ORM)

    reply = answer(ORM.replace("ORC|NW|", "ORC|CA|").replace("MSG0001", "MSG0003"))

    assert msa(reply)[0] == "AA"
    assert ScheduledStep.objects.get(accession_number="ACC-77").status == ScheduledStep.Status.DISCONTINUED


def test_the_patients_assigning_authority_names_another_issuer_of_the_alliance(his: Any) -> None:
    answer(ORM.replace("P-1001^^^CLINA", "H-555^^^HOSP"))

    assert ScheduledStep.objects.get(accession_number="ACC-77").patient.issuer == his.hosp


@pytest.mark.parametrize(
    ("change", "location", "code"),
    [
        (("P-1001^^^CLINA", ""), "PID^1^3", "101"),
        (("|ACC-77|", "||", "FI-77", ""), "OBR^1^18", "101"),
        (("RP-77|||||CT", "RP-77|||||"), "OBR^1^24", "101"),
        (("^^^20260302093000", "^^^2026-03-02"), "ORC^1^7", "102"),
        (("ORC|NW|", "ORC|XX|"), "ORC^1^1", "103"),
        (("|M\r", "|Q\r"), "PID^1^8", "103"),
        (("P-1001^^^CLINA", "P-1001^^^NOWHERE"), "PID^1^3", "204"),
    ],
)
def test_a_malformed_order_is_answered_ae_naming_the_segment_and_field(
    his: Any, change: tuple[str, ...], location: str, code: str
) -> None:
    text = ORM
    for old, new in zip(change[::2], change[1::2], strict=True):
        text = text.replace(old, new)
    reply = answer(text)

    assert msa(reply)[0] == "AE"
    assert err_location(reply) == location
    assert str(reply.extract_field("ERR", 1, 3, 1, 1)) == code
    assert not ScheduledStep.objects.exists()
    refused = AuditEvent.objects.get(action="hl7.refuse")
    assert refused.outcome == "failure" and refused.detail["where"] == location.replace("^1^", "-")


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (ORM.replace("ORM^O01", "ADT^A01"), "MSH^1^9"),
        (ORM.replace("|2.3.1\r", "|3.0\r"), "MSH^1^12"),
        (ORM.replace("CLINA-HIS", "SOMEONE"), "MSH^1^4"),
        ("PID|1||P-1001\r", "MSH^1^1"),
        ("this is not HL7 at all", "MSH^1^1"),
    ],
)
def test_a_message_we_do_not_take_is_answered_ar(his: Any, text: str, location: str) -> None:
    reply = answer(text)

    assert msa(reply)[0] == "AR"
    assert err_location(reply) == location
    assert not ScheduledStep.objects.exists()


def test_a_message_with_one_bad_order_schedules_none_of_them(his: Any) -> None:
    second = (
        "ORC|NW|PL-78\r" + "|".join(["OBR", "2", "PL-78", "", "CT-HEAD", *[""] * 13, "ACC-78"]) + "\r"
    )  # no modality
    reply = answer(ORM + second)

    assert msa(reply)[0] == "AE"
    assert err_location(reply) == "OBR^2^24"
    assert not ScheduledStep.objects.exists()


# --- the real listener over a socket --------------------------------------------------


@pytest.fixture
def listener(transactional_db: Any, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path)}
    log = (tmp_path / "hl7-listener.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "hl7_listener", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def mllp_exchange(port: int, *messages: str) -> list[str]:
    """A hand-framed MLLP client (<VT>message<FS><CR>): each message sent, its answer read."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for message in messages:
            sock.sendall(b"\x0b" + message.encode() + b"\x1c\r")
            received = b""
            while not received.endswith(b"\x1c\r"):
                chunk = sock.recv(4096)
                assert chunk, "the listener closed the connection without an answer"
                received += chunk
            assert received.startswith(b"\x0b")
            answers.append(received[1:-2].decode())
    return answers


@pytest.mark.integration
def test_the_listener_process_takes_orders_over_mllp(listener: int) -> None:
    alliance = factories.AllianceFactory(name="HL7 Alliance")
    clin_a = factories.make_institution(alliance=alliance, ae_title="CLINA", name="Clinic A")
    his_endpoint_create(institution=clin_a, sending_application="HIS", sending_facility="CLINA-HIS", by=audit.SYSTEM)

    good, bad, omi = mllp_exchange(listener, ORM, ORM.replace("P-1001^^^CLINA", ""), OMI)

    assert msa(hl7.parse(good)) == ("AA", "MSG0001")
    assert msa(hl7.parse(bad))[0] == "AE" and err_location(hl7.parse(bad)) == "PID^1^3"
    assert msa(hl7.parse(omi)) == ("AA", "MSG0002")
    assert sorted(ScheduledStep.objects.values_list("accession_number", flat=True)) == ["ACC-77", "ACC-88"]
    assert AuditEvent.objects.filter(action="hl7.refuse", source="127.0.0.1").exists()
