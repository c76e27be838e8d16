"""Sign-in throttling: a lock holds one (username, address) pair, and one address that fails too
often is refused for every username; an admin sees the locks and lifts them."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from alliance import access
from alliance.models import AuditEvent
from tests.conftest import client_for
from tests.factories import PASSWORD

ATTACKER = "203.0.113.7"


def _sign_in(client: Client, username: str, password: str) -> int:
    return client.post(reverse("login"), {"username": username, "password": password}).status_code


def test_thirty_usernames_from_one_address_are_refused_after_the_address_limit(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
    assert limit < 30
    attacker = Client(REMOTE_ADDR=ATTACKER)
    statuses = [_sign_in(attacker, f"user{n}", "guess") for n in range(30)]
    assert statuses[:limit] == [200] * limit  # the form again, with an error
    assert statuses[limit:] == [429] * (30 - limit)
    # the address is refused even for a real username and its right password
    assert _sign_in(attacker, "owner", PASSWORD) == 429
    assert access.address_refused(ATTACKER)


def test_the_victims_username_still_works_from_another_address(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for n in range(settings.AXES_FAILURE_LIMIT + 2):
        _sign_in(attacker, "owner", f"wrong-{n}")
    assert _sign_in(attacker, "owner", PASSWORD) == 429
    assert _sign_in(Client(REMOTE_ADDR="198.51.100.20"), "owner", PASSWORD) == 302


def test_failures_of_one_pair_do_not_refuse_the_address_for_others(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    client = Client(REMOTE_ADDR="198.51.100.30")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(client, "owner", f"wrong-{n}")
    assert _sign_in(client, "colleague", PASSWORD) == 302


def test_an_alliance_admin_sees_and_lifts_a_locked_pair(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    victim = Client(REMOTE_ADDR="198.51.100.40")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(victim, "owner", f"wrong-{n}")
    admin = client_for(alliance_world.alliance_admin)
    page = admin.get(reverse("manage:sign_in_locks"))
    assert [(row.username, row.ip_address) for row in page.context["locks"]] == [("owner", "198.51.100.40")]
    lifted = admin.post(reverse("manage:sign_in_lock_lift"), {"username": "owner", "address": "198.51.100.40"})
    assert lifted.status_code == 302
    assert _sign_in(victim, "owner", PASSWORD) == 302
    assert AuditEvent.objects.filter(action="login.unlock", object_id="owner").exists()


def test_an_alliance_admin_lifts_a_refused_address(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 4
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for n in range(4):
        _sign_in(attacker, f"user{n}", "guess")
    admin = client_for(alliance_world.alliance_admin)
    page = admin.get(reverse("manage:sign_in_locks"))
    assert [row["ip_address"] for row in page.context["addresses"]] == [ATTACKER]
    admin.post(reverse("manage:sign_in_lock_lift"), {"address": ATTACKER})
    assert not access.address_refused(ATTACKER)


def test_an_institution_admin_sees_only_locks_of_their_own_doctors(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    for username in ("owner", "stranger"):  # clinic A's, clinic B's
        client = Client(REMOTE_ADDR="198.51.100.50")
        for n in range(settings.AXES_FAILURE_LIMIT):
            _sign_in(client, username, f"wrong-{n}")
    admin = client_for(alliance_world.inst_admin_a)
    page = admin.get(reverse("manage:sign_in_locks"))
    assert [row.username for row in page.context["locks"]] == ["owner"]
    assert page.context["addresses"] is None
    refused = admin.post(reverse("manage:sign_in_lock_lift"), {"username": "stranger", "address": "198.51.100.50"})
    assert refused.status_code == 404
    assert admin.post(reverse("manage:sign_in_lock_lift"), {"address": "198.51.100.50"}).status_code == 403


def test_a_clinician_has_no_lock_page(alliance_world) -> None:  # type: ignore[no-untyped-def]
    assert client_for(alliance_world.owner).get(reverse("manage:sign_in_locks")).status_code == 403


def test_the_lock_and_the_audit_row_name_the_same_address(alliance_world) -> None:  # type: ignore[no-untyped-def]
    from axes.helpers import get_client_ip_address
    from django.test import RequestFactory

    from alliance import audit

    request = RequestFactory().post("/login/", REMOTE_ADDR="198.51.100.60")
    assert get_client_ip_address(request) == audit.source_of(request) == "198.51.100.60"
