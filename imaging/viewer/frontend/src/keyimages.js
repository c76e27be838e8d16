// Key images and measurements kept in the study (Cornerstone mode only). A star on the
// toolbar marks the image on screen as a key image; "Save" sends the marks and the
// measurements drawn with Cornerstone's tools to /api/v1/studies/<uid>/key-objects/, which
// writes them into the study as a Key Object Selection and a TID 1500 Structured Report.
// On opening, what the user saved before is read back from those documents: key images
// get their star, measurements are drawn again on their images once those are shown.
// Only the study's own images count: a prior opened beside it (priors.js) keeps its marks
// and measurements to itself, and the star is off while the reader works in its pane.

import { Enums, getEnabledElement, utilities as coreUtilities } from "@cornerstonejs/core";
import { annotation as annotations } from "@cornerstonejs/tools";

// Cornerstone tool name -> our measurement kind (imaging/key_objects.py SHAPES).
const KINDS = { Length: "length", Angle: "angle", EllipticalROI: "ellipse", RectangleROI: "rectangle" };
const TOOL_OF = Object.fromEntries(Object.entries(KINDS).map(([tool, kind]) => [kind, tool]));
const FRAME_URL = /\/studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)\/frames\/(\d+)$/;

// The image a WADO-RS frame's image id names, if it is one of study `studyUid`'s.
export function imageOf(imageId, studyUid) {
  const match = FRAME_URL.exec(imageId ?? "");
  if (!match || decodeURIComponent(match[1]) !== studyUid) return null;
  return { seriesUid: match[2], sopUid: match[3], frame: Number(match[4]) };
}

export async function startKeyImages({ root, config, client }) {
  const options = config.key_objects;
  const strings = options.strings;
  const studyUid = config.study_uid;
  const keys = new Map(); // sopUid -> seriesUid, in marking order
  const pending = new Map(); // sopUid -> measurements to draw once the image is shown
  const ui = buildBar(root, strings);
  const say = (text, kind) => {
    ui.message.textContent = text;
    ui.message.dataset.kind = kind ?? "";
    ui.message.hidden = !text;
  };

  const activeElement = () => root.querySelector("[data-pane].is-active [data-viewport]") ?? root.querySelector("[data-viewport]");
  const currentImage = (element = activeElement()) => {
    const viewport = element && getEnabledElement(element)?.viewport;
    return viewport?.getCurrentImageId ? imageOf(viewport.getCurrentImageId(), studyUid) : null;
  };
  const refresh = () => {
    const image = currentImage();
    ui.star.setAttribute("aria-pressed", image && keys.has(image.sopUid) ? "true" : "false");
    const study = activeElement()?.closest("[data-pane]")?.dataset.study;
    ui.star.disabled = Boolean(study) && study !== studyUid;
    ui.star.title = ui.star.disabled ? strings.key_image_prior : strings.key_image_title;
    for (const element of root.querySelectorAll("[data-viewport]")) {
      const pane = element.closest("[data-pane]");
      const shown = currentImage(element);
      pane.querySelector("[data-key-badge]")?.toggleAttribute("hidden", !(shown && keys.has(shown.sopUid)));
    }
  };

  let saved;
  try {
    saved = await request(options.url, { method: "GET" });
  } catch (error) {
    console.error(error);
    say(strings.load_failed, "error");
    return;
  }
  for (const uid of saved.key_images) keys.set(uid, saved.series_of[uid]);
  for (const m of saved.measurements) {
    if (!pending.has(m.sop_uid)) pending.set(m.sop_uid, []);
    pending.get(m.sop_uid).push({ ...m, series_uid: saved.series_of[m.sop_uid] });
  }
  ui.save.hidden = ui.star.hidden = !saved.may_save;

  for (const element of root.querySelectorAll("[data-viewport]")) {
    const pane = element.closest("[data-pane]");
    const badge = document.createElement("div");
    badge.className = "vw-key-badge";
    badge.dataset.keyBadge = "";
    badge.textContent = "★";
    badge.title = strings.key_image;
    badge.hidden = true;
    pane.append(badge);
    const onImage = (event) => {
      drawPending(element, event.detail?.imageId, pending, studyUid);
      refresh();
    };
    element.addEventListener(Enums.Events.STACK_NEW_IMAGE, onImage);
    element.addEventListener(Enums.Events.IMAGE_RENDERED, onImage);
  }
  root.addEventListener("pointerdown", refresh);
  for (const element of root.querySelectorAll("[data-viewport]")) {
    const viewport = getEnabledElement(element)?.viewport;
    if (viewport?.getCurrentImageId) drawPending(element, viewport.getCurrentImageId(), pending, studyUid);
  }

  ui.star.addEventListener("click", () => {
    const image = currentImage();
    if (!image) return;
    if (keys.has(image.sopUid)) keys.delete(image.sopUid);
    else keys.set(image.sopUid, image.seriesUid);
    say("");
    refresh();
  });
  ui.save.addEventListener("click", async () => {
    ui.save.disabled = true;
    say(strings.saving, "");
    try {
      const body = { key_images: [...keys.keys()], measurements: measurements(pending, studyUid) };
      const answer = await request(options.url, { method: "POST", body: JSON.stringify(body), csrf: options.csrf });
      say(strings.saved.replace("%(keys)s", answer.key_images.length).replace("%(measurements)s", answer.measurements.length), "ok");
    } catch (error) {
      say(`${strings.save_failed} ${error.message}`.trim(), "error");
    } finally {
      ui.save.disabled = false;
    }
  });
  refresh();
  root.dataset.keyImages = "ready";
}

function buildBar(root, strings) {
  const group = document.createElement("div");
  group.className = "vw-group vw-keys";
  const star = document.createElement("button");
  star.type = "button";
  star.dataset.keyImage = "";
  star.setAttribute("aria-pressed", "false");
  star.title = strings.key_image_title;
  star.textContent = `★ ${strings.key_image}`;
  const save = document.createElement("button");
  save.type = "button";
  save.dataset.keySave = "";
  save.title = strings.save_title;
  save.textContent = strings.save;
  // The outcome floats over the foot of the viewer: the toolbar may scroll sideways on a
  // narrow screen, and the images keep their room.
  const message = document.createElement("p");
  message.className = "vw-key-message";
  message.dataset.keyMessage = "";
  message.setAttribute("role", "status");
  message.hidden = true;
  group.append(star, save);
  root.querySelector(".vw-bar")?.append(group);
  root.append(message);
  return { star, save, message };
}

async function request(url, { method, body, csrf }) {
  const headers = { Accept: "application/json" };
  if (body) headers["Content-Type"] = "application/json";
  if (csrf) headers["X-CSRFToken"] = csrf;
  const response = await fetch(url, { method, body, headers, credentials: "same-origin" });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data?.error?.message ?? String(response.status));
  return data;
}

// What is drawn now on the study's images (Cornerstone's annotation state; not a prior's),
// plus what was saved on images not shown yet this session, in the API's form: points in
// image pixels (column, row).
function measurements(pending, studyUid) {
  const found = [];
  for (const item of annotations.state.getAllAnnotations()) {
    const kind = KINDS[item.metadata?.toolName];
    const imageId = item.metadata?.referencedImageId;
    const image = imageOf(imageId, studyUid);
    if (!kind || !image || item.isVisible === false) continue;
    const world = item.data.handles.points;
    const points = world.map((p) => Array.from(coreUtilities.worldToImageCoords(imageId, p)));
    const stats = Object.values(item.data.cachedStats ?? {})[0] ?? {};
    const entry = { kind, sop_uid: image.sopUid, frame: image.frame > 1 ? image.frame : undefined, label: item.data.label || "" };
    if (kind === "length") {
      entry.points = points;
      entry.length = Math.hypot(...[0, 1, 2].map((i) => world[0][i] - world[1][i]));
    } else if (kind === "angle") {
      // the arms' ends with the vertex between them; one still being drawn has no angle yet
      if (points.length !== 3 || !Number.isFinite(stats.angle)) continue;
      entry.points = points;
      entry.angle = stats.angle;
    } else {
      entry.points = kind === "ellipse" ? ellipseAxes(points) : [points[0], points[1], points[3], points[2]];
      for (const [name, value] of [["area", stats.area], ["mean", stats.mean], ["sd", stats.stdDev]]) {
        if (Number.isFinite(value)) entry[name] = value;
      }
    }
    found.push(entry);
  }
  for (const list of pending.values()) found.push(...list.map(({ series_uid, ...m }) => m));
  return found;
}

// Cornerstone keeps an ellipse as its bottom, top, left and right points; DICOM's ELLIPSE
// is the major axis' two ends, then the minor axis' (PS3.3 C.18.6.1.2).
function ellipseAxes([bottom, top, left, right]) {
  const vertical = Math.hypot(top[0] - bottom[0], top[1] - bottom[1]);
  const horizontal = Math.hypot(right[0] - left[0], right[1] - left[1]);
  return vertical >= horizontal ? [top, bottom, left, right] : [left, right, top, bottom];
}

// A saved measurement becomes a Cornerstone annotation again on the image it was drawn on,
// once that image is in a viewport (its geometry is known from the series' metadata then).
function drawPending(element, imageId, pending, studyUid) {
  const image = imageOf(imageId, studyUid);
  if (!image || !pending.has(image.sopUid)) return;
  const viewport = getEnabledElement(element)?.viewport;
  if (!viewport) return;
  const left = [];
  for (const m of pending.get(image.sopUid)) {
    if ((m.frame ?? 1) !== image.frame || !TOOL_OF[m.kind]) {
      left.push(m);
      continue;
    }
    annotations.state.addAnnotation(annotationOf(m, imageId, viewport), element);
  }
  if (left.length) pending.set(image.sopUid, left);
  else pending.delete(image.sopUid);
  viewport.render();
}

function annotationOf(m, imageId, viewport) {
  const camera = viewport.getCamera();
  const world = (p) => coreUtilities.imageToWorldCoords(imageId, p);
  let points = m.points.map(world);
  if (m.kind === "ellipse") {
    // back to bottom, top, left, right from the two axes
    const [a0, a1, b0, b1] = points;
    points = Math.abs(a0[1] - a1[1]) >= Math.abs(b0[1] - b1[1]) ? [a1, a0, b0, b1] : [b1, b0, a0, a1];
  } else if (m.kind === "rectangle") {
    points = [points[0], points[1], points[3], points[2]];
  }
  return {
    highlighted: false,
    invalidated: true,
    isLocked: false,
    isVisible: true,
    metadata: {
      toolName: TOOL_OF[m.kind],
      referencedImageId: imageId,
      FrameOfReferenceUID: viewport.getFrameOfReferenceUID(),
      viewPlaneNormal: [...camera.viewPlaneNormal],
      viewUp: [...camera.viewUp],
    },
    data: {
      label: m.label || "",
      handles: { points, activeHandleIndex: null, textBox: { hasMoved: false, worldPosition: [0, 0, 0], worldBoundingBox: null } },
      cachedStats: {},
    },
  };
}
