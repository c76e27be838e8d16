"""`manage.py hl7_endpoint_add AE APPLICATION FACILITY [--host H --port P]`: register a HIS."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from alliance import audit
from alliance.models import Institution
from imaging.hl7.services import his_endpoint_create


class Command(BaseCommand):
    help = "Register a HIS for an institution: its orders' MSH-3 and MSH-4, and where its results go."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("institution_ae", help="the institution's AE title")
        parser.add_argument("application", help="MSH-3 of the HIS's orders")
        parser.add_argument("facility", help="MSH-4 of the HIS's orders")
        parser.add_argument("--host", default="", help="where ORU^R01 results go (MLLP)")
        parser.add_argument("--port", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        institution = Institution.objects.filter(ae_title=options["institution_ae"].upper()).first()
        if institution is None:
            raise CommandError(f"No institution has the AE title {options['institution_ae']}.")
        try:
            endpoint = his_endpoint_create(
                institution=institution,
                sending_application=options["application"],
                sending_facility=options["facility"],
                host=options["host"],
                port=options["port"],
                by=audit.SYSTEM,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(m for ms in exc.message_dict.values() for m in ms)) from None
        self.stdout.write(f"registered {endpoint}")
