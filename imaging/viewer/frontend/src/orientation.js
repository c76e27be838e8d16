// Orientation markers: the patient direction (L/R, A/P, H/F: DICOM's patient coordinate
// system, +x left, +y posterior, +z head) at each edge of the image, from Image
// Orientation Patient (0020,0037) and the pane's flip and rotation.

import { tagValues } from "./dicomweb.js";

// A direction's letters, strongest axis first; an axis counts when it carries at least
// a quarter of the direction (an oblique slice reads e.g. "LA").
const OBLIQUE_SHARE = 0.25;
const LETTERS = [
  ["R", "L"],
  ["A", "P"],
  ["F", "H"],
];

export function directionLabel(vector) {
  return [0, 1, 2]
    .filter((axis) => Math.abs(vector[axis]) >= OBLIQUE_SHARE)
    .sort((a, b) => Math.abs(vector[b]) - Math.abs(vector[a]))
    .map((axis) => LETTERS[axis][vector[axis] > 0 ? 1 : 0])
    .join("");
}

const negate = (v) => v.map((x) => -x);

// The patient directions of the screen's right and down for an image whose rows run
// along `row` and columns along `column`: flipped first in the image's own frame, then
// turned clockwise by `rotation` degrees (as Cornerstone draws a view presentation).
export function screenAxes(row, column, { rotation = 0, flipHorizontal = false, flipVertical = false } = {}) {
  let right = flipHorizontal ? negate(row) : row;
  let down = flipVertical ? negate(column) : column;
  const turns = ((Math.round(rotation / 90) % 4) + 4) % 4;
  for (let i = 0; i < turns; i += 1) {
    // A quarter turn clockwise: what pointed up now points right, what pointed right points down.
    [right, down] = [negate(down), right];
  }
  return { right, down };
}

const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

// The screen's right and down in patient coordinates from a WebGL viewport's camera:
// up is viewUp; the camera looks along -viewPlaneNormal, so right is up × normal.
export function cameraAxes({ viewUp, viewPlaneNormal }) {
  return { right: cross(viewUp, viewPlaneNormal), down: negate(viewUp) };
}

// The four edge labels ({ left, right, top, bottom }), or null without a usable orientation.
// camera: a WebGL viewport's camera, which knows where the screen's axes point; else
// (Cornerstone's CPU path) they follow from the image's orientation and the presentation.
export function edgeLabels(dataset, presentation, camera = null) {
  const iop = tagValues(dataset, "00200037").map(Number);
  if (iop.length !== 6 || iop.some((x) => !Number.isFinite(x))) return null;
  const { right, down } = camera?.viewUp && camera?.viewPlaneNormal
    ? cameraAxes(camera)
    : screenAxes(iop.slice(0, 3), iop.slice(3), presentation);
  return {
    left: directionLabel(negate(right)),
    right: directionLabel(right),
    top: directionLabel(negate(down)),
    bottom: directionLabel(down),
  };
}

// The markers' elements in a pane (made here, so the page's markup stays as it is).
export function orientationMarkers(pane) {
  const box = document.createElement("div");
  box.className = "vw-orient";
  box.setAttribute("aria-hidden", "true");
  const edges = {};
  for (const edge of ["left", "right", "top", "bottom"]) {
    const mark = document.createElement("span");
    mark.dataset.orient = edge;
    box.append(mark);
    edges[edge] = mark;
  }
  pane.querySelector(".vw-overlay").after(box);
  return (labels) => {
    for (const [edge, mark] of Object.entries(edges)) mark.textContent = labels?.[edge] ?? "";
  };
}
