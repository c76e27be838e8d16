"""The worklist page in Chromium, in Chinese at 1366 and 390 px: a clinician schedules an exam
for the station, sees it in today's list (no sideways scroll on the phone), and takes another
off after confirming."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from alliance import audit, services
from imaging import worklist
from imaging.models import ScheduledStep

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("MWL_SHOTS", "/tmp/shots/mwl"))
SIZES = {"1366": {"width": 1366, "height": 900}, "390": {"width": 390, "height": 844}}


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _no_sideways_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_scheduling_and_taking_off_in_the_browser(alliance_world: Any, live_server: Any, monkeypatch: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    services.device_create(
        institution=world.clin_a, ae_title="DR_A", host="127.0.0.1", port=104, description="DR 1", by=audit.SYSTEM
    )
    now = timezone.localtime()
    soon = now + timedelta(minutes=30)
    if (soon + timedelta(minutes=15)).date() != now.date():  # late in the evening: still on today's list
        soon = now - timedelta(hours=1)
    first = worklist.schedule_step(
        by=audit.SYSTEM,
        institution=world.clin_a,
        patient_id="A-3001",
        issuer=world.clin_a,
        patient_name="Sun^Qi=孙^七",
        birth_date=None,
        sex="M",
        accession_number="A260001",
        modality="CT",
        scheduled_at=soon,
        station_ae="",
        procedure_description="头颅 CT 平扫",
        source="api",
    )
    cookie = _session_cookie(live_server, world.owner)
    # no ORM inside the block: Playwright's loop would give the query a connection of its own
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        pages = {}
        for size, viewport in SIZES.items():
            context = browser.new_context(viewport=viewport, locale="zh-CN")
            context.add_cookies(cookie)
            pages[size] = context.new_page()

        desk = pages["1366"]
        desk.goto(f"{live_server.url}/imaging/studies/")
        desk.click("#nav-worklist")
        expect(desk.locator("h1")).to_have_text("检查预约")
        desk.click("#worklist-new")
        desk.fill("input[name=patient_id]", "A-3002")
        desk.fill("input[name=patient_name]", "Zhou^Ba=周^八")
        desk.select_option("select[name=modality]", "DX")
        desk.fill("input[name=scheduled_at]", (soon + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M"))
        desk.select_option("select[name=station_ae]", "DR_A")
        desk.fill("input[name=procedure_description]", "胸部正位片")
        _shot(desk, "01-schedule-form-1366")
        desk.click("#worklist-form button[type=submit]")
        expect(desk.locator("#worklist-table tbody tr")).to_have_count(2)
        expect(desk.locator("#worklist-table")).to_contain_text("周八")
        _shot(desk, "02-worklist-today-1366")

        phone = pages["390"]
        phone.goto(f"{live_server.url}/imaging/worklist/")
        expect(phone.locator("#worklist-table")).to_contain_text("孙七")
        _no_sideways_scroll(phone)
        _shot(phone, "03-worklist-today-390")
        phone.click(f"#step-{first.pk} .step-discontinue")
        _no_sideways_scroll(phone)
        _shot(phone, "04-take-off-confirm-390")
        phone.fill("input[name=reason]", "患者改期")
        phone.click("#worklist-discontinue button[type=submit]")
        expect(phone.locator("#worklist-table tbody tr")).to_have_count(1)
        browser.close()
    first.refresh_from_db()
    assert first.status == "discontinued"
    assert ScheduledStep.objects.get(patient__patient_id="A-3002").station_ae == "DR_A"
