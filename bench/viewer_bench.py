"""Viewer benchmark: time to the first image and the scroll rate, in Debian's Chromium.

One run makes a throw-away database and data folder, stores a --slices CT series
(512x512, 16 bit) through the ingest path, starts gunicorn on a loopback port with the
project's settings (static files collected, served by WhiteNoise), signs a doctor in, and
drives /viewer/study/<uid>/ with Playwright:

- first image (after visits that warm the server's workers): from navigation start to
  the first image drawn in the main pane (performance.now() when Cornerstone's first
  IMAGE_RENDERED fires), with an empty browser cache, on loopback and on a line
  throttled with Chromium's network emulation (CDP Network.emulateNetworkConditions:
  10 Mbit/s down and up, 50 ms latency); also a second visit with the cache warm. Median of --runs.
- scroll rate: with the series loaded, the slices from first to last one key press at a
  time, each press waiting for the image to be drawn; frames per second over the stack.

--profile mpr: with the series loaded in the stack view, the reader asks for MPR: the
time from the click to the axial, sagittal and coronal planes drawn over the whole extent
of the volume (the viewer's data-mpr-ms; at reduced detail while the series loads), and to
full detail (data-mpr-full-ms), on loopback, median of --runs; per run, the viewer's
performance marks (each step after the click) and the CPU seconds of the web server and of
each kind of Chromium process from the click to full detail.

--profile phone: the first image only, as a phone sees it: a 390x844 touch screen
(mobile, 3 device pixels per CSS pixel; the viewer takes its touch layout) on the
throttled line (10 Mbit/s, 50 ms), empty cache and warm; its own section in the results.

Chromium runs headless with --disable-gpu, so WebGL is SwiftShader (software) on the
CPU: a real GPU draws faster. Needs PostgreSQL on 127.0.0.1:5432 (trust auth).

  .venv/bin/python bench/viewer_bench.py --results bench/RESULTS.md
  .venv/bin/python bench/viewer_bench.py --profile phone --results bench/RESULTS.md
  .venv/bin/python bench/viewer_bench.py --profile mpr --results bench/RESULTS.md
  .venv/bin/python bench/viewer_bench.py --slices 100 --runs 1     # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.processes import free_port  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
CHROMIUM = "/usr/bin/chromium"
TRACE = bool(os.environ.get("VIEWER_BENCH_TRACE"))  # print every request's timing (start, end, bytes)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}
THROTTLED = {"offline": False, "latency": 50, "downloadThroughput": 10e6 / 8, "uploadThroughput": 10e6 / 8}
PANE = "[data-pane='0']"
FIRST_IMAGE_JS = "() => Number(document.getElementById('viewer').dataset.firstImageMs || 0)"
TRACE_JS = """() => performance.getEntriesByType('resource').map((e) => [
    e.startTime.toFixed(0).padStart(6), e.responseEnd.toFixed(0).padStart(6),
    String(e.transferSize).padStart(8), e.name.slice(-70)].join(' '))"""
MARKS_JS = "() => Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]))"
BYTES_BEFORE_FIRST_IMAGE_JS = """(t) => performance.getEntriesByType('resource')
    .filter((e) => e.responseEnd <= t).reduce((sum, e) => sum + e.transferSize, 0)"""
SCROLL_JS = """async () => {
  const element = document.querySelector("[data-pane='0'] [data-viewport]");
  // A key that changes nothing (Home on the first slice) draws nothing: give up waiting after
  // `ms` (an evaluate has no timeout of its own, and the bench would wait forever).
  const drawn = (ms) => new Promise((done) => {
    const timer = setTimeout(() => done(false), ms);
    element.addEventListener("CORNERSTONE_IMAGE_RENDERED", () => { clearTimeout(timer); done(true); }, {once: true});
  });
  let missed = 0;
  const press = async (key, ms = 10000) => {
    const next = drawn(ms);
    document.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true}));
    if (!(await next) && key !== "Home") missed += 1;
  };
  const count = Number(document.querySelector("[data-pane='0']").dataset.count);
  const pass = async () => {
    await press("Home", 1000);
    const start = performance.now();
    for (let i = 1; i < count; i += 1) await press("ArrowDown");
    return (count - 1) / ((performance.now() - start) / 1000);
  };
  const first = await pass();   // loads whatever the prefetcher has not fetched yet
  const loaded = await pass();
  if (missed) throw new Error(`${missed} key presses drew no image`);
  return {slices: count, first_pass_fps: first, loaded_fps: loaded};
}"""


def ct_slice(size: int, z: float) -> bytes:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y, x = (y - size / 2) / (size / 2), (x - size / 2) / (size / 2)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[(x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1.0] = 40.0
    lung = 0.22 + 0.1 * np.sin(z * 0.05)
    for cx in (-0.38, 0.38):
        hu[((x - cx) / lung) ** 2 + ((y + 0.05) / (lung * 1.3)) ** 2 <= 1.0] = -820.0
    hu[(x**2 + (y - 0.45) ** 2) <= (0.08 + 0.03 * np.cos(z * 0.07)) ** 2] = 700.0
    hu += np.random.default_rng(int(z)).normal(0, 15, hu.shape).astype(np.float32)
    return np.clip(hu + 1024.0, 0, 4095).astype("<u2").tobytes()


def ct_files(slices: int, size: int) -> Iterator[bytes]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study_uid, series_uid = generate_uid(), generate_uid()
    for i in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID, ds.StudyDescription = "BENCH^VIEWER", "VB-1", "CT CHEST"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "CT", 1, "AXIAL", i + 1
        ds.StudyDate, ds.StudyTime = "20260301", "090000"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-180, -180, -float(i)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
        ds.PixelData = ct_slice(size, float(i))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        yield out.getvalue()


def prepare(env: dict[str, str], slices: int, size: int) -> tuple[str, str]:
    """Migrate, collect static files, store the CT; return (study UID, session cookie)."""
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
        subprocess.run(manage + command, env=env, cwd=ROOT, check=True)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "alliance.settings"
    import django

    django.setup()
    from django.test import Client

    from alliance import audit, services
    from imaging.ingest import ingest_bytes

    by = audit.SYSTEM
    alliance = services.alliance_get_or_create(name="Bench Alliance", by=by)
    clinic = services.institution_create(
        alliance=alliance, name="Bench Clinic", level="township", ae_title="VBENCH", by=by
    )
    doctor = services.doctor_create(institution=clinic, username="viewer-bench", roles=["clinician"], by=by)
    started = time.perf_counter()
    uid = ""
    for data in ct_files(slices, size):
        uid = ingest_bytes(data, institution=clinic, actor=by, via="bench").instance.series.study.study_uid
    print(f"stored {slices} slices in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    client = Client()
    client.force_login(doctor.user)
    return uid, client.cookies["sessionid"].value


@contextmanager
def web_server(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "alliance.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "4"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=20)


def first_image(browser: Any, url: str, cookie: dict[str, str], throttled: bool, phone: bool = False) -> dict[str, Any]:
    context = browser.new_context(**(PHONE if phone else {"viewport": {"width": 1280, "height": 800}}))
    context.add_cookies([cookie])
    page = context.new_page()
    if throttled:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", THROTTLED)
    try:
        figures = {}
        for visit in ("cold", "warm"):
            page.goto(url)
            page.wait_for_function(FIRST_IMAGE_JS, timeout=120_000)
            ms = page.evaluate(FIRST_IMAGE_JS)
            figures[f"{visit}_ms"] = ms
            figures[f"{visit}_kb"] = page.evaluate(BYTES_BEFORE_FIRST_IMAGE_JS, ms) / 1024
            if TRACE:
                print(
                    visit, "throttled" if throttled else "loopback", *page.evaluate(TRACE_JS), sep="\n", file=sys.stderr
                )
            for mark, at in page.evaluate(MARKS_JS).items():
                figures[f"{visit}_{mark.removeprefix('viewer:')}_ms"] = at
        if phone:
            viewer = page.locator("#viewer")
            figures["layout"] = f"{viewer.get_attribute('data-ui')}, {viewer.get_attribute('data-mode')}"
        return figures
    finally:
        context.close()


def scroll_rate(browser: Any, url: str, cookie: dict[str, str]) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([cookie])
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.loaded === 'true'", timeout=120_000)
        page.wait_for_load_state("networkidle", timeout=120_000)
        return page.evaluate(SCROLL_JS)
    finally:
        context.close()


def measure(base: str, study_uid: str, session: str, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = f"{base}/viewer/study/{study_uid}/"
    cookie = {"name": "sessionid", "value": session, "url": base}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # A running site has served pages before: the first request to a fresh worker
        # imports the views and would be timed otherwise. One visit per worker warms it.
        for _ in range(2):
            first_image(browser, url, cookie, throttled=False)
        result: dict[str, Any] = {}
        for name, throttled in (("loopback", False), ("throttled_10mbit_50ms", True)):
            samples = [first_image(browser, url, cookie, throttled) for _ in range(runs)]
            keys = set.intersection(*(set(s) for s in samples))  # a mark may come after the first image
            result[name] = {key: round(statistics.median(s[key] for s in samples), 1) for key in sorted(keys)}
        result["scroll"] = {k: round(v, 1) for k, v in scroll_rate(browser, url, cookie).items()}
        gpu = scroll_rate(browser, url + "?render=gpu", cookie)
        result["scroll"]["software_webgl_loaded_fps"] = round(gpu["loaded_fps"], 1)
        browser.close()
    return result


def measure_phone(base: str, study_uid: str, session: str, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = f"{base}/viewer/study/{study_uid}/"
    cookie = {"name": "sessionid", "value": session, "url": base}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(2):  # warm the server's workers, as in measure()
            first_image(browser, url, cookie, throttled=False, phone=True)
        samples = [first_image(browser, url, cookie, throttled=True, phone=True) for _ in range(runs)]
        browser.close()
    keys = set.intersection(*(set(s) for s in samples)) - {"layout"}
    result: dict[str, Any] = {key: round(statistics.median(s[key] for s in samples), 1) for key in sorted(keys)}
    result["layout"] = samples[0]["layout"]
    result["cold_all_ms"] = [round(s["cold_ms"]) for s in samples]
    return {"phone_10mbit_50ms": result}


MPR_MARKS_JS = """() => Object.fromEntries(performance.getEntriesByType('mark')
    .filter((m) => m.name.startsWith('viewer:mpr-')).map((m) => [m.name.slice(11), m.startTime]))"""


def _cpu_seconds_by_kind(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of root_pid's descendants, summed by kind: the
    web server, and each kind of Chromium process (renderer, GPU process, browser, network
    service...). Linux /proc; empty elsewhere."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    todo = list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            words = (proc / str(pid) / "cmdline").read_text().replace("\0", " ").split()
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            continue
        if any("gunicorn" in w for w in words[:3]):
            kind = "web server"
        elif words and "chrom" in words[0]:
            kind = next((w.split("=", 1)[1] for w in words if w.startswith("--type=")), "browser")
            sub = next((w.rsplit(".", 1)[-1] for w in words if w.startswith("--utility-sub-type=")), "")
            kind = f"chromium {sub or kind}"
        else:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def mpr_time(browser: Any, url: str, cookie: dict[str, str]) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([cookie])
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function(f"() => document.querySelector(\"{PANE}\").dataset.loaded === 'true'", timeout=120_000)
        page.wait_for_function("() => !document.querySelector('[data-action=mpr]').disabled", timeout=120_000)
        cpu_before = _cpu_seconds_by_kind(os.getpid())
        page.click("[data-action=mpr]")
        page.wait_for_function(
            "() => ['ready', 'failed'].includes(document.getElementById('viewer').dataset.mprState)", timeout=300_000
        )
        cpu_after = _cpu_seconds_by_kind(os.getpid())
        viewer = page.locator("#viewer")
        if viewer.get_attribute("data-mpr-state") != "ready":
            raise RuntimeError("MPR failed to load")
        marks = page.evaluate(MPR_MARKS_JS)
        click = marks.pop("click", 0.0)
        shown = float(viewer.get_attribute("data-mpr-ms"))
        return {
            "mpr_ms": shown,
            # A viewer before the preview (until 2026-12) drew only from the whole volume.
            "full_ms": float(viewer.get_attribute("data-mpr-full-ms") or shown),
            "marks": {name: round(at - click) for name, at in sorted(marks.items(), key=lambda kv: kv[1])},
            "cpu_s": {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in sorted(cpu_after.items())},
        }
    finally:
        context.close()


def measure_mpr(base: str, study_uid: str, session: str, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = f"{base}/viewer/study/{study_uid}/"
    cookie = {"name": "sessionid", "value": session, "url": base}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        first_image(browser, url, cookie, throttled=False)  # warm the server's workers
        samples = [mpr_time(browser, url, cookie) for _ in range(runs)]
        browser.close()
    shown = [s["mpr_ms"] for s in samples]
    full = [s["full_ms"] for s in samples]
    return {
        "mpr_loopback": {
            "median_ms": round(statistics.median(shown)),
            "all_ms": [round(v) for v in shown],
            "full_detail_median_ms": round(statistics.median(full)),
            "full_detail_all_ms": [round(v) for v in full],
            # Per run: each step's time after the click (the viewer's performance marks), and
            # the CPU seconds each process kind spent from the click to full detail.
            "runs": [{"marks_ms": s["marks"], "cpu_s": s["cpu_s"]} for s in samples],
        }
    }


def write_mpr_results(path: Path, figures: dict[str, Any], command: str) -> None:
    mpr = figures["mpr_loopback"]
    ms, full = mpr["median_ms"], mpr["full_detail_median_ms"]
    section = f"""## Viewer, MPR

`{command}`: {figures["machine"]}. The machine was shared with other work (other helpers'
builds and tests) while this ran. Chromium headless without a GPU: the volume viewports
draw with the software WebGL (SwiftShader). {figures["slices"]}-slice CT, 512x512, 16 bit,
stored uncompressed, on loopback. Time from the click on MPR (the series already loaded in
the stack view) to the axial, sagittal and coronal planes drawn over the whole extent of the
volume, at reduced detail while the series loads (the viewer says so); median of
{figures["runs"]} runs ({", ".join(f"{v} ms" for v in mpr["all_ms"])}). Full detail, every slice
in the views: {", ".join(f"{v} ms" for v in mpr["full_detail_all_ms"])}.

| | three planes drawn | full detail | target |
|---|---|---|---|
| loopback | {ms} ms | {full} ms | planes < 3 s ({"met" if ms < 3000 else "NOT met"}) |
"""
    write_section(path, "## Viewer, MPR", section)


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under `heading` (up to the next "## "), or add it at the end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    start = text.find(f"{heading}\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    path.write_text(text, encoding="utf-8")


def write_phone_results(path: Path, figures: dict[str, Any], command: str) -> None:
    phone = figures["phone_10mbit_50ms"]
    cold = phone["cold_ms"]
    section = f"""## Viewer, phone profile

`{command}`: {figures["machine"]}. Chromium headless as a phone: 390x844 touch screen,
mobile, 3 device pixels per CSS pixel (the viewer took its layout: {phone["layout"]}), on a
line of 10 Mbit/s down and up with 50 ms latency (Chromium's network emulation); without a
GPU, so Cornerstone draws on the CPU. {figures["slices"]}-slice CT, 512x512, 16 bit, stored
uncompressed; median of {figures["runs"]} runs (empty cache: {", ".join(f"{v} ms" for v in phone["cold_all_ms"])}).
Time from navigation start to the first image drawn from the slice's stored pixels; KB is
what crossed the network before it. Cornerstone's code had been parsed and run
{phone["cold_engine-loaded_ms"]:.0f} ms after navigation start.

| | first image | KB | target |
|---|---|---|---|
| empty cache | {cold:.0f} ms | {phone["cold_kb"]:.0f} | < 2 s ({"met" if cold < 2000 else "NOT met"}) |
| warm cache | {phone["warm_ms"]:.0f} ms | {phone["warm_kb"]:.0f} | |
"""
    write_section(path, "## Viewer, phone profile", section)


def write_results(path: Path, figures: dict[str, Any], command: str) -> None:
    loop, slow, scroll = figures["loopback"], figures["throttled_10mbit_50ms"], figures["scroll"]
    section = f"""## Viewer

`{command}`: {figures["machine"]}. Chromium headless without a GPU, so Cornerstone
draws on the CPU; {figures["slices"]}-slice CT, 512x512, 16 bit, stored uncompressed; median
of {figures["runs"]} runs. Time from navigation start to the first image drawn by Cornerstone
from the slice's stored pixels (the viewer shows no preview before it); KB is what crossed
the network before it. With an empty cache, Cornerstone's code had been parsed and run
{loop["cold_engine-loaded_ms"]:.0f} ms after navigation start on loopback and
{slow["cold_engine-loaded_ms"]:.0f} ms on the throttled line.

| line | first image, empty cache | KB | first image, warm cache | target |
|---|---|---|---|---|
| loopback | {loop["cold_ms"]:.0f} ms | {loop["cold_kb"]:.0f} | {loop["warm_ms"]:.0f} ms | < 1 s |
| 10 Mbit/s, 50 ms latency | {slow["cold_ms"]:.0f} ms | {slow["cold_kb"]:.0f} | {slow["warm_ms"]:.0f} ms | < 3 s |

Scroll rate through the {scroll["slices"]} slices, one key press per slice, each waiting for the
image to be drawn: {scroll["loaded_fps"]:.0f} frames/s once loaded (target 20 or more);
{scroll["first_pass_fps"]:.0f} frames/s on the first pass right after opening, while the
prefetcher is still fetching. With the software WebGL renderer instead of the CPU path
(`?render=gpu`): {scroll["software_webgl_loaded_fps"]:.0f} frames/s, which is why the viewer
draws on the CPU where WebGL is software.
"""
    write_section(path, "## Viewer", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", type=Path, help="rewrite this file's Viewer section")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log)")
    parser.add_argument("--profile", choices=["desktop", "phone", "mpr"], default="desktop")
    parser.add_argument("--port", type=int, default=0, help="the web server's port (default: any free one)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # the run itself keeps both cores busy: this is the machine's own
    work = Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    database = f"viewer_bench_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{database}",
        "DATA_DIR": str(work / "data"),
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "DEBUG": "0",
    }
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database], check=True)
    try:
        study_uid, session = prepare(env, args.slices, 512)
        with web_server(env, args.port or free_port(), work / "gunicorn.log") as base:
            measured = {"phone": measure_phone, "mpr": measure_mpr}.get(args.profile, measure)
            figures = measured(base, study_uid, session, args.runs)
        load = f"load {load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after it (1-minute average)"
        figures.update(
            slices=args.slices, runs=args.runs, machine=f"{os.cpu_count()} cores, {platform.machine()}, {load}"
        )
        print(json.dumps(figures, indent=2))
        if args.results:
            command = "python bench/viewer_bench.py" + (f" --slices {args.slices}" if args.slices != 300 else "")
            command += f" --runs {args.runs}" if args.runs != 3 else ""
            if args.profile == "phone":
                write_phone_results(args.results, figures, command + " --profile phone")
            elif args.profile == "mpr":
                write_mpr_results(args.results, figures, command + " --profile mpr")
            else:
                write_results(args.results, figures, command)
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
