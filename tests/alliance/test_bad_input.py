"""Issue 16, "bad input": the filters of the figures and of the audit log answer a bad date
or an unknown institution with a message that names the field (the rest of the list, a
break-glass without a reason and switching off a module with open cases, is tested in
tests/imaging/test_break_glass.py and tests/alliance/test_module_switches.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"date_from": "2026-02-30"}, "From"),
        ({"date_to": "yesterday"}, "To"),
        ({"institution": "999999"}, "Institution"),
    ],
)
def test_the_figures_and_the_audit_log_name_the_bad_filter(
    alliance_world: Any, params: dict[str, str], named: str
) -> None:
    client = client_for(alliance_world.alliance_admin)
    figures = client.get(reverse("figures"), params, HTTP_ACCEPT_LANGUAGE="en")
    assert figures.status_code == 200
    assert f"{named}:" in figures.content.decode()
    csv = client.get(reverse("figures_csv", args=["consults", "turnaround"]), params, HTTP_ACCEPT_LANGUAGE="en")
    assert csv.status_code == 400 and csv.content.decode().startswith(f"{named}:")
    audit = client.get(reverse("audit_log"), params, HTTP_ACCEPT_LANGUAGE="en")
    assert audit.status_code == 200
    assert f"These filters are not valid: {named}." in audit.content.decode()
