// The Cornerstone3D viewer: one stack viewport per pane, frames from WADO-RS decoded in a
// web worker (the stored transfer syntax is asked for, so JPEG, JPEG-LS, JPEG 2000 and RLE
// frames travel compressed and are decoded in the browser's WASM codecs). The tools come
// in a chunk of their own after the first image (tools.js).

import {
  Enums,
  RenderingEngine,
  getRenderingEngine,
  init as initCore,
  setUseCPURendering,
  imageLoadPoolManager,
  metaData,
} from "@cornerstonejs/core";
import { init as initLoader, wadors } from "@cornerstonejs/dicom-image-loader";
import extractMultipart from "@cornerstonejs/dicom-image-loader/wadors/extractMultipart";
import { getTransferSyntaxForContentType } from "@cornerstonejs/dicom-image-loader/wadors/loadImage";

import { datasetWindow, instanceOf } from "./dicomweb.js";
import { renderOverlay } from "./overlay.js";
import { voiRange, windowOf } from "./presets.js";
import { startShell } from "./shell.js";
import { bindWheel, createScroller } from "./scroll.js";
import { paneHooks } from "./panehooks.js";
import { bindPriors } from "./priors.js";
import { bindMprToShell } from "./mpr.js";

performance.mark("viewer:engine-loaded"); // Cornerstone's chunk parsed and run (bench/viewer_bench.py)
const ENGINE_ID = "viewer";
const CINE_FPS = 12;
// Above the loader's own providers, which it asks too.
const FETCHED_FRAME_PRIORITY = 10_000;
const PREFETCH_AT_ONCE = 3;

// Frames fetched before Cornerstone had loaded (main.js asks for the first slice's at
// once). The WADO-RS loader asks the metadata providers for a frame's bytes
// (COMPRESSED_FRAME_DATA) before it goes to the network, and decodes what it is given in
// its worker as it would decode a frame it fetched itself.
const fetchedFrames = new Map();

function provideFetchedFrame(type, imageId) {
  if (type !== Enums.MetadataModules.COMPRESSED_FRAME_DATA || !fetchedFrames.has(imageId)) return undefined;
  const frame = fetchedFrames.get(imageId);
  fetchedFrames.delete(imageId); // decoded once, the image lives in Cornerstone's cache
  return frame;
}

function keepFetchedFrame(imageId, { contentType, body }) {
  const part = extractMultipart(contentType, body);
  const transferSyntaxUid = getTransferSyntaxForContentType(part.contentType);
  fetchedFrames.set(imageId, { pixelData: part.pixelData, transferSyntaxUid });
}

export async function start({ root, config, client, firstFrame, cpuRendering }) {
  // The loader first: it starts its decode workers, which then load while Cornerstone's
  // init probes the GPU (tens of milliseconds on a first visit).
  initLoader({ maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)) });
  initCore({ rendering: { useCPURendering: cpuRendering } });
  if (cpuRendering) setUseCPURendering(true);
  metaData.addProvider(provideFetchedFrame, FETCHED_FRAME_PRIORITY);
  // Few prefetch requests at once, so on a slow line the slice being looked at (an
  // interaction request, always first in the queue) never waits behind a long queue, nor
  // does MPR's preview (mpr.js) or the code it loads. The limit is set on the load pool,
  // whose requests end when the image is decoded: the retrieval pool's end as soon as
  // they are sent, so a limit there let the prefetcher put a whole series (300 requests)
  // in the browser's queue at once, before anything asked later.
  imageLoadPoolManager.setMaxSimultaneousRequests(Enums.RequestType.Prefetch, PREFETCH_AT_ONCE);

  const engine = new RenderingEngine(ENGINE_ID);
  const touch = root.dataset.ui === "touch";
  const tools = lazyTools(engine, root, touch);
  // A window or phone resize keeps the reader's zoom and pan; a layout switch refits (below).
  new ResizeObserver(() => engine.resize(true, true)).observe(root.querySelector("[data-panes]"));

  let earlyFrame = firstFrame;
  const takeFirstFrame = () => {
    const taken = earlyFrame;
    earlyFrame = null;
    return taken;
  };
  await startShell({
    root,
    config,
    client,
    gestures: touch, // touch.js drives the image on a touch layout; Cornerstone's tools with a mouse
    createPane: (pane) => createPane({ pane, root, config, client, engine, tools, takeFirstFrame, cpuRendering }),
    onShell: (shell) => {
      bindPriors({ root, config, shell });
      bindMprToShell({ root, config, shell, cpuRendering });
    },
  });
}

// The tools (tools.js), asked for by the first pane that has drawn an image; `now` is
// null until they are set up, with the tool picked meanwhile as the primary one.
function lazyTools(engine, root, touch) {
  let settle;
  const ready = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  let asked = false;
  const tools = {
    now: null,
    ready,
    load() {
      if (!asked) {
        asked = true;
        import("./tools.js")
          .then(({ setUpTools }) => {
            tools.now = setUpTools(engine, touch ? null : root.dataset.tool, { touch });
            settle.resolve(tools.now);
          })
          .catch(settle.reject);
      }
      return ready;
    },
  };
  return tools;
}

function createPane({ pane, root, config: ownConfig, client: ownClient, engine, tools, takeFirstFrame, cpuRendering }) {
  // The study the pane shows: the page's own, or a prior opened beside it (priors.js).
  let config = ownConfig;
  let client = ownClient;
  const element = pane.querySelector("[data-viewport]");
  const viewportId = `pane-${pane.dataset.pane}`;
  const slider = pane.querySelector("[data-slider]");
  let series = null;
  let datasets = [];
  let playing = false;
  let overlayQueued = false;
  let fitZoom = 1; // the zoom that fits the image: the overlay shows zoom relative to it
  let aloneOf = null; // while the first slice is shown alone: the series' image count
  let early = null; // what the user asked for meanwhile: { delta } or { index }, applied once all is loaded
  // The first series of the first pane opens on the key image the page names by its SOP
  // Instance UID (where in the sorted stack it lands is known only once the series is
  // loaded), else on its first slice.
  let startSop = pane.dataset.pane === "0" ? (ownConfig.start_sop_uid ?? null) : null;
  const scroller = createScroller(() => (aloneOf ? null : engine.getViewport(viewportId)));

  element.addEventListener("contextmenu", (event) => event.preventDefault());
  bindWheel(element, (delta) => controller.scroll(delta));
  const viewport = () => {
    if (!engine.getViewport(viewportId)) {
      const enabledBefore = !tools.now;
      engine.enableElement({ viewportId, type: Enums.ViewportType.STACK, element, defaultOptions: { background: [0, 0, 0] } });
      tools.ready.then((loaded) => loaded.addViewport({ element, viewportId, enabledBefore }));
    }
    return engine.getViewport(viewportId);
  };

  const updateOverlay = () => {
    overlayQueued = false;
    const vp = engine.getViewport(viewportId);
    if (!vp || !series) return;
    const index = vp.getCurrentImageIdIndex();
    const { voiRange: range } = vp.getProperties();
    slider.value = String(index);
    renderOverlay(pane, {
      config,
      series,
      dataset: datasets[index],
      index: aloneOf ? null : index, // its place in the series is known once all is loaded
      count: aloneOf ?? datasets.length,
      voi: range ? windowOf(range) : null,
      zoom: vp.getZoom() / fitZoom,
    });
  };
  const queueOverlay = () => {
    if (overlayQueued) return;
    overlayQueued = true;
    requestAnimationFrame(updateOverlay);
  };
  for (const name of [Enums.Events.STACK_NEW_IMAGE, Enums.Events.VOI_MODIFIED, Enums.Events.CAMERA_MODIFIED]) {
    element.addEventListener(name, queueOverlay);
  }
  element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
    // The viewport also renders while empty (when enabled or resized): count only images.
    if (!engine.getViewport(viewportId)?.getCornerstoneImage()) return;
    if (!root.dataset.firstImageMs) {
      performance.mark("viewer:first-image");
      root.dataset.firstImageMs = String(Math.round(performance.now()));
    }
    pane.dataset.rendered = String(Number(pane.dataset.rendered || 0) + 1);
    tools.load();
  });
  // MPR (mpr.js) loads the series itself while it is open: the pane's prefetcher stops
  // meanwhile (its queued requests dropped; what it had fetched stays in the cache, which
  // MPR reads first) and starts again, from the slice on screen, when MPR closes. Nor is it
  // started or stopped while MPR is open, when the pane opens another series: Cornerstone's
  // prefetcher empties the load pool's whole prefetch queue when it starts or stops, and
  // MPR's volume is queued there too.
  let mprOpen = false;
  root.addEventListener("viewer:mpr", ({ detail }) => {
    mprOpen = detail.open;
    if (pane.dataset.loaded !== "true" || !tools.now) return;
    if (detail.open) tools.now.prefetch.disable(element);
    else tools.now.prefetch.enable(element);
  });
  // Announced on root ("viewer:pane-series", detail { pane, seriesUid, loading }) when the
  // pane starts opening a series, and when it has (or has failed to): MPR follows the pane.
  const announceSeries = (seriesUid, loading) =>
    root.dispatchEvent(new CustomEvent("viewer:pane-series", { detail: { pane, seriesUid, loading } }));
  tools.ready.then(({ cine }) =>
    element.addEventListener(cine.Events.CLIP_STOPPED, () => {
      playing = false;
      root.dispatchEvent(new CustomEvent("viewer:cine-stopped"));
    }),
  );

  const imageIdsOf = (seriesUid, instances) =>
    instances.flatMap((instance) =>
      Array.from({ length: instance.frames }, (_, i) => {
        const imageId = `wadors:${client.framesUrl(seriesUid, instance.sopUid, i + 1)}`;
        wadors.metaDataManager.add(imageId, instance.dataset);
        return imageId;
      }),
    );
  // The stack index of an instance's first frame, or null when it is not in the series.
  const frameOf = (instances, sopUid) => {
    if (!sopUid) return null;
    let at = 0;
    for (const instance of instances) {
      if (instance.sopUid === sopUid) return at;
      at += instance.frames;
    }
    return null;
  };
  const datasetsOf = (instances) => instances.flatMap((instance) => Array(instance.frames).fill(instance.dataset));

  const showAlone = async (vp, picked, middle) => {
    datasets = datasetsOf([middle]);
    aloneOf = picked.count || null;
    await vp.setStack(imageIdsOf(picked.uid, [middle]), 0);
    vp.render();
    fitZoom = vp.getZoom() || 1;
    queueOverlay();
    return middle.sopUid;
  };
  // First image fast. The series the page opens with comes with its middle slice's
  // metadata, and main.js has asked for that slice's pixels already: the slice is drawn
  // alone, and the series' metadata (read by the server from every file) is asked for after.
  const showEmbeddedMiddle = async (vp, picked) => {
    const middle = instanceOf(picked.first_metadata);
    const frame = await takeFirstFrame();
    if (frame) keepFetchedFrame(imageIdsOf(picked.uid, [middle])[0], frame);
    return showAlone(vp, picked, middle);
  };
  // Another series: its middle slice's own metadata and frame, racing the series' metadata.
  const middleUid = async (series) => {
    if (series.first_sop_uid) return series.first_sop_uid;
    const uids = await client.instanceList(series.uid);
    return uids.length < 3 ? null : uids[0];
  };
  const showMiddleFirst = async (vp, picked, fullMetadata) => {
    const uid = await middleUid(picked);
    if (!uid) return null;
    const middle = await Promise.race([client.instance(picked.uid, uid), fullMetadata]);
    if (Array.isArray(middle)) return null; // the whole series came first: nothing to gain
    return showAlone(vp, picked, middle);
  };
  const showFirstThenAll = async (vp, picked) => {
    if (picked.first_metadata) {
      const shown = await showEmbeddedMiddle(vp, picked).catch(() => null);
      return [shown, await client.instances(picked.uid)];
    }
    const fullMetadata = client.instances(picked.uid);
    const shown = await showMiddleFirst(vp, picked, fullMetadata).catch(() => null);
    return [shown, await fullMetadata];
  };

  const MIN_ZOOM = 0.5;
  const MAX_ZOOM = 20;
  const controller = {
    count() {
      return aloneOf ?? engine.getViewport(viewportId)?.getImageIds().length ?? 0;
    },
    currentWindow() {
      const range = engine.getViewport(viewportId)?.getProperties().voiRange;
      return range ? windowOf(range) : null;
    },
    windowTo(target) {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      vp.setProperties({ voiRange: voiRange(target) });
      vp.render();
    },
    // Pinch: zoom by `factor` about the point between the fingers, which stays put.
    // Pan is in CSS pixels of the canvas (positive: the image moves right and down). On
    // the CPU path Cornerstone's pan does not follow the device pixel ratio (the image
    // leaves the screen on a phone), so there the pinch zooms about the centre and the
    // image does not move with the fingers.
    zoomAt(factor, clientX, clientY) {
      const vp = engine.getViewport(viewportId);
      if (!vp || !Number.isFinite(factor) || factor <= 0) return;
      const relative = vp.getZoom() / fitZoom;
      const wanted = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, relative * factor));
      const f = wanted / relative;
      if (f === 1) return;
      vp.setZoom(vp.getZoom() * f);
      if (!cpuRendering) {
        const rect = element.getBoundingClientRect();
        const [px, py] = vp.getPan();
        const qx = clientX - rect.left - rect.width / 2;
        const qy = clientY - rect.top - rect.height / 2;
        vp.setPan([px + (1 - f) * qx, py + (1 - f) * qy]);
      }
      vp.render();
    },
    panBy(dx, dy) {
      const vp = engine.getViewport(viewportId);
      if (!vp || cpuRendering || (!dx && !dy)) return;
      const [px, py] = vp.getPan();
      vp.setPan([px + dx, py + dy]);
      vp.render();
    },
    // source: { client, config } of a prior study (priors.js); the page's own study by default.
    async load(picked, source = null) {
      announceSeries(picked.uid, true);
      try {
        await this.loadSeries(picked, source);
      } finally {
        if (series === picked) announceSeries(picked.uid, false);
      }
    },
    async loadSeries(picked, source) {
      config = source?.config ?? ownConfig;
      client = source?.client ?? ownClient;
      pane.dataset.study = config.study_uid;
      if (playing) this.cine();
      const vp = viewport();
      if (!mprOpen) tools.now?.prefetch.disable(element); // else stopped when MPR opened
      series = picked;
      early = null;
      scroller.reset();
      pane.dataset.loaded = "false";
      const [, instances] = await showFirstThenAll(vp, picked);
      if (series !== picked) return; // another series was picked meanwhile
      const imageIds = imageIdsOf(picked.uid, instances);
      if (!imageIds.length) throw new Error("series without images");
      datasets = datasetsOf(instances);
      aloneOf = null;
      slider.max = String(imageIds.length - 1);
      // The first slice in anatomical order (head first), unless the page names a key
      // image (config.start_sop_uid), for the first series opened only. The slice drawn
      // alone was the server's guess at the first one (Instance Number 1); the prefetcher
      // then fills in outwards from where the stack starts.
      const start = frameOf(instances, startSop) ?? 0;
      startSop = null;
      const asked = early;
      early = null;
      const target = asked?.index ?? start + (asked?.delta ?? 0);
      await vp.setStack(imageIds, Math.max(0, Math.min(target, imageIds.length - 1)));
      vp.render();
      fitZoom = vp.getZoom() || 1;
      const { prefetch } = await tools.load();
      if (series !== picked) return;
      pane.dataset.loaded = "true";
      if (!mprOpen) prefetch.enable(element); // else once MPR closes
      queueOverlay();
    },
    scroll(delta) {
      if (aloneOf) {
        // Only the first slice is known yet: keep the keys and wheel turns for when the series is.
        early = { delta: (early?.delta ?? 0) + delta };
        return;
      }
      scroller.by(delta);
    },
    setIndex(index) {
      if (aloneOf) {
        early = { index };
        return;
      }
      scroller.to(index);
    },
    // Where the pane is going (the last slice asked for), or is.
    targetIndex() {
      return aloneOf ? null : scroller.target();
    },
    preset(preset) {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      const own = datasetWindow(datasets[vp.getCurrentImageIdIndex()] ?? {});
      if (preset === "default") {
        if (own) vp.setProperties({ voiRange: voiRange(own) });
        else vp.resetProperties();
      } else {
        vp.setProperties({ voiRange: voiRange(preset) });
      }
      vp.render();
    },
    rotate() {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      vp.setViewPresentation({ rotation: ((vp.getViewPresentation().rotation ?? 0) + 90) % 360 });
      vp.render();
    },
    flip(direction) {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      const current = vp.getViewPresentation();
      // The flip is of the screen: left and right as the reader sees them. The WebGL path
      // mirrors the camera (already the screen's axes); Cornerstone's CPU path flips the
      // image before turning it (and its view presentation cannot flip at all: it needs
      // the WebGL image data), so on a quarter turn the screen's horizontal is the image's
      // vertical.
      let horizontal = direction === "h";
      if (cpuRendering && Math.round((current.rotation ?? 0) / 90) % 2 === 1) horizontal = !horizontal;
      if (horizontal) vp.setCamera({ flipHorizontal: !current.flipHorizontal });
      else vp.setCamera({ flipVertical: !current.flipVertical });
      vp.render();
    },
    invert() {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      vp.setProperties({ invert: !vp.getProperties().invert });
      vp.render();
    },
    reset() {
      const vp = engine.getViewport(viewportId);
      if (!vp) return;
      // resetCamera keeps rotation and flips; the view presentation holds them.
      vp.setViewPresentation({ rotation: 0 });
      vp.setCamera({ flipHorizontal: false, flipVertical: false });
      vp.resetCamera();
      vp.resetProperties();
      vp.render();
    },
    cine() {
      if (!engine.getViewport(viewportId) || !tools.now) return false;
      playing = !playing;
      if (playing) tools.now.cine.playClip(element, { framesPerSecond: CINE_FPS, loop: true });
      else tools.now.cine.stopClip(element);
      return playing;
    },
    setTool(name) {
      tools.now?.use(name);
    },
    resize() {
      getRenderingEngine(ENGINE_ID)?.resize(true, false);
      const vp = engine.getViewport(viewportId);
      if (vp) {
        fitZoom = vp.getZoom() || 1;
        queueOverlay();
      }
    },
  };
  paneHooks(pane, { engine, viewportId, controller, datasets: () => datasets });
  return controller;
}
