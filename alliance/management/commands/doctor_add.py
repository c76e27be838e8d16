from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.core.validators import validate_slug

from alliance import services
from alliance.management.commands._provisioning import ProvisioningCommand, institution_by_ae
from alliance.models import Department, Institution, Role, Specialty


class Command(ProvisioningCommand):
    help = "Add a doctor to an institution. Without --password-stdin the doctor signs in with a token only."
    stealth_options = ("stdin",)
    option_for_field = {"roles": "--role", "specialties": "--specialty", "password": "--password-stdin"}

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institution", required=True, help="AE title of the doctor's institution")
        parser.add_argument("--username", required=True)
        parser.add_argument(
            "--role", required=True, action="append", dest="roles", help="Repeatable: " + ", ".join(Role.values)
        )
        parser.add_argument(
            "--specialty", action="append", dest="specialties", default=[], help="Repeatable specialty code"
        )
        parser.add_argument("--password-stdin", action="store_true", help="Read the password from standard input")
        parser.add_argument("--full-name", default="")
        parser.add_argument("--email", default="")
        parser.add_argument("--title", default="", help="Professional title, e.g. 主治医师 (attending physician)")
        parser.add_argument("--department", help="Name of an existing department of the institution")

    def provision(self, *, institution: str, username: str, roles: list[str], **options: Any) -> None:
        home = institution_by_ae(institution, "--institution")
        password = self.read_password(options.get("stdin") or sys.stdin) if options["password_stdin"] else None
        doctor = services.doctor_create(
            institution=home,
            username=username,
            roles=roles,
            password=password,
            full_name=options["full_name"],
            email=options["email"],
            title=options["title"],
            department=self.department(home, options["department"]),
            specialties=[self.specialty(code) for code in options["specialties"]],
            by=self.actor,
        )
        self.stdout.write(f"Doctor {doctor.pk} {username} ({', '.join(doctor.roles)}) at {home} {home.ae_title}")

    def read_password(self, stream: Any) -> str:
        password = stream.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: no password on standard input.")
        return password

    def department(self, institution: Institution, name: str | None) -> Department | None:
        if not name:
            return None
        department = institution.departments.filter(name=name.strip()).first()
        if department is None:
            raise CommandError(f"--department: {institution} has no department named {name!r}.")
        return department

    def specialty(self, code: str) -> Specialty:
        try:
            validate_slug(code)
        except ValidationError as exc:
            raise ValidationError({"specialties": exc.messages}) from None
        return services.specialty_get_or_create(code=code, by=self.actor)
