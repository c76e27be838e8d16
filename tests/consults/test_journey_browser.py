"""The whole journey in Chromium: a clinician requests, a specialist claims, reads, asks a
question, the clinician answers, the specialist signs, the clinician opens the PDF."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from tests.factories import PASSWORD, StudyFactory

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(django_settings.BASE_DIR) / "test-artifacts")) / "consults"
FINDINGS = "右肺上叶见8毫米实性结节，边缘光整。"


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    """Signed in through Django's test client, outside Playwright: its greenlet would give the
    ORM a connection of its own that nobody closes (the test database could not be dropped)."""
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _status(page: Any) -> str:
    return page.locator("#consult-status").inner_text()


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_clinician_and_specialist_complete_a_consult_in_the_browser(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    study = StudyFactory(institution=world.clin_a)
    clinic_cookie = _session_cookie(live_server, world.owner)
    hosp_cookie = _session_cookie(live_server, world.specialist)
    study_pk, pool_pk = study.pk, world.pool.pk
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        clinic = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        hosp = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        clinic.add_cookies(clinic_cookie)
        hosp.add_cookies(hosp_cookie)
        cp, sp = clinic.new_page(), hosp.new_page()

        # The clinician requests a reading of the study from the hospital's pool.
        cp.goto(f"{live_server.url}/consults/new/?study={study.study_uid}")
        expect(cp.locator(f"input[name=studies][value='{study_pk}']")).to_be_checked()
        cp.fill("textarea[name=question]", "右上肺结节性质？")
        cp.fill("textarea[name=history]", "咳嗽三周。")
        cp.select_option("select[name=priority]", "urgent")
        cp.select_option("select[name=pool]", str(pool_pk))
        _shot(cp, "01-request-form")
        cp.click("button[name=send]")
        expect(cp.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-requested")
        case_url = cp.url

        # The specialist finds it on the worklist, claims it and starts the report.
        sp.goto(f"{live_server.url}/consults/")
        expect(sp.locator("table.cs-table tbody tr")).to_have_count(1)
        _shot(sp, "02-specialist-worklist")
        sp.click("table.cs-table tbody tr td a")
        sp.click("form[data-action=claim] button")
        expect(sp.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-accepted")
        sp.click("form[data-action=start_report] button")
        sp.fill("textarea[name=findings]", FINDINGS)
        expect(sp.locator("#autosave-status")).to_have_attribute("data-state", "saved", timeout=30_000)
        _shot(sp, "03-report-editor-autosaved")

        # A question to the clinician puts the case on hold.
        sp.goto(case_url)
        sp.fill("form[data-action=hold] textarea", "既往有无胸部CT？")
        sp.click("form[data-action=hold] button")
        expect(sp.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-on-hold")

        # The clinician sees the question (the bell counts it) and answers.
        cp.goto(case_url)
        expect(cp.locator(".cs-bell-count")).to_be_visible()
        expect(cp.locator("#thread")).to_contain_text("既往有无胸部CT？")
        cp.fill("form[data-action=answer] textarea", "无既往影像。")
        _shot(cp, "04-clinician-answers")
        cp.click("form[data-action=answer] button")
        expect(cp.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-in-progress")

        # The specialist signs; the autosaved findings are still there.
        sp.goto(case_url)
        sp.click("#open-report")
        expect(sp.locator("textarea[name=findings]")).to_have_value(FINDINGS)
        sp.fill("textarea[name=impression]", "右上肺小结节，考虑良性。")
        sp.click("#sign-report")
        expect(sp.locator("#sign-text")).to_contain_text(FINDINGS)
        sp.fill("#sign-password", PASSWORD)
        sp.click("#sign-confirm-button")
        expect(sp.locator("#consult-status")).to_have_attribute("class", "cs-status cs-status-completed")
        _shot(sp, "05-signed-case")

        # The clinician opens the report PDF.
        cp.goto(case_url)
        expect(cp.locator("#report")).to_contain_text(FINDINGS)
        _shot(cp, "06-clinician-sees-report")
        pdf_url = cp.locator("#report-pdf").get_attribute("href")
        response = clinic.request.get(f"{live_server.url}{pdf_url}")
        assert response.status == 200 and response.headers["content-type"] == "application/pdf"
        pdf = response.body()
        browser.close()
    if shutil.which("pdftotext"):
        path = tmp_path / "report.pdf"
        path.write_bytes(pdf)
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
        assert FINDINGS in text
