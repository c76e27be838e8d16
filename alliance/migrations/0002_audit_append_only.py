"""The audit table refuses UPDATE and DELETE at the database (C7: append-only).

PostgreSQL: a row trigger raising an exception. SQLite: BEFORE UPDATE/DELETE triggers
that abort. TRUNCATE is left to the operator (and to the test runner's flush).
"""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION alliance_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER alliance_auditevent_no_update BEFORE UPDATE OR DELETE ON alliance_auditevent
    FOR EACH ROW EXECUTE FUNCTION alliance_auditevent_append_only();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS alliance_auditevent_no_update ON alliance_auditevent;
DROP FUNCTION IF EXISTS alliance_auditevent_append_only();
"""
SQLITE_UP = [
    "CREATE TRIGGER alliance_auditevent_no_update BEFORE UPDATE ON alliance_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END;",
    "CREATE TRIGGER alliance_auditevent_no_delete BEFORE DELETE ON alliance_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END;",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS alliance_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS alliance_auditevent_no_delete;",
]


def up(apps, schema_editor):  # type: ignore[no-untyped-def]
    statements = {"postgresql": [PG_UP], "sqlite": SQLITE_UP}[schema_editor.connection.vendor]
    for sql in statements:
        schema_editor.execute(sql, None)


def down(apps, schema_editor):  # type: ignore[no-untyped-def]
    statements = {"postgresql": [PG_DOWN], "sqlite": SQLITE_DOWN}[schema_editor.connection.vendor]
    for sql in statements:
        schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [("alliance", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
