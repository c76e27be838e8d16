// The page around the images: series list, toolbar, layout, keyboard and slider. It is
// the same for the Cornerstone viewer and the server-rendered fallback; each pane is a
// controller made by the mode (load, scroll, setIndex, preset, rotate, flip, invert,
// reset, cine, tool) so the controls never need to know how pixels reach the screen.

import { PRESETS } from "./presets.js";
import { bindGestures, bindTouchBar } from "./touch.js";

const KEY_STEPS = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };

// gestures: the pane's own swipe / pinch / two-finger window handling (touch.js) instead
// of the mode's (Cornerstone's tools on a desktop).
// onShell: called once the controls are bound, with what a further module (priors.js)
// needs to drive the panes.
export async function startShell({ root, config, client, createPane, gestures, onShell }) {
  const panes = [...root.querySelectorAll("[data-pane]")];
  const controllers = new Map();
  const status = root.querySelector("[data-status]");
  let active = panes[0];
  let seriesList = [];

  const say = (text) => {
    status.textContent = text || "";
    status.hidden = !text;
  };
  const controllerOf = (pane) => {
    if (!controllers.has(pane)) controllers.set(pane, createPane(pane));
    return controllers.get(pane);
  };
  const activate = (pane) => {
    active = pane;
    for (const p of panes) p.classList.toggle("is-active", p === pane);
    markSeries();
  };
  const markSeries = () => {
    const uid = active.dataset.seriesUid;
    for (const item of root.querySelectorAll("[data-series-uid]:not([data-pane])")) {
      item.setAttribute("aria-current", item.dataset.seriesUid === uid ? "true" : "false");
    }
  };
  const show = async (pane, series) => {
    pane.dataset.seriesUid = series.uid;
    markSeries();
    say(config.strings.loading);
    try {
      await controllerOf(pane).load(series);
      say("");
    } catch (error) {
      console.error(error);
      say(config.strings.load_failed);
    }
  };

  bindToolbar(root, config, () => controllerOf(active), controllers);
  const touch = root.dataset.ui === "touch";
  if (touch) {
    bindTouchBar(root, config, () => controllerOf(active));
    root.addEventListener("viewer:resized", () => {
      for (const controller of controllers.values()) controller.resize();
    });
  }
  const hint = root.querySelector("[data-touch-hint]");
  const hideHint = () => {
    if (hint) hint.hidden = true;
  };
  if (touch) setTimeout(hideHint, 8000);
  const setLayout = bindLayout(root, panes, controllers, async (layout) => {
    if (layout === 2 && !panes[1].dataset.seriesUid && seriesList.length) {
      await show(panes[1], seriesList[1] ?? seriesList[0]);
    }
  });
  for (const pane of panes) {
    pane.addEventListener("pointerdown", () => activate(pane));
    pane.addEventListener("focus", () => activate(pane));
    if (gestures) bindGestures(pane.querySelector("[data-viewport]"), () => controllerOf(pane), hideHint);
    const slider = pane.querySelector("[data-slider]");
    slider.addEventListener("input", () => controllerOf(pane).setIndex(Number(slider.value)));
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.closest?.("input, select, textarea")) return;
    const controller = controllers.get(active);
    if (!controller) return;
    if (event.key in KEY_STEPS) controller.scroll(KEY_STEPS[event.key]);
    else if (event.key === "Home") controller.setIndex(0);
    else if (event.key === "End") controller.setIndex(Number.MAX_SAFE_INTEGER);
    else return;
    event.preventDefault();
  });

  activate(panes[0]);
  onShell?.({ panes, controllerOf, activePane: () => active, setLayout, say });
  say(config.strings.loading);
  // The server names the first series (config.first): it starts loading at once, while
  // the series list is still being searched.
  const firstShown = config.first ? show(panes[0], config.first) : null;
  try {
    seriesList = await client.series();
    performance.mark("viewer:series");
  } catch (error) {
    console.error(error);
    say(config.strings.load_failed);
    return;
  }
  if (!seriesList.length) {
    say(config.strings.no_images);
    return;
  }
  renderSeriesList(root, config, client, seriesList, (series) => show(active, series));
  markSeries();
  if (firstShown) {
    await firstShown;
    return;
  }
  const first = seriesList.find((s) => s.modality !== "SR" && s.modality !== "PR") ?? seriesList[0];
  await show(panes[0], first);
}

function renderSeriesList(root, config, client, seriesList, onPick) {
  const list = root.querySelector("[data-series-list]");
  const template = root.querySelector("#vw-series-item");
  list.replaceChildren(
    ...seriesList.map((series) => {
      const item = template.content.firstElementChild.cloneNode(true);
      const button = item.querySelector("button");
      button.dataset.seriesUid = series.uid;
      const label = `${series.modality} ${series.number ?? ""} ${series.description}`.trim();
      button.querySelector("[data-label]").textContent = label;
      button.querySelector("[data-count]").textContent = config.strings.images.replace("%(count)s", series.count);
      const img = button.querySelector("img");
      img.alt = label;
      img.addEventListener("error", () => button.classList.add("no-thumb"), { once: true });
      img.src = client.thumbnailUrl(series.uid);
      button.addEventListener("click", () => onPick(series));
      return item;
    }),
  );
}

function bindToolbar(root, config, current, controllers) {
  const toolButtons = [...root.querySelectorAll("[data-tool]")];
  for (const button of toolButtons) {
    button.addEventListener("click", () => {
      for (const b of toolButtons) b.setAttribute("aria-pressed", b === button ? "true" : "false");
      for (const controller of controllers.values()) controller.setTool(button.dataset.tool);
      root.dataset.tool = button.dataset.tool;
    });
  }
  const presetSelect = root.querySelector("[data-action=preset]");
  presetSelect.addEventListener("change", () => {
    const id = presetSelect.value;
    if (!id) return;
    const preset = PRESETS.find((p) => p.id === id);
    current().preset(preset ?? "default");
    presetSelect.value = "";
  });
  const actions = {
    rotate: (c) => c.rotate(),
    "flip-h": (c) => c.flip("h"),
    "flip-v": (c) => c.flip("v"),
    invert: (c) => c.invert(),
    reset: (c) => c.reset(),
    cine: (c) => {
      const playing = c.cine();
      for (const button of root.querySelectorAll("[data-action=cine]")) {
        button.setAttribute("aria-pressed", playing ? "true" : "false");
        button.textContent = playing ? config.strings.stop : config.strings.play;
      }
    },
  };
  for (const button of root.querySelectorAll("[data-action]")) {
    const action = actions[button.dataset.action];
    if (!action) continue;
    button.addEventListener("click", () => action(current(), button));
  }
  root.addEventListener("viewer:cine-stopped", () => {
    for (const button of root.querySelectorAll("[data-action=cine]")) {
      button.setAttribute("aria-pressed", "false");
      button.textContent = config.strings.play;
    }
  });
}

function bindLayout(root, panes, controllers, onLayout) {
  const buttons = [...root.querySelectorAll("[data-layout-button]")];
  const container = root.querySelector("[data-panes]");
  const setLayout = async (layout, { load = true } = {}) => {
    for (const b of buttons) b.setAttribute("aria-pressed", Number(b.dataset.layoutButton) === layout ? "true" : "false");
    container.dataset.layout = String(layout);
    panes[1].hidden = layout === 1;
    for (const controller of controllers.values()) controller.resize();
    if (load) await onLayout(layout);
  };
  for (const button of buttons) {
    button.addEventListener("click", () => setLayout(Number(button.dataset.layoutButton)));
  }
  return setLayout;
}
