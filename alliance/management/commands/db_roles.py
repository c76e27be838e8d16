"""Make the two PostgreSQL roles of a production database (issue 22 item 4).

- the owner (DATABASE_MIGRATE_URL): owns every table, sequence and function; migrations run
  as it;
- the app (DATABASE_URL): may SELECT, INSERT, UPDATE and DELETE the app's tables, but only
  SELECT and INSERT the audit trail (alliance_auditevent), and owns nothing, so it can neither
  TRUNCATE that table nor ALTER it (e.g. DISABLE TRIGGER, which would let UPDATE through).

Run it as a superuser after `migrate` (and again after a migration that adds tables, though
default privileges cover tables the owner creates later):

    DATABASE_URL=postgres://postgres@127.0.0.1/alliance manage.py db_roles --owner alliance_owner --app alliance

or print the SQL for psql with --sql. Roles that exist are kept; passwords are set when given.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from alliance.models import AuditEvent

# The functions of the audit table's triggers (migrations alliance/0002 and 0009).
TRIGGER_FUNCTIONS = ("alliance_auditevent_append_only", "alliance_atna_outbox_add")
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def statements(owner: str, app: str, *, database: str, tables: list[str], sequences: list[str]) -> list[str]:
    """The SQL, in order. Names are checked by the caller (ROLE_NAME) and quoted here."""
    o, a, audit_table = _q(owner), _q(app), _q(AuditEvent._meta.db_table)
    sql = [
        *(_create_role(name) for name in (owner, app)),
        f"GRANT CONNECT ON DATABASE {_q(database)} TO {o}, {a}",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {o}",
        f"GRANT USAGE ON SCHEMA public TO {a}",
        f"REVOKE CREATE ON SCHEMA public FROM {a}",
        *(f"ALTER TABLE public.{_q(t)} OWNER TO {o}" for t in tables),
        *(f"ALTER SEQUENCE public.{_q(s)} OWNER TO {o}" for s in sequences),
        *(f"ALTER FUNCTION public.{name}() OWNER TO {o}" for name in TRIGGER_FUNCTIONS),
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {a}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {a}",
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON public.{audit_table} FROM {a}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {a}",
    ]
    return sql


def _create_role(name: str) -> str:
    literal = name.replace("'", "''")
    return (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{literal}') "
        f"THEN CREATE ROLE {_q(name)} LOGIN; END IF; END $$"
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Command(BaseCommand):
    help = "Create the owner and app roles of the PostgreSQL database and grant their rights (run as a superuser)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="the role that owns the tables; migrations run as it")
        parser.add_argument("--app", required=True, help="the role the app connects as (DATABASE_URL)")
        parser.add_argument("--owner-password", default="", help="set the owner's password")
        parser.add_argument("--app-password", default="", help="set the app role's password")
        parser.add_argument("--sql", action="store_true", help="print the SQL instead of running it")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("db_roles is for PostgreSQL (DATABASE_URL=postgres://...); SQLite has no roles")
        owner, app = options["owner"], options["app"]
        for name in (owner, app):
            if not ROLE_NAME.match(name):
                raise CommandError(f"{name!r} is not a role name this command makes (a-z, 0-9, _; up to 63)")
        if owner == app:
            raise CommandError("the owner and the app must be two roles")
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            tables = [row[0] for row in cursor.fetchall()]
            cursor.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND n.nspname = 'public' AND NOT EXISTS "
                "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) ORDER BY 1"
            )
            sequences = [row[0] for row in cursor.fetchall()]
        sql = statements(owner, app, database=connection.settings_dict["NAME"], tables=tables, sequences=sequences)
        passwords = [(owner, options["owner_password"]), (app, options["app_password"])]
        if options["sql"]:
            self.stdout.write(";\n".join(sql) + ";")
            for name, password in passwords:
                if password:
                    self.stdout.write(f"ALTER ROLE {_q(name)} PASSWORD '<password of {name}>';")
            return
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in sql:
                cursor.execute(statement)
            for name, password in passwords:
                if password:
                    cursor.execute(f"ALTER ROLE {_q(name)} PASSWORD %s", [password])
        self.stdout.write(
            self.style.SUCCESS(f"{owner} owns {len(tables)} tables; {app} may not change the audit trail.")
        )
