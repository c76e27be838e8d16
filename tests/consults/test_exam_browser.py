"""A consult that asks for an exam, in Chromium (issue 18 item 2): the reader asks the clinic
for a CT from the case page, the case shows it scheduled, then in progress when the clinic's
modality starts it, then done with its study on the case once the images come."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from alliance import audit
from alliance import services as alliance_services
from consults.models import Status
from imaging import tasks, worklist
from imaging.dicom.procedures import PerformedStep, ScheduledRef
from imaging.models import Instance, ScheduledStep
from tests.consults.conftest import walk
from tests.factories import store_ct_study

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/work/wt/notes/shots")


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
        page.screenshot(path=str(SHOTS / f"exam-{name}.png"), full_page=True)


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_the_reader_asks_for_an_exam_and_the_case_follows_it_to_its_study(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    alliance_services.device_create(
        institution=world.clin_a, ae_title="CT_CLINA", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    first = store_ct_study(world.clin_a, patient_id="P-8801", patient_name="Zhao^Lei=赵^磊")
    consult = walk(world, Status.IN_PROGRESS, study=first)
    case_url = f"{live_server.url}/consults/{consult.pk}/"
    start = timezone.localtime(timezone.now() + timedelta(days=1)).replace(hour=9, minute=30)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])

        def page_for(doctor: Any, width: int = 1366, height: int = 900) -> Any:
            context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
            context.add_cookies(_session_cookie(live_server, doctor))
            return context.new_page()

        reader, requester = page_for(world.specialist), page_for(world.owner)

        # The reader asks the clinic for a thin-slice CT from the case page.
        reader.goto(case_url)
        expect(reader.locator("#exams")).to_have_count(0)
        reader.click("#order-exam")
        expect(reader.locator("h1")).to_have_text("申请检查")
        reader.select_option("select[name=modality]", "CT")
        reader.fill("input[name=scheduled_at]", start.strftime("%Y-%m-%dT%H:%M"))
        reader.select_option("select[name=station_ae]", "CT_CLINA")
        reader.fill("input[name=procedure_description]", "胸部CT薄层扫描")
        _shot(reader, "form-1366")
        reader.click("#order-exam-submit")
        step = ScheduledStep.objects.get(consult_id=consult.pk)
        expect(reader.locator(".messages")).to_contain_text(step.accession_number)
        exam = reader.locator(f"#exam-{step.pk}")
        expect(exam).to_contain_text("胸部CT薄层扫描")
        expect(exam).to_contain_text("CT_CLINA")
        expect(exam.locator(".cs-exam-status")).to_have_class("cs-status cs-status-scheduled cs-exam-status")
        expect(reader.locator("#history")).to_contain_text("已申请检查")
        _shot(reader, "scheduled-1366")

        # The requesting clinic sees the same exam on the case; its modality starts it (MPPS).
        requester.goto(case_url)
        expect(requester.locator(f"#exam-{step.pk} .cs-exam-status")).to_have_class(
            "cs-status cs-status-scheduled cs-exam-status"
        )
        device = audit.Actor("device", "1", "CT_CLINA", world.clin_a.pk)
        worklist.mpps_started(
            by=device,
            institution=world.clin_a,
            device_ae="CT_CLINA",
            sop_uid="1.2.826.0.1.88",
            performed=PerformedStep(
                status="IN PROGRESS", scheduled=(ScheduledRef(accession_number=step.accession_number),)
            ),
        )
        requester.reload()
        expect(requester.locator(f"#exam-{step.pk} .cs-exam-status")).to_have_class(
            "cs-status cs-status-in-progress cs-exam-status"
        )

        # The modality sends the study with the accession number: it joins the case.
        arrived = store_ct_study(world.clin_a, slices=2, patient_id="P-8801", accession_number=step.accession_number)
        tasks.render_instances(list(Instance.objects.filter(series__study=arrived).values_list("pk", flat=True)))
        reader.reload()
        expect(reader.locator(f"#exam-{step.pk} .cs-exam-status")).to_have_class(
            "cs-status cs-status-completed cs-exam-status"
        )
        expect(reader.locator(f"#exam-{step.pk} .cs-exam-study")).to_contain_text("影像已到达")
        expect(reader.locator(".cs-study-list > li")).to_have_count(2)
        expect(reader.locator("#history")).to_contain_text("申请的检查影像已到达")
        _shot(reader, "completed-1366")
        reader.click(f"#exam-{step.pk} .cs-exam-study a")
        expect(reader).to_have_url(f"{live_server.url}/viewer/study/{arrived.study_uid}/")

        phone = page_for(world.owner, 390, 844)
        phone.goto(case_url)
        expect(phone.locator(f"#exam-{step.pk}")).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        _shot(phone, "completed-390")
        browser.close()
