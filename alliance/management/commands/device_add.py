from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from alliance import services
from alliance.management.commands._provisioning import ProvisioningCommand, institution_by_ae


class Command(ProvisioningCommand):
    help = "Register a DICOM device (modality, workstation or PACS) of an institution."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--institution", required=True, help="AE title of the device's institution")
        parser.add_argument("--ae-title", required=True, help="The device's own (calling) AE title")
        parser.add_argument("--host", required=True, help="Address it calls from and listens on ('*' for any)")
        parser.add_argument("--port", required=True, type=int, help="Its listening port, for C-MOVE")
        parser.add_argument("--description", default="")

    def provision(self, *, institution: str, ae_title: str, host: str, port: int, description: str, **_: Any) -> None:
        device = services.device_create(
            institution=institution_by_ae(institution, "--institution"),
            ae_title=ae_title,
            host=host,
            port=port,
            description=description,
            by=self.actor,
        )
        self.stdout.write(f"Device {device.pk} {device.ae_title} {device.host}:{device.port} ({device.institution})")
