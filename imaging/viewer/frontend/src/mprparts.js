// What MPR (mpr.js) uses of Cornerstone, by name: imported as a whole namespace the tools
// package would not be tree-shaken, and its chunk (loaded after the first image) would
// carry every tool.

export {
  Enums,
  RenderingEngine,
  cache,
  eventTarget,
  imageLoader,
  setUseCPURendering,
  setVolumesForViewports,
  volumeLoader,
} from "@cornerstonejs/core";
export {
  CrosshairsTool,
  PanTool,
  ToolGroupManager,
  ZoomTool,
  addTool,
  Enums as ToolEnums,
} from "@cornerstonejs/tools";
