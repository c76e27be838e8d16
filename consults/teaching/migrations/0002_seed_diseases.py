"""The kept list of diseases a teaching case is tagged with, to start with (ICD-10 codes);
operators keep it in Django admin afterwards. Running it again adds only what is missing."""

from django.db import migrations

from consults.teaching import diseases

def seed(apps, schema_editor):
    diseases.ensure_kept_list(apps.get_model("teaching", "Disease"))


class Migration(migrations.Migration):
    dependencies = [("teaching", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
