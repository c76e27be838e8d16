// Cornerstone's tools: the mouse and touch tools, the cine player and the slice
// prefetcher. A chunk of its own, loaded once the first image is drawn: nothing in it is
// needed to draw, and Chromium parses every module of a chunk before running any.

import {
  AngleTool,
  LengthTool,
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
import { Enums, eventTarget, triggerEvent } from "@cornerstonejs/core";

const GROUP_ID = "viewer-tools";
const { MouseBindings } = ToolEnums;
const TOOLS = [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool];
// What each tool does besides the primary button: right drag zooms, middle drag pans,
// the wheel scrolls, two fingers pinch-zoom on a phone.
const SECONDARY_BINDINGS = {
  [ZoomTool.toolName]: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  [PanTool.toolName]: [{ mouseButton: MouseBindings.Auxiliary }],
  [StackScrollTool.toolName]: [{ mouseButton: MouseBindings.Wheel }],
};

// primary: the tool on the left button and one finger; null on the touch layout, where
// touch.js handles the fingers and the mouse (the wheel still scrolls).
export function setUpTools(engine, primary, { touch = false } = {}) {
  initTools();
  for (const Tool of TOOLS) addTool(Tool);
  toolUtilities.stackPrefetch.setConfiguration({ maxImagesToPrefetch: Infinity, preserveExistingPool: false });
  const group = ToolGroupManager.createToolGroup(GROUP_ID);
  for (const Tool of TOOLS) group.addTool(Tool.toolName);
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
    const bindings = (SECONDARY_BINDINGS[name] ?? []).filter((b) => !touch || b.mouseButton === MouseBindings.Wheel);
    if (name === primary) bindings.push({ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 });
    if (bindings.length) group.setToolActive(name, { bindings });
    else group.setToolPassive(name);
  }
}
