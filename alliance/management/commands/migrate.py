"""`migrate` as the database's owner role when DATABASE_MIGRATE_URL is set (issue 22 item 4).

The app connects with DATABASE_URL as a role that may not alter tables, nor update, delete or
truncate the audit trail (`manage.py db_roles`); migrations need the owner. Everything else
is Django's own migrate.
"""

from __future__ import annotations

from typing import Any

import dj_database_url
from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import OperationalError, connections

OWNER_FIELDS = ("NAME", "USER", "PASSWORD", "HOST", "PORT")


class Command(DjangoMigrate):
    def handle(self, *args: Any, **options: Any) -> None:
        url = getattr(settings, "DATABASE_MIGRATE_URL", "")
        variable = "DATABASE_URL"
        if url and options.get("database", "default") == "default":
            variable = "DATABASE_MIGRATE_URL"
            owner = dj_database_url.parse(url)
            connection = connections["default"]
            connection.close()
            connection.settings_dict.update({key: owner[key] for key in OWNER_FIELDS if key in owner})  # type: ignore[literal-required]
        connection = connections[options.get("database", "default")]
        try:
            connection.ensure_connection()
        except OperationalError as exc:  # `make run` on a DATABASE_URL whose database is not there yet
            raise CommandError(unreachable(connection.settings_dict, exc, variable)) from None
        super().handle(*args, **options)


def unreachable(database: Any, exc: Exception, variable: str) -> str:
    """What to tell someone whose database (named by the setting `variable`) cannot be
    reached, instead of a traceback."""
    name, host, port = database["NAME"], database.get("HOST") or "localhost", database.get("PORT") or "5432"
    user = database.get("USER") or "postgres"
    reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if "does not exist" in reason:
        advice = f"create it first: createdb -h {host} -p {port} -U {user} {name}"
    else:
        advice = f"check that PostgreSQL is running there and that {variable} names it"
    return f"cannot connect to the database {name} on {host}:{port} ({reason}); {advice}"
