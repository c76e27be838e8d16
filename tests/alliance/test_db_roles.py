"""Issue 22 item 4: against the app's own database role the audit table is append-only too.

`manage.py db_roles` makes an owner role and an app role in this test database (names unique
to this run, dropped afterwards: roles are shared by every database of the server); then, as
the app role, UPDATE, DELETE, TRUNCATE and ALTER TABLE ... DISABLE TRIGGER on the audit table
fail, while INSERT and SELECT work, and the app's other tables stay writable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from django.core.management import call_command
from django.db import connection

from alliance import audit
from alliance.management.commands.db_roles import statements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    if connection.vendor != "postgresql":
        pytest.skip("database roles are PostgreSQL's")
    suffix = uuid.uuid4().hex[:10]
    owner, app = f"test_owner_{suffix}", f"test_app_{suffix}"
    call_command("db_roles", owner=owner, app=app)
    try:
        yield owner, app
    finally:
        me = connection.settings_dict["USER"] or "postgres"
        with connection.cursor() as cursor:
            for role in (app, owner):
                cursor.execute(f'REASSIGN OWNED BY "{role}" TO "{me}"')
                cursor.execute(f'DROP OWNED BY "{role}"')
                cursor.execute(f'DROP ROLE "{role}"')


def connect_as(role: str) -> Any:
    s = connection.settings_dict
    conn = psycopg2.connect(dbname=s["NAME"], user=role, host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432)
    conn.autocommit = True
    return conn


REFUSED = [
    "UPDATE alliance_auditevent SET action = 'forged'",
    "DELETE FROM alliance_auditevent",
    "TRUNCATE alliance_auditevent",
    "ALTER TABLE alliance_auditevent DISABLE TRIGGER alliance_auditevent_no_update",
    "ALTER TABLE alliance_auditevent DISABLE TRIGGER ALL",
    "DROP TABLE alliance_auditevent",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_the_app_role_cannot_change_or_remove_audit_rows(roles: tuple[str, str], sql: str) -> None:
    audit.record(actor=audit.SYSTEM, action="test.kept")
    conn = connect_as(roles[1])
    try:
        with conn.cursor() as cursor, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute(sql)
    finally:
        conn.close()
    assert audit.AuditEvent.objects.filter(action="test.kept").count() == 1


def test_the_app_role_inserts_and_reads_audit_rows_and_uses_its_other_tables(roles: tuple[str, str]) -> None:
    conn = connect_as(roles[1])
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO alliance_auditevent (time, actor_type, actor_id, actor_name, action, object_type, "
                "object_id, patient, basis, source, outcome, detail) VALUES "
                "(now(), 'system', '', 'system', 'test.insert', '', '', '', '', '', 'success', '{}')"
            )
            cursor.execute("SELECT count(*) FROM alliance_auditevent WHERE action = 'test.insert'")
            assert cursor.fetchone() == (1,)
            cursor.execute("UPDATE alliance_alliancesettings SET id = id")  # other tables: writable
            cursor.execute("DELETE FROM django_session")
    finally:
        conn.close()


def test_the_owner_role_owns_the_audit_table(roles: tuple[str, str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'alliance_auditevent'")
        assert cursor.fetchone() == (roles[0],)


def test_role_names_are_quoted_and_the_audit_table_is_revoked() -> None:
    sql = statements("own", "app", database="db", tables=["alliance_auditevent"], sequences=[])
    assert 'REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON public."alliance_auditevent" FROM "app"' in sql
    assert 'ALTER TABLE public."alliance_auditevent" OWNER TO "own"' in sql


def test_migrate_connects_as_the_owner_of_database_migrate_url() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    role = f"no_such_owner_{uuid.uuid4().hex[:8]}"
    s = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_MIGRATE_URL": f"postgres://{role}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}",
    }
    result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", "migrate", "--plan"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and f'role "{role}" does not exist' in result.stderr
