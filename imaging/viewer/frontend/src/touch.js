// The touch layout: big preset and action buttons instead of the desktop toolbar, and
// gestures on the image. One finger dragged up/down or left/right goes through the slices;
// two fingers pinching zoom (and move the image with them); two fingers dragged together
// change the window (sideways the width, up and down the level). Which of the two a
// two-finger gesture is gets decided once it has moved a little, and stays so until the
// fingers are lifted. Both modes use it: a pane controller gives scroll, zoomAt, panBy and
// windowBy (Cornerstone's viewport, or the server-rendered image).

import { PRESETS } from "./presets.js";

const DECIDE_PX = 10; // movement before a two-finger gesture is taken as pinch or drag
const SLICE_PX_MIN = 6; // one slice per this much finger travel at most...
const SLICE_PX_MAX = 24; // ...and at least
const WINDOW_PX = 200; // a drag across this many px changes the window by its own width

// "touch" where the page asks for it (config.layout) or the screen is a narrow touch
// screen (a phone: coarse pointer without a mouse, at most a tablet's width).
export function touchLayout(config) {
  if (config.layout === "touch") return true;
  const coarse = matchMedia("(pointer: coarse)").matches && !matchMedia("(any-pointer: fine)").matches;
  return coarse && Math.min(window.innerWidth, screen.width || window.innerWidth) <= 900;
}

// The gestures on one pane's image. `controller` is looked up at each gesture (the
// shell makes it on first use).
export function bindGestures(element, controllerOf, onGesture = () => {}) {
  const points = new Map(); // pointerId -> {x, y}
  let gesture = null;

  const centroid = () => {
    const all = [...points.values()];
    return { x: all.reduce((s, p) => s + p.x, 0) / all.length, y: all.reduce((s, p) => s + p.y, 0) / all.length };
  };
  const spread = () => {
    const [a, b] = [...points.values()];
    return Math.hypot(a.x - b.x, a.y - b.y);
  };
  const begin = () => {
    const controller = controllerOf();
    if (points.size === 1) {
      const [p] = points.values();
      const rect = element.getBoundingClientRect();
      const count = Math.max(1, controller.count?.() ?? 1);
      const per = Math.max(SLICE_PX_MIN, Math.min(SLICE_PX_MAX, Math.max(rect.height, rect.width) / count));
      gesture = { kind: "swipe", start: p, axis: null, done: 0, per };
    } else if (points.size === 2) {
      gesture = { kind: "two", decided: null, start: centroid(), last: centroid(), spread: spread(), window: controller.currentWindow?.() };
    } else {
      gesture = null;
    }
  };

  element.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    element.setPointerCapture?.(event.pointerId);
    points.set(event.pointerId, { x: event.clientX, y: event.clientY });
    begin();
    event.preventDefault();
  });
  element.addEventListener("pointermove", (event) => {
    if (!points.has(event.pointerId) || !gesture) return;
    points.set(event.pointerId, { x: event.clientX, y: event.clientY });
    const controller = controllerOf();
    if (gesture.kind === "swipe") {
      const [p] = points.values();
      const dx = p.x - gesture.start.x;
      const dy = p.y - gesture.start.y;
      if (!gesture.axis) {
        if (Math.max(Math.abs(dx), Math.abs(dy)) < DECIDE_PX / 2) return;
        gesture.axis = Math.abs(dy) >= Math.abs(dx) ? "y" : "x";
        onGesture("swipe");
      }
      const travel = gesture.axis === "y" ? dy : dx;
      const steps = Math.trunc(travel / gesture.per);
      if (steps !== gesture.done) {
        controller.scroll(steps - gesture.done);
        gesture.done = steps;
      }
      return;
    }
    if (gesture.kind !== "two" || points.size !== 2) return;
    const c = centroid();
    const s = spread();
    if (!gesture.decided) {
      const moved = Math.hypot(c.x - gesture.start.x, c.y - gesture.start.y);
      const pinched = Math.abs(s - gesture.spread);
      if (Math.max(moved, pinched) < DECIDE_PX) return;
      gesture.decided = pinched > moved ? "pinch" : "window";
      onGesture(gesture.decided);
      gesture.last = c;
      gesture.spread = s;
      gesture.start = c;
      gesture.window = controller.currentWindow?.();
      return;
    }
    if (gesture.decided === "pinch") {
      if (gesture.spread > 0 && s > 0) controller.zoomAt(s / gesture.spread, c.x, c.y);
      controller.panBy(c.x - gesture.last.x, c.y - gesture.last.y);
      gesture.spread = s;
      gesture.last = c;
    } else if (gesture.window) {
      const scale = Math.max(1, gesture.window.width) / WINDOW_PX;
      controller.windowTo({
        width: Math.max(1, gesture.window.width + (c.x - gesture.start.x) * scale),
        center: gesture.window.center - (c.y - gesture.start.y) * scale,
      });
    }
  });
  const end = (event) => {
    if (!points.delete(event.pointerId)) return;
    if (gesture?.kind === "two" && gesture.decided === "window") controllerOf().windowDone?.();
    // A finger lifted from two leaves a one-finger swipe starting where it is, and so on.
    begin();
  };
  element.addEventListener("pointerup", end);
  element.addEventListener("pointercancel", end);
  element.addEventListener("lostpointercapture", end);
}

// The touch toolbar: presets, previous/next, reset, full screen.
export function bindTouchBar(root, config, current) {
  for (const button of root.querySelectorAll("[data-touch-preset]")) {
    button.addEventListener("click", () => {
      const id = button.dataset.touchPreset;
      current()?.preset(PRESETS.find((p) => p.id === id) ?? "default");
      for (const b of root.querySelectorAll("[data-touch-preset]")) b.setAttribute("aria-pressed", String(b === button));
    });
  }
  const actions = {
    prev: () => current()?.scroll(-1),
    next: () => current()?.scroll(1),
    reset: () => {
      current()?.reset();
      for (const b of root.querySelectorAll("[data-touch-preset]")) b.removeAttribute("aria-pressed");
    },
    fullscreen: () => setFullScreen(root, config, !root.classList.contains("is-fullscreen")),
  };
  for (const button of root.querySelectorAll("[data-touch-action]")) {
    button.addEventListener("click", () => actions[button.dataset.touchAction]?.());
  }
  document.addEventListener("fullscreenchange", () => {
    if (!document.fullscreenElement && root.classList.contains("is-fullscreen")) setFullScreen(root, config, false);
  });
}

// The browser's full screen where it has one for any element (not on an iPhone); the
// viewer also covers the whole window by itself, so the button works everywhere.
function setFullScreen(root, config, on) {
  root.classList.toggle("is-fullscreen", on);
  document.documentElement.classList.toggle("vw-fullscreen-page", on);
  const button = root.querySelector("[data-touch-action=fullscreen]");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? config.strings.exit_full_screen : config.strings.full_screen;
  if (on && document.fullscreenEnabled && !document.fullscreenElement) {
    root.requestFullscreen?.({ navigationUI: "hide" }).catch(() => {});
  } else if (!on && document.fullscreenElement) {
    document.exitFullscreen?.().catch(() => {});
  }
  root.dispatchEvent(new CustomEvent("viewer:resized"));
}
