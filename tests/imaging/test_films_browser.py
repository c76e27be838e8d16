"""The patient's journey on a phone (390x844, touch) in Debian's Chromium: scan (open the
URL), confirm the date of birth, swipe through 10 slices, read the report, download the
ZIP, make a share link for a doctor, the doctor opens it in another browser, and the
patient sees that opening in "who looked at my images". Screenshots in /tmp/shots/films/.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.urls import reverse

from alliance.models import AuditEvent
from consults.models import Status
from imaging import films
from imaging.models import FilmLink
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.viewer.conftest import store_series
from tests.viewer.ctgen import CtSpec, ct_series

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/shots/films")
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True, "device_scale_factor": 2}
LOAD_TIMEOUT_MS = 30_000
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
PANE = "[data-pane='0']"


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def _index(page: Any) -> int:
    return int(page.locator(PANE).get_attribute("data-index"))


def _swipe_slices(page: Any, cdp: Any, slices: int) -> None:
    """One finger on the image, dragged down until the viewer has moved `slices` slices on."""
    box = page.locator(PANE).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + 20
    start = _index(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for _ in range(200):
        y += 3
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        if _index(page) - start >= slices:
            break
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.django_db(transaction=True)
def test_patient_journey_on_a_phone(
    alliance_world: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    world = alliance_world
    study = store_series(ct_series(CtSpec(slices=24, size=128)), world.clin_a)
    consult = walk(world, Status.COMPLETED, study=study)  # signing makes the patient's link
    client_for(world.specialist).get(reverse("imaging:study_detail", args=[study.study_uid]))  # the reading
    made = films.issued(FilmLink.objects.get(case=consult.basis))
    url = live_server.url + made.path

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        phone = browser.new_context(**PHONE, locale="zh-CN", accept_downloads=True)
        page = phone.new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith((live_server.url, "blob:", "data:")) else None,
        )

        # Scan: the page asks for the date of birth and shows nothing else.
        page.goto(url)
        expect(page.locator("#answer")).to_be_visible()
        assert "WANG" not in page.content() and "CT CHEST" not in page.content()
        _shot(page, "01-verify")
        page.fill("#answer", "1960-01-02")
        page.get_by_role("button", name="打开").click()
        expect(page.locator("[data-studies]")).to_contain_text("CT CHEST")
        _shot(page, "02-studies")

        # The images, in the touch layout: swipe through 10 slices.
        page.locator("[data-studies] a").first.click()
        page.wait_for_function(
            f'() => document.querySelector("{PANE}")?.dataset.loaded === "true"', timeout=LOAD_TIMEOUT_MS
        )
        assert page.locator("#viewer").get_attribute("data-ui") == "touch"
        _shot(page, "03-viewer")
        start = _index(page)
        cdp = phone.new_cdp_session(page)
        _swipe_slices(page, cdp, 10)
        page.wait_for_function(f'() => document.querySelector("{PANE}").dataset.index === "{start + 10}"')
        page.wait_for_timeout(300)
        _shot(page, "04-viewer-after-10-slices")

        # The signed report, as text.
        page.goto(url)
        page.locator("a[data-report]").first.click()
        expect(page.locator("[data-report-text]")).to_contain_text("右上肺结节，直径8毫米。")
        _shot(page, "05-report")

        # Download for another hospital: a ZIP with a DICOMDIR and the 24 images (and the signed
        # report's Encapsulated PDF and text SR once signing's task has written them).
        page.goto(url)
        with page.expect_download() as download:
            page.locator("[data-download]").click()
        archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        assert "DICOMDIR" in archive.namelist()
        images = [
            name
            for name in archive.namelist()
            if name.startswith("DICOM/")
            and pydicom.dcmread(io.BytesIO(archive.read(name)), stop_before_pixels=True).SOPClassUID == CT_IMAGE
        ]
        assert len(images) == 24

        # Share with a doctor: a QR code and a PIN on the phone.
        page.goto(live_server.url + reverse("films:share", args=[made.handle]))
        page.select_option("#days", "2")
        page.locator("form.film-form button[type=submit]").click()
        expect(page.locator("[data-share-made] img.film-qr")).to_be_visible()
        share_url = page.locator("[data-share-url]").inner_text().strip()
        pin = page.locator("[data-share-pin]").inner_text().strip()
        _shot(page, "06-share-qr")

        # The doctor opens it in another browser, without an account.
        doctor = browser.new_context(**PHONE, locale="en-US").new_page()
        doctor.goto(share_url)
        doctor.fill("#answer", pin)
        doctor.get_by_role("button", name="Open").click()
        expect(doctor.locator("[data-studies]")).to_contain_text("CT CHEST")
        _shot(doctor, "07-doctor-opened-share")

        # Who looked: the consult's reading and the doctor's opening through the share.
        page.goto(live_server.url + reverse("films:who", args=[made.handle]))
        looks = page.locator("[data-looks]")
        expect(looks).to_contain_text("您分享影像的医生")
        expect(looks).to_contain_text("远程会诊")
        expect(looks).to_contain_text("Lead Hospital")
        _shot(page, "08-who-looked")
        browser.close()

    assert outside == [], f"the patient's pages asked another host: {outside}"
    share = FilmLink.objects.get(kind="share")
    assert share.openings == 1
    assert AuditEvent.objects.filter(actor_type="share", actor_id=str(share.pk), action="film.open").exists()
