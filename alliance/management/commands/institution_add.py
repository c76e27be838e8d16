from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from alliance import services
from alliance.management.commands._provisioning import ProvisioningCommand, institution_by_ae
from alliance.models import Alliance, Institution

DEFAULT_ALLIANCE = "Default Alliance"


class Command(ProvisioningCommand):
    help = "Add a member institution to an alliance; prints its id and AE title."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--level", required=True, help="One of: " + ", ".join(Institution.Level.values))
        parser.add_argument("--ae-title", required=True, help="The called AE title of the institution on our server")
        parser.add_argument("--parent", help="AE title of the parent institution (the one it refers to)")
        parser.add_argument(
            "--alliance",
            help=f"Alliance name (created when new). Default: the only alliance, or {DEFAULT_ALLIANCE!r} when none",
        )

    def provision(self, *, name: str, level: str, ae_title: str, **options: Any) -> None:
        if level not in Institution.Level.values:
            raise CommandError(
                f"--level: unknown level {level!r}; choose one of {', '.join(Institution.Level.values)}."
            )
        parent = institution_by_ae(options["parent"], "--parent") if options["parent"] else None
        alliance = self.alliance(options["alliance"], parent)
        institution = services.institution_create(
            alliance=alliance, name=name, level=level, ae_title=ae_title, parent=parent, by=self.actor
        )
        self.stdout.write(f"Institution {institution.pk} {institution.name} ({alliance.name}) {institution.ae_title}")

    def alliance(self, name: str | None, parent: Institution | None) -> Alliance:
        if name:
            return services.alliance_get_or_create(name=name, by=self.actor)
        if parent is not None:
            return parent.alliance
        alliances = list(Alliance.objects.all()[:2])
        if len(alliances) > 1:
            raise CommandError("--alliance: several alliances exist; name the one to join.")
        return alliances[0] if alliances else services.alliance_get_or_create(name=DEFAULT_ALLIANCE, by=self.actor)
