"""The referral journey in Chromium: the clinic refers a patient up with a CT, the hospital's
desk accepts with an appointment, marks the arrival, completes with a summary and refers the
patient back down; the clinic finds the summary on its home page. Screenshots at 1366 and
390 px wide go to /tmp/shots/referrals/ (or $REFERRAL_SHOTS)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from tests.factories import store_ct_study

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("REFERRAL_SHOTS", "/tmp/shots/referrals"))
REASON = "胸痛待查，冠脉CTA示前降支重度狭窄，请心内科进一步诊治。"
FEEDBACK = "冠脉造影示前降支近段狭窄90%，植入支架一枚。出院后双抗治疗12个月，社区监测血压血脂，一个月后复诊。"
WIDE, NARROW = {"width": 1366, "height": 900}, {"width": 390, "height": 844}


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    """Signed in through Django's test client, outside Playwright (as the consults journey does)."""
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _status(page: Any, status: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#referral-status")).to_have_attribute("data-status", status)


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_clinic_refers_up_hospital_treats_and_refers_back_down_in_the_browser(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    study = store_ct_study(world.clin_a, slices=3, patient_name="Zhang^San", patient_id="QS-1001")
    clinic_cookie = _session_cookie(live_server, world.owner)
    desk_cookie = _session_cookie(live_server, world.hosp_admin)
    hosp_pk, clinic_pk, study_pk = world.hosp.pk, world.clin_a.pk, study.pk
    appointment = (timezone.localtime() + timedelta(days=1)).replace(hour=9, minute=30)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        clinic = browser.new_context(viewport=WIDE, locale="zh-CN")
        desk = browser.new_context(viewport=WIDE, locale="en-US")
        clinic.add_cookies(clinic_cookie)
        desk.add_cookies(desk_cookie)
        cp, dp = clinic.new_page(), desk.new_page()

        # The clinic refers the patient up with the CT; only institutions above it are offered.
        cp.goto(f"{live_server.url}/referrals/new/?study={study.study_uid}")
        expect(cp.locator(f"input[name=studies][value='{study_pk}']")).to_be_checked()
        cp.select_option("select[name=direction]", "up")
        expect(cp.locator(f"select[name=to_institution] option[value='{clinic_pk}']")).to_have_count(0)
        cp.select_option("select[name=to_institution]", str(hosp_pk))
        cp.fill("textarea[name=reason]", REASON)
        cp.fill("textarea[name=summary]", "男，58岁，劳力性胸痛两周，高血压病史。")
        cp.select_option("select[name=urgency]", "urgent")
        _shot(cp, "01-clinic-new-referral-1366")
        cp.click("#send-referral")
        _status(cp, "requested")
        expect(cp.locator("#referral-reason")).to_contain_text(REASON)
        case_url = cp.url
        _shot(cp, "02-clinic-case-sent-1366")

        # The hospital's desk finds it waiting, with the count in the menu, and accepts it.
        dp.goto(f"{live_server.url}/")
        expect(dp.locator("#nav-referrals")).to_contain_text("1")
        expect(dp.locator("#home-referrals-incoming .stat-value")).to_have_text("1")
        _shot(dp, "03-desk-home-1366")
        dp.click("#nav-referrals")
        expect(dp.locator("#referral-list tbody tr")).to_have_count(1)
        _shot(dp, "04-desk-incoming-1366")
        dp.click("#referral-list tbody tr td a")
        expect(dp.locator("#studies img")).to_have_count(1)
        dp.fill("form[data-action=accept] input[name=appointment_at]", appointment.strftime("%Y-%m-%dT%H:%M"))
        dp.fill("form[data-action=accept] input[name=department]", "Cardiology clinic")
        _shot(dp, "05-desk-case-to-accept-1366")
        dp.click("form[data-action=accept] button")
        _status(dp, "accepted")
        expect(dp.locator("#appointment")).to_contain_text("Cardiology clinic")

        # The appointment is on the desk's calendar; the patient arrives.
        dp.goto(f"{live_server.url}/referrals/calendar/?view=week&date={appointment.date().isoformat()}")
        expect(dp.locator(f"section[data-date='{appointment.date().isoformat()}'] .rf-slot")).to_have_count(1)
        _shot(dp, "06-desk-calendar-week-1366")
        dp.goto(case_url)
        dp.fill("form[data-action=arrive] input[name=patient_id]", "H-2026-0042")
        dp.click("form[data-action=arrive] button")
        _status(dp, "in-progress")

        # Completing asks for the confirmation first.
        dp.fill("form[data-action=complete] textarea[name=summary]", FEEDBACK)
        dp.click("form[data-action=complete] button")
        _status(dp, "in-progress")  # the browser refuses the form: the box is not ticked
        dp.check("form[data-action=complete] input[name=confirm]")
        dp.click("form[data-action=complete] button")
        _status(dp, "completed")
        expect(dp.locator("#feedback")).to_contain_text(FEEDBACK)
        _shot(dp, "07-desk-completed-1366")

        # Refer back down: the form is prefilled with the patient, the direction and the summary.
        dp.click("#refer-back")
        expect(dp.locator("#prefill")).to_be_visible()
        expect(dp.locator("select[name=direction]")).to_have_value("down")
        expect(dp.locator("select[name=to_institution]")).to_have_value(str(clinic_pk))
        expect(dp.locator("textarea[name=summary]")).to_have_value(FEEDBACK)
        dp.fill("textarea[name=reason]", "PCI术后，转回社区随访及康复。")
        _shot(dp, "08-desk-refer-back-down-1366")
        dp.click("#send-referral")
        _status(dp, "requested")
        expect(dp.locator("#referral-facts")).to_contain_text("#")

        # The clinic sees the summary returned on its home page.
        cp.goto(f"{live_server.url}/")
        expect(cp.locator("#home-summaries")).to_contain_text(FEEDBACK[:20])
        expect(cp.locator("#home-referrals-summaries .stat-value")).to_have_text("1")
        _shot(cp, "09-clinic-home-summary-1366")

        # The desk page (the admin names desk doctors) and the clinic's notifications.
        dp.goto(f"{live_server.url}/referrals/desk/")
        expect(dp.locator("#desk-members li")).to_have_count(1)
        _shot(dp, "16-desk-page-1366")
        cp.goto(f"{live_server.url}/referrals/notifications/")
        expect(cp.locator(".cs-notifications li")).to_have_count(3)  # accepted, arrived, completed
        _shot(cp, "17-clinic-notifications-1366")

        # The same pages on a phone.
        phone = browser.new_context(viewport=NARROW, locale="zh-CN", is_mobile=True, device_scale_factor=2)
        phone.add_cookies(clinic_cookie)
        pp = phone.new_page()
        pp.goto(f"{live_server.url}/")
        expect(pp.locator("#home-summaries")).to_be_visible()
        _shot(pp, "10-clinic-home-390")
        pp.goto(case_url)
        expect(pp.locator("#feedback")).to_be_visible()
        _shot(pp, "11-clinic-case-390")
        pp.goto(f"{live_server.url}/referrals/outgoing/?tab=closed")
        expect(pp.locator("#referral-list tbody tr")).to_have_count(1)
        _shot(pp, "12-clinic-outgoing-390")
        pp.goto(f"{live_server.url}/referrals/new/")
        _shot(pp, "13-clinic-new-referral-390")
        desk_phone = browser.new_context(viewport=NARROW, locale="en-US", is_mobile=True, device_scale_factor=2)
        desk_phone.add_cookies(desk_cookie)
        dpp = desk_phone.new_page()
        dpp.goto(f"{live_server.url}/referrals/calendar/?view=week&date={appointment.date().isoformat()}")
        _shot(dpp, "14-desk-calendar-390")
        dpp.goto(f"{live_server.url}/referrals/incoming/")
        _shot(dpp, "15-desk-incoming-390")
        browser.close()
