"""Issue 16, item E: the alliance admin edits every AllianceSettings knob under /manage/, in
Chinese or English; each change is audited; nobody else may."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from alliance import audit, services
from alliance.access import settings_of
from alliance.models import AuditEvent
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
URL = "/manage/alliance/settings/"

EVERY_FIELD = {
    "reader_access_days": "30",
    "referral_access_days": "60",
    "break_glass_hours": "6",
    "film_check": "pin",
    "film_expiry_days": "14",
    "film_max_openings": "5",
    "film_on_sign": "",  # unticked
    "film_show_doctor_names": "on",
    "film_sheets": "ct: 3, MR: 2, DX: 1",
    "film_sheet_cost": "20.50",
}


def test_the_alliance_admin_changes_every_setting(alliance_world: Any) -> None:
    admin = client_for(alliance_world.alliance_admin)
    data = {k: v for k, v in EVERY_FIELD.items() if v}
    assert admin.post(URL, data).status_code == 302
    row = settings_of(alliance_world.alliance.pk)
    assert (row.reader_access_days, row.referral_access_days, row.break_glass_hours) == (30, 60, 6)
    assert (row.film_check, row.film_expiry_days, row.film_max_openings) == ("pin", 14, 5)
    assert (row.film_on_sign, row.film_show_doctor_names) == (False, True)
    assert row.film_sheets == {"CT": 3, "MR": 2, "DX": 1}
    assert row.film_sheet_cost == Decimal("20.50")
    event = AuditEvent.objects.get(action="alliance.settings")
    assert event.detail["break_glass_hours"] == ["4", "6"]


def test_the_page_shows_every_field_with_chinese_labels(alliance_world: Any) -> None:
    page = client_for(alliance_world.alliance_admin).get(URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    for name in EVERY_FIELD:
        assert f'name="{name}"' in page, name
    assert "紧急访问有效期（小时）" in page and "报告签发后阅片专家的只读访问期限（天）" in page
    assert "CT: 2" in page


@pytest.mark.parametrize(
    ("field", "value"), [("break_glass_hours", "0"), ("break_glass_hours", "200"), ("film_sheets", "CT two")]
)
def test_bad_values_are_refused_on_their_field(alliance_world: Any, field: str, value: str) -> None:
    data = {k: v for k, v in EVERY_FIELD.items() if v} | {field: value}
    response = client_for(alliance_world.alliance_admin).post(URL, data)
    assert response.status_code == 200 and field in response.context["form"].errors
    assert settings_of(alliance_world.alliance.pk).break_glass_hours == 4


@pytest.mark.parametrize("persona", ["owner", "inst_admin_a", "hosp_admin", "specialist"])
def test_nobody_else_sees_or_changes_the_settings(alliance_world: Any, persona: str) -> None:
    client = client_for(getattr(alliance_world, persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"break_glass_hours": "72"}).status_code == 403


def test_the_service_refuses_unknown_settings_and_bad_sheets(alliance_world: Any) -> None:
    with pytest.raises(ValidationError):
        services.alliance_settings_update(alliance=alliance_world.alliance, by=audit.SYSTEM, colour="red")
    with pytest.raises(ValidationError):
        services.alliance_settings_update(alliance=alliance_world.alliance, by=audit.SYSTEM, film_sheets={"CT": -1})


def test_an_unchanged_save_writes_no_audit_event(alliance_world: Any) -> None:
    services.alliance_settings_update(alliance=alliance_world.alliance, by=audit.SYSTEM, break_glass_hours=4)
    assert not AuditEvent.objects.filter(action="alliance.settings").exists()
