"""Issue 20's journey in Chromium: a specialist publishes a teaching case from a consult they
signed; a doctor of another clinic finds it in the library, reads it in the viewer and answers
its quiz, on a desktop (1366 px) and on a phone (390 px). Screenshots go to
test-artifacts/teaching/ for a person to look at."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from consults import services as consult_services
from consults.teaching.models import Disease, QuizAttempt, Status, TeachingCase
from demo import synthetic
from tests.teaching.conftest import ingest, principal

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(django_settings.BASE_DIR) / "test-artifacts")) / "teaching"
LOAD_TIMEOUT_MS = 30_000
TITLE = "Cough and fever in a 60-year-old smoker"


def _cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert width <= 0, f"{page.url} scrolls sideways by {width} px"


def _signed_consult(world: Any) -> Any:
    patient = synthetic.PatientInfo("QS-20417", "Wang^Fang=王^芳", dt.date(1964, 8, 9), "F")
    info = synthetic.StudyInfo(
        seed="teaching-journey",
        patient=patient,
        date=dt.date(2026, 11, 20),
        accession_number="QS26112001",
        description="胸部CT平扫 Chest CT",
        institution_name=world.clin_a.name,
    )
    study = ingest(synthetic.ct_series(info, slices=12, size=256), world.clin_a)
    owner, reader = principal(world.owner), principal(world.specialist)
    consult = consult_services.consult_create(by=owner, studies=[study], question="Pneumonia?", pool=world.pool)
    consult_services.consult_request(consult=consult, by=owner)
    consult_services.consult_claim(consult=consult, by=reader)
    consult_services.consult_start_report(consult=consult, by=reader)
    consult_services.consult_sign(
        consult=consult, by=reader, findings="Right lower lobe consolidation.", impression="Pneumonia."
    )
    return consult


def _wait_for_viewer(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector(\"[data-pane='0']\")?.dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
    )


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_a_case_published_from_a_consult_is_found_read_and_answered_elsewhere(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    consult = _signed_consult(world)
    answer = Disease.objects.get(code="community-acquired-pneumonia")
    wrong = [str(d.pk) for d in Disease.objects.filter(code__in=["pulmonary-tuberculosis", "lung-cancer"])]
    url = live_server.url
    # Signed in before Playwright starts: inside it the ORM would get a connection of its own
    # (in Playwright's greenlet) that nobody closes, and the test database could not be dropped.
    cookies = {d.user.username: _cookie(live_server, d) for d in (world.specialist, world.stranger, world.colleague)}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        author = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
        author.add_cookies(cookies["specialist"])
        ap = author.new_page()

        # The reader of the signed consult makes a case of it: its CT, copied de-identified.
        ap.goto(f"{url}/consults/{consult.pk}/")
        ap.click("#make-teaching-case")
        expect(ap.locator("#new-case-form")).to_be_visible()
        ap.fill("input[name=title]", TITLE)
        ap.locator("input[name=series]").first.check()
        _shot(ap, "01-desktop-choose-images")
        ap.click("#make-case")
        expect(ap.locator("#case-form")).to_be_visible()
        ap.fill("textarea[name=question]", "What is the most likely diagnosis?")
        ap.fill("textarea[name=findings]", "Consolidation with air bronchograms in the right lower lobe.")
        ap.fill("textarea[name=diagnosis]", "Community-acquired pneumonia, right lower lobe.")
        ap.fill("textarea[name=discussion]", "Air bronchograms favour consolidation over a mass.")
        ap.select_option("select[name=body_part]", "chest")
        ap.select_option("select[name=difficulty]", "introductory")
        ap.select_option("select[name=diseases]", [str(answer.pk)])
        ap.select_option("select[name=answer]", str(answer.pk))
        ap.select_option("select[name=distractors]", wrong)
        ap.click("#save-case")
        expect(ap.locator("#publish-form")).to_be_visible()
        _shot(ap, "02-desktop-edit-ready")
        ap.check("#publish-form input[name=confirm]")
        ap.click("#publish-case")
        expect(ap.locator("#case-title")).to_have_text(TITLE)
        case_url = ap.url  # no ORM in here: Playwright's greenlet would open a connection nobody closes

        # A doctor of another clinic finds it in the library and answers its quiz in the viewer.
        reader = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        reader.add_cookies(cookies["stranger"])
        rp = reader.new_page()
        rp.goto(f"{url}/")
        rp.click("#nav-teaching")
        expect(rp.locator("#case-list")).to_contain_text(TITLE)
        _no_sideways_scroll(rp)
        _shot(rp, "03-desktop-library-zh")
        rp.click(f"#case-list a:has-text('{TITLE}')")
        _wait_for_viewer(rp)
        expect(rp.locator("#quiz-form")).to_be_visible()
        expect(rp.locator("#answer")).to_have_count(0)
        _no_sideways_scroll(rp)
        _shot(rp, "04-desktop-quiz-zh")
        rp.check(f"#quiz-form input[value='{answer.pk}']")
        rp.click("#quiz-answer")
        expect(rp.locator("#quiz-result")).to_have_class("tc-result tc-right")
        expect(rp.locator("#case-diagnosis")).to_contain_text("Community-acquired pneumonia")
        _shot(rp, "05-desktop-answered-zh")

        # The same on a phone: another clinic's doctor, 390 px wide.
        phone = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="zh-CN",
        )
        phone.add_cookies(cookies["colleague"])
        pp = phone.new_page()
        pp.goto(f"{url}/teaching/")
        expect(pp.locator("#case-list")).to_contain_text(TITLE)
        _no_sideways_scroll(pp)
        _shot(pp, "06-phone-library-zh")
        pp.goto(f"{url}/teaching/quiz/")
        _wait_for_viewer(pp)
        _no_sideways_scroll(pp)
        _shot(pp, "07-phone-quiz-zh")
        pp.check(f"#quiz-form input[value='{wrong[0]}']")
        pp.click("#quiz-answer")
        expect(pp.locator("#quiz-result")).to_have_class("tc-result tc-wrong")
        _no_sideways_scroll(pp)
        _shot(pp, "08-phone-answered-zh")
        pp.goto(f"{case_url}edit/")
        assert pp.locator("#case-form").count() == 0  # not theirs to edit

        # The author's pages on a phone too.
        author_phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, locale="en-US")
        author_phone.add_cookies(cookies["specialist"])
        ph = author_phone.new_page()
        ph.goto(case_url)
        _wait_for_viewer(ph)
        _no_sideways_scroll(ph)
        _shot(ph, "09-phone-author-case")
        browser.close()
    case = TeachingCase.objects.get(title=TITLE)
    assert case.status == Status.PUBLISHED and case.images.count() == 12 and case_url.endswith(f"/teaching/{case.pk}/")
    assert QuizAttempt.objects.get(doctor=world.stranger).correct
    assert not QuizAttempt.objects.get(doctor=world.colleague).correct


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_the_author_blanks_burned_in_text_by_drawing_over_a_radiograph(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from consults.teaching import services

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    patient = synthetic.PatientInfo("H-3001", "Zhou^Min=周^敏", dt.date(1958, 1, 30), "M")
    info = synthetic.StudyInfo(seed="teaching-mask", patient=patient, date=dt.date(2026, 10, 2), accession_number="DX9")
    study = ingest([synthetic.chest_radiograph(info, rows=512, columns=440)], world.hosp)
    by = principal(world.specialist)
    series = [study.series.get().series_uid]
    case = services.case_create(by=by, study=study, series_uids=series, key_sop_uids=[], title="A chest film")
    image = case.images.get()
    cookie = _cookie(live_server, world.specialist)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for width, height, name in ((1366, 900, "10-desktop-mask"), (390, 844, "11-phone-mask")):
            context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
            context.add_cookies(cookie)
            page = context.new_page()
            page.goto(f"{live_server.url}/teaching/{case.pk}/edit/#images")
            area = page.locator(f"#image-{image.pk} [data-mask-area]")
            expect(area.locator("img")).to_be_visible()
            page.wait_for_function(f"() => document.querySelector('#image-{image.pk} img').complete")
            _no_sideways_scroll(page)
            box = area.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.05)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.15, steps=5)
            page.mouse.up()
            expect(page.locator(f"#image-{image.pk} [data-mask=width]")).not_to_have_value("")
            _shot(page, f"{name}-drawn")
            if width > 400:  # blank it once, on the desktop; the phone shows the masked copy
                page.click(f"#image-{image.pk} [data-mask-form] button")
            expect(page.locator("[data-image] [data-cleared=masked]")).to_be_visible()
            _shot(page, f"{name}-masked")
            context.close()
        browser.close()
    image.refresh_from_db()
    x, y, w, h = image.masks[0]
    assert image.cleared == "masked" and 15 <= x <= 30 and 15 <= y <= 35 and 160 <= w <= 190 and 40 <= h <= 60
