from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from alliance import services
from alliance.management.commands._provisioning import ProvisioningCommand
from alliance.models import Doctor


class Command(ProvisioningCommand):
    help = (
        "Create a fresh REST API token for a doctor (the old one stops working). "
        "The token is the last word of the last line printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def provision(self, *, username: str, **_: Any) -> None:
        doctor = Doctor.objects.select_related("user").filter(user__username=username).first()
        if doctor is None:
            raise CommandError(f"username: no doctor is called {username!r}.")
        if not doctor.active or not doctor.user.is_active:
            raise CommandError(f"username: {username!r} is deactivated; activate the doctor first.")
        token = services.token_create(doctor=doctor, by=self.actor)
        self.stdout.write(f"Token for {username}: {token.key}")
