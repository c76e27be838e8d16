"""The pages in a real browser (Debian's Chromium): sign-in, the console and the audit log
render without a Content-Security-Policy violation and fit a phone's width."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from tests.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
PAGES = ["/", "/manage/", "/manage/institutions/", "/manage/doctors/", "/audit/", "/figures/"]


@pytest.mark.integration
def test_admin_pages_in_chromium_without_csp_errors_and_phone_wide(alliance_world, live_server) -> None:  # type: ignore[no-untyped-def]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for width in (1280, 390):
            page = browser.new_page(viewport={"width": width, "height": 800}, locale="zh-CN")
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(f"{live_server.url}/login/")
            page.fill("#id_username", "alliance_admin")
            page.fill("#id_password", PASSWORD)
            page.click("button.primary")
            page.wait_for_url(f"{live_server.url}/")
            assert "欢迎" in page.inner_text("h1")
            for path in PAGES:
                page.goto(f"{live_server.url}{path}")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 1:
                    problems.append(f"{path} at {width}px scrolls sideways by {overflow}px")
            page.close()
        browser.close()
    assert problems == []
