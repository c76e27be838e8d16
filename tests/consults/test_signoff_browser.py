"""Two-level sign-off in Chromium (issue 15): a junior drafts and signs with the password (a
wrong one is refused), the reviewer returns it, the junior fixes and signs again, the reviewer
verifies; the requester sees "preliminary", then the final report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from consults.models import Status
from tests.consults.conftest import walk
from tests.factories import PASSWORD, make_doctor

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/work/wt/notes/shots")
FINDINGS = "右肺上叶见8毫米实性结节，边缘光整。"
FIXED = "右肺上叶见8毫米实性结节（肺窗测量），边缘光整。"


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    """Signed in through Django's test client, outside Playwright (as test_journey_browser)."""
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    if SHOTS.parent.is_dir():
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"sign-{name}.png"), full_page=True)


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_junior_signs_reviewer_returns_then_verifies_and_the_requester_sees_preliminary_then_final(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior", title="主任医师")
    world.pool.members.add(senior)
    world.pool.reviewers.add(senior)
    world.pool.two_level_signoff = True
    world.pool.save()
    world.specialist.title = "住院医师"
    world.specialist.save()
    consult = walk(world, Status.IN_PROGRESS, priority="asap")
    case_url = f"{live_server.url}/consults/{consult.pk}/"
    cookies = {d: _session_cookie(live_server, d) for d in (world.owner, world.specialist, senior)}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])

        def page_for(doctor: Any, width: int = 1366, height: int = 900) -> Any:
            context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
            context.add_cookies(cookies[doctor])
            return context.new_page()

        junior, reviewer, requester = page_for(world.specialist), page_for(senior), page_for(world.owner)

        # The junior drafts and asks to sign: a confirmation with the text and the password field.
        junior.goto(f"{case_url}report/")
        expect(junior.locator("textarea[name=findings]")).to_have_value("")  # no template filled in
        junior.fill("textarea[name=findings]", FINDINGS)
        junior.fill("textarea[name=impression]", "右上肺小结节。")
        junior.click("#sign-report")
        expect(junior.locator("#sign-text")).to_contain_text(FINDINGS)
        expect(junior.locator("#sign-preliminary-note")).to_be_visible()
        expect(junior.locator("#sign-signer")).to_contain_text("住院医师")
        _shot(junior, "confirm-1366")
        junior_phone = page_for(world.specialist, 390, 844)
        junior_phone.goto(junior.url)
        expect(junior_phone.locator("#sign-password")).to_be_visible()
        assert junior_phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        _shot(junior_phone, "confirm-390")

        # A wrong password is refused, on the page, and nothing is signed.
        junior.fill("#sign-password", "not-my-password")
        junior.click("#sign-confirm-button")
        expect(junior.locator("#sign-error")).to_contain_text("密码错误")
        _shot(junior, "wrong-password-1366")
        junior.fill("#sign-password", PASSWORD)
        junior.click("#sign-confirm-button")
        expect(junior.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-preliminary")

        # The requester sees the preliminary report, clearly marked.
        requester.goto(case_url)
        expect(requester.locator("#preliminary-banner")).to_be_visible()
        expect(requester.locator("#report")).to_contain_text(FINDINGS)
        _shot(requester, "preliminary-case-1366")
        phone = page_for(world.owner, 390, 844)
        phone.goto(case_url)
        expect(phone.locator("#preliminary-banner")).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        _shot(phone, "preliminary-case-390")

        # The reviewer finds it on the worklist and returns it with a comment.
        reviewer.goto(f"{live_server.url}/consults/?tab=review")
        reviewer.click(f"a[href='/consults/{consult.pk}/']")
        reviewer.fill("form[data-action=return_report] textarea", "请在肺窗上测量结节。")
        reviewer.click("form[data-action=return_report] button")
        expect(reviewer.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-in-progress")

        # The junior sees the comment, fixes the text and signs again.
        junior.goto(f"{case_url}report/")
        expect(junior.locator("#returned-banner")).to_contain_text("请在肺窗上测量结节。")
        expect(junior.locator("textarea[name=findings]")).to_have_value(FINDINGS)
        junior.fill("textarea[name=findings]", FIXED)
        junior.click("#sign-report")
        junior.fill("#sign-password", PASSWORD)
        junior.click("#sign-confirm-button")
        expect(junior.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-preliminary")

        # The reviewer verifies with their password: the report is final.
        reviewer.goto(case_url)
        reviewer.fill("form[data-action=verify] input[name=password]", PASSWORD)
        reviewer.click("form[data-action=verify] button")
        expect(reviewer.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-completed")

        requester.goto(case_url)
        expect(requester.locator("#preliminary-banner")).to_have_count(0)
        expect(requester.locator("#report")).to_contain_text(FIXED)
        expect(requester.locator("#report")).to_contain_text("主任医师")
        expect(requester.locator("#report .cs-status-completed")).to_have_text("已审核")
        expect(requester.locator("#report .cs-status-returned")).to_have_text("已退回")
        expect(requester.locator("#report .cs-status-preliminary")).to_have_count(0)
        _shot(requester, "final-case-1366")
        browser.close()
