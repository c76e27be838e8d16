"""The reader's toolkit in Chromium (issue 15, items 10-12): scrolling bursts that end on
the slice asked for, orientation markers, the HU probe, ROI statistics, the jump keys and
priors opened side by side with synchronized scrolling.

Screenshots go to /work/wt/notes/shots/ (for the issue) and test-artifacts/viewer/."""

from __future__ import annotations

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
        f"() => document.querySelector(\"{pane}\").dataset.loaded === 'true'", timeout=LOAD_TIMEOUT_MS
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
    text = page.locator(f"{PANE0} svg").first.text_content()
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


@pytest.fixture
def ct_with_prior(alliance_world: Any) -> tuple[Any, Any]:
    """Two CTs of one patient; the prior's slices lie 5 mm further toward the feet."""
    current = store_series(ct_series(CtSpec()), alliance_world.clin_a)
    prior_slices = ct_series(CtSpec())
    for ds in prior_slices:
        x, y, z = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, z - 5.0]
        ds.SliceLocation = z - 5.0
        ds.StudyDate, ds.AccessionNumber = "20240105", "A6001"
    prior = store_series(prior_slices, alliance_world.clin_a)
    assert prior.patient_id == current.patient_id
    return current, prior


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
