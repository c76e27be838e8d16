// Priors: the patient's other studies that this user may see (the page lists them from
// imaging.selectors.prior_studies, so every access rule holds), opened in the second
// pane beside the current study. Opening one asks the server for its config, which
// audits the read. While "scroll together" is on, the slice the reader moves to in one
// pane brings the other to its nearest slice by position along the slice normal
// (Image Position Patient), in patient coordinates.

import { StudyClient } from "./dicomweb.js";
import { onSliceShown, panes as paneHooks } from "./panehooks.js";

// The index of `positions` nearest to `position`.
export function nearestIndex(positions, position) {
  let best = 0;
  for (let i = 1; i < positions.length; i += 1) {
    if (Math.abs(positions[i] - position) < Math.abs(positions[best] - position)) best = i;
  }
  return best;
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

// Where `to` should go for `from` at `fromIndex`; null when either has no geometry or
// their slices are not parallel.
export function syncedIndex(from, fromIndex, to) {
  if (!from || !to || fromIndex === null) return null;
  const alignment = dot(from.normal, to.normal);
  if (Math.abs(alignment) < 0.99) return null;
  return nearestIndex(to.positions, from.positions[fromIndex] * Math.sign(alignment));
}

async function fetchPrior(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  return response.json();
}

export function bindPriors({ root, config, shell }) {
  const s = config.strings;
  const nav = root.querySelector(".vw-series");
  if (!nav) return;
  const box = document.createElement("section");
  box.className = "vw-priors";
  box.dataset.priors = "";
  const heading = document.createElement("h2");
  heading.textContent = s.priors;
  box.append(heading);
  const priors = config.priors ?? [];
  if (!priors.length) {
    const none = document.createElement("p");
    none.className = "vw-priors-none";
    none.textContent = s.no_priors;
    box.append(none);
    nav.append(box);
    return;
  }
  const list = document.createElement("ol");
  const sync = document.createElement("label");
  sync.className = "vw-sync";
  const syncBox = document.createElement("input");
  syncBox.type = "checkbox";
  syncBox.checked = true;
  syncBox.dataset.sync = "";
  sync.append(syncBox, document.createTextNode(` ${s.sync_scroll}`));
  sync.hidden = true;
  const close = document.createElement("button");
  close.type = "button";
  close.dataset.closePrior = "";
  close.textContent = s.close_prior;
  close.hidden = true;
  const [own, beside] = shell.panes;

  let openedUid = null;
  const mark = () => {
    for (const button of list.querySelectorAll("[data-prior]")) {
      button.setAttribute("aria-pressed", button.dataset.prior === openedUid ? "true" : "false");
    }
    sync.hidden = close.hidden = openedUid === null;
  };
  const open = async (prior) => {
    shell.say(s.loading);
    try {
      const priorConfig = await fetchPrior(prior.url);
      const source = {
        config: { ...config, ...priorConfig, priors: [] },
        client: new StudyClient(priorConfig.dicomweb, priorConfig.study_uid),
      };
      if (!priorConfig.first) throw new Error("prior without images");
      beside.dataset.seriesUid = priorConfig.first.uid;
      await shell.setLayout(2, { load: false });
      openedUid = prior.study_uid;
      mark();
      await shell.controllerOf(beside).load(priorConfig.first, source);
      shell.say("");
      follow(own);
    } catch (error) {
      console.error(error);
      shell.say(s.load_failed);
    }
  };
  list.replaceChildren(
    ...priors.map((prior) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.prior = prior.study_uid;
      button.setAttribute("aria-pressed", "false");
      button.title = s.open_prior;
      button.textContent = [prior.date, prior.modalities, prior.description].filter(Boolean).join(" · ");
      const where = document.createElement("span");
      where.className = "vw-series-text vw-series-count";
      where.textContent = prior.institution;
      button.append(where);
      button.addEventListener("click", () => open(prior));
      item.append(button);
      return item;
    }),
  );
  close.addEventListener("click", async () => {
    openedUid = null;
    mark();
    delete beside.dataset.seriesUid;
    await shell.setLayout(1, { load: false });
  });
  box.append(list, sync, close);
  nav.append(box);

  // The slice shown in one pane moves the other, from the pane the reader works in only
  // (the other's own move then does not move the first back).
  const follow = (from) => {
    if (!openedUid || !syncBox.checked) return;
    const to = from === own ? beside : own;
    const source = paneHooks.get(from);
    const target = paneHooks.get(to);
    if (!source || !target || to.hidden) return;
    const index = syncedIndex(source.geometry(), source.controller.targetIndex?.() ?? source.currentIndex(), target.geometry());
    if (index !== null && index !== target.currentIndex()) target.controller.setIndex(index);
  };
  onSliceShown((pane) => {
    if (pane === shell.activePane()) follow(pane);
  });
  syncBox.addEventListener("change", () => follow(shell.activePane()));
  // The study page's "open beside this study" links here with #prior=<uid>.
  const asked = new URLSearchParams(window.location.hash.slice(1)).get("prior");
  const wanted = priors.find((p) => p.study_uid === asked);
  if (wanted) open(wanted);
}
