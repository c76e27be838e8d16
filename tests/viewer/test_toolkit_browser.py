"""The reader's toolkit in Chromium (issue 15, items 10-12): scrolling bursts that end on
the slice asked for, orientation markers, the HU probe, ROI statistics, the jump keys and
priors opened side by side with synchronized scrolling.

Screenshots go to /work/wt/notes/shots/ (for the issue) and test-artifacts/viewer/."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from alliance.models import AuditEvent
from tests.viewer.conftest import store_series
from tests.viewer.ctgen import PIXEL_SPACING_MM, CtSpec, ct_series

pytestmark = pytest.mark.integration
LOAD_TIMEOUT_MS = 30_000
SHOTS = Path("/work/wt/notes/shots")
PANE0 = "[data-pane='0']"
PANE1 = "[data-pane='1']"


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=artifacts / f"{name}.png")
    if SHOTS.parent.is_dir():
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SHOTS / f"{name}.png")


def open_drawn(page: Any, base_url: str, study_uid: str, fragment: str = "") -> None:
    """The viewer opened, as soon as its first image is drawn (the series may still be loading)."""
    page.goto(base_url + reverse("viewer:study", args=[study_uid]) + fragment)
    page.wait_for_function(
        f'() => Number(document.querySelector("{PANE0}").dataset.rendered || 0) > 0', timeout=LOAD_TIMEOUT_MS
    )


def wait_loaded(page: Any, pane: str = PANE0) -> None:
    page.wait_for_function(
        f"() => document.querySelector(\"{pane}\")?.dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
    )


def index_of(page: Any, pane: str = PANE0) -> int:
    return int(page.locator(pane).get_attribute("data-index") or -1)


def settles_on(page: Any, index: int, pane: str = PANE0) -> None:
    """The pane shows `index`, and still does after every delayed change would have fired."""
    try:
        page.wait_for_function(
            f"() => document.querySelector(\"{pane}\").dataset.index === '{index}'", timeout=LOAD_TIMEOUT_MS
        )
    except Exception:  # noqa: BLE001 - say where it stopped instead of a bare timeout
        pytest.fail(f"{pane} stopped at {index_of(page, pane)}, not {index}")
    page.wait_for_timeout(250)
    assert index_of(page, pane) == index, "a late change moved the pane off the slice asked for"


def press_burst(page: Any, key: str, times: int) -> None:
    """Key presses back to back, in one task: no round trip between them."""
    page.evaluate(
        """([key, times]) => {
            for (let i = 0; i < times; i++) {
                document.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true }));
            }
        }""",
        [key, times],
    )


def wheel_burst(page: Any, notches: int) -> None:
    page.evaluate(
        """([selector, notches]) => {
            const element = document.querySelector(selector);
            const box = element.getBoundingClientRect();
            for (let i = 0; i < Math.abs(notches); i++) {
                element.dispatchEvent(new WheelEvent("wheel", {
                    deltaY: Math.sign(notches) * 100, clientX: box.x + box.width / 2,
                    clientY: box.y + box.height / 2, bubbles: true, cancelable: true,
                }));
            }
        }""",
        [f"{PANE0} [data-viewport]", notches],
    )


def slider_drag(page: Any, values: list[int]) -> None:
    """What a drag of the slider sends: an input event at every value it passes."""
    page.evaluate(
        """([selector, values]) => {
            const slider = document.querySelector(selector);
            for (const value of values) {
                slider.value = String(value);
                slider.dispatchEvent(new Event("input", { bubbles: true }));
            }
        }""",
        [f"{PANE0} [data-slider]", values],
    )


@pytest.fixture
def long_ct(alliance_world: Any) -> Any:
    return store_series(ct_series(CtSpec(slices=48, size=192)), alliance_world.clin_a)


def test_bursts_of_keys_wheel_and_slider_end_on_the_slice_asked_for(
    sign_in: Any, live_site: Any, alliance_world: Any, long_ct: Any
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1280, "height": 800})
    last = long_ct.num_instances - 1
    for _ in range(6):
        open_drawn(page, live_site.url, long_ct.study_uid)
        press_burst(page, "ArrowDown", 10)  # right after the first image, as the issue saw
        wait_loaded(page)
        settles_on(page, 10)
        press_burst(page, "ArrowDown", 10)
        settles_on(page, 20)
        wheel_burst(page, 7)
        settles_on(page, 27)
        wheel_burst(page, -4)
        settles_on(page, 23)
        slider_drag(page, [24, 28, 33, 39, 44, 41, 36])
        settles_on(page, 36)
        press_burst(page, "ArrowUp", 3)
        wheel_burst(page, 2)
        press_burst(page, "ArrowDown", 1)
        settles_on(page, 36)
        press_burst(page, "ArrowDown", 30)
        settles_on(page, last)
        page.evaluate("() => {}")  # the burst tasks have run


def test_page_and_home_end_keys_jump(sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any) -> None:
    page = sign_in(alliance_world.owner)
    open_drawn(page, live_site.url, ct_study.study_uid)
    wait_loaded(page)
    assert index_of(page) == 0, "the first slice is shown first"
    page.keyboard.press("PageDown")
    settles_on(page, 10)
    page.keyboard.press("PageDown")
    page.keyboard.press("PageDown")
    settles_on(page, ct_study.num_instances - 1)
    page.keyboard.press("PageUp")
    settles_on(page, ct_study.num_instances - 11)
    page.keyboard.press("Home")
    settles_on(page, 0)
    page.keyboard.press("End")
    settles_on(page, ct_study.num_instances - 1)


def bright_centroid(png: bytes) -> tuple[float, float]:
    """Where the white pixels (the marker block of `marked_ct`) are, relative to the image's
    centre in half the fitted (square) image's side: (x, y) in -1..1."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    h, w = grey.shape
    ys, xs = np.nonzero(grey >= 250)
    assert len(xs) > 20, "the marker is drawn white"
    half = min(w, h) / 2
    return (xs.mean() - w / 2) / half, (ys.mean() - h / 2) / half


@pytest.fixture
def marked_ct(alliance_world: Any) -> Any:
    """An axial CT (Image Orientation Patient 1\\0\\0\\0\\1\\0) whose only white is a block on
    the patient's left and front: image right (+x, columns) and top (-y, rows)."""
    slices = ct_series(CtSpec(slices=6))
    for ds in slices:
        hu = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns).copy()
        hu[hu > 1024 + 300] = 1024 + 40  # no spine
        size = ds.Rows
        top, left = int(size * 0.2), int(size * 0.68)
        hu[top : top + size // 10, left : left + size // 10] = 1024 + 2000
        ds.PixelData = hu.tobytes()
    return store_series(slices, alliance_world.clin_a)


def agrees(labels: str, x: float, y: float) -> bool:
    """The block (patient left and anterior) is on the side whose marker says L or A."""
    left, right, top, bottom = labels.split()
    horizontal = right if x > 0 else left
    vertical = bottom if y > 0 else top
    return {horizontal, vertical} == {"L", "A"}


def test_orientation_markers_follow_flip_and_rotate_as_the_image_does(
    sign_in: Any, live_site: Any, alliance_world: Any, marked_ct: Any, artifacts: Path
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1280, "height": 800})
    open_drawn(page, live_site.url, marked_ct.study_uid)
    wait_loaded(page)
    pane = page.locator(f"{PANE0} [data-viewport]")

    def markers() -> str:
        return page.locator(PANE0).get_attribute("data-orientation")

    def check(expected: str) -> None:
        page.wait_for_timeout(300)
        x, y = bright_centroid(pane.screenshot())
        state = page.locator(PANE0).get_attribute("data-presentation")
        assert markers() == expected, (state, x, y)
        assert abs(x) > 0.2 and abs(y) > 0.2 and agrees(markers(), x, y), (markers(), state, x, y)

    page.wait_for_function(f'() => document.querySelector("{PANE0}").dataset.orientation')
    assert page.locator(f"{PANE0} [data-orient=left]").inner_text() == "R"
    assert page.locator("[data-action=mpr]").is_disabled(), "six slices make no volume"
    check("R L A P")  # left, right, top, bottom: the patient's right on the screen's left
    page.click("[data-action=rotate]")
    check("P A R L")  # a quarter turn clockwise: the front on the right
    page.click("[data-action=flip-h]")
    check("A P R L")  # then mirrored left to right on the screen
    shot(page, artifacts, "viewer-orientation")
    page.click("[data-action=reset]")
    check("R L A P")
    page.click("[data-action=flip-v]")
    check("R L P A")
    page.click("[data-action=flip-h]")
    check("L R P A")


def image_point(page: Any, column: float, row: float, size: int) -> tuple[float, float]:
    """The page coordinates of an image pixel's centre, the square image fitted in the pane."""
    box = page.locator(f"{PANE0} [data-viewport]").bounding_box()
    side = min(box["width"], box["height"])
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return cx + (column + 0.5 - size / 2) * side / size, cy + (row + 0.5 - size / 2) * side / size


def body_width_share(page: Any) -> float:
    """The phantom's body (0.85 of the image wide) across the pane's middle row, as a share of
    the width it has when the square image is fitted in the pane: 1.0 when fitted."""
    pane = page.locator(f"{PANE0} [data-viewport]")
    box = pane.bounding_box()
    pixels = np.asarray(Image.open(io.BytesIO(pane.screenshot())).convert("RGB")).astype(int)
    row = pixels[pixels.shape[0] // 2]
    grey = (row.max(axis=1) - row.min(axis=1) < 12) & (row.mean(axis=1) > 60) & (row.mean(axis=1) < 200)
    columns = np.flatnonzero(grey)
    assert columns.size, "no soft tissue across the middle of the pane"
    scale = pixels.shape[1] / box["width"]  # screenshot pixels per CSS pixel
    return (columns[-1] - columns[0] + 1) / scale / (0.85 * min(box["width"], box["height"]))


def test_an_image_left_fitted_is_fitted_again_when_the_pane_changes_size(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    """An image the reader has not zoomed or panned fills the pane again after each change of
    its size, and stays flipped: neither cropped nor small."""
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1100, "height": 760})
    open_drawn(page, live_site.url, ct_study.study_uid)
    wait_loaded(page)
    page.wait_for_timeout(300)
    assert body_width_share(page) == pytest.approx(1.0, abs=0.04)
    page.click("[data-action=flip-h]")
    for width, height in ((1100, 520), (900, 900), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(400)
        assert body_width_share(page) == pytest.approx(1.0, abs=0.04), (width, height)
        assert page.locator(PANE0).get_attribute("data-presentation") == "0 h-"


def test_probe_shows_the_hu_of_the_pixel_under_the_cursor(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any
) -> None:
    """The phantom is stored as HU + 1024 with Rescale Intercept -1024: soft tissue 40 HU
    at the centre, lung -820 HU in the middle of the right lung (image left)."""
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1100, "height": 760})
    open_drawn(page, live_site.url, ct_study.study_uid)
    wait_loaded(page)
    size = CtSpec().size
    page.click("[data-tool=Probe]")
    page.mouse.move(*image_point(page, size / 2, size / 2, size))
    page.wait_for_function(f'() => document.querySelector("{PANE0}").dataset.probeValue !== undefined')
    assert float(page.locator(PANE0).get_attribute("data-probe-value")) == 40.0
    assert "40 HU" in page.locator(f"{PANE0} [data-probe]").inner_text()
    lung_column, lung_row = size / 2 * (1 - 0.38), size / 2 * (1 - 0.05)
    page.mouse.move(*image_point(page, lung_column, lung_row, size), steps=4)
    page.wait_for_function(f'() => document.querySelector("{PANE0}").dataset.probeValue === "-820"')
    assert "-820 HU" in page.locator(f"{PANE0} [data-probe]").inner_text()


def settled_text(page: Any, selector: str) -> str:
    """The element's text once it has stopped changing: the ROI's statistics are worked out
    after the drag (throttled), so the label first shows those of a point on the way."""
    text = page.locator(selector).first.text_content()
    for _ in range(40):
        page.wait_for_timeout(250)
        later = page.locator(selector).first.text_content()
        if later == text:
            return text
        text = later
    pytest.fail(f"the label kept changing: {text}")


def test_rectangle_roi_gives_area_in_mm2_mean_and_sd(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Path
) -> None:
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1100, "height": 760})
    open_drawn(page, live_site.url, ct_study.study_uid)
    wait_loaded(page)
    size = CtSpec().size
    page.click("[data-tool=RectangleROI]")
    half = 14  # pixels: inside the soft tissue between the lungs (40 HU everywhere)
    x0, y0 = image_point(page, size / 2 - half, size / 2 - half, size)
    x1, y1 = image_point(page, size / 2 + half, size / 2 + half, size)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    label = page.locator(f"{PANE0} svg text").filter(has_text="Mean").first
    label.wait_for(timeout=LOAD_TIMEOUT_MS)
    text = settled_text(page, f"{PANE0} svg")
    shot(page, artifacts, "viewer-roi")
    mean = float(re.search(r"Mean (-?[\d.]+) HU", text)[1])
    sd = float(re.search(r"SD (-?[\d.]+) HU", text)[1])
    assert (mean, sd) == (40.0, 0.0), text
    area = float(re.search(r"Area ([\d.]+) mm²", text)[1])
    side_mm = 2 * half * PIXEL_SPACING_MM
    assert area == pytest.approx(side_mm * side_mm, rel=0.1)
    assert "mm²" in text


def test_toolbar_offers_the_measuring_tools_in_chinese(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Path
) -> None:
    page = sign_in(alliance_world.owner)
    page.context.add_cookies([{"name": "django_language", "value": "zh-hans", "url": live_site.url}])
    for width, height in ((1366, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        open_drawn(page, live_site.url, ct_study.study_uid)
        wait_loaded(page)
        page.wait_for_timeout(300)
        shot(page, artifacts, f"viewer-toolbar-{width}")
    page.set_viewport_size({"width": 1366, "height": 800})
    open_drawn(page, live_site.url, ct_study.study_uid)
    assert page.locator("[data-tool=Probe]").inner_text() == "CT 值"
    assert page.locator("[data-tool=EllipticalROI]").inner_text() == "椭圆"
    assert page.locator("[data-tool=RectangleROI]").inner_text() == "矩形"


def test_every_tool_of_the_desktop_toolbar_is_in_sight_without_scrolling(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_study: Any, artifacts: Path
) -> None:
    """A 1366 px laptop and a narrower window, in both languages: the toolbar wraps rather than
    hiding its last buttons (key image, save) past the right edge."""
    page = sign_in(alliance_world.owner)
    for language in ("zh-hans", "en"):
        page.context.add_cookies([{"name": "django_language", "value": language, "url": live_site.url}])
        for width, height in ((1366, 800), (1024, 768)):
            page.set_viewport_size({"width": width, "height": height})
            open_drawn(page, live_site.url, ct_study.study_uid)
            wait_loaded(page)
            hidden = page.evaluate(
                """() => [...document.querySelectorAll('.vw-bar button, .vw-bar select')]
                    .filter((b) => b.offsetParent !== null)
                    .filter((b) => b.getBoundingClientRect().right > document.documentElement.clientWidth)
                    .map((b) => b.textContent.trim())"""
            )
            assert hidden == [], (language, width, hidden)
            bar = page.evaluate(
                "() => { const b = document.querySelector('.vw-bar'); return [b.scrollWidth, b.clientWidth]; }"
            )
            assert bar[0] <= bar[1], (language, width, bar)
    shot(page, artifacts, "viewer-toolbar-1024-en")


def test_prior_opens_beside_the_study_and_scrolls_with_it_by_position(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_with_prior: Any, artifacts: Path
) -> None:
    current, prior = ct_with_prior
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1366, "height": 800})
    open_drawn(page, live_site.url, current.study_uid)
    wait_loaded(page)
    button = page.locator(f"[data-prior='{prior.study_uid}']")
    assert "2024" in button.inner_text()
    button.click()
    wait_loaded(page, PANE1)
    assert page.locator(PANE1).get_attribute("data-study") == prior.study_uid
    assert page.locator(PANE0).get_attribute("data-study") == current.study_uid
    events = AuditEvent.objects.filter(object_id=prior.study_uid, action="study.view")
    assert [e.detail for e in events] == [{"via": "viewer-prior"}], "opening the prior is an audited read"

    # Slice i of the study lies at z = -i mm; the prior's slice j at z = -j - 5 mm.
    page.locator(PANE0).click()
    press_burst(page, "ArrowDown", 12)
    settles_on(page, 12)
    settles_on(page, 7, PANE1)
    wheel_burst(page, 4)
    settles_on(page, 16)
    settles_on(page, 11, PANE1)
    page.wait_for_timeout(300)
    shot(page, artifacts, "viewer-priors-1366")

    page.uncheck("[data-sync]")
    press_burst(page, "ArrowDown", 3)
    settles_on(page, 19)
    assert index_of(page, PANE1) == 11, "with scrolling together off the prior stays"
    page.check("[data-sync]")
    settles_on(page, 14, PANE1)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)
    shot(page, artifacts, "viewer-priors-390")


def test_study_page_links_the_prior_to_open_beside_it(
    sign_in: Any, live_site: Any, alliance_world: Any, ct_with_prior: Any
) -> None:
    current, prior = ct_with_prior
    page = sign_in(alliance_world.owner)
    page.goto(live_site.url + reverse("imaging:study_detail", args=[current.study_uid]))
    page.click(f"[data-open-prior='{prior.study_uid}']")
    wait_loaded(page, PANE1)
    assert page.locator(PANE1).get_attribute("data-study") == prior.study_uid
    assert page.locator(PANE1).is_visible()


def spread(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).std())


def test_mpr_shows_three_planes_and_a_mip_slab_of_a_ct(
    sign_in: Any, live_site: Any, alliance_world: Any, artifacts: Path
) -> None:
    ct = store_series(ct_series(CtSpec(slices=60, size=128, spacing=1.4)), alliance_world.clin_a)
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1366, "height": 800})
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    open_drawn(page, live_site.url, ct.study_uid)
    wait_loaded(page)
    button = page.locator("[data-action=mpr]")
    page.wait_for_function("() => !document.querySelector('[data-action=mpr]').disabled")
    assert page.locator("[data-mpr]").count() == 0, "nothing of MPR is made before the reader asks"
    button.click()
    page.wait_for_function(
        "() => ['ready', 'failed'].includes(document.getElementById('viewer').dataset.mprState)", timeout=60_000
    )
    assert page.locator("#viewer").get_attribute("data-mpr-state") == "ready", "\n".join(console)
    page.wait_for_timeout(500)
    shot(page, artifacts, "viewer-mpr-1366")
    for plane in ("axial", "sagittal", "coronal", "mip"):
        view = page.locator(f"[data-mpr-view={plane}]")
        assert view.locator("canvas").count() >= 1
        assert spread(view.screenshot()) > 10, f"the {plane} view shows the CT, not a blank canvas"
    mip = page.locator("[data-mpr-view=mip]")
    before = np.asarray(Image.open(io.BytesIO(mip.screenshot())).convert("L"), dtype=np.float32)
    page.evaluate(
        """() => { const slab = document.querySelector("[data-slab]"); slab.value = "60";
                   slab.dispatchEvent(new Event("input", { bubbles: true })); }"""
    )
    page.wait_for_function("() => document.getElementById('viewer').dataset.slab === '60'")
    page.wait_for_timeout(500)
    after = np.asarray(Image.open(io.BytesIO(mip.screenshot())).convert("L"), dtype=np.float32)
    assert np.abs(after - before).mean() > 1, "a thicker slab changes the MIP"
    assert "60" in page.locator("[data-slab-text]").inner_text()
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)
    shot(page, artifacts, "viewer-mpr-390")
    page.set_viewport_size({"width": 1366, "height": 800})
    page.click("[data-mpr-close]")
    assert page.locator("[data-mpr]").is_hidden()
    page.keyboard.press("ArrowDown")
    settles_on(page, 1)


# Records, from before the click, every state MPR announces on #viewer with the status line
# and what each view's canvas holds at that moment (a PNG data URL): the reduced preview is
# seen however briefly it lasts.
RECORD_MPR_STATES_JS = """() => {
  const viewer = document.getElementById("viewer");
  window.mprStates = [];
  const pictures = () => Object.fromEntries(["axial", "sagittal", "coronal"].map((plane) => {
    const canvas = document.querySelector(`[data-mpr-view=${plane}] canvas`);
    return [plane, canvas ? canvas.toDataURL("image/png") : null];
  }));
  new MutationObserver(() => {
    const state = viewer.dataset.mprState;
    const last = window.mprStates.at(-1);
    if (last && last.state === state) return;
    window.mprStates.push({
      state, detail: viewer.dataset.mprDetail ?? null,
      status: document.querySelector("[data-mpr-status]")?.textContent ?? "",
      ms: viewer.dataset.mprMs ?? null, fullMs: viewer.dataset.mprFullMs ?? null,
      pictures: state === "reduced" || state === "ready" ? pictures() : null,
    });
  }).observe(viewer, { attributes: true, attributeFilter: ["data-mpr-state"] });
}"""


def gray(data_url: str) -> np.ndarray:
    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def mismatch(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, the edges (where np.roll wraps) left out."""
    return float(np.abs(a - b)[4:-4, 4:-4].mean())


def lies_where(preview: np.ndarray, full: np.ndarray) -> bool:
    """The preview matches the full view better as it is than moved 3 pixels any way or
    flipped: it lies where the volume does, only coarser."""
    moved = [np.roll(full, shift, axis) for shift in (-3, 3) for axis in (0, 1)] + [full[::-1], full[:, ::-1]]
    here = mismatch(preview, full)
    return all(here < mismatch(preview, other) for other in moved)


def test_mpr_of_a_long_series_shows_a_reduced_preview_first_then_full_detail(
    sign_in: Any, live_site: Any, alliance_world: Any, artifacts: Path
) -> None:
    """100 slices of 320x320: more slices than the preview takes and wider images than it
    keeps, so the views show previews (33, then 65 of the slices, every 2x2 pixels averaged)
    before the whole volume, and the bar says so, in the reader's language."""
    ct = store_series(ct_series(CtSpec(slices=100, size=320, spacing=1.0)), alliance_world.clin_a)
    page = sign_in(alliance_world.owner)
    page.context.add_cookies([{"name": "django_language", "value": "zh-hans", "url": live_site.url}])
    page.set_viewport_size({"width": 1366, "height": 800})
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    open_drawn(page, live_site.url, ct.study_uid)
    wait_loaded(page)
    page.wait_for_function("() => !document.querySelector('[data-action=mpr]').disabled")
    page.evaluate(RECORD_MPR_STATES_JS)
    page.click("[data-action=mpr]")
    page.wait_for_function(
        "() => ['ready', 'failed'].includes(document.getElementById('viewer').dataset.mprState)", timeout=120_000
    )
    states = page.evaluate("() => window.mprStates")
    assert [s["state"] for s in states] == ["loading", "reduced", "ready"], "\n".join(console)
    _, reduced, ready = states
    assert reduced["detail"] == "reduced"
    assert re.fullmatch(r"容积数据加载完成前显示低细节预览：已加载 \d+ / 100 层", reduced["status"]), reduced["status"]
    assert ready["detail"] == "full" and ready["status"] == ""
    assert int(reduced["ms"]) <= int(ready["fullMs"]), "the planes were shown before full detail, not after"
    assert ready["ms"] == reduced["ms"], "the time to the planes is the preview's, kept at full detail"
    for plane in ("axial", "sagittal", "coronal"):
        preview, full = gray(reduced["pictures"][plane]), gray(ready["pictures"][plane])
        assert preview.std() > 10, f"the preview's {plane} view shows the CT, not a blank canvas"
        # Same camera, same anatomy: the preview lies where the volume does (no shift, no
        # flip along any axis), only coarser.
        assert lies_where(preview, full), plane
    shot(page, artifacts, "viewer-mpr-full-detail-zh")

    # The crosshairs work on the full volume: a click in the axial view off its centre (and
    # off the crosshair lines, which a click would grab) moves the sagittal plane to another
    # column of the body.
    sagittal = "document.querySelector('[data-mpr-view=sagittal] canvas')"
    page.evaluate(f"() => {{ window.sagittalBefore = {sagittal}.toDataURL(); }}")
    box = page.locator("[data-mpr-view=axial]").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.36, box["y"] + box["height"] * 0.62)
    page.wait_for_function(f"() => {sagittal}.toDataURL() !== window.sagittalBefore", timeout=LOAD_TIMEOUT_MS)
    before = gray(page.evaluate("() => window.sagittalBefore"))
    after = gray(page.evaluate(f"() => {sagittal}.toDataURL()"))
    assert mismatch(before, after) > 1, "the crosshairs moved the sagittal plane"
    page.click("[data-mpr-close]")
    assert page.locator("[data-mpr]").is_hidden()


def four_ct_series(alliance_world: Any) -> tuple[Any, list[str]]:
    """One study, three CT series long enough that MPR is still loading when the reader
    switches: A (series 2, opened first) of 100 slices of 320x320, B of 90 of 256, C of 110
    of 320; and D, 6 slices that make no volume. Returns the study and the series' UIDs."""
    made = [
        ct_series(CtSpec(slices=100, size=320, spacing=1.0)),
        ct_series(CtSpec(slices=90, size=256, spacing=1.2)),
        ct_series(CtSpec(slices=110, size=320, spacing=0.9)),
        ct_series(CtSpec(slices=6, size=64)),
    ]
    study_uid = made[0][0].StudyInstanceUID
    for number, series in enumerate(made[1:], start=3):
        for ds in series:
            ds.StudyInstanceUID = study_uid
            ds.SeriesNumber, ds.SeriesDescription = number, f"AXIAL {number}"
    for series in made:
        study = store_series(series, alliance_world.clin_a)
    return study, [str(series[0].SeriesInstanceUID) for series in made]


# Records every (state, series) MPR announces on #viewer, with the status line and the
# moment (performance.now()) and what the axial view holds then (a PNG data URL, or null
# without a canvas). window.mprSwitchOn(state, from, to) clicks series `to` in the
# list in the same task as MPR next announces `state` for series `from`: the click lands
# while the volume is surely still loading. Every frame request's series and start time is
# kept too (resource timing), to see which series' slices were asked for after a switch.
RECORD_MPR_SWITCH_JS = """() => {
  const viewer = document.getElementById("viewer");
  window.mprStates = [];
  window.mprSwitches = [];
  window.frameRequests = [];
  let plan = null;
  window.mprSwitchOn = (state, from, to) => { plan = { state, from, to }; };
  performance.setResourceTimingBufferSize(100000);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const found = entry.name.match(/\\/series\\/([0-9.]+)\\/instances\\/[0-9.]+\\/frames\\//);
      if (found) window.frameRequests.push({ series: found[1], url: entry.name, start: entry.startTime });
    }
  }).observe({ type: "resource", buffered: true });
  new MutationObserver(() => {
    const state = viewer.dataset.mprState;
    const series = viewer.dataset.mprSeries ?? null;
    const last = window.mprStates.at(-1);
    if (last && last.state === state && last.series === series) return;
    const status = document.querySelector("[data-mpr-status]")?.textContent ?? "";
    const canvas = document.querySelector("[data-mpr-view=axial] canvas");
    const axial = canvas ? canvas.toDataURL("image/png") : null;
    const detail = viewer.dataset.mprDetail ?? null;
    window.mprStates.push({ state, series, detail, at: performance.now(), status, axial });
    if (plan && plan.state === state && plan.from === series) {
      const { to } = plan;
      plan = null;
      window.mprSwitches.push({ to, at: performance.now(), status });
      document.querySelector(`[data-series-list] button[data-series-uid="${to}"]`).click();
    }
  }).observe(viewer, { attributes: true, attributeFilter: ["data-mpr-state", "data-mpr-series"] });
}"""


def mpr_settles(page: Any, series_uid: str, console: list[str]) -> None:
    """MPR reaches full detail of `series_uid` (not a stale series', not stuck at a preview)."""
    try:
        page.wait_for_function(
            """(uid) => { const v = document.getElementById("viewer").dataset;
                          return v.mprState === "failed" || (v.mprState === "ready" && v.mprSeries === uid); }""",
            arg=series_uid,
            timeout=120_000,
        )
    except Exception:  # noqa: BLE001 - say where it stopped instead of a bare timeout
        states = page.evaluate("() => window.mprStates.map((s) => `${s.state} ${s.series} ${s.status}`)")
        pytest.fail("MPR never reached full detail:\n" + "\n".join(states + console[-20:]))
    viewer = page.locator("#viewer")
    assert viewer.get_attribute("data-mpr-state") == "ready", "\n".join(console)
    assert viewer.get_attribute("data-mpr-detail") == "full"
    assert page.locator(PANE0).get_attribute("data-series-uid") == series_uid, "MPR shows the pane's series"
    assert page.locator("[data-mpr-status]").inner_text() == ""


def switched(page: Any, switch: int, console: list[str]) -> dict[str, Any]:
    """The `switch`-th switch of the recorder, once it has happened."""
    try:
        page.wait_for_function(f"() => window.mprSwitches.length > {switch}", timeout=120_000)
    except Exception:  # noqa: BLE001
        states = page.evaluate("() => window.mprStates.map((s) => `${s.state} ${s.series} ${s.status}`)")
        pytest.fail("MPR never showed the preview to switch from:\n" + "\n".join(states + console[-20:]))
    found: dict[str, Any] = page.evaluate(f"() => window.mprSwitches[{switch}]")
    return found


def states_between(page: Any, start: float, end: float = float("inf")) -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = page.evaluate("() => window.mprStates")
    return [s for s in states if start < s["at"] < end]


def frames_asked_between(page: Any, series_uid: str, start: float, end: float) -> int:
    requests = page.evaluate("() => window.frameRequests")
    return sum(1 for r in requests if r["series"] == series_uid and start < r["start"] < end)


def test_mpr_reaches_full_detail_of_the_series_opened_while_it_loads(
    sign_in: Any, live_site: Any, alliance_world: Any, artifacts: Path
) -> None:
    """The reader opens MPR of series A and, while its volume is still loading (a preview on
    screen), opens series B in the pane: MPR follows to B and reaches full detail of B, with
    no state of A announced after the switch and none of A's slices asked for after it. Then
    C, and back to A (its volume abandoned half loaded before) while C's loads; then B, MPR
    closed and opened again before B has loaded in the pane. Each reaches full detail. D,
    which makes no volume, closes MPR. And with MPR closed, the pane's own prefetch of a
    series is abandoned when the reader opens another: none of its slices asked for after."""
    study, (a_uid, b_uid, c_uid, d_uid) = four_ct_series(alliance_world)
    page = sign_in(alliance_world.owner)
    page.set_viewport_size({"width": 1366, "height": 800})
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    open_drawn(page, live_site.url, study.study_uid)
    wait_loaded(page)
    assert page.locator(PANE0).get_attribute("data-series-uid") == a_uid
    page.wait_for_function("() => !document.querySelector('[data-action=mpr]').disabled")
    page.wait_for_selector(f"[data-series-list] button[data-series-uid='{c_uid}']")
    page.evaluate(RECORD_MPR_SWITCH_JS)
    # A load-pool request ends when its image is decoded and the next one starts 5 ms later:
    # a request of the old series starting just after a switch was due before it.
    grace = 50

    # A, then B as soon as A's preview is on screen.
    page.evaluate(f"() => window.mprSwitchOn('reduced', '{a_uid}', '{b_uid}')")
    page.click("[data-action=mpr]")
    first = switched(page, 0, console)
    loaded, total = map(int, re.findall(r"\d+", first["status"])[-2:])
    assert loaded < total == 100, f"A's volume was still loading at the switch: {first['status']}"
    mpr_settles(page, b_uid, console)
    later = states_between(page, first["at"])
    assert later and all(s["series"] == b_uid for s in later), [(s["state"], s["series"]) for s in later]
    # Nothing of A stays on screen while B loads: the views are emptied at the switch.
    assert later[0]["state"] == "loading"
    assert later[0]["axial"] is None or gray(later[0]["axial"]).std() == 0, "A's picture left while B loads"
    assert gray(later[-1]["axial"]).std() > 10, "B's axial plane drawn"
    assert frames_asked_between(page, a_uid, first["at"] + grace, float("inf")) == 0, "A's volume was abandoned"
    page.wait_for_timeout(300)
    shot(page, artifacts, "viewer-mpr-after-switch")
    for plane in ("axial", "sagittal", "coronal", "mip"):
        assert spread(page.locator(f"[data-mpr-view={plane}]").screenshot()) > 10, plane

    # C, then back to A as soon as C's preview is on screen.
    page.evaluate(f"() => window.mprSwitchOn('reduced', '{c_uid}', '{a_uid}')")
    page.click(f"[data-series-list] button[data-series-uid='{c_uid}']")
    back = switched(page, 1, console)
    mpr_settles(page, a_uid, console)
    later = states_between(page, back["at"])
    assert all(s["series"] == a_uid for s in later), [(s["state"], s["series"]) for s in later]
    assert frames_asked_between(page, c_uid, back["at"] + grace, float("inf")) == 0, "C's volume was abandoned"

    # B, and MPR closed and opened again while the pane loads it.
    page.click(f"[data-series-list] button[data-series-uid='{b_uid}']")
    page.click("[data-mpr-close]")
    assert page.locator("[data-mpr]").is_hidden()
    page.click("[data-action=mpr]")  # enabled once B makes a volume
    mpr_settles(page, b_uid, console)

    # D makes no volume: MPR closes, and its button waits for a series that does.
    page.click(f"[data-series-list] button[data-series-uid='{d_uid}']")
    page.wait_for_function("() => document.getElementById('viewer').dataset.mprState === 'closed'")
    assert page.locator("[data-mpr]").is_hidden()
    wait_loaded(page)
    assert page.locator("[data-action=mpr]").is_disabled()

    # MPR closed: C (half of it fetched by MPR before), and B as soon as the pane has C and
    # its prefetcher has started on the rest of C's slices.
    page.evaluate(
        """([from, to]) => {
            const pane = document.querySelector("[data-pane='0']");
            new MutationObserver((_, observer) => {
              if (pane.dataset.seriesUid !== from || pane.dataset.loaded !== "true") return;
              observer.disconnect();
              window.mprSwitches.push({ to, at: performance.now() });
              document.querySelector(`[data-series-list] button[data-series-uid="${to}"]`).click();
            }).observe(pane, { attributes: true, attributeFilter: ["data-loaded"] });
        }""",
        [c_uid, b_uid],
    )
    page.click(f"[data-series-list] button[data-series-uid='{c_uid}']")
    third = switched(page, 2, console)
    wait_loaded(page)
    assert page.locator(PANE0).get_attribute("data-series-uid") == b_uid
    page.wait_for_timeout(500)
    asked = page.evaluate("() => window.frameRequests")
    assert len({r["url"] for r in asked if r["series"] == c_uid}) < 110, "C's slices were not all fetched"
    assert frames_asked_between(page, c_uid, third["at"] + grace, float("inf")) == 0, "C's prefetch was abandoned"
    # The prefetcher runs for B: the pane goes to B's last slice.
    page.keyboard.press("End")
    settles_on(page, 89)
