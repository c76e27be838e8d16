"""Registering an institution's HIS (the writes of imaging.hl7's own rows)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from alliance import audit
from alliance.models import Institution
from imaging.hl7.models import HisEndpoint


@transaction.atomic
def his_endpoint_create(
    *,
    institution: Institution,
    sending_application: str,
    sending_facility: str,
    host: str = "",
    port: int | None = None,
    by: audit.Actor,
) -> HisEndpoint:
    """A HIS whose orders (MSH-3 and MSH-4 as given) become the institution's worklist steps,
    and which receives the results of its consults at host:port when both are given."""
    application, facility = sending_application.strip(), sending_facility.strip()
    if not application or not facility:
        raise ValidationError({"sending_facility": _("Give the HIS's sending application and facility.")})
    if HisEndpoint.objects.filter(sending_application=application, sending_facility=facility).exists():
        raise ValidationError({"sending_facility": _("This application and facility are registered already.")})
    if bool(host.strip()) != (port is not None) or (port is not None and not 0 < port < 65536):
        raise ValidationError({"port": _("Give both the host and the port (1 to 65535) of the HIS, or neither.")})
    endpoint = HisEndpoint.objects.create(
        institution=institution,
        sending_application=application,
        sending_facility=facility,
        host=host.strip(),
        port=port,
    )
    audit.record(
        actor=by,
        action="device.his_register",
        object_type="his",
        object_id=endpoint.pk,
        detail={"institution": institution.pk, "application": application, "facility": facility, "host": host},
    )
    return endpoint
