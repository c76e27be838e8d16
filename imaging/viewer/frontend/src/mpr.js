// MPR: axial, sagittal and coronal views of a CT or MR series with crosshairs, and a MIP
// of a slab whose thickness the reader sets, in Cornerstone3D volume viewports. Nothing
// of it runs until the reader asks: the stack view's first image never waits for it. The
// volume is streamed from the same WADO-RS frame image ids as the stack (their metadata is
// already in the loader's metadata manager), decoded in the same web workers; frames the
// stack has already loaded come from Cornerstone's image cache, not the network.
//
// In steps, because a volume of a few hundred slices costs seconds to fetch (one request
// per slice) and, on a software WebGL, seconds more to turn into a texture and draw. First
// previews: 33 slices spread evenly from the first to the last, then 65 (the 33 and one
// between each two), of images wider than PREVIEW_MAX_COLUMNS every 2x2 (or more) pixels
// averaged into one: the views show the whole volume at reduced detail, and the bar says
// so. Then, once every slice has arrived, the full volume replaces the preview in the same
// views (the reader's crosshairs, zoom and pan kept), and only then does the screen say it
// is ready.
import { Enums as CoreEnums, imageLoadPoolManager, imageLoader } from "@cornerstonejs/core";

import { tagValue, tagValues } from "./dicomweb.js";
import { onSliceShown, panes, slicePositions } from "./panehooks.js";

const MIN_SLICES = 20;
const MODALITIES = ["CT", "MR"];
const SPACING_TOLERANCE = 0.05; // of the mean gap between slices
const ORIENTATION_TOLERANCE = 1e-3;
const DEFAULT_SLAB_MM = 10;
const ENGINE_ID = "viewer-mpr";
const TOOL_GROUP_ID = "viewer-mpr-tools";
const PLANES = ["axial", "sagittal", "coronal", "mip"];
// Each count is one more than a power of two, so each preview's slices are among the
// next one's: nothing fetched for one is wasted.
const PREVIEW_SLICES = [33, 65];
const PREVIEW_MAX_COLUMNS = 256;
const STATUS_EVERY_MS = 250;
// Frames of the volume in flight at once while MPR loads it (the stack's prefetcher, which
// keeps fewer, is stopped meanwhile): the browser's six connections to the site kept busy.
const VOLUME_AT_ONCE = 6;

// Whether a series' slices make a volume: CT or MR, at least MIN_SLICES single-frame
// slices of one orientation, evenly spaced along their normal. null when they do; else
// the reason (for the console; the button only says what MPR needs).
export function volumeProblem(datasets) {
  if (datasets.length < MIN_SLICES) return "too few slices";
  if (!MODALITIES.includes(tagValue(datasets[0], "00080060"))) return "not CT or MR";
  if (datasets.some((ds) => Number(tagValue(ds, "00280008") ?? 1) > 1)) return "multi-frame";
  const first = tagValues(datasets[0], "00200037").map(Number);
  if (first.length !== 6) return "no orientation";
  for (const ds of datasets) {
    const iop = tagValues(ds, "00200037").map(Number);
    if (iop.length !== 6 || iop.some((v, i) => Math.abs(v - first[i]) > ORIENTATION_TOLERANCE)) return "mixed orientations";
  }
  const geometry = slicePositions(datasets);
  if (!geometry) return "no positions";
  const gaps = geometry.positions.slice(1).map((p, i) => Math.abs(p - geometry.positions[i]));
  const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
  if (!(mean > 0) || gaps.some((gap) => Math.abs(gap - mean) > SPACING_TOLERANCE * mean)) return "uneven spacing";
  return null;
}

function element(tag, attributes = {}, text = "") {
  const made = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, value);
  if (text) made.textContent = text;
  return made;
}

// The MPR screen over the panes: four views and a bar with the slab thickness and Close.
function buildScreen(root, s) {
  const screen = element("section", { class: "vw-mpr", "data-mpr": "", "aria-label": s.mpr });
  screen.hidden = true;
  const bar = element("div", { class: "vw-mpr-bar" });
  const slabLabel = element("label", { class: "vw-mpr-slab" });
  const slabText = element("span", { "data-slab-text": "" });
  const slab = element("input", { type: "range", min: "1", max: "60", step: "1", value: String(DEFAULT_SLAB_MM), "data-slab": "" });
  slabLabel.append(slabText, slab);
  const close = element("button", { type: "button", "data-mpr-close": "" }, s.mpr_close);
  const status = element("span", { class: "vw-mpr-status", "data-mpr-status": "", role: "status" });
  bar.append(slabLabel, status, close);
  const grid = element("div", { class: "vw-mpr-grid" });
  const views = {};
  for (const plane of PLANES) {
    const cell = element("div", { class: "vw-mpr-cell" });
    const view = element("div", { class: "vw-mpr-view", "data-mpr-view": plane });
    view.addEventListener("contextmenu", (event) => event.preventDefault());
    cell.append(view, element("span", { class: "vw-mpr-label" }, s[`mpr_${plane}`]));
    grid.append(cell);
    views[plane] = view;
  }
  screen.append(bar, grid);
  root.querySelector(".vw-main").append(screen);
  return { screen, slab, slabText, close, status, views };
}

// The previews of an n-slice volume: each one's slice indices (first and last included,
// evenly spread, each preview's among the next one's), and how many pixels along each side
// a preview averages into one. None when the volume is small enough to show at once.
export function previewPlan(n, columns, rows) {
  const block = Math.max(1, Math.ceil(Math.max(columns, rows) / PREVIEW_MAX_COLUMNS));
  let counts = PREVIEW_SLICES.filter((count) => count < n);
  if (!counts.length && block > 1) counts = [n];
  const spread = (count) => Array.from({ length: count }, (_, k) => Math.round((k * (n - 1)) / (count - 1)));
  return { levels: counts.map(spread), block };
}

// The preview's voxels (Float32, modality values) and geometry, from the full volume's
// geometry and the decoded images of the slices the plan took. A voxel is the mean of a
// block x block square of pixels (clamped at the right and bottom edges); preview slice k
// lies where slice k of an evenly spaced stack from the first to the last slice would,
// and holds the nearest real slice (at most half a slice gap away).
export function previewVolume({ dimensions, spacing, origin, direction }, images, block) {
  const [columns, rows, n] = dimensions;
  const width = Math.ceil(columns / block);
  const height = Math.ceil(rows / block);
  const count = images.length;
  const data = new Float32Array(width * height * count);
  // Each output column's source columns, clamped at the right edge.
  const sources = Int32Array.from({ length: width * block }, (_, i) => Math.min(i, columns - 1));
  const row = new Float32Array(width);
  images.forEach((image, k) => {
    const pixels = image.voxelManager?.getScalarData() ?? image.getPixelData();
    // Cornerstone's loader applies the modality LUT while decoding ("pre-scaling"); where
    // it did not, the rescale is applied here, so preview and volume hold the same values.
    const scaled = image.preScale?.scaled;
    const slope = (scaled ? 1 : (image.slope ?? 1)) / (block * block);
    const intercept = scaled ? 0 : (image.intercept ?? 0);
    for (let y = 0; y < height; y += 1) {
      row.fill(0);
      for (let dy = 0; dy < block; dy += 1) {
        const offset = Math.min(y * block + dy, rows - 1) * columns;
        for (let i = 0; i < width * block; i += 1) row[(i / block) | 0] += pixels[offset + sources[i]];
      }
      const at = (k * height + y) * width;
      for (let x = 0; x < width; x += 1) data[at + x] = row[x] * slope + intercept;
    }
  });
  const shift = (block - 1) / 2; // a block's centre, in pixels from its first pixel
  const rowDir = direction.slice(0, 3);
  const columnDir = direction.slice(3, 6);
  const previewOrigin = origin.map((v, i) => v + rowDir[i] * shift * spacing[0] + columnDir[i] * shift * spacing[1]);
  const gap = count > 1 ? (spacing[2] * (n - 1)) / (count - 1) : spacing[2];
  return {
    scalarData: data,
    dimensions: [width, height, count],
    spacing: [spacing[0] * block, spacing[1] * block, gap],
    origin: previewOrigin,
    direction: [...direction],
  };
}

// root: #viewer; config: the page config; current(): the active pane's { seriesUid,
// imageIds, datasets, voi } or null. Opening and closing MPR is announced on root
// ("viewer:mpr", detail { open }): the stack panes stop prefetching while it is open.
//
// MPR shows the active pane's series, and follows it: when the pane opens another series
// while MPR is open, what MPR was loading or showing is let go at once (its volume's queued
// requests with it, so the new series' slices wait behind none of them), and MPR starts
// again on the new series once the pane has it (or closes when it makes no volume). Each
// start is a run; a run that has been let go stops at its next step and never touches the
// screen again.
export function bindMpr({ root, config, current, cpuRendering }) {
  const s = config.strings;
  const button = root.querySelector("[data-action=mpr]");
  if (!button) return { update() {}, paneSeries() {} };
  let ui = null;
  let active = false; // the MPR screen is up (loading, or showing a volume)
  let run = 0; // the current run's number: a run whose number is no longer this has been let go
  let open = null; // what the current run has made: { engine, toolGroup, core, tools, volumeIds, cleanups }
  let following = null; // the series MPR waits for the active pane to open

  const update = () => {
    const pane = current();
    const problem = pane ? volumeProblem(pane.datasets) : "no series";
    button.disabled = !active && problem !== null; // while open, the button closes MPR
    button.title = problem === null ? s.mpr_title : s.mpr_unavailable;
    button.dataset.problem = problem ?? "";
  };

  const setSlabText = () => {
    ui.slabText.textContent = s.mpr_slab.replace("%(mm)s", ui.slab.value);
  };

  const announce = (isOpen) => root.dispatchEvent(new CustomEvent("viewer:mpr", { detail: { open: isOpen } }));
  // The volume's requests are prefetch requests of Cornerstone's load pool, as the stack's.
  const PREFETCH = CoreEnums.RequestType.Prefetch;
  let stackAtOnce = null;
  const volumeRequests = (loading) => {
    if (loading && stackAtOnce === null) {
      stackAtOnce = imageLoadPoolManager.getMaxSimultaneousRequests(PREFETCH);
      imageLoadPoolManager.setMaxSimultaneousRequests(PREFETCH, VOLUME_AT_ONCE);
    } else if (!loading && stackAtOnce !== null) {
      imageLoadPoolManager.setMaxSimultaneousRequests(PREFETCH, stackAtOnce);
      stackAtOnce = null;
    }
  };

  // Frees what MPR holds in Cornerstone's cache (its volumes; the preview's own slice
  // images), not the frames: those are the stack's too.
  const drop = (core, volumeId) => {
    const volume = core.cache.getVolume(volumeId);
    if (!volume) return;
    const local = volume.imageIds.filter((id) => id.startsWith(`${volumeId}_slice_`));
    core.cache.removeVolumeLoadObject(volumeId); // also cancels a load in progress
    for (const id of local) if (core.cache.getImageLoadObject(id)) core.cache.removeImageLoadObject(id, { force: true });
  };

  // Lets the current run go: what it made is destroyed, its volumes' loads cancelled (their
  // queued requests taken out of the load pool), and it stops at its next step.
  const letGo = () => {
    run += 1;
    if (!open) return;
    const { engine, toolGroup, core, tools, volumeIds, cleanups } = open;
    open = null;
    for (const cleanup of cleanups) cleanup();
    tools.ToolGroupManager.destroyToolGroup(toolGroup.id);
    engine.destroy();
    for (const volumeId of volumeIds) drop(core, volumeId);
    core.setUseCPURendering(cpuRendering, false);
  };

  // The screen up, saying it loads `seriesUid`.
  const loading = (seriesUid) => {
    ui ??= buildScreen(root, s);
    setSlabText();
    ui.screen.hidden = false;
    ui.status.textContent = s.mpr_loading;
    for (const key of ["mprMs", "mprFullMs", "mprDetail"]) delete root.dataset[key];
    root.dataset.mprSeries = seriesUid;
    root.dataset.mprState = "loading";
    button.setAttribute("aria-pressed", "true");
    if (!active) {
      active = true;
      announce(true);
      volumeRequests(true);
    }
  };

  const close = () => {
    if (!active) return;
    letGo();
    active = false;
    following = null;
    volumeRequests(false);
    ui.screen.hidden = true;
    delete root.dataset.mprSeries;
    root.dataset.mprState = "closed";
    button.setAttribute("aria-pressed", "false");
    announce(false);
    update();
  };

  // Run `mine` of MPR, on the active pane's series.
  const start = async (mine, pane) => {
    const live = () => mine === run; // false once closed, or started again, meanwhile
    const started = performance.now();
    const mark = (name) => performance.mark(`viewer:mpr-${name}`); // bench/viewer_bench.py reads these
    mark("click");
    loading(pane.seriesUid);
    // The previews' slices are asked for first, before MPR's code has loaded: as the stack
    // asks for the slice on screen (interaction requests go before the prefetcher's), the
    // first preview's before the second's, or taken from Cornerstone's cache where the
    // stack has them already.
    const { imageIds } = pane;
    const [rows, columns] = ["00280010", "00280011"].map((tag) => Number(tagValue(pane.datasets[0], tag)));
    const plan = previewPlan(imageIds.length, columns, rows);
    const asked = new Map();
    const ask = (k) => {
      if (!asked.has(k)) {
        const options = { requestType: CoreEnums.RequestType.Interaction, priority: 0 };
        asked.set(k, imageLoader.loadAndCacheImage(imageIds[k], options));
      }
      return asked.get(k);
    };
    const previewImages = plan.levels.map((level) =>
      Promise.all(level.map(ask)).catch((error) => {
        console.error(error); // no preview from these then
        return null;
      }),
    );

    const parts = await import("./mprparts.js");
    if (!live()) return;
    mark("code");
    const core = parts;
    const tools = { ...parts, Enums: parts.ToolEnums };
    // Volume viewports draw with WebGL only: the page may have picked Cornerstone's CPU
    // path for its stacks (a software WebGL); the MPR engine is made with WebGL anyway.
    core.setUseCPURendering(false, false); // false: the stack viewports keep their own path
    const engine = new core.RenderingEngine(ENGINE_ID);
    const { Enums } = core;
    const ids = Object.fromEntries(PLANES.map((plane) => [plane, `mpr-${plane}`]));
    const orientation = {
      axial: Enums.OrientationAxis.AXIAL,
      sagittal: Enums.OrientationAxis.SAGITTAL,
      coronal: Enums.OrientationAxis.CORONAL,
      mip: Enums.OrientationAxis.CORONAL,
    };
    engine.setViewports(
      PLANES.map((plane) => ({
        viewportId: ids[plane],
        type: Enums.ViewportType.ORTHOGRAPHIC,
        element: ui.views[plane],
        defaultOptions: { orientation: orientation[plane], background: [0, 0, 0] },
      })),
    );
    const toolGroup = tools.ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
    // The run's number in its volumes' ids: a run let go may still be creating its volume
    // when the next run of the same series creates its own.
    const volumeId = `cornerstoneStreamingImageVolume:${pane.seriesUid}:${mine}`;
    // No scheme (no colon): Cornerstone would take a preview's own slice image ids for ones
    // to load from a server when it looks for a default window.
    const previewId = `mpr-preview-${pane.seriesUid}-${mine}`;
    open = { engine, toolGroup, core, tools, volumeIds: [volumeId], cleanups: [] };
    const still = live;
    for (const Tool of [tools.CrosshairsTool, tools.ZoomTool, tools.PanTool]) tools.addTool(Tool); // idempotent
    toolGroup.addTool(tools.CrosshairsTool.toolName);
    toolGroup.addTool(tools.ZoomTool.toolName);
    toolGroup.addTool(tools.PanTool.toolName);
    for (const plane of ["axial", "sagittal", "coronal"]) toolGroup.addViewport(ids[plane], ENGINE_ID);
    toolGroup.setToolActive(tools.CrosshairsTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Primary }] });
    toolGroup.setToolActive(tools.ZoomTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Secondary }] });
    toolGroup.setToolActive(tools.PanTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Auxiliary }] });

    // Draws the given views; resolves once each has (its IMAGE_RENDERED).
    const render = (planes) => {
      const drawn = Promise.all(
        planes.map(
          (plane) => new Promise((resolve) => ui.views[plane].addEventListener(Enums.Events.IMAGE_RENDERED, resolve, { once: true })),
        ),
      );
      engine.renderViewports(planes.map((plane) => ids[plane]));
      return drawn;
    };
    // Puts a volume in the four views; `keep` holds the cameras to restore (the reader's
    // crosshairs position, zoom and pan on the preview), else each view starts centred.
    const show = async (id, keep = null) => {
      await core.setVolumesForViewports(engine, [{ volumeId: id }], [ids.axial, ids.sagittal, ids.coronal]);
      await core.setVolumesForViewports(
        engine,
        [{ volumeId: id, blendMode: Enums.BlendModes.MAXIMUM_INTENSITY_BLEND, slabThickness: Number(ui.slab.value) }],
        [ids.mip],
      );
      for (const plane of PLANES) {
        const viewport = engine.getViewport(ids[plane]);
        if (keep) viewport.setCamera(keep[plane]);
        if (pane.voi) viewport.setProperties({ voiRange: pane.voi });
      }
    };

    const volume = await core.volumeLoader.createAndCacheVolume(volumeId, { imageIds });
    if (!still()) {
      drop(core, volumeId); // let go before its volume was in the cache
      return;
    }
    mark("volume");
    const total = volume.imageIds.length;
    const loadedCount = () => volume.imageIds.filter((id) => core.cache.isLoaded(id)).length;
    let full = null;
    const loadFull = () => {
      full ??= new Promise((resolve) => volume.load(resolve));
      return full;
    };
    // The views' cameras, to keep across a change of volume; null before anything is shown.
    const cameras = () =>
      root.dataset.mprDetail ? Object.fromEntries(PLANES.map((p) => [p, engine.getViewport(ids[p]).getCamera()])) : null;
    let said = 0;
    const progress = (now = false) => {
      if (!still() || root.dataset.mprDetail !== "reduced" || (!now && performance.now() - said < STATUS_EVERY_MS)) return;
      said = performance.now();
      ui.status.textContent = s.mpr_reduced.replace("%(loaded)s", String(loadedCount())).replace("%(total)s", String(total));
    };
    const onModified = (event) => event.detail.volumeId === volumeId && progress();

    // The rest of the volume, as prefetch requests (after the previews' in the browser's
    // queue), while the previews are built and drawn.
    loadFull();
    let loaded = false;
    full.then(() => {
      loaded = true;
    });
    let shown = null; // the preview in the views
    for (const [level, pending] of previewImages.entries()) {
      const images = await pending;
      if (!still()) return;
      if (!images || loaded) break; // the whole volume is here: no use for a preview
      mark(`preview-${level}-frames`);
      // In the volume's order (along the slice normal), which may run the other way.
      const order = new Map(volume.imageIds.map((id, index) => [id, index]));
      images.sort((a, b) => order.get(a.imageId) - order.get(b.imageId));
      const geometry = previewVolume(volume, images, plan.block);
      const id = `${previewId}-${level}`;
      open.volumeIds.push(id);
      const preview = core.volumeLoader.createLocalVolume(id, {
        ...geometry,
        metadata: { ...volume.metadata, Columns: geometry.dimensions[0], Rows: geometry.dimensions[1] },
      });
      // Every slice to the texture on its first draw: a made volume starts with none marked,
      // and the first view drawn would show an empty texture.
      preview.invalidate();
      await show(id, cameras());
      await render(["axial", "sagittal", "coronal"]);
      if (!still()) return;
      mark(`preview-${level}`);
      if (shown) drop(core, shown);
      shown = id;
      if (root.dataset.mprDetail !== "reduced") {
        root.dataset.mprMs = String(Math.round(performance.now() - started));
        root.dataset.mprDetail = "reduced";
        root.dataset.mprState = "reduced";
        const unlisten = () => core.eventTarget.removeEventListener(Enums.Events.IMAGE_VOLUME_MODIFIED, onModified);
        core.eventTarget.addEventListener(Enums.Events.IMAGE_VOLUME_MODIFIED, onModified);
        open.cleanups.push(unlisten); // a cancelled load never settles `full`
        full.finally(unlisten);
        progress(true);
      }
      await render(["mip"]);
      if (!still()) return;
    }
    await loadFull();
    if (!still()) return;
    mark("loaded");
    // Full detail is claimed only for a volume that has every slice.
    if (volume.framesLoaded < total) throw new Error(`${total - volume.framesLoaded} of ${total} slices could not be loaded`);
    await show(volumeId, cameras());
    if (!still()) return;
    await render(PLANES);
    if (!still()) return;
    if (shown) drop(core, shown);
    mark("full");
    const ms = String(Math.round(performance.now() - started));
    root.dataset.mprMs ??= ms;
    root.dataset.mprFullMs = ms;
    root.dataset.mprDetail = "full";
    root.dataset.mprState = "ready";
    ui.status.textContent = "";
  };

  const launch = () => {
    const pane = current();
    if (!pane || volumeProblem(pane.datasets) !== null) {
      close();
      return;
    }
    letGo();
    const mine = run;
    start(mine, pane).catch((error) => {
      if (mine !== run) return; // a run let go meanwhile: its failure is not the screen's
      console.error(error);
      if (ui) ui.status.textContent = s.load_failed;
      root.dataset.mprState = "failed";
    });
  };

  // The active pane starts opening a series (isLoading), or has opened it or failed to.
  const paneSeries = (seriesUid, isLoading) => {
    if (!active) return;
    if (isLoading) {
      // The series on screen opened again: kept, unless MPR of it failed.
      if (following === null && seriesUid === root.dataset.mprSeries && root.dataset.mprState !== "failed") return;
      following = seriesUid;
      letGo();
      loading(seriesUid);
    } else if (seriesUid === following) {
      following = null;
      launch(); // or close, when the pane failed to open it or it makes no volume
    }
  };

  button.addEventListener("click", () => {
    if (active) close();
    else launch();
  });
  root.addEventListener("click", (event) => {
    if (event.target.closest?.("[data-mpr-close]")) close();
  });
  root.addEventListener("input", (event) => {
    if (!event.target.matches?.("[data-slab]") || !open) return;
    setSlabText();
    const mip = open.engine.getViewport("mpr-mip");
    mip.setBlendMode(open.core.Enums.BlendModes.MAXIMUM_INTENSITY_BLEND);
    mip.setSlabThickness(Number(ui.slab.value));
    mip.render();
    root.dataset.slab = ui.slab.value;
  });
  update();
  return { update, paneSeries };
}

// The MPR button follows the active pane: enabled while its series makes a volume.
export function bindMprToShell({ root, config, shell, cpuRendering }) {
  const current = () => panes.get(shell.activePane())?.volumeSource() ?? null;
  const mpr = bindMpr({ root, config, current, cpuRendering });
  onSliceShown(() => mpr.update());
  root.addEventListener("viewer:pane-series", ({ detail }) => {
    if (detail.pane === shell.activePane()) mpr.paneSeries(detail.seriesUid, detail.loading);
  });
  for (const pane of shell.panes) pane.addEventListener("pointerdown", () => setTimeout(mpr.update));
}
