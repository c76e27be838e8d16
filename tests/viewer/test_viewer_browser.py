"""The viewer in Debian's Chromium against the live server (issue 5's browser tests).

Screenshots of each run are kept in test-artifacts/viewer/ for a person to look at.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image
from pydicom.uid import RLELossless

from alliance.models import AuditEvent
from tests.viewer.conftest import store_series
from tests.viewer.ctgen import PIXEL_SPACING_MM, CtSpec, ct_series
from tests.viewer.test_views import MISSING, normalised

pytestmark = pytest.mark.integration
LOAD_TIMEOUT_MS = 30_000


def open_viewer(page: Any, base_url: str, study_uid: str, query: str = "") -> Any:
    page.goto(base_url + reverse("viewer:study", args=[study_uid]) + query)
    pane = page.locator("[data-pane='0']")
    page.wait_for_function(
        "() => document.querySelector(\"[data-pane='0']\").dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
    )
    page.wait_for_function(
        "() => Number(document.querySelector(\"[data-pane='0']\").dataset.rendered || 0) > 0", timeout=LOAD_TIMEOUT_MS
    )
    return pane


def pixels(shot: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.int16)


def slice_index(page: Any) -> int:
    return int(page.locator("[data-pane='0']").get_attribute("data-index"))


def wait_index(page: Any, index: int) -> None:
    page.wait_for_function(
        f"() => document.querySelector(\"[data-pane='0']\").dataset.index === '{index}'", timeout=LOAD_TIMEOUT_MS
    )


def test_viewer_shows_the_ct_and_scrolls_through_slices(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1280, "height": 800})
    pane = open_viewer(page, live_site.url, ct_study.study_uid)
    start = slice_index(page)
    assert start == 0, "the first slice is shown first"
    page.wait_for_timeout(300)
    page.screenshot(path=artifacts / "viewer-desktop.png")
    before = pixels(pane.screenshot())

    pane.hover()
    page.mouse.wheel(0, 120)
    wait_index(page, start + 1)
    page.keyboard.press("ArrowDown")
    wait_index(page, start + 2)
    page.wait_for_timeout(200)
    after = pixels(pane.screenshot())
    assert np.abs(after - before).mean() > 0.5, "a different slice shows different pixels"
    overlay = page.locator("[data-pane='0'] [data-ov='bl']").inner_text()
    assert f"{start + 3}" in overlay and f"{ct_study.num_instances}" in overlay
    by_owner = AuditEvent.objects.filter(object_id=ct_study.study_uid, actor_name=alliance_world.owner.user.username)
    # One opening, none per frame; reading the reader's saved key images is its own audited read.
    opened = [a for a in by_owner.values_list("action", flat=True) if a != "study.key_objects.view"]
    assert opened == ["study.view"], "one event per opening, none per frame"


def test_lung_preset_changes_the_rendered_pixels(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Any
) -> None:
    page = sign_in(alliance_world.owner)
    pane = open_viewer(page, live_site.url, ct_study.study_uid)
    page.wait_for_timeout(200)
    before = pixels(pane.screenshot())
    page.select_option("[data-action=preset]", "lung")
    page.wait_for_function("() => document.querySelector(\"[data-pane='0']\").dataset.window === '1500/-600'")
    page.wait_for_timeout(200)
    pane.screenshot(path=artifacts / "viewer-lung-window.png")
    after = pixels(pane.screenshot())
    assert np.abs(after - before).mean() > 5, "the lung window renders the same CT differently"
    assert "1500" in page.locator("[data-pane='0'] [data-ov='br']").inner_text()


def test_length_measurement_is_in_mm_of_the_pixel_spacing(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1100, "height": 760})
    pane = open_viewer(page, live_site.url, ct_study.study_uid)
    page.click("[data-tool=Length]")
    box = page.locator("[data-pane='0'] [data-viewport]").bounding_box()
    side = min(box["width"], box["height"])  # the square image is fitted into the pane
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    drag_css = side * 0.4
    page.mouse.move(cx - drag_css / 2, cy)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + drag_css / 2, cy, steps=5)
    page.mouse.up()
    label = page.locator("[data-pane='0'] svg text").filter(has_text="mm").first
    label.wait_for(timeout=LOAD_TIMEOUT_MS)
    pane.screenshot(path=artifacts / "viewer-length.png")
    shown = float(re.search(r"([\d.]+)\s*mm", label.text_content())[1])
    image_pixels = drag_css * ct_study.series.get().instances.first().columns / side
    assert shown == pytest.approx(image_pixels * PIXEL_SPACING_MM, rel=0.03)


def test_stranger_gets_the_same_404_page_as_for_a_missing_study(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    page = sign_in(alliance_world.stranger)
    forbidden = page.goto(live_site.url + reverse("viewer:study", args=[ct_study.study_uid]))
    forbidden_body = page.content()
    missing = page.goto(live_site.url + reverse("viewer:study", args=[MISSING]))
    assert forbidden.status == missing.status == 404
    assert normalised(forbidden_body, ct_study.study_uid) == normalised(page.content(), MISSING)


def test_page_talks_to_no_host_but_the_server(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, requests_seen: list[str]
) -> None:
    page = sign_in(alliance_world.owner)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    open_viewer(page, live_site.url, ct_study.study_uid)
    page.wait_for_timeout(1500)  # let the prefetcher and thumbnails run
    own = urlsplit(live_site.url).netloc
    foreign = [u for u in requests_seen if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != own]
    assert requests_seen and not foreign
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def test_phone_layout_and_server_rendered_fallback(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.context.add_cookies([{"name": "django_language", "value": "zh-hans", "url": live_site.url}])
    page.set_viewport_size({"width": 390, "height": 780})
    page.add_init_script("HTMLCanvasElement.prototype.getContext = function () { return null; };")
    open_viewer(page, live_site.url, ct_study.study_uid)
    assert page.locator("#viewer").get_attribute("data-mode") == "rendered"
    assert page.locator("[data-pane='0'] img.vw-rendered").get_attribute("src").split("?")[0].endswith("/rendered")
    start = slice_index(page)
    page.locator("[data-pane='0'] [data-slider]").fill(str(start + 4))
    wait_index(page, start + 4)
    page.wait_for_timeout(300)
    page.screenshot(path=artifacts / "viewer-phone-rendered.png")
    assert "图像" in page.locator("[data-pane='0'] [data-ov='bl']").inner_text(), "the overlay speaks Chinese"


def test_compressed_frames_travel_compressed_and_are_drawn(
    sign_in: Any, live_site: Any, alliance_world: Any, artifacts: Any
) -> None:
    study = store_series(ct_series(CtSpec(slices=6, rle=True)), alliance_world.clin_a)
    page = sign_in(alliance_world.owner)
    frame_types: list[str] = []
    page.on(
        "response", lambda r: frame_types.append(r.headers.get("content-type", "")) if "/frames/" in r.url else None
    )
    pane = open_viewer(page, live_site.url, study.study_uid)
    page.wait_for_timeout(300)
    assert frame_types and all(RLELossless in t for t in frame_types), frame_types
    shot = pixels(pane.screenshot(path=artifacts / "viewer-rle.png"))
    assert shot.std() > 20, "the decoded slice shows the phantom, not a blank pane"
    middle = shot[shot.shape[0] // 2, shot.shape[1] // 4 : 3 * shot.shape[1] // 4]
    assert (middle < 30).any() and (np.abs(middle - 128) < 40).any(), "lungs dark, soft tissue grey"


def test_two_up_invert_rotate_and_cine(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1280, "height": 720})
    pane = open_viewer(page, live_site.url, ct_study.study_uid)
    page.wait_for_timeout(200)
    plain = pixels(pane.screenshot())
    page.click("[data-action=invert]")
    page.wait_for_timeout(300)
    inverted = pixels(pane.screenshot())
    assert np.abs(inverted - plain).mean() > 50, "invert turns the grey levels over"
    page.click("[data-action=rotate]")
    page.wait_for_timeout(300)
    assert np.abs(pixels(pane.screenshot()) - inverted).mean() > 5, "rotating moves the anatomy"
    page.click("[data-action=reset]")
    page.wait_for_timeout(300)
    assert np.abs(pixels(pane.screenshot()) - plain).mean() < 2, "reset brings the first view back"

    page.click("[data-layout-button='2']")
    second = page.locator("[data-pane='1']")
    page.wait_for_function("() => document.querySelector(\"[data-pane='1']\").dataset.loaded === 'true'")
    assert second.is_visible() and second.get_attribute("data-count") == str(ct_study.num_instances)

    pane.click()
    start = slice_index(page)
    page.click("[data-action=cine]")
    page.wait_for_function(f"() => document.querySelector(\"[data-pane='0']\").dataset.index !== '{start}'")
    page.click("[data-action=cine]")
    page.screenshot(path=artifacts / "viewer-2up.png")


def test_first_slice_is_fetched_once_and_drawn_from_those_bytes(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, requests_seen: list[str]
) -> None:
    """main.js fetches the first slice while Cornerstone loads; the loader must take those
    bytes (COMPRESSED_FRAME_DATA), not fetch the slice again."""
    page = sign_in(alliance_world.owner)
    open_viewer(page, live_site.url, ct_study.study_uid)
    page.wait_for_timeout(500)  # let the prefetcher run too
    instances = ct_study.series.get().instances.order_by("instance_number")
    first = instances[0].sop_uid
    fetched = [u for u in requests_seen if f"/instances/{first}/frames/" in u]
    assert len(fetched) == 1 and fetched[0].endswith("/frames/1"), fetched
    assert slice_index(page) == 0


def _first_slice_with_metadata_held(page: Any, live_site: Any, ct_study: Any) -> tuple[Any, list[Any]]:
    """The viewer opened with the series' metadata requests held back (the routes are
    returned, to be let go), once the first slice is drawn."""
    held: list[Any] = []
    page.route(re.compile(r"/series/[\d.]+/metadata$"), lambda route: held.append(route))
    page.goto(live_site.url + reverse("viewer:study", args=[ct_study.study_uid]))
    page.wait_for_function(
        "() => Number(document.querySelector(\"[data-pane='0']\").dataset.rendered || 0) > 0", timeout=LOAD_TIMEOUT_MS
    )
    return page, held


def test_first_slice_is_drawn_before_the_series_metadata_arrives(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    """The series' metadata is held back: the first slice is drawn from what the page
    carries, and the overlay gives the series' size without claiming the slice's place."""
    page, held = _first_slice_with_metadata_held(sign_in(alliance_world.owner), live_site, ct_study)
    page.wait_for_function("() => document.querySelector(\"[data-pane='0'] [data-ov='bl']\").innerText.includes('…')")
    corner = page.locator("[data-pane='0'] [data-ov='bl']").inner_text()
    assert f"… / {ct_study.num_instances}" in corner and "Position 0.0 mm" in corner, corner
    assert "1.00×" in page.locator("[data-pane='0'] [data-ov='br']").inner_text()
    assert held and page.locator("[data-pane='0']").get_attribute("data-loaded") == "false"
    held[0].continue_()
    page.wait_for_function("() => document.querySelector(\"[data-pane='0']\").dataset.loaded === 'true'")
    wait_index(page, 0)
    assert f"1 / {ct_study.num_instances}" in page.locator("[data-pane='0'] [data-ov='bl']").inner_text()


def test_keys_pressed_while_the_first_slice_is_alone_count_once_the_series_arrives(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    page, held = _first_slice_with_metadata_held(sign_in(alliance_world.owner), live_site, ct_study)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert held and page.locator("[data-pane='0']").get_attribute("data-loaded") == "false"
    held[0].continue_()
    page.wait_for_function("() => document.querySelector(\"[data-pane='0']\").dataset.loaded === 'true'")
    wait_index(page, 2)
