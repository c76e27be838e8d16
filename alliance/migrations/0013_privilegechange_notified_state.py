from django.db import migrations, models
from django.db.models import F


def mark_existing_notified(apps, schema_editor):
    """Changes made before the outbox had their notice queued then: the sweep leaves them."""
    apps.get_model("alliance", "PrivilegeChange").objects.update(notified_state=F("state"))


class Migration(migrations.Migration):
    dependencies = [
        ("alliance", "0012_denied_read_tally_deleted_once_summarised"),
    ]

    operations = [
        migrations.AddField(
            model_name="privilegechange",
            name="notified_state",
            field=models.CharField(blank=True, default="", max_length=8),
        ),
        migrations.RunPython(mark_existing_notified, migrations.RunPython.noop),
    ]
