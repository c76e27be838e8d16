"""The audit's source address believes X-Forwarded-For only from a proxy the deployment named."""

from __future__ import annotations

import pytest
from django.test import RequestFactory, override_settings

from alliance import audit


def request_from(remote: str, forwarded: str | None = None):  # type: ignore[no-untyped-def]
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@override_settings(TRUSTED_PROXIES=[])
def test_spoofed_forwarded_for_without_a_proxy_is_ignored() -> None:
    assert audit.source_of(request_from("203.0.113.9", "10.9.9.9")) == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=["10.0.0.1"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored_even_when_proxies_are_configured() -> None:
    assert audit.source_of(request_from("203.0.113.9", "10.9.9.9")) == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=["10.0.0.1"])
def test_forwarded_for_through_a_trusted_proxy_is_honoured() -> None:
    assert audit.source_of(request_from("10.0.0.1", "198.51.100.7")) == "198.51.100.7"


@override_settings(TRUSTED_PROXIES=["10.0.0.1"])
def test_client_written_addresses_left_of_the_proxy_hop_are_not_believed() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the address it saw.
    assert audit.source_of(request_from("10.0.0.1", "1.2.3.4, 198.51.100.7")) == "198.51.100.7"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/8", "192.168.1.5"])
def test_a_chain_of_trusted_proxies_gives_the_right_most_untrusted_address() -> None:
    forwarded = "1.2.3.4, 198.51.100.7, 192.168.1.5, 10.2.3.4"
    assert audit.source_of(request_from("10.0.0.1", forwarded)) == "198.51.100.7"


@override_settings(TRUSTED_PROXIES=["10.0.0.1"])
def test_a_trusted_proxy_without_forwarded_for_gives_its_own_address() -> None:
    assert audit.source_of(request_from("10.0.0.1")) == "10.0.0.1"


@override_settings(TRUSTED_PROXIES=["2001:db8::/32"])
def test_ipv6_proxies_are_matched_by_network() -> None:
    assert audit.source_of(request_from("2001:db8::1", "2001:db9::5")) == "2001:db9::5"


def test_a_bad_trusted_proxy_entry_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1,not-an-address")
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='alliance.settings'; django.setup()",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
