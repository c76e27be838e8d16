"""An index for the worklist's patient-name prefix matching (PS3.4 C.2.2.2.1: matched without
regard to case, so UPPER(patient_name) LIKE 'WANG%'): on PostgreSQL with text_pattern_ops, so
that LIKE uses it whatever the database's collation; on SQLite a plain expression index."""

from django.db import migrations

INDEX = {
    "postgresql": "CREATE INDEX imaging_worklist_name ON imaging_scheduledstep (UPPER(patient_name) text_pattern_ops)",
    "sqlite": "CREATE INDEX imaging_worklist_name ON imaging_scheduledstep (UPPER(patient_name))",
}


def up(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute(INDEX[schema_editor.connection.vendor])


def down(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute("DROP INDEX IF EXISTS imaging_worklist_name")


class Migration(migrations.Migration):
    dependencies = [("imaging", "0011_workflow")]
    operations = [migrations.RunPython(up, down)]
