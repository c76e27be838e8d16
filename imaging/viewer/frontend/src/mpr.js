// MPR: axial, sagittal and coronal views of a CT or MR series with crosshairs, and a MIP
// of a slab whose thickness the reader sets, in Cornerstone3D volume viewports. Nothing
// of it runs until the reader asks: the stack view's first image never waits for it. The
// volume is streamed from the same WADO-RS frame image ids as the stack (their metadata is
// already in the loader's metadata manager), decoded in the same web workers.

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

// root: #viewer; config: the page config; current(): the active pane's { imageIds,
// datasets, voi } or null.
export function bindMpr({ root, config, current, cpuRendering }) {
  const s = config.strings;
  const button = root.querySelector("[data-action=mpr]");
  if (!button) return { update() {} };
  let ui = null;
  let open = null; // { engine, toolGroup, volumeId }

  const update = () => {
    const pane = current();
    const problem = pane ? volumeProblem(pane.datasets) : "no series";
    button.disabled = problem !== null;
    button.title = problem === null ? s.mpr_title : s.mpr_unavailable;
    button.dataset.problem = problem ?? "";
  };

  const setSlabText = () => {
    ui.slabText.textContent = s.mpr_slab.replace("%(mm)s", ui.slab.value);
  };

  const close = () => {
    if (!open) return;
    const { engine, toolGroup, core, tools } = open;
    open = null;
    tools.ToolGroupManager.destroyToolGroup(toolGroup.id);
    engine.destroy();
    core.setUseCPURendering(cpuRendering, false);
    ui.screen.hidden = true;
    root.dataset.mprState = "closed";
    button.setAttribute("aria-pressed", "false");
  };

  const start = async () => {
    const pane = current();
    if (!pane || volumeProblem(pane.datasets) !== null) return;
    const started = performance.now();
    ui ??= buildScreen(root, s);
    setSlabText();
    ui.screen.hidden = false;
    ui.status.textContent = s.mpr_loading;
    root.dataset.mprState = "loading";
    delete root.dataset.mprMs;
    button.setAttribute("aria-pressed", "true");
    const parts = await import("./mprparts.js");
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
    open = { engine, toolGroup, core, tools };
    for (const Tool of [tools.CrosshairsTool, tools.ZoomTool, tools.PanTool]) tools.addTool(Tool); // idempotent
    toolGroup.addTool(tools.CrosshairsTool.toolName);
    toolGroup.addTool(tools.ZoomTool.toolName);
    toolGroup.addTool(tools.PanTool.toolName);
    for (const plane of ["axial", "sagittal", "coronal"]) toolGroup.addViewport(ids[plane], ENGINE_ID);
    toolGroup.setToolActive(tools.CrosshairsTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Primary }] });
    toolGroup.setToolActive(tools.ZoomTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Secondary }] });
    toolGroup.setToolActive(tools.PanTool.toolName, { bindings: [{ mouseButton: tools.Enums.MouseBindings.Auxiliary }] });

    const volumeId = `cornerstoneStreamingImageVolume:${pane.seriesUid}`;
    const volume = await core.volumeLoader.createAndCacheVolume(volumeId, { imageIds: pane.imageIds });
    if (open?.engine !== engine) return;
    const loaded = new Promise((resolve) => volume.load(resolve));
    await core.setVolumesForViewports(engine, [{ volumeId }], [ids.axial, ids.sagittal, ids.coronal]);
    await core.setVolumesForViewports(
      engine,
      [{ volumeId, blendMode: Enums.BlendModes.MAXIMUM_INTENSITY_BLEND, slabThickness: Number(ui.slab.value) }],
      [ids.mip],
    );
    if (pane.voi) {
      for (const plane of PLANES) engine.getViewport(ids[plane]).setProperties({ voiRange: pane.voi });
    }
    engine.render();
    await loaded;
    if (open?.engine !== engine) return;
    engine.render();
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    root.dataset.mprState = "ready";
    root.dataset.mprMs = String(Math.round(performance.now() - started));
    ui.status.textContent = "";
  };

  button.addEventListener("click", () => {
    if (open) {
      close();
      return;
    }
    start().catch((error) => {
      console.error(error);
      if (ui) ui.status.textContent = s.load_failed;
      root.dataset.mprState = "failed";
    });
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
  return { update };
}

// The MPR button follows the active pane: enabled while its series makes a volume.
export function bindMprToShell({ root, config, shell, cpuRendering }) {
  const current = () => panes.get(shell.activePane())?.volumeSource() ?? null;
  const mpr = bindMpr({ root, config, current, cpuRendering });
  onSliceShown(() => mpr.update());
  for (const pane of shell.panes) pane.addEventListener("pointerdown", () => setTimeout(mpr.update));
}
