"""The screening journey in Chromium: a township clinician enrols a participant with their
consent, the clinic's demo chest CT of them arrives and is tagged from the study page, a
specialist of the reading pool reads it with the structured form and signs, and the clinic
sees the Lung-RADS category and the next CT's due date. Screenshots at 1366 and 390 px; on
the phone no page scrolls sideways."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.utils import timezone

from alliance import audit
from consults.screening.models import Participant
from demo import synthetic
from imaging.ingest import ingest_bytes
from tests.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(django_settings.BASE_DIR) / "test-artifacts")) / "screening"
PATIENT_ID = "LDCT-2026-0042"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    """Signed in through Django's test client, outside Playwright (as the consult journey does)."""
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways on a phone: {width}"


def _outside_the_greenlet(work: Any) -> Any:
    """ORM work done inside Playwright's block runs on a connection of the block's own (its
    greenlet's): close it, or the test database cannot be dropped."""
    try:
        return work()
    finally:
        connections.close_all()


def _ingest_demo_ct(world: Any) -> str:
    """The clinic's CT scanner sends a demo chest CT of the participant (demo.synthetic)."""
    patient = synthetic.PatientInfo(PATIENT_ID, "Chen^Guiying=陈^桂英", dt.date(1958, 4, 2), "F")
    info = synthetic.StudyInfo(
        seed=f"screening-journey:{PATIENT_ID}",
        patient=patient,
        date=timezone.localdate(),
        description="低剂量胸部CT LDCT chest",
        institution_name="Clinic A",
    )
    for ds in synthetic.ct_series(info, slices=6, size=128):
        ingest_bytes(synthetic.part10_bytes(ds), institution=world.clin_a, actor=audit.SYSTEM, via="test")
    return info.study_uid


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_enrol_scan_read_and_see_the_category_and_due_date(world: Any, live_server: Any, monkeypatch: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    clinic_cookie = _session_cookie(live_server, world.owner)
    reader_cookie = _session_cookie(live_server, world.specialist)
    admin_cookie = _session_cookie(live_server, world.alliance_admin)
    programme_pk = world.programme.pk
    base = live_server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        clinic = browser.new_context(viewport=DESKTOP, locale="zh-CN")
        reader = browser.new_context(viewport=DESKTOP, locale="en-US")
        phone = browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
        clinic.add_cookies(clinic_cookie)
        phone.add_cookies(clinic_cookie)
        reader.add_cookies(reader_cookie)
        cp, rp, pp = clinic.new_page(), reader.new_page(), phone.new_page()

        # The clinician finds the programme in the menu and enrols a participant with consent.
        cp.goto(f"{base}/")
        cp.click("#nav-screening")
        cp.click(f"[data-programme='{programme_pk}'] a")
        cp.click("#enrol")
        cp.fill("input[name=patient_id]", PATIENT_ID)
        cp.fill("input[name=name]", "陈桂英")
        cp.fill("input[name=birth_date]", "1958-04-02")
        cp.select_option("select[name=sex]", "F")
        cp.fill("input[name=consent_by]", "本人")
        cp.select_option("select[name=consent_method]", "written")
        cp.fill("textarea[name=consent_note]", "知情同意书 LDCT-042")
        _shot(cp, "01-enrol-1366")
        cp.click("#enrol-submit")
        expect(cp.locator("#next-ct")).to_be_visible()
        expect(cp.locator("#consent")).to_contain_text("知情同意书 LDCT-042")
        participant_url = cp.url
        _shot(cp, "02-enrolled-1366")

        # The CT arrives; the clinician tags it from the study page.
        study_uid = _outside_the_greenlet(lambda: _ingest_demo_ct(world))
        cp.goto(f"{base}/imaging/studies/{study_uid}/")
        cp.click("#study-action-screening-tag")
        cp.click("button[id^=tag-round-]")
        expect(cp.locator("#rounds")).to_contain_text("等待阅片")
        pp.goto(f"{base}/screening/{programme_pk}/")
        _no_sideways_scroll(pp)
        _shot(pp, "03-invitations-390")

        # The reading pool's specialist reads it with the structured form and signs.
        rp.goto(f"{base}/screening/")
        expect(rp.locator("#to-read")).to_contain_text(PATIENT_ID)
        rp.click("#to-read a.btn-primary")
        rp.select_option("select[name='nodules-0-lobe']", "RUL")
        rp.select_option("select[name='nodules-0-kind']", "solid")
        rp.fill("input[name='nodules-0-image_number']", "3")
        rp.fill("input[name='nodules-0-long_axis']", "9.2")
        rp.fill("input[name='nodules-0-short_axis']", "7.8")
        rp.fill("input[name='nodules-0-volume']", "310")
        rp.fill("textarea[name=other_findings]", "Mild centrilobular emphysema.")
        _shot(rp, "04-reading-form-1366")
        rp.click("#save-reading")
        expect(rp.locator("#computed")).to_contain_text("Lung-RADS 4A")
        expect(rp.locator("#computed")).to_contain_text("LDCT in 3 months")
        _shot(rp, "05-computed-1366")
        reader_phone = browser.new_context(viewport=PHONE, locale="en-US", is_mobile=True, has_touch=True)
        reader_phone.add_cookies(reader_cookie)
        rpp = reader_phone.new_page()
        rpp.goto(rp.url)
        _no_sideways_scroll(rpp)
        _shot(rpp, "05-computed-390")
        rp.click("#go-sign")
        due = (timezone.localdate() + dt.timedelta(days=92)).isoformat()[:7]  # three months on
        expect(rp.locator("#sign-next-due")).to_contain_text(due)
        rp.fill("#sign-password", PASSWORD)
        rp.click("#sign-button")
        expect(rp.locator("#round-1")).to_contain_text("Lung-RADS 4A")

        # The clinic sees the category, the recommendation and the next CT's due date.
        next_due = _outside_the_greenlet(lambda: Participant.objects.get().rounds.get(number=2).due_date.isoformat())
        cp.goto(participant_url)
        expect(cp.locator("#round-1 h3 .sc-cat")).to_have_text("Lung-RADS 4A")
        expect(cp.locator("#round-1 .next-due")).to_have_text(next_due)
        expect(cp.locator("#next-due")).to_contain_text(next_due)
        _shot(cp, "06-result-1366")
        pp.goto(participant_url)
        expect(pp.locator("#round-1 .next-due")).to_have_text(next_due)
        _no_sideways_scroll(pp)
        _shot(pp, "07-result-390")
        for path in (f"/screening/{programme_pk}/enrol/", f"/screening/{programme_pk}/overdue/", "/screening/"):
            pp.goto(f"{base}{path}")
            _no_sideways_scroll(pp)
        rpp.goto(participant_url)
        _no_sideways_scroll(rpp)
        _shot(rpp, "08-reader-result-390")
        admin = browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
        admin.add_cookies(admin_cookie)
        ap = admin.new_page()
        ap.goto(f"{base}/screening/{programme_pk}/figures/")
        expect(ap.locator("#stat-positive")).to_have_text("1")
        _no_sideways_scroll(ap)
        _shot(ap, "09-figures-390")
        browser.close()
