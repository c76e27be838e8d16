// Cornerstone's tools: the mouse and touch tools, the cine player and the slice
// prefetcher. A chunk of its own, loaded once the first image is drawn: nothing in it is
// needed to draw, and Chromium parses every module of a chunk before running any.

import {
  AngleTool,
  EllipticalROITool,
  LengthTool,
  ProbeTool,
  RectangleROITool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  Enums as ToolEnums,
  addTool,
  init as initTools,
  utilities as toolUtilities,
} from "@cornerstonejs/tools";
import { Enums, eventTarget, triggerEvent, utilities as coreUtilities } from "@cornerstonejs/core";

const GROUP_ID = "viewer-tools";
const { MouseBindings } = ToolEnums;
const TOOLS = [
  WindowLevelTool,
  PanTool,
  ZoomTool,
  StackScrollTool,
  LengthTool,
  AngleTool,
  ProbeTool,
  EllipticalROITool,
  RectangleROITool,
];
// What each tool does besides the primary button: right drag zooms, middle drag pans,
// two fingers pinch-zoom on a phone. The wheel scrolls through scroll.js, which keeps
// one target slice for keys, wheel and slider alike.
const SECONDARY_BINDINGS = {
  [ZoomTool.toolName]: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  [PanTool.toolName]: [{ mouseButton: MouseBindings.Auxiliary }],
};

function strings() {
  return JSON.parse(document.getElementById("viewer-config")?.textContent ?? "{}").strings ?? {};
}

const round = (x) => coreUtilities.roundNumber(x);
const fill = (template, values) => template.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));

// The ROI tools' text in the page's language: area (mm² where Pixel Spacing is known),
// mean and standard deviation (HU on a CT).
function roiTextLines(s) {
  return (data, targetId) => {
    const stats = data.cachedStats?.[targetId];
    if (!stats) return [];
    const lines = [];
    if (Number.isFinite(stats.area)) lines.push(fill(s.roi_area ?? "Area %(value)s %(unit)s", { value: round(stats.area), unit: stats.areaUnit }));
    if (Number.isFinite(stats.mean)) lines.push(fill(s.roi_mean ?? "Mean %(value)s %(unit)s", { value: round(stats.mean), unit: stats.modalityUnit }));
    if (Number.isFinite(stats.stdDev)) lines.push(fill(s.roi_sd ?? "SD %(value)s %(unit)s", { value: round(stats.stdDev), unit: stats.modalityUnit }));
    return lines;
  };
}

function probeTextLines(s) {
  return (data, targetId) => {
    const stats = data.cachedStats?.[targetId];
    if (!stats || stats.value === undefined || Array.isArray(stats.value)) return [];
    return [fill(s.probe_pin ?? "%(value)s %(unit)s", { value: round(stats.value), unit: stats.modalityUnit })];
  };
}

// primary: the tool on the left button and one finger; null on the touch layout, where
// touch.js handles the fingers and the mouse (the wheel still scrolls).
export function setUpTools(engine, primary, { touch = false } = {}) {
  initTools();
  for (const Tool of TOOLS) addTool(Tool);
  toolUtilities.stackPrefetch.setConfiguration({ maxImagesToPrefetch: Infinity, preserveExistingPool: false });
  const group = ToolGroupManager.createToolGroup(GROUP_ID);
  const s = strings();
  for (const Tool of TOOLS) group.addTool(Tool.toolName);
  // A drag with the scroll tool changes the slice at every step, never after a delay that
  // a later step would not cancel (see scroll.js).
  group.setToolConfiguration(StackScrollTool.toolName, { debounceIfNotLoaded: false });
  group.setToolConfiguration(EllipticalROITool.toolName, { getTextLines: roiTextLines(s) });
  group.setToolConfiguration(RectangleROITool.toolName, { getTextLines: roiTextLines(s) });
  group.setToolConfiguration(ProbeTool.toolName, { getTextLines: probeTextLines(s) });
  applyTool(group, primary, touch);
  return {
    use: (name) => applyTool(group, name, touch),
    // The tools take an element in when the engine announces it (ELEMENT_ENABLED); one
    // enabled before they were loaded is announced again, once, for them.
    addViewport({ element, viewportId, enabledBefore }) {
      if (enabledBefore) triggerEvent(eventTarget, Enums.Events.ELEMENT_ENABLED, { element, viewportId, renderingEngineId: engine.id });
      group.addViewport(viewportId, engine.id);
    },
    prefetch: toolUtilities.stackPrefetch,
    cine: toolUtilities.cine,
  };
}

function applyTool(group, primary, touch) {
  for (const Tool of TOOLS) {
    const name = Tool.toolName;
    const bindings = touch ? [] : [...(SECONDARY_BINDINGS[name] ?? [])];
    if (name === primary) bindings.push({ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 });
    if (bindings.length) group.setToolActive(name, { bindings });
    else group.setToolPassive(name);
  }
}
