"""Shared ground of the provisioning commands (a stable interface that scripts call).

Each command runs in one transaction, so a refusal leaves nothing half-saved, and turns
a service's ValidationError into a CommandError that names the option at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError, no_translations
from django.db import transaction

from alliance import audit
from alliance.models import Institution


class ProvisioningCommand(BaseCommand):
    # Service field name -> the option a user typed, for error messages.
    option_for_field: dict[str, str] = {}
    # Each command defines provision(**its options): the work done inside the transaction.
    provision: Callable[..., None]

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor("system", name=f"manage.py {self.command_name}")

    @property
    def command_name(self) -> str:
        return self.__class__.__module__.rsplit(".", 1)[-1]

    @no_translations  # a stable interface for scripts: messages in English whatever LANGUAGE_CODE says
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with transaction.atomic():
                self.provision(**options)
        except ValidationError as exc:
            raise CommandError(self.describe(exc)) from None

    def describe(self, exc: ValidationError) -> str:
        if not hasattr(exc, "error_dict"):
            return " ".join(exc.messages)
        parts = []
        for field, messages in exc.message_dict.items():
            if field == NON_FIELD_ERRORS:
                parts.append(" ".join(messages))
                continue
            name = self.option_for_field.get(field, "--" + field.replace("_", "-"))
            parts.append(f"{name}: {' '.join(messages)}")
        return "; ".join(parts)


def institution_by_ae(ae_title: str, option: str) -> Institution:
    institution = Institution.objects.select_related("alliance").filter(ae_title=ae_title.strip().upper()).first()
    if institution is None:
        raise CommandError(f"{option}: no institution has the AE title {ae_title!r}.")
    return institution
