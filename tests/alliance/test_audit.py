"""The audit trail is append-only at the database, and sign-ins are in it (IHE ATNA)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse

from alliance import audit
from alliance.models import AuditEvent
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
