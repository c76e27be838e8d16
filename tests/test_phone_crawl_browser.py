"""On a phone (390x844) no page of the demo scrolls sideways: lists become cards, the viewer's
toolbar wraps. Each demo persona signs in and walks every page it can reach from the top bar
and from those pages' own links (list rows, tabs, cases), and the page must be no wider than
the screen: document.documentElement.scrollWidth <= window.innerWidth."""

from __future__ import annotations

import io
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, sync_playwright

import demo.imaging
from alliance.models import Institution
from demo.alliance import DEMO_PASSWORD
from tests.factories import StudyFactory

CHROMIUM = "/usr/bin/chromium"
PERSONAS = ("qingshan_doctor", "radiologist", "city_admin", "alliance_admin")
PAGES_PER_PERSONA = 45
# Not pages: downloads, sign-out, the language switch, Django admin and the machine interfaces.
SKIP = ("/logout", "/i18n/", "/django-admin/", "/api/", "/dicomweb/", "/fhir/", "/static/", "/media/")
SKIP_ENDINGS = (".pdf", ".csv", ".zip", ".json", ".dcm")


@pytest.fixture
def demo_world(transactional_db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """seed_demo with one light study per kind at each clinic instead of the synthetic images."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    def load(*, stdout: Any, actor: Any) -> None:
        for clinic in Institution.objects.filter(ae_title__in=["QINGSHAN", "BAIHE"]):
            if not clinic.studies.exists():
                for modality, body_part in (("CT", "CHEST"), ("DX", "CHEST"), ("MR", "HEAD")):
                    StudyFactory(institution=clinic, modalities=modality, series__body_part=body_part)

    monkeypatch.setattr(demo.imaging, "load", load)
    call_command("seed_demo", stdout=io.StringIO(), stderr=io.StringIO())


def _is_page(href: str, origin: str) -> bool:
    parts = urlsplit(href)
    if f"{parts.scheme}://{parts.netloc}" != origin or not parts.path:
        return False
    return not any(s in parts.path for s in SKIP) and not parts.path.endswith(SKIP_ENDINGS)


def _links(page: Page, origin: str) -> list[str]:
    found = page.eval_on_selector_all(
        "header.topbar nav a[href], main a[href]:not([download]):not([target=_blank])",
        "links => links.map(a => a.href)",
    )
    return [h.split("#")[0] for h in found if _is_page(h, origin)]


def _sign_in(page: Page, origin: str, username: str) -> None:
    page.goto(f"{origin}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{origin}/")


def _crawl(page: Page, origin: str, username: str) -> tuple[list[str], list[str]]:
    """(pages visited, pages wider than the screen) for one persona."""
    seen: set[str] = {f"{origin}/"}
    queue: deque[str] = deque([f"{origin}/"])
    visited: list[str] = []
    wide: list[str] = []
    while queue and len(visited) < PAGES_PER_PERSONA:
        url = queue.popleft()
        response = page.goto(url)
        if response is None or response.status >= 400 or not page.url.startswith(origin):
            continue
        page.wait_for_load_state("load")
        visited.append(url)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if width[0] > width[1]:
            wide.append(f"{username} {url.removeprefix(origin)}: {width[0]}px wide on a {width[1]}px screen")
        for link in _links(page, origin):
            key = link.split("?")[0] if "page=" in link else link
            if key not in seen:
                seen.add(key)
                queue.append(link)
    return visited, wide


@pytest.mark.integration
def test_no_page_a_demo_persona_reaches_scrolls_sideways_on_a_phone(demo_world: None, live_server: Any) -> None:
    origin = live_server.url
    wide: list[str] = []
    visited: dict[str, list[str]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for username in PERSONAS:
            context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", device_scale_factor=1)
            page = context.new_page()
            _sign_in(page, origin, username)
            # The top bar's buttons keep their words on one line ("切换" broke into one character a line).
            broken = page.evaluate(
                """() => [...document.querySelectorAll('header .tools .btn')].filter((b) => {
                    const text = document.createRange();
                    text.selectNodeContents(b);
                    return new Set([...text.getClientRects()].map((r) => Math.round(r.top))).size > 1;
                }).map((b) => b.textContent.trim())"""
            )
            assert broken == [], (username, broken)
            visited[username], too_wide = _crawl(page, origin, username)
            wide += too_wide
            context.close()
        browser.close()
    assert wide == []
    paths = {u.removeprefix(origin).split("?")[0] for pages in visited.values() for u in pages}
    # The crawl reached the lists and the pages behind their rows, not only the home page.
    for expected in ("/imaging/studies/", "/consults/", "/referrals/", "/audit/", "/figures/", "/manage/"):
        assert any(p.startswith(expected) for p in paths), f"the crawl never reached {expected}: {sorted(paths)}"
    assert any(p.startswith("/imaging/studies/") and len(p) > len("/imaging/studies/") for p in paths)
    assert any(p.startswith("/viewer/") for p in paths), sorted(paths)
