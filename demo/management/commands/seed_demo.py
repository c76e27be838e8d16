"""Load the demo: each installed app's demo content, in the order the apps build on each
other (demo/loaders.py). Running it again changes nothing."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, no_translations

from alliance.management.commands._provisioning import ProvisioningCommand
from demo import loaders


class Command(ProvisioningCommand):
    """A provisioning command (its actor, English messages, bad input named by its field), whose
    loaders each keep their own transactions: the demo studies are stored on several threads."""

    help = "Load the demo alliance (idempotent) and print its sign-ins and AE titles."

    @no_translations
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            for load in loaders.in_app_order():
                load(stdout=self.stdout, actor=self.actor)
        except ValidationError as exc:
            raise CommandError(self.describe(exc)) from None
