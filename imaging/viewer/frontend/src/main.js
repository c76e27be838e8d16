// Entry point: picks the Cornerstone3D viewer where the browser can run it (WebGL and
// WebAssembly), else the server-rendered fallback; neither mode loads the other's code.

import "./style.css";

import { StudyClient } from "./dicomweb.js";
import { touchLayout } from "./touch.js";

const params = new URLSearchParams(window.location.search);

// null without WebGL; else the renderer's name where the browser tells it.
function webGLRenderer() {
  try {
    const gl = document.createElement("canvas").getContext("webgl2") || document.createElement("canvas").getContext("webgl");
    if (!gl) return null;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    return String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
  } catch {
    return null;
  }
}

function chooseMode(renderer) {
  if (params.get("mode") === "rendered") return "rendered";
  return renderer !== null && typeof WebAssembly === "object" && typeof Worker === "function" ? "cornerstone" : "rendered";
}

// A software WebGL (SwiftShader, llvmpipe: a machine without a usable GPU) draws a
// stack slower than Cornerstone's own CPU path, which is then used instead.
function cpuRendering(renderer) {
  if (params.has("render")) return params.get("render") === "cpu";
  return /swiftshader|llvmpipe|softpipe|software/i.test(renderer ?? "");
}

const root = document.getElementById("viewer");
const config = JSON.parse(document.getElementById("viewer-config").textContent);
const client = new StudyClient(config.dicomweb, config.study_uid);
performance.mark("viewer:start");
const renderer = webGLRenderer();
const mode = chooseMode(renderer);
root.dataset.mode = mode;
root.dataset.ui = touchLayout(config) ? "touch" : "desktop";
if (mode === "rendered") root.querySelector("[data-fallback-note]").hidden = false;
// The first slice's pixels are asked for now, while the viewer's code (the bigger
// download) is still on its way: the page carries that slice's metadata.
const first = config.first;
const firstFrame =
  mode === "cornerstone" && first?.first_metadata
    ? client.frame(first.uid, first.first_sop_uid, 1).catch((error) => console.error(error))
    : null;
const viewer = mode === "rendered" ? await import("./rendered.js") : await import("./stack.js");
root.dataset.cpuRendering = String(mode === "cornerstone" && cpuRendering(renderer));
await viewer.start({ root, config, client, firstFrame, cpuRendering: root.dataset.cpuRendering === "true" });
// Key images and measurements kept in the study (keyimages.js), for a doctor's viewer.
if (mode === "cornerstone" && config.key_objects) (await import("./keyimages.js")).startKeyImages({ root, config, client });
