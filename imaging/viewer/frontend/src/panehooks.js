// What the reader's toolkit adds to each Cornerstone pane, kept out of stack.js: the
// orientation markers, the value probe, and the pane's slice geometry for synchronized
// scrolling of a prior beside the current study (priors.js).

import { Enums } from "@cornerstonejs/core";

import { tagValues } from "./dicomweb.js";
import { edgeLabels, orientationMarkers } from "./orientation.js";
import { bindProbe } from "./probe.js";

// Every Cornerstone pane of the page: its element → { controller, geometry }.
export const panes = new Map();
const listeners = new Set();

// Called with (pane, index) whenever a pane shows another slice.
export function onSliceShown(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

// Each slice's position along the series' slice normal (mm), or null without geometry.
export function slicePositions(datasets) {
  const iop = tagValues(datasets[0], "00200037").map(Number);
  if (iop.length !== 6) return null;
  const normal = cross(iop.slice(0, 3), iop.slice(3));
  const positions = datasets.map((ds) => {
    const ipp = tagValues(ds, "00200032").map(Number);
    return ipp.length === 3 ? dot(normal, ipp) : NaN;
  });
  return positions.some((p) => !Number.isFinite(p)) ? null : { normal, positions };
}

export function paneHooks(pane, { engine, viewportId, controller, datasets }) {
  const config = JSON.parse(document.getElementById("viewer-config").textContent);
  const root = pane.closest("#viewer");
  const element = pane.querySelector("[data-viewport]");
  const viewport = () => engine.getViewport(viewportId);
  const current = () => {
    const vp = viewport();
    return vp ? datasets()[vp.getCurrentImageIdIndex()] : undefined;
  };
  const setMarkers = orientationMarkers(pane);
  const updateMarkers = () => {
    const vp = viewport();
    const dataset = current();
    const presentation = vp?.getViewPresentation();
    const camera = vp && !vp.useCPURendering ? vp.getCamera() : null;
    const labels = vp && dataset ? edgeLabels(dataset, presentation, camera) : null;
    if (presentation) {
      const { rotation = 0, flipHorizontal = false, flipVertical = false } = presentation;
      pane.dataset.presentation = `${Math.round(rotation)} ${flipHorizontal ? "h" : "-"}${flipVertical ? "v" : "-"}`;
    }
    setMarkers(labels);
    pane.dataset.orientation = labels ? `${labels.left} ${labels.right} ${labels.top} ${labels.bottom}` : "";
  };
  for (const name of ["rotate", "flip", "reset"]) {
    const original = controller[name];
    controller[name] = (...args) => {
      const result = original.apply(controller, args);
      updateMarkers();
      return result;
    };
  }
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, (event) => {
    updateMarkers();
    for (const listener of listeners) listener(pane, event.detail.imageIdIndex);
  });
  element.addEventListener(Enums.Events.CAMERA_MODIFIED, updateMarkers);
  const format = (values) =>
    (config.strings.probe_line ?? "%(value)s %(unit)s").replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
  bindProbe(pane, { viewport, dataset: current, root, format });
  panes.set(pane, {
    controller,
    geometry: () => {
      const found = datasets();
      return found.length ? slicePositions(found) : null;
    },
    currentIndex: () => viewport()?.getCurrentImageIdIndex() ?? null,
    // What MPR (mpr.js) makes its volume from: the stack's image ids in slice order.
    volumeSource: () => {
      const vp = viewport();
      const found = datasets();
      if (!vp || found.length < 2 || vp.getImageIds().length !== found.length) return null;
      return {
        seriesUid: pane.dataset.seriesUid,
        imageIds: vp.getImageIds(),
        datasets: found,
        voi: vp.getProperties().voiRange ?? null,
      };
    },
  });
}
