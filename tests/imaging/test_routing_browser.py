"""The routing queue in Chromium, in Chinese at 1366 and 390 px: the admin sees pending, sent and
failed items with the peer's answer, retries a failed one, and nothing scrolls sideways; a
clinician sends a study from its page; an EMR launch before sign-in comes back to the viewer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from imaging.dicom import scu
from imaging.routing import services
from imaging.routing.models import Destination, RouteItem
from tests.factories import store_ct_study

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ROUTE_SHOTS", "/tmp/shots/routing"))
SIZES = {"1366": {"width": 1366, "height": 900}, "390": {"width": 390, "height": 844}}


def _session_cookie(live_server: Any, doctor: Any) -> list[dict[str, str]]:
    from django.test import Client

    client = Client()
    client.force_login(doctor.user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return [{"name": cookie.key, "value": cookie.value, "url": live_server.url}]


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_routing_queue_in_the_browser(alliance_world: Any, live_server: Any, monkeypatch: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # the retry's send meets a peer that is still full (tests/imaging/test_routing_peers.py sends for real)
    full = scu.Outcome().stop("the peer is out of resources (0xA700)", status=0xA700)
    monkeypatch.setattr(services, "_transport", lambda destination: lambda objects, on_sent: full)
    world = alliance_world
    pacs = Destination.objects.create(
        institution=world.clin_a, name="Clinic PACS", ae_title="CLINPACS", host="10.0.0.5", port=104
    )
    web = Destination.objects.create(
        institution=world.clin_a, name="Hospital archive", kind="stow", url="https://archive.example.org/dicomweb"
    )
    studies = [store_ct_study(world.clin_a, patient_id=f"Q-{n}", study_description=f"CT chest {n}") for n in range(3)]
    RouteItem.objects.create(destination=pacs, study=studies[0], state="sent", instances_sent=1, instances_total=1)
    failed = RouteItem.objects.create(
        destination=pacs,
        study=studies[1],
        state="failed",
        attempts=8,
        peer_status=0xA700,
        reason="the peer is out of resources (0xA700) at 1.2.826.0.1.3680043.8.498.1: disk full",
    )
    RouteItem.objects.create(destination=web, study=studies[2], state="pending")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for size, viewport in SIZES.items():
            context = browser.new_context(viewport=viewport, locale="zh-CN")
            context.add_cookies(_session_cookie(live_server, world.inst_admin_a))
            page = context.new_page()
            page.goto(f"{live_server.url}/routing/")
            expect(page.locator("h1")).to_have_text("转发队列")
            expect(page.locator(f"#item-{failed.pk}")).to_contain_text("0xA700")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), size
            page.screenshot(path=str(SHOTS / f"queue-{size}.png"), full_page=True)
            context.close()
        context = browser.new_context(viewport=SIZES["1366"], locale="zh-CN")
        context.add_cookies(_session_cookie(live_server, world.inst_admin_a))
        page = context.new_page()
        page.goto(f"{live_server.url}/routing/?state=failed")
        page.click(f"#item-{failed.pk} button[type=submit]")
        expect(page.locator(".msg-success")).to_contain_text("已重新排队")
        context.close()
        # an EMR launch before sign-in: the sign-in page, then the study in the viewer
        context = browser.new_context(viewport=SIZES["1366"], locale="zh-CN")
        page = context.new_page()
        page.goto(f"{live_server.url}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={studies[0].study_uid}")
        assert "/login" in page.url or "login" in page.url
        assert "IHEInvokeImageDisplay" in page.url  # the target is kept in ?next=
        browser.close()
    failed.refresh_from_db()
    assert (failed.state, failed.attempts, failed.peer_status) == ("failed", 1, 0xA700)  # tried afresh
