"""Critical results in Chromium: the reader flags one from the report editor; the requester's
home lists it and the case shows the red banner; the requester reads it back and the banner
is gone. Screenshots at 1366 and 390 px wide go to CRITICAL_SHOTS (or test-artifacts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from alliance.access import resolve_principal
from consults import critical
from consults.models import CriticalResult, Status
from tests.consults.conftest import walk

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(django_settings.BASE_DIR) / "test-artifacts")) / "consults"
SHOTS = Path(os.environ.get("CRITICAL_SHOTS", ARTIFACTS))
FINDING = "主动脉夹层 (Aortic dissection)"


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    """Signed in through Django's test client, outside Playwright (as test_journey_browser)."""
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shots(browser: Any, cookie: list[dict[str, str]], url: str, name: str) -> None:
    """The page at a desktop and a phone width; neither may scroll sideways."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1366, 900), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
        context.add_cookies(cookie)
        page = context.new_page()
        page.goto(url)
        page.screenshot(path=str(SHOTS / f"critical-{name}-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls {overflow} px sideways at {width} px"
        context.close()


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_reader_flags_requester_sees_banner_and_home_and_reads_back(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    admin = resolve_principal(world.alliance_admin.user).actor
    finding = critical.critical_finding_create(alliance=world.alliance, modality="CT", name=FINDING, actor=admin)
    critical.critical_finding_create(alliance=world.alliance, modality="CT", name="张力性气胸", actor=admin)
    consult = walk(world, Status.IN_PROGRESS)
    reader_cookie = _session_cookie(live_server, world.specialist)
    clinic_cookie = _session_cookie(live_server, world.owner)
    admin_cookie = _session_cookie(live_server, world.alliance_admin)
    case_url = f"{live_server.url}/consults/{consult.pk}/"
    owner_name = world.owner.display_name
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        reader = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        clinic = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        reader.add_cookies(reader_cookie)
        clinic.add_cookies(clinic_cookie)
        rp, cp = reader.new_page(), clinic.new_page()

        # The reader, writing the report, flags a finding from the CT list.
        rp.goto(f"{live_server.url}/consults/{consult.pk}/report/")
        _shots(browser, reader_cookie, rp.url, "report-editor")
        rp.select_option("#critical-flag select[name=finding]", str(finding.pk))
        rp.click("#critical-flag button[type=submit]")
        expect(rp.locator("#critical-flag input[name=confirm]:invalid")).to_have_count(1)  # confirm first
        rp.check("#critical-flag input[name=confirm]")
        rp.click("#critical-flag button[type=submit]")
        expect(rp.locator("body")).to_contain_text("危急值已报告，已通知申请机构。")
        expect(rp.locator("#report-form")).to_be_visible()

        # The requester's home lists it; the case shows the red banner.
        cp.goto(f"{live_server.url}/")
        expect(cp.locator("#home-work-critical")).to_contain_text(FINDING)
        _shots(browser, clinic_cookie, cp.url, "home")
        cp.click(f"#home-work-critical a[href*='/consults/{consult.pk}/']")
        banner = cp.locator("#critical-banner")
        expect(banner).to_contain_text("危急值")
        expect(banner).to_contain_text(FINDING)
        _shots(browser, clinic_cookie, case_url, "banner")

        # A wrong read back is refused; the right one acknowledges and the banner is gone.
        cp.fill("#critical-banner input[name=read_back]", "张力性气胸")
        cp.click("#critical-banner button[type=submit]")
        expect(cp.locator("#critical-banner")).to_be_visible()
        expect(cp.locator("body")).to_contain_text("复述的内容与报告的危急值不一致")
        cp.fill("#critical-banner input[name=read_back]", "主动脉夹层")
        cp.click("#critical-banner button[type=submit]")
        expect(cp.locator("#critical-banner")).to_have_count(0)
        expect(cp.locator("#critical-history")).to_contain_text(owner_name)
        _shots(browser, clinic_cookie, case_url, "acknowledged")
        cp.goto(f"{live_server.url}/")
        expect(cp.locator("#home-work-critical")).to_have_count(0)

        # The alliance admin's list and the figures' section.
        _shots(browser, admin_cookie, f"{live_server.url}/consults/critical-findings/", "findings")
        _shots(browser, admin_cookie, f"{live_server.url}/figures/#critical", "figures")
        browser.close()
    # The ORM only outside Playwright's greenlet (see _session_cookie).
    result = CriticalResult.objects.get()
    assert (result.text, result.acknowledged_by, result.read_back) == (FINDING, world.owner, "主动脉夹层")
