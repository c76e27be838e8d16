"""`migrate` as the database's owner role when DATABASE_MIGRATE_URL is set (issue 22 item 4).

The app connects with DATABASE_URL as a role that may not alter tables, nor update, delete or
truncate the audit trail (`manage.py db_roles`); migrations need the owner. Everything else
is Django's own migrate.
"""

from __future__ import annotations

from typing import Any

import dj_database_url
from django.conf import settings
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections

OWNER_FIELDS = ("NAME", "USER", "PASSWORD", "HOST", "PORT")


class Command(DjangoMigrate):
    def handle(self, *args: Any, **options: Any) -> None:
        url = getattr(settings, "DATABASE_MIGRATE_URL", "")
        if url and options.get("database", "default") == "default":
            owner = dj_database_url.parse(url)
            connection = connections["default"]
            connection.close()
            connection.settings_dict.update({key: owner[key] for key in OWNER_FIELDS if key in owner})  # type: ignore[literal-required]
        super().handle(*args, **options)
