"""A clinic doctor's pages with tables (the study list, the study page with its cloud film links,
the consult worklist) fit a phone's width: a wide table scrolls inside its box."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from alliance.access import resolve_principal
from imaging import films
from tests.factories import PASSWORD, StudyFactory

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.integration
def test_clinic_pages_with_tables_do_not_scroll_sideways_on_a_phone(alliance_world: Any, live_server: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a, description="CT THORAX", series__instances=2)
    owner = resolve_principal(alliance_world.owner.user)
    films.film_create(studies=[study], by=owner)
    films.film_create(studies=[study], by=owner, verify="pin")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for width in (1280, 390):
            page = browser.new_page(viewport={"width": width, "height": 800}, locale="zh-CN")
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(f"{live_server.url}/login/")
            page.fill("#id_username", alliance_world.owner.user.username)
            page.fill("#id_password", PASSWORD)
            page.click("button.primary")
            page.wait_for_url(f"{live_server.url}/")
            page.goto(f"{live_server.url}/imaging/studies/{study.study_uid}/")
            assert page.locator("[data-film-link]").count() == 2
            for path in (f"/imaging/studies/{study.study_uid}/", "/imaging/studies/", "/consults/"):
                page.goto(f"{live_server.url}{path}")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 1:
                    problems.append(f"{path} at {width}px scrolls sideways by {overflow}px")
            page.close()
        browser.close()
    assert problems == []
