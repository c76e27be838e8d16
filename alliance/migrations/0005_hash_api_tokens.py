"""Existing REST API tokens (rest_framework.authtoken, kept in plain text) become ApiToken rows
that keep only the SHA-256 digest of their key; the plain-text rows are deleted. A token made
before has API_TOKEN_DAYS from today: its owners are not cut off by the upgrade."""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def hash_tokens(apps, schema_editor):  # type: ignore[no-untyped-def]
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("alliance", "ApiToken")
    now = timezone.now()
    for token in Token.objects.all().iterator():
        ApiToken.objects.create(
            user_id=token.user_id,
            digest=hashlib.sha256(token.key.encode()).hexdigest(),
            prefix=token.key[:8],
            name="token_create",
            created_at=token.created,
            expires_at=now + timedelta(days=settings.API_TOKEN_DAYS),
        )
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alliance", "0004_accounts"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(hash_tokens, migrations.RunPython.noop)]
