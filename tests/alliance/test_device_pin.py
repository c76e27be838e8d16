"""A device's pinned client certificate (DICOM TLS): how it is kept, and who may associate."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from alliance import access, audit, services
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
PIN = "3B:29:92:48:93:F0:99:93:19:AA:B6:79:A6:49:EE:19:AE:EF:8F:DC:BF:BD:5D:08:18:C1:14:E1:9E:23:FE:48"
HEX = PIN.replace(":", "").lower()


@pytest.fixture
def clinic() -> Any:
    return factories.make_institution(ae_title="CLINA")


def test_the_fingerprint_openssl_prints_is_kept_as_lower_case_hex(clinic: Any) -> None:
    device = services.device_create(
        institution=clinic, ae_title="CT_A", host="*", port=104, by=audit.SYSTEM, tls_client_sha256=PIN
    )
    assert device.tls_client_sha256 == HEX
    with pytest.raises(ValidationError) as error:
        services.device_update(device=device, tls_client_sha256="AB:CD", by=audit.SYSTEM)
    assert "tls_client_sha256" in error.value.message_dict


def associate(**peer: Any) -> Any:
    fields = {"calling_ae": "CT_A", "called_ae": "CLINA", "host": "203.0.113.9", "check_host": True, **peer}
    return access.device_for_association(**fields)


def test_a_pinned_device_associates_with_its_certificate_from_anywhere_and_only_so(clinic: Any) -> None:
    services.device_create(
        institution=clinic, ae_title="CT_A", host="192.0.2.1", port=104, by=audit.SYSTEM, tls_client_sha256=PIN
    )
    assert associate(client_cert_sha256=HEX) is not None  # another address than registered: NAT
    assert associate(client_cert_sha256="") is None  # plain TCP, or TLS without a certificate
    assert associate(client_cert_sha256="0" * 64) is None
    assert associate(host="192.0.2.1", client_cert_sha256="") is None  # its host alone is not enough


def test_an_unpinned_device_keeps_the_host_check(clinic: Any) -> None:
    services.device_create(institution=clinic, ae_title="CT_A", host="192.0.2.1", port=104, by=audit.SYSTEM)
    assert associate(host="192.0.2.1") is not None
    assert associate(host="192.0.2.1", client_cert_sha256=HEX) is not None
    assert associate() is None


def test_the_console_form_sets_and_clears_the_pin(clinic: Any) -> None:
    admin = factories.make_doctor(institution=clinic, roles=["institution_admin"])
    device = services.device_create(institution=clinic, ae_title="CT_A", host="*", port=104, by=audit.SYSTEM)
    client = client_for(admin)
    form = {"ae_title": "CT_A", "host": "*", "port": "104", "description": ""}
    assert client.post(f"/manage/devices/{device.pk}/", {**form, "tls_client_sha256": PIN}).status_code == 302
    device.refresh_from_db()
    assert device.tls_client_sha256 == HEX
    bad = client.post(f"/manage/devices/{device.pk}/", {**form, "tls_client_sha256": "not hex"})
    assert bad.status_code == 200 and "tls_client_sha256" in bad.context["form"].errors
    client.post(f"/manage/devices/{device.pk}/", {**form, "tls_client_sha256": ""})
    device.refresh_from_db()
    assert device.tls_client_sha256 == ""


def test_the_device_is_loaded_with_its_institution_and_alliance_in_one_query_as_the_orm_would(  # type: ignore[no-untyped-def]
    clinic: Any, django_assert_num_queries
) -> None:
    """access.device_for_association's hand-written join (alliance.joined) leaves the objects as
    select_related would, and finds only an active device of an active institution."""
    from alliance.models import Device

    made = services.device_create(institution=clinic, ae_title="CT_A", host="*", port=104, by=audit.SYSTEM)
    with django_assert_num_queries(1):
        device = associate()
        assert device is not None
        loaded = [device, device.institution, device.institution.alliance]
    orm = Device.objects.select_related("institution__alliance").get(pk=made.pk)
    for got, expected in zip(loaded, [orm, orm.institution, orm.institution.alliance], strict=True):
        fields = type(expected)._meta.concrete_fields
        assert [getattr(got, f.attname) for f in fields] == [getattr(expected, f.attname) for f in fields]
        assert got._state.adding is False and got._state.db == "default"
    assert associate(called_ae="OTHER") is None
    services.device_update(device=made, active=False, by=audit.SYSTEM)
    assert associate() is None  # a device switched off
    services.device_update(device=made, active=True, by=audit.SYSTEM)
    type(clinic).objects.filter(pk=clinic.pk).update(active=False)
    assert associate() is None  # its institution switched off
