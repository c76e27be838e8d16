"""Journey (c) of issue 15 in Chromium: the reader marks a key image and measures a length,
saves, reopens the study and sees both again; QIDO-RS (dicomweb-client) then finds the KO
and the SR in the study. Screenshots go to notes/shots/dicomobj-*.png."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client

from alliance.models import AuditEvent
from consults.models import Status
from imaging.dicom import objects
from imaging.models import Instance
from tests.consults.conftest import walk
from tests.viewer.test_viewer_browser import LOAD_TIMEOUT_MS, open_viewer

with warnings.catch_warnings():  # dicomweb-client imports a pydicom 3 name deprecated for v4
    warnings.simplefilter("ignore", DeprecationWarning)
    from dicomweb_client.api import DICOMwebClient

pytestmark = pytest.mark.integration
SHOTS = Path("/work/wt/notes/shots")


def _ready(page: Any) -> None:
    page.wait_for_function(
        "() => document.getElementById('viewer').dataset.keyImages === 'ready'", timeout=LOAD_TIMEOUT_MS
    )


def _draw_length(page: Any, pane: str = "0") -> None:
    page.click("[data-tool=Length]")
    box = page.locator(f"[data-pane='{pane}'] [data-viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy + 20)
    page.mouse.down()
    page.mouse.move(cx, cy + 20, steps=5)
    page.mouse.move(cx + 60, cy + 20, steps=5)
    page.mouse.up()
    page.locator(f"[data-pane='{pane}'] svg text").filter(has_text="mm").first.wait_for(timeout=LOAD_TIMEOUT_MS)


def _dicomweb(live_site: Any, doctor: Any, session: requests.Session) -> DICOMwebClient:
    client = Client()
    client.force_login(doctor.user)
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return DICOMwebClient(url=f"{live_site.url}/dicomweb", session=session)


def _sop_classes(found: list[dict[str, Any]]) -> list[str]:
    return [i["00080016"]["Value"][0] for i in found]


def test_key_image_and_length_are_saved_shown_again_and_found_by_qido(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    walk(alliance_world, Status.IN_PROGRESS, study=ct_study)
    page = sign_in(alliance_world.specialist)
    page.set_viewport_size({"width": 1366, "height": 800})
    open_viewer(page, live_site.url, ct_study.study_uid)
    _ready(page)
    star = page.locator("[data-key-image]")
    assert star.get_attribute("aria-pressed") == "false"
    star.click()
    assert star.get_attribute("aria-pressed") == "true"
    _draw_length(page)
    page.click("[data-key-save]")
    message = page.locator("[data-key-message]")
    page.wait_for_function(
        "() => document.querySelector('[data-key-message]').dataset.kind === 'ok'", timeout=LOAD_TIMEOUT_MS
    )
    assert "1" in message.inner_text()
    page.screenshot(path=SHOTS / "dicomobj-saved-1366.png")
    made = set(Instance.objects.filter(series__study=ct_study).values_list("sop_class_uid", flat=True))
    assert {objects.KEY_OBJECT_SELECTION, objects.COMPREHENSIVE_SR} <= made

    open_viewer(page, live_site.url, ct_study.study_uid)  # reopened: a new page load
    _ready(page)
    page.wait_for_function(
        "() => document.querySelector('[data-key-image]').getAttribute('aria-pressed') === 'true'",
        timeout=LOAD_TIMEOUT_MS,
    )
    assert page.locator("[data-pane='0'] [data-key-badge]").is_visible()
    label = page.locator("[data-pane='0'] svg text").filter(has_text="mm").first
    label.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.screenshot(path=SHOTS / "dicomobj-reopened-1366.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)
    page.screenshot(path=SHOTS / "dicomobj-reopened-390.png", full_page=True)

    # An outside viewer (the requesting clinic's) finds and retrieves them; the session is
    # closed after, so the live server's thread lets go of its database connection.
    with requests.Session() as session:
        dicomweb = _dicomweb(live_site, alliance_world.owner, session)
        uid = ct_study.study_uid
        srs = dicomweb.search_for_instances(study_instance_uid=uid, search_filters={"Modality": "SR"})
        assert _sop_classes(srs) == [objects.COMPREHENSIVE_SR]
        found = dicomweb.search_for_instances(study_instance_uid=uid, search_filters={"Modality": "KO"})
        assert _sop_classes(found) == [objects.KEY_OBJECT_SELECTION]
        kos = dicomweb.retrieve_instance(uid, found[0]["0020000E"]["Value"][0], found[0]["00080018"]["Value"][0])
    assert kos.ContentSequence[-1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID


def test_save_failure_is_said_clearly(sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any) -> None:
    page = sign_in(alliance_world.colleague)
    page.set_viewport_size({"width": 1366, "height": 800})
    open_viewer(page, live_site.url, ct_study.study_uid)
    _ready(page)
    page.click("[data-key-save]")  # nothing marked, nothing measured
    page.wait_for_function(
        "() => document.querySelector('[data-key-message]').dataset.kind === 'error'", timeout=LOAD_TIMEOUT_MS
    )
    assert (
        "Nothing to save" in page.locator("[data-key-message]").inner_text()
        or "没有" in page.locator("[data-key-message]").inner_text()
    )
    page.screenshot(path=SHOTS / "dicomobj-error-1366.png")


def test_a_prior_beside_the_study_keeps_its_images_and_measurements_out_of_the_save(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_with_prior: Any
) -> None:
    current, prior = ct_with_prior
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1366, "height": 800})
    open_viewer(page, live_site.url, current.study_uid)
    _ready(page)
    page.click(f"[data-prior='{prior.study_uid}']")
    page.wait_for_function(
        "() => document.querySelector(\"[data-pane='1']\").dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
    )
    star = page.locator("[data-key-image]")
    page.locator("[data-pane='1'] [data-viewport]").click()
    assert star.is_disabled(), "no key image of the prior from the study's viewer"
    _draw_length(page, "1")  # a length on the prior: it stays there
    page.locator("[data-pane='0'] [data-viewport]").click()
    assert star.is_enabled()
    star.click()
    assert star.get_attribute("aria-pressed") == "true"
    page.screenshot(path=SHOTS / "dicomobj-prior-1366.png")
    page.click("[data-key-save]")
    page.wait_for_function(
        "() => ['ok', 'error'].includes(document.querySelector('[data-key-message]').dataset.kind)",
        timeout=LOAD_TIMEOUT_MS,
    )
    message = page.locator("[data-key-message]")
    assert message.get_attribute("data-kind") == "ok", message.inner_text()
    saved = AuditEvent.objects.get(action="study.key_objects.save")
    assert (saved.object_id, saved.detail["key_images"], saved.detail["measurements"]) == (current.study_uid, 1, 0)
    made = Instance.objects.filter(sop_class_uid__in=[objects.KEY_OBJECT_SELECTION, objects.COMPREHENSIVE_SR])
    assert {i.series.study_id for i in made} == {current.pk}


def _draw_angle(page: Any) -> None:
    """Cornerstone's angle: press on one arm's end, drag to the vertex, then click the other end."""
    page.click("[data-tool=Angle]")
    box = page.locator("[data-pane='0'] [data-viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 80, cy + 60)
    page.mouse.down()
    page.mouse.move(cx - 40, cy, steps=5)
    page.mouse.move(cx, cy - 60, steps=5)
    page.mouse.up()
    page.mouse.move(cx + 40, cy, steps=5)
    page.mouse.move(cx + 80, cy + 60, steps=5)
    page.mouse.down()
    page.mouse.up()
    page.locator("[data-pane='0'] svg text").filter(has_text="°").first.wait_for(timeout=LOAD_TIMEOUT_MS)


def test_an_angle_is_saved_into_the_study_and_drawn_again(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    walk(alliance_world, Status.IN_PROGRESS, study=ct_study)
    page = sign_in(alliance_world.specialist)
    page.set_viewport_size({"width": 1366, "height": 800})
    open_viewer(page, live_site.url, ct_study.study_uid)
    _ready(page)
    _draw_angle(page)
    page.click("[data-key-save]")
    page.wait_for_function(
        "() => ['ok', 'error'].includes(document.querySelector('[data-key-message]').dataset.kind)",
        timeout=LOAD_TIMEOUT_MS,
    )
    message = page.locator("[data-key-message]")
    assert message.get_attribute("data-kind") == "ok", message.inner_text()
    saved = AuditEvent.objects.get(action="study.key_objects.save")
    assert saved.detail["measurements"] == 1

    open_viewer(page, live_site.url, ct_study.study_uid)  # reopened: the angle is read back from the SR
    _ready(page)
    page.locator("[data-pane='0'] svg text").filter(has_text="°").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.screenshot(path=SHOTS / "dicomobj-angle-1366.png")
