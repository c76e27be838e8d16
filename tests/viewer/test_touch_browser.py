"""The touch layout on a phone: Chromium emulating a 390x844 touch screen, fingers put down
through the DevTools protocol (Input.dispatchTouchEvent), against the live server.

Screenshots go to /tmp/shots/viewer/ (and test-artifacts/viewer/) for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.viewer.test_viewer_browser import LOAD_TIMEOUT_MS, pixels, slice_index, wait_index

pytestmark = pytest.mark.integration
PHONE = {"width": 390, "height": 844}
SHOTS = Path("/tmp/shots/viewer")
PANE = "[data-pane='0']"


@pytest.fixture
def shots(artifacts: Path) -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)

    def shot(page: Any, name: str) -> None:
        page.screenshot(path=SHOTS / f"{name}.png")
        shutil.copy(SHOTS / f"{name}.png", artifacts / f"{name}.png")

    yield shot


@pytest.fixture
def phone(browser: Any, live_site: Any, alliance_world: Any) -> Iterator[Any]:
    """A signed-in phone: touch screen, mobile viewport, three device pixels per CSS pixel."""
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=3, locale="zh-CN")
    client = Client()
    client.force_login(alliance_world.owner.user)
    context.add_cookies(
        [
            {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_site.url},
            {"name": "django_language", "value": "zh-hans", "url": live_site.url},
        ]
    )
    yield context.new_page()
    context.close()


class Fingers:
    """Touch points put down, moved and lifted through the DevTools protocol, as a touch
    screen's driver would send them (Chromium makes pointer and touch events of them)."""

    def __init__(self, page: Any) -> None:
        self.cdp = page.context.new_cdp_session(page)

    def _send(self, kind: str, points: list[tuple[float, float]]) -> None:
        touch_points = [
            {"x": x, "y": y, "id": i, "radiusX": 4, "radiusY": 4, "force": 1} for i, (x, y) in enumerate(points)
        ]
        self.cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})

    def drag(self, starts: list[tuple[float, float]], ends: list[tuple[float, float]], steps: int = 12) -> None:
        self._send("touchStart", starts)
        for step in range(1, steps + 1):
            t = step / steps
            self._send(
                "touchMove",
                [(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t) for a, b in zip(starts, ends, strict=True)],
            )
        self._send("touchEnd", [])


def open_on_phone(page: Any, base_url: str, study_uid: str, query: str = "") -> dict[str, float]:
    page.goto(base_url + reverse("viewer:study", args=[study_uid]) + query)
    page.wait_for_function(
        f"() => document.querySelector(\"{PANE}\").dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
    )
    page.wait_for_function(
        f'() => Number(document.querySelector("{PANE}").dataset.rendered || 0) > 0', timeout=LOAD_TIMEOUT_MS
    )
    return page.locator(f"{PANE} [data-viewport]").bounding_box()


def pane_data(page: Any, name: str) -> str:
    return page.locator(PANE).get_attribute(f"data-{name}") or ""


def nothing_overflows(page: Any, screen: dict[str, int] = PHONE) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= screen["width"], f"the page is {width} px wide on a {screen['width']} px screen"
    for button in page.locator("#viewer button:visible").all():
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= screen["width"] + 0.5, button.inner_text()
        assert box["y"] + box["height"] <= screen["height"] + 0.5, button.inner_text()
    for button in page.locator(".vw-touchbar button:visible, .vw-touchactions button:visible").all():
        box = button.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44, f"{button.inner_text()!r} is a {box} target"


def image_shows(page: Any) -> bool:
    """The phantom is on screen (not a black pane: an image zoomed or moved away)."""
    return bool(pixels(page.locator(f"{PANE} [data-viewport]").screenshot()).std() > 20)


def test_phone_gets_the_touch_layout_and_fingers_scroll_zoom_and_window(
    phone: Any, live_site: Any, ct_study: Any, shots: Any
) -> None:
    """On WebGL, as a phone draws (headless Chromium would take the CPU path by itself)."""
    page = phone
    box = open_on_phone(page, live_site.url, ct_study.study_uid, "?render=gpu")
    assert page.locator("#viewer").get_attribute("data-ui") == "touch"
    assert page.locator("#viewer").get_attribute("data-mode") == "cornerstone"
    assert not page.locator(".vw-bar").is_visible(), "the desktop toolbar gives way to the touch bar"
    assert page.locator("[data-touch-preset=lung]").inner_text() == "肺窗"
    nothing_overflows(page)
    page.wait_for_timeout(300)
    shots(page, "phone-touch-opened")

    fingers = Fingers(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    start = slice_index(page)
    fingers.drag([(cx, cy - 120)], [(cx, cy + 120)])  # one finger down the screen: later slices
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.index) > {start}')
    after_down = slice_index(page)
    assert after_down > start + 3
    fingers.drag([(cx + 100, cy)], [(cx - 100, cy)])  # one finger to the left: earlier slices
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.index) < {after_down}')
    assert page.locator("[data-touch-hint]").is_hidden(), "the hint goes once the reader has swiped"

    assert pane_data(page, "zoom") == "1.00"
    fingers.drag([(cx - 40, cy), (cx + 40, cy)], [(cx - 130, cy), (cx + 130, cy)])  # pinch open
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.zoom) > 1.5')
    index_after_pinch = slice_index(page)
    page.wait_for_timeout(200)
    assert image_shows(page), "the pinched image stays on screen"
    shots(page, "phone-touch-pinched")
    fingers.drag([(cx - 100, cy), (cx + 100, cy)], [(cx - 50, cy + 20), (cx + 50, cy + 20)])  # pinch in, moving down
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.zoom) < 2')
    page.wait_for_timeout(200)
    assert image_shows(page)

    window_before = pane_data(page, "window")
    fingers.drag([(cx - 40, cy - 60), (cx + 40, cy - 60)], [(cx + 20, cy + 40), (cx + 100, cy + 40)])
    page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.window !== '{window_before}'")
    width_before, center_before = map(int, window_before.split("/"))
    width_after, center_after = map(int, pane_data(page, "window").split("/"))
    assert width_after > width_before, "two fingers to the right widen the window"
    assert center_after < center_before, "two fingers down lower the level"
    assert slice_index(page) == index_after_pinch, "two fingers never change the slice"
    page.wait_for_timeout(200)
    shots(page, "phone-touch-zoomed-windowed")

    page.locator("[data-touch-preset=lung]").tap()
    page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.window === '1500/-600'")
    page.locator("[data-touch-preset=bone]").tap()
    page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.window === '1800/400'")
    page.locator("[data-touch-action=next]").tap()
    wait_index(page, index_after_pinch + 1)
    page.locator("[data-touch-action=reset]").tap()
    page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.zoom === '1.00'")

    page.locator("[data-touch-action=fullscreen]").tap()
    page.wait_for_function("() => document.getElementById('viewer').classList.contains('is-fullscreen')")
    assert page.locator("[data-touch-action=fullscreen]").get_attribute("aria-pressed") == "true"
    viewer = page.locator("#viewer").bounding_box()
    assert (viewer["x"], viewer["y"], viewer["width"]) == (0, 0, PHONE["width"])
    assert page.locator("[data-touch-action=fullscreen]").inner_text() == "退出全屏"
    nothing_overflows(page)
    page.wait_for_timeout(200)
    shots(page, "phone-touch-fullscreen")
    page.locator("[data-touch-action=fullscreen]").tap()
    page.wait_for_function("() => !document.getElementById('viewer').classList.contains('is-fullscreen')")


def test_pinch_on_the_cpu_path_zooms_and_keeps_the_image_on_screen(phone: Any, live_site: Any, ct_study: Any) -> None:
    page = phone
    box = open_on_phone(page, live_site.url, ct_study.study_uid, "?render=cpu")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    Fingers(page).drag([(cx - 40, cy + 50), (cx + 40, cy + 50)], [(cx - 130, cy), (cx + 130, cy)])
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.zoom) > 1.5')
    page.wait_for_timeout(200)
    assert image_shows(page)


def test_rendered_fallback_on_a_phone_swipes_and_pinches_too(
    phone: Any, live_site: Any, ct_study: Any, shots: Any
) -> None:
    page = phone
    page.context.add_cookies([{"name": "django_language", "value": "en", "url": live_site.url}])
    box = open_on_phone(page, live_site.url, ct_study.study_uid, "?mode=rendered")
    assert page.locator("[data-touch-preset=mediastinum]").inner_text() == "Mediastinum"
    assert page.locator("#viewer").get_attribute("data-mode") == "rendered"
    assert page.locator("#viewer").get_attribute("data-ui") == "touch"
    nothing_overflows(page)
    fingers = Fingers(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    start = slice_index(page)
    assert start == 0, "the first slice is shown first"
    fingers.drag([(cx, cy - 100)], [(cx, cy + 100)])  # down the screen: later slices
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.index) > {start}')
    fingers.drag([(cx - 30, cy), (cx + 30, cy)], [(cx - 120, cy), (cx + 120, cy)])
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.zoom) > 1.5')
    assert "scale(" in page.locator(f"{PANE} img.vw-rendered").get_attribute("style")
    page.locator("[data-touch-preset=lung]").tap()
    page.wait_for_function(f"() => document.querySelector(\"{PANE} img.vw-rendered\").src.includes('window=-600,1500')")
    page.wait_for_timeout(300)
    shots(page, "phone-rendered-touch")


def test_phone_turned_sideways_keeps_the_image_big_and_the_buttons_on_screen(
    phone: Any, live_site: Any, ct_study: Any, shots: Any
) -> None:
    page = phone
    sideways = {"width": PHONE["height"], "height": PHONE["width"]}
    page.set_viewport_size(sideways)
    open_on_phone(page, live_site.url, ct_study.study_uid)
    page.locator("[data-touch-action=fullscreen]").tap()
    page.wait_for_function("() => document.getElementById('viewer').classList.contains('is-fullscreen')")
    assert page.locator("#viewer").get_attribute("data-ui") == "touch"
    nothing_overflows(page, sideways)
    image = page.locator(f"{PANE} [data-viewport]").bounding_box()
    assert image["height"] >= 0.6 * sideways["height"], image
    page.wait_for_timeout(300)
    shots(page, "phone-sideways-fullscreen")


def test_desktop_keeps_its_toolbar_and_can_ask_for_the_touch_layout(
    sign_in: Any, alliance_world: Any, live_site: Any, ct_study: Any, shots: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1366, "height": 768})
    open_on_phone(page, live_site.url, ct_study.study_uid)
    assert page.locator("#viewer").get_attribute("data-ui") == "desktop"
    assert page.locator(".vw-bar").is_visible() and page.locator(".vw-touchbar").is_hidden()
    page.wait_for_timeout(300)
    shots(page, "desktop-1366")
    open_on_phone(page, live_site.url, ct_study.study_uid, "?layout=touch")
    assert page.locator("#viewer").get_attribute("data-ui") == "touch"
    assert page.locator(".vw-touchbar").is_visible() and page.locator(".vw-bar").is_hidden()
    start = slice_index(page)
    box = page.locator(f"{PANE} [data-viewport]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 400, steps=10)
    page.mouse.up()
    page.wait_for_function(f'() => Number(document.querySelector("{PANE}").dataset.index) > {start}')
    page.wait_for_timeout(300)
    shots(page, "desktop-1366-touch-layout")
