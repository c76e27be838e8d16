"""Break-glass in Chromium (issue 16, item 5), in Chinese at 1366 and 390 px: a clinic B doctor
is refused without a reason, opens clinic A's study with one, works under the red banner;
clinic A's admin sees the count in the navigation, flags the access, and it ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from tests.dicomweb.conftest import store
from tests.imaging.dicomgen import make_ct_series

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("GOV_SHOTS", "/tmp/shots/gov"))
SIZES = {"1366": {"width": 1366, "height": 900}, "390": {"width": 390, "height": 844}}
REASON = "急诊昏迷患者，需要立即查看其在A卫生院的既往CT"


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_break_glass_journey_in_the_browser(alliance_world: Any, live_server: Any, monkeypatch: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    datasets = make_ct_series(3, 64, 64, patient_id="A-2041", patient_name="Zhao^Liu=赵^六")
    store(datasets, world.clin_a)
    study_uid = str(datasets[0].StudyInstanceUID)
    doctor_cookie = _session_cookie(live_server, world.stranger)
    admin_cookie = _session_cookie(live_server, world.inst_admin_a)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        pages = {}
        for size, viewport in SIZES.items():
            for who, cookie in (("doctor", doctor_cookie), ("admin", admin_cookie)):
                context = browser.new_context(viewport=viewport, locale="zh-CN")
                context.add_cookies(cookie)
                pages[who, size] = context.new_page()

        # Clinic B's doctor cannot see the study; the study list offers emergency access.
        doctor = pages["doctor", "1366"]
        doctor.goto(f"{live_server.url}/imaging/studies/{study_uid}/")
        assert doctor.title().startswith("未找到")
        doctor.goto(f"{live_server.url}/imaging/studies/")
        doctor.click("#break-glass-link")
        doctor.fill("input[name=study]", study_uid)
        doctor.click("#break-glass-form button[type=submit]")
        expect(doctor.locator(".has-error")).to_have_count(1)  # no reason: refused on the reason field
        _shot(doctor, "01-break-glass-refused-without-reason-1366")
        doctor.fill("textarea[name=reason]", REASON)
        doctor.click("#break-glass-form button[type=submit]")
        expect(doctor.locator("#emergency-banner")).to_contain_text(REASON)
        expect(doctor.locator("h1").first).to_contain_text("赵六")
        _shot(doctor, "02-study-under-red-banner-1366")
        doctor.goto(f"{live_server.url}/viewer/study/{study_uid}/")
        expect(doctor.locator("#emergency-banner")).to_be_visible()
        _shot(doctor, "03-viewer-under-red-banner-1366")

        phone = pages["doctor", "390"]
        phone.goto(f"{live_server.url}/imaging/break-glass/")
        _shot(phone, "04-break-glass-form-390")
        phone.goto(f"{live_server.url}/imaging/studies/{study_uid}/")
        expect(phone.locator("#emergency-banner")).to_be_visible()
        _shot(phone, "05-study-under-red-banner-390")

        # Clinic A's admin sees the count, reviews on a phone and on a desk; flags it.
        for size in SIZES:
            admin = pages["admin", size]
            admin.goto(f"{live_server.url}/")
            expect(admin.locator("#nav-break-glass-reviews .badge")).to_have_text("1")
            admin.click("#nav-break-glass-reviews")
            expect(admin.locator("#pending-reviews")).to_contain_text(REASON)
            _shot(admin, f"06-review-queue-{size}")
        admin = pages["admin", "1366"]
        admin.fill("#pending-reviews textarea[name=comment]", "患者并非急诊就诊，请走会诊流程。")
        admin.click("#pending-reviews button[value=flag]")
        expect(admin.locator("#done-reviews")).to_contain_text("已标记")
        _shot(admin, "07-flagged-1366")

        # The flag ended the access at once.
        doctor.goto(f"{live_server.url}/imaging/studies/{study_uid}/")
        assert doctor.title().startswith("未找到")
        browser.close()
