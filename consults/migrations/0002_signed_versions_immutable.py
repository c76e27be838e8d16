"""A signed report version refuses UPDATE and DELETE at the database (C5: immutable once signed).

The service refuses first (consults.services); the trigger makes sure no other path can.
"""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION consults_reportversion_signed_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'signed report versions are immutable (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER consults_reportversion_signed BEFORE UPDATE OR DELETE ON consults_reportversion
    FOR EACH ROW WHEN (OLD.signed_at IS NOT NULL)
    EXECUTE FUNCTION consults_reportversion_signed_immutable();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS consults_reportversion_signed ON consults_reportversion;
DROP FUNCTION IF EXISTS consults_reportversion_signed_immutable();
"""
SQLITE_UP = [
    "CREATE TRIGGER consults_reportversion_signed_update BEFORE UPDATE ON consults_reportversion "
    "WHEN OLD.signed_at IS NOT NULL "
    "BEGIN SELECT RAISE(ABORT, 'signed report versions are immutable (UPDATE refused)'); END;",
    "CREATE TRIGGER consults_reportversion_signed_delete BEFORE DELETE ON consults_reportversion "
    "WHEN OLD.signed_at IS NOT NULL "
    "BEGIN SELECT RAISE(ABORT, 'signed report versions are immutable (DELETE refused)'); END;",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS consults_reportversion_signed_update;",
    "DROP TRIGGER IF EXISTS consults_reportversion_signed_delete;",
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
    dependencies = [("consults", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
