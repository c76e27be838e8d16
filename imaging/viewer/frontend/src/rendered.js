// The server-rendered fallback for browsers without WebGL or WebAssembly: each slice is a
// WADO-RS "rendered" JPEG made by our server, windowed there (PS3.18 window parameter).
// Scrolling, presets, rotate, flip, invert and cine work; measuring needs the pixels, so
// the measuring and drag tools are switched off in this mode.

import { datasetWindow } from "./dicomweb.js";
import { renderOverlay } from "./overlay.js";
import { startShell } from "./shell.js";

const PREFETCH_AROUND = 3;
const CINE_INTERVAL_MS = 1000 / 8;

export async function start({ root, config, client }) {
  for (const button of root.querySelectorAll("[data-tool]")) {
    if (button.dataset.tool !== "StackScroll") button.disabled = true;
  }
  root.querySelector("[data-tool=StackScroll]").click();
  await startShell({
    root,
    config,
    client,
    gestures: true, // drag or swipe through the slices, pinch to zoom, two fingers for the window
    createPane: (pane) => createPane({ pane, root, config, client }),
  });
}

function createPane({ pane, root, config, client }) {
  const element = pane.querySelector("[data-viewport]");
  const slider = pane.querySelector("[data-slider]");
  const img = document.createElement("img");
  img.className = "vw-rendered";
  img.alt = "";
  element.replaceChildren(img);
  let series = null;
  let instances = [];
  let index = 0;
  let voi = null;
  const plainView = () => ({ rotation: 0, flipH: false, flipV: false, invert: false, zoom: 1, tx: 0, ty: 0 });
  let view = plainView();
  let timer = null;
  let windowTimer = null;
  const MIN_ZOOM = 0.5;
  const MAX_ZOOM = 10;
  const WINDOW_REQUEST_MS = 250; // a new rendered image at most this often while the window is dragged

  const url = (i) => client.renderedUrl(series.uid, instances[i].sopUid, voi);
  const applyView = () => {
    const sx = view.flipH ? -1 : 1;
    const sy = view.flipV ? -1 : 1;
    img.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.zoom}) rotate(${view.rotation}deg) scale(${sx}, ${sy})`;
    img.classList.toggle("is-inverted", view.invert);
  };
  const show = (i) => {
    if (!instances.length) return;
    index = Math.max(0, Math.min(i, instances.length - 1));
    img.src = url(index);
    slider.value = String(index);
    for (let d = 1; d <= PREFETCH_AROUND; d += 1) {
      for (const j of [index + d, index - d]) if (j >= 0 && j < instances.length) new Image().src = url(j);
    }
    renderZoom();
  };
  // The overlay: also on its own after a pinch, which needs no new image.
  function renderZoom() {
    if (!instances.length) return;
    const dataset = instances[index].dataset;
    renderOverlay(pane, {
      config,
      series,
      dataset,
      index,
      count: instances.length,
      voi: voi ?? datasetWindow(dataset),
      zoom: view.zoom === 1 ? null : view.zoom,
    });
  }
  img.addEventListener("load", () => {
    if (!root.dataset.firstImageMs) {
      performance.mark("viewer:first-image");
      root.dataset.firstImageMs = String(Math.round(performance.now()));
    }
    pane.dataset.rendered = String(Number(pane.dataset.rendered || 0) + 1);
  });
  element.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      show(index + Math.sign(event.deltaY));
    },
    { passive: false },
  );
  const controller = {
    async load(picked) {
      if (timer) controller.cine();
      series = picked;
      instances = await client.instances(picked.uid);
      if (!instances.length) throw new Error("series without images");
      slider.max = String(instances.length - 1);
      show(0);
      pane.dataset.loaded = "true";
    },
    scroll: (delta) => show(index + delta),
    count: () => instances.length,
    currentWindow: () => voi ?? (instances.length ? datasetWindow(instances[index].dataset) : null),
    windowTo(target) {
      voi = { center: target.center, width: target.width };
      if (!windowTimer) {
        windowTimer = setTimeout(() => {
          windowTimer = null;
          show(index);
        }, WINDOW_REQUEST_MS);
      }
    },
    windowDone() {
      clearTimeout(windowTimer);
      windowTimer = null;
      show(index);
    },
    // Pinch: the image scales about the point between the fingers, which stays put.
    zoomAt(factor, clientX, clientY) {
      const wanted = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, view.zoom * factor));
      const f = wanted / view.zoom;
      const rect = element.getBoundingClientRect();
      const qx = clientX - (rect.left + rect.width / 2) - view.tx;
      const qy = clientY - (rect.top + rect.height / 2) - view.ty;
      view.tx += (1 - f) * qx;
      view.ty += (1 - f) * qy;
      view.zoom = wanted;
      applyView();
      renderZoom();
    },
    panBy(dx, dy) {
      view.tx += dx;
      view.ty += dy;
      applyView();
    },
    setIndex: (i) => show(i),
    preset(preset) {
      voi = preset === "default" ? null : { center: preset.center, width: preset.width };
      show(index);
    },
    rotate() {
      view.rotation = (view.rotation + 90) % 360;
      applyView();
    },
    flip(direction) {
      if (direction === "h") view.flipH = !view.flipH;
      else view.flipV = !view.flipV;
      applyView();
    },
    invert() {
      view.invert = !view.invert;
      applyView();
    },
    reset() {
      view = plainView();
      voi = null;
      applyView();
      show(index);
    },
    cine() {
      if (timer) {
        clearInterval(timer);
        timer = null;
        return false;
      }
      timer = setInterval(() => show(index + 1 < instances.length ? index + 1 : 0), CINE_INTERVAL_MS);
      return true;
    },
    setTool() {},
    resize() {},
  };
  return controller;
}
