// Entry point: picks the Cornerstone3D viewer where the browser can run it (WebGL and
// WebAssembly), else the server-rendered fallback; neither mode loads the other's code.

import "./style.css";

import { StudyClient } from "./dicomweb.js";

function hasWebGL() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

function chooseMode() {
  if (new URLSearchParams(window.location.search).get("mode") === "rendered") return "rendered";
  return hasWebGL() && typeof WebAssembly === "object" && typeof Worker === "function" ? "cornerstone" : "rendered";
}

const root = document.getElementById("viewer");
const config = JSON.parse(document.getElementById("viewer-config").textContent);
const client = new StudyClient(config.dicomweb, config.study_uid);
const mode = chooseMode();
root.dataset.mode = mode;
if (mode === "rendered") root.querySelector("[data-fallback-note]").hidden = false;
const viewer = mode === "rendered" ? await import("./rendered.js") : await import("./stack.js");
await viewer.start({ root, config, client });
