"""My account in a real browser (Debian's Chromium): a specialist whose alliance requires a second
factor enrols an authenticator, signs out, signs in with the password and then the code, and
changes their password; an institution admin does the same on a phone. Screenshots at 1366 and
390 px go to /work/wt/notes/shots/accounts-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import sync_playwright

from alliance.access import settings_of
from tests.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/work/wt/notes/shots")
NEW_PASSWORD = "Journey-passw0rd-2026"


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"accounts-{name}.png"), full_page=True)


def _code(username: str, drift: int = 0) -> str:
    device = TOTPDevice.objects.get(user__username=username)
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=drift):06d}"


def _sign_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button.primary")


def _sideways(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def _enrol(page: Any, url: str, username: str, width: int) -> list[str]:
    page.wait_for_url(f"{url}/account/two-factor/**")
    assert page.locator("#second-factor-required").is_visible()
    assert page.locator("img.qr").is_visible()
    _shot(page, f"enrol-{width}")
    page.fill("#id_code", _code(username))
    page.click("button.primary")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    _shot(page, f"recovery-codes-{width}")
    page.click("text=我已保存")
    return codes


@pytest.mark.integration
def test_enrol_sign_in_with_the_code_and_change_password_in_chromium(alliance_world, live_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the test reads the device key while Playwright runs
    row = settings_of(alliance_world.alliance.pk)
    row.second_factor_required = True
    row.save()
    url = live_server.url
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

        page = browser.new_page(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        _sign_in(page, url, "specialist", PASSWORD)
        codes = _enrol(page, url, "specialist", 1366)
        assert len(codes) == 10
        page.wait_for_url(f"{url}/account/")
        page.click(".logout button")
        page.wait_for_url(f"{url}/login/")

        _sign_in(page, url, "specialist", PASSWORD)
        page.wait_for_url(f"{url}/account/verify/**")
        _shot(page, "verify-1366")
        page.fill("#id_code", _code("specialist", drift=1))  # the enrolment used this step's code
        page.click("button.primary")
        page.wait_for_url(f"{url}/")

        page.click(".account-menu > summary")
        assert page.locator(".account-menu-items").is_visible()
        _shot(page, "menu-1366")
        page.click(".account-menu-items >> text=修改密码")
        page.wait_for_url(f"{url}/account/password/")
        page.fill("#id_old_password", PASSWORD)
        page.fill("#id_new_password1", NEW_PASSWORD)
        page.fill("#id_new_password2", NEW_PASSWORD)
        _shot(page, "password-1366")
        page.click("button.primary")
        page.wait_for_url(f"{url}/account/")
        assert "您的密码已修改" in page.inner_text("main")
        _shot(page, "account-1366")
        page.close()

        phone = browser.new_page(viewport={"width": 390, "height": 844}, locale="zh-CN")
        phone.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        _sign_in(phone, url, "specialist", NEW_PASSWORD)
        phone.wait_for_url(f"{url}/account/verify/**")
        _shot(phone, "verify-390")
        phone.fill("#id_code", codes[0])  # a recovery code in place of the phone's
        phone.click("button.primary")
        phone.wait_for_url(f"{url}/")
        phone.goto(f"{url}/account/")
        _shot(phone, "account-390")
        phone.click(".account-menu > summary")
        _shot(phone, "menu-390")
        phone.goto(f"{url}/account/tokens/")
        phone.fill("#id_name", "workstation")
        phone.click("button.primary")
        assert len(phone.inner_text("#token-key")) == 40
        _shot(phone, "tokens-390")
        for path in ("/account/", "/account/tokens/", "/account/two-factor/", "/account/password/"):
            phone.goto(f"{url}{path}")
            if _sideways(phone) > 1:
                problems.append(f"{path} at 390px scrolls sideways by {_sideways(phone)}px")
        phone.close()

        admin = browser.new_page(viewport={"width": 390, "height": 844}, locale="zh-CN")
        _sign_in(admin, url, "admin_hosp", PASSWORD)
        _enrol(admin, url, "admin_hosp", 390)
        admin.goto(f"{url}/manage/sign-in-locks/")
        _shot(admin, "locks-390")
        if _sideways(admin) > 1:
            problems.append(f"sign-in locks at 390px scrolls sideways by {_sideways(admin)}px")
        admin.close()
        browser.close()
    assert problems == []
