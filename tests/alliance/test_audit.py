"""The audit trail is append-only at the database, and sign-ins are in it (IHE ATNA)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance import audit
from alliance.models import AuditEvent
from imaging.models import Patient
from tests import factories


@pytest.fixture
def event(db) -> AuditEvent:  # type: ignore[no-untyped-def]
    return audit.record(actor=audit.SYSTEM, action="test.event", object_type="thing", object_id=1)


@pytest.mark.parametrize(
    "sql",
    ["UPDATE alliance_auditevent SET action = 'forged'", "DELETE FROM alliance_auditevent"],
)
def test_database_refuses_update_and_delete_of_audit_rows(event: AuditEvent, sql: str) -> None:
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    event.refresh_from_db()
    assert event.action == "test.event"


def test_orm_update_and_delete_of_audit_rows_are_refused_too(event: AuditEvent) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(DatabaseError), transaction.atomic():
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk, action="test.event").exists()


def test_sign_in_success_and_failure_are_audited_with_the_source_address(db) -> None:  # type: ignore[no-untyped-def]
    doctor = factories.make_doctor(institution=factories.make_institution(), username="zhou")
    client = Client(REMOTE_ADDR="10.1.2.3")
    client.post(reverse("login"), {"username": "zhou", "password": "wrong-password"})
    client.post(reverse("login"), {"username": "zhou", "password": factories.PASSWORD})
    failed = AuditEvent.objects.get(action="login", outcome=AuditEvent.Outcome.FAILURE)
    assert (failed.actor_name, failed.source) == ("zhou", "10.1.2.3")
    succeeded = AuditEvent.objects.get(action="login", outcome=AuditEvent.Outcome.SUCCESS)
    assert (succeeded.actor_id, succeeded.actor_institution_id) == (str(doctor.user.pk), doctor.institution_id)
    assert succeeded.source == "10.1.2.3"


def _as_recorded(event: AuditEvent) -> tuple[object, ...]:
    return (
        event.actor_type,
        event.actor_id,
        event.actor_name,
        event.actor_institution_id,
        event.action,
        event.object_type,
        event.object_id,
        event.patient,
        event.basis,
        event.source,
        event.outcome,
        event.detail,
    )


@pytest.mark.parametrize("count", [1, 3, 501])  # 501: two INSERTs in one transaction
def test_record_many_writes_the_events_record_would_write(db, count: int) -> None:  # type: ignore[no-untyped-def]
    clinic = factories.make_institution(ae_title="CLINA")
    patient = Patient.objects.create(issuer=clinic, patient_id="P1", name="Wang^Fang")
    device = audit.Actor("device", "7", "CT_CLINA", clinic.pk)
    detail = {"keys": {"PatientName": "王*"}, "matches": count}
    items = [(str(i), "" if i % 2 else str(patient.pk), "own-institution" + "x" * 70 * (i == 0)) for i in range(count)]
    if count > 1:
        items[-1] = ("o" * 200, "9" * 300, "basis")  # cut to the columns' widths, as build cuts them
    for actor in (device, audit.SYSTEM):  # the system: each event filed under its patient's institution
        before = AuditEvent.objects.count()
        audit.record_many(
            actor=actor, action="worklist.find", object_type="scheduled_step", items=items, source="h:1", detail=detail
        )
        written = list(AuditEvent.objects.order_by("pk")[before:])
        expected = [
            audit.build(
                actor=actor,
                action="worklist.find",
                object_type="scheduled_step",
                object_id=oid,
                patient=key,
                basis=basis,
                source="h:1",
                detail=detail,
            )
            for oid, key, basis in items
        ]
        assert [_as_recorded(e) for e in written] == [_as_recorded(e) for e in expected]
        assert len({e.time for e in written}) == 1
    assert AuditEvent.objects.filter(actor_type="system", patient=str(patient.pk))[0].actor_institution_id == clinic.pk


def test_record_many_of_nothing_writes_nothing(db) -> None:  # type: ignore[no-untyped-def]
    audit.record_many(actor=audit.SYSTEM, action="worklist.find", object_type="scheduled_step", items=[])
    assert not AuditEvent.objects.filter(action="worklist.find").exists()


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def test_a_read_is_audited_before_the_answer_without_waiting_for_the_disk(transactional_db) -> None:  # type: ignore[no-untyped-def]
    """Outside a transaction on PostgreSQL the event commits asynchronously, in its own
    implicit transaction: it is there at once, and the connection's setting is untouched."""
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    before = _synchronous_commit()
    audit.record_read(actor=audit.SYSTEM, action="test.read", object_type="study", object_id="1.2.3", patient="7")
    [event] = AuditEvent.objects.filter(action="test.read")
    assert (event.object_id, event.patient, event.outcome) == ("1.2.3", "7", AuditEvent.Outcome.SUCCESS)
    assert _synchronous_commit() == before == "on"


def test_a_read_audited_inside_a_transaction_leaves_its_commit_durable(db) -> None:  # type: ignore[no-untyped-def]
    """Inside a caller's transaction the event is an ordinary row of it: the caller's commit
    still waits for the disk."""
    with transaction.atomic():
        audit.record_read(actor=audit.SYSTEM, action="test.read", object_type="study", object_id="1.2.3")
        if connection.vendor == "postgresql":
            assert _synchronous_commit() == "on"
    assert AuditEvent.objects.filter(action="test.read").count() == 1


def _events(n: int) -> list[tuple[str, str, str]]:
    return [(f"1.2.3.{i}", str(i), "own-institution") for i in range(n)]


def test_the_events_of_a_read_commit_asynchronously_in_one_statement(transactional_db) -> None:  # type: ignore[no-untyped-def]
    """record_many(read=True) outside a transaction on PostgreSQL: one statement, its own
    implicit transaction, committed without waiting for the disk; the connection's setting
    is untouched and the events are there at once."""
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    with CaptureQueriesContext(connection) as captured:
        audit.record_many(actor=audit.SYSTEM, action="test.find", object_type="study", items=_events(3), read=True)
    [sent] = [q["sql"] for q in captured.captured_queries if "alliance_auditevent" in q["sql"]]
    assert sent.startswith("SET LOCAL synchronous_commit TO OFF; INSERT INTO")
    assert sorted(AuditEvent.objects.filter(action="test.find").values_list("object_id", flat=True)) == [
        "1.2.3.0",
        "1.2.3.1",
        "1.2.3.2",
    ]
    assert _synchronous_commit() == "on"


def test_a_read_of_more_events_than_one_statement_takes_commits_them_together_asynchronously(transactional_db) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    many = audit._EVENTS_PER_INSERT + 1
    with CaptureQueriesContext(connection) as captured:
        audit.record_many(actor=audit.SYSTEM, action="test.find", object_type="study", items=_events(many), read=True)
    sent = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SELECT")]
    assert sent[:2] == ["BEGIN", "SET LOCAL synchronous_commit TO OFF"]
    assert sum(sql.startswith("INSERT INTO") for sql in sent) == 2
    assert AuditEvent.objects.filter(action="test.find").count() == many
    assert _synchronous_commit() == "on"


def test_the_events_of_a_read_inside_a_transaction_are_durable_rows_of_it(db) -> None:  # type: ignore[no-untyped-def]
    """Inside a caller's transaction (its own writes must stay durable) the read's events are
    ordinary rows of it: nothing turns its commit asynchronous."""
    with CaptureQueriesContext(connection) as captured:
        audit.record_many(actor=audit.SYSTEM, action="test.find", object_type="study", items=_events(2), read=True)
    assert not any("synchronous_commit" in q["sql"] for q in captured.captured_queries)
    assert AuditEvent.objects.filter(action="test.find").count() == 2
