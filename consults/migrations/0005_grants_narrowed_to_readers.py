"""Existing consult grants follow the rules of issue 16 (item 7): a claimed case's images
belong to its reader only (the pool's grant is revoked), and a signed or failed case leaves
the reader read-only access that ends reader_access_days after completion.

Written against the historical models (no imaging.grants here: a migration cannot call a
service of the app's current code); each case it changes gets one audit event, as the
service would write.
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

OWNED = ("accepted", "in-progress", "on-hold")
DONE = ("completed", "failed")
DEFAULT_READER_DAYS = 90


def _reader_days(apps, alliance_id):
    AllianceSettings = apps.get_model("alliance", "AllianceSettings")
    row = AllianceSettings.objects.filter(alliance_id=alliance_id).first()
    return row.reader_access_days if row is not None else DEFAULT_READER_DAYS


def narrow_existing_grants(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    perms = {p.codename: p for p in Permission.objects.filter(content_type__app_label="imaging")}
    if "read_study" not in perms or "change_study" not in perms:
        return  # a fresh database: no grants yet
    Consult = apps.get_model("consults", "Consult")
    GroupGrant = apps.get_model("imaging", "StudyGroupGrant")
    UserGrant = apps.get_model("imaging", "StudyUserGrant")
    AuditEvent = apps.get_model("alliance", "AuditEvent")
    now = timezone.now()
    cases = Consult.objects.filter(owner__isnull=False, status__in=OWNED + DONE).select_related(
        "owner", "requesting_institution"
    )
    for consult in cases.iterator():
        basis = f"consult:{consult.pk}"
        reader = consult.owner.user_id
        done = consult.status in DONE
        until = (consult.completed_at or now) + timedelta(days=_reader_days(apps, consult.requesting_institution.alliance_id))
        live = {"basis": basis, "revoked_at__isnull": True}
        revoked = GroupGrant.objects.filter(**live).update(revoked_at=now)
        revoked += UserGrant.objects.filter(**live).exclude(user_id=reader).update(revoked_at=now)
        for study in consult.studies.all():
            for codename in ("read_study",) if done else ("read_study", "change_study"):
                UserGrant.objects.update_or_create(
                    user_id=reader,
                    content_object=study,
                    permission=perms[codename],
                    basis=basis,
                    defaults={"revoked_at": None, "expires_at": until if done else None},
                )
        if done:
            UserGrant.objects.filter(permission=perms["change_study"], **live).update(revoked_at=now)
        AuditEvent.objects.create(
            time=now,
            actor_type="system",
            actor_name="system",
            action="grant.narrow",
            object_type="basis",
            object_id=basis,
            basis=basis,
            detail={"migration": "consults.0004", "revoked": revoked, "read_until": until.isoformat() if done else ""},
        )


class Migration(migrations.Migration):
    dependencies = [
        ("consults", "0004_figures_modality_and_indexes"),
        ("alliance", "0003_alliance_settings"),
        ("imaging", "0009_study_maintenance"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(narrow_existing_grants, migrations.RunPython.noop)]
