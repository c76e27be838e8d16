// The value under the cursor: Hounsfield units on a CT (the stored value through Rescale
// Slope and Intercept), the modality value otherwise. Shown while the Probe tool is
// picked; Cornerstone's Probe tool then also pins a value where the reader clicks.

import { utilities as coreUtilities } from "@cornerstonejs/core";

import { tagValue } from "./dicomweb.js";

// The value of the pixel at a point of the element (CSS pixels from its top left), or
// null outside the image. dataset: the slice's DICOM JSON, for the rescale and modality.
export function valueAt(viewport, dataset, x, y) {
  const image = viewport.getCornerstoneImage?.();
  const imageData = viewport.getImageData?.();
  if (!image || !imageData) return null;
  const world = viewport.canvasToWorld([x, y]);
  const [i, j] = coreUtilities.transformWorldToIndex(imageData.imageData, world).map(Math.round);
  if (i < 0 || j < 0 || i >= image.columns || j >= image.rows) return null;
  const stored = image.getPixelData()[j * image.columns + i];
  // The loader rescales as it decodes (preScale); else the rescale is applied here.
  const scaled = image.preScale?.scaled;
  const slope = Number(tagValue(dataset, "00281053") ?? image.slope ?? 1) || 1;
  const intercept = Number(tagValue(dataset, "00281052") ?? image.intercept ?? 0) || 0;
  const value = scaled ? stored : stored * slope + intercept;
  const modality = tagValue(dataset, "00080060") ?? "";
  return { column: i, row: j, value, unit: modality === "CT" ? "HU" : "" };
}

export function bindProbe(pane, { viewport, dataset, root, format }) {
  const element = pane.querySelector("[data-viewport]");
  const readout = document.createElement("div");
  readout.className = "vw-probe";
  readout.dataset.probe = "";
  readout.hidden = true;
  pane.querySelector(".vw-overlay").after(readout);
  const hide = () => {
    readout.hidden = true;
    delete pane.dataset.probeValue;
  };
  element.addEventListener("mousemove", (event) => {
    if (root.dataset.tool !== "Probe") return hide();
    const vp = viewport();
    const rect = element.getBoundingClientRect();
    const found = vp ? valueAt(vp, dataset(), event.clientX - rect.left, event.clientY - rect.top) : null;
    if (!found) return hide();
    const shown = Math.round(found.value * 10) / 10;
    readout.textContent = format({ x: found.column, y: found.row, value: shown, unit: found.unit });
    readout.hidden = false;
    pane.dataset.probeValue = String(found.value);
  });
  element.addEventListener("mouseleave", hide);
}
