// Scrolling through a stack that ends exactly where the reader's input says.
//
// Cornerstone's own scroll (`viewport.scroll(delta, debounce)`) keeps a pending, delayed
// index change when the target image is not loaded yet, and does not cancel it when a
// later step lands on an image that is loaded: ten quick ArrowDown presses could end on
// the 7th slice once the late timer fired. Here one target index per pane is kept in our
// own code; every key press, wheel turn and slider move changes that target, and the
// viewport is told to show the target only: at once when the image is in the cache, else
// after a short quiet time (one request for a burst, not one per step). A later input
// always cancels the pending one.

import { cache } from "@cornerstonejs/core";

const QUIET_MS = 40;

export function createScroller(viewportOf) {
  let target = null; // the index asked for while a delayed change is pending, else null
  let timer = null;

  const clamp = (vp, index) => Math.max(0, Math.min(index, vp.getImageIds().length - 1));
  const cancel = (vp) => {
    clearTimeout(timer);
    timer = null;
    // A drag with Cornerstone's scroll tool may have left a delayed change of its own.
    if (vp?.debouncedTimeout) clearTimeout(vp.debouncedTimeout);
  };
  const show = (vp, index) => {
    target = null;
    if (vp.getCurrentImageIdIndex() !== index) vp.setImageIdIndex(index);
  };
  const go = (index) => {
    const vp = viewportOf();
    if (!vp || !vp.getImageIds().length) return;
    cancel(vp);
    const wanted = clamp(vp, index);
    if (cache.isLoaded(vp.getImageIds()[wanted])) {
      show(vp, wanted);
      return;
    }
    target = wanted;
    timer = setTimeout(() => {
      timer = null;
      const now = viewportOf();
      if (now === vp && target === wanted) show(vp, wanted);
    }, QUIET_MS);
  };
  return {
    // Where the pane is going: the pending target, else the slice on screen.
    target() {
      const vp = viewportOf();
      if (target !== null) return target;
      return vp ? vp.getCurrentImageIdIndex() : 0;
    },
    by(delta) {
      go(this.target() + delta);
    },
    to(index) {
      go(index);
    },
    // A new stack: nothing pending belongs to it.
    reset() {
      cancel(viewportOf());
      target = null;
    },
  };
}

// The wheel over a pane: one slice per notch (per event, as Cornerstone's tool does),
// through the same target as the keys.
export function bindWheel(element, scrollBy) {
  element.addEventListener(
    "wheel",
    (event) => {
      if (!event.deltaY) return;
      event.preventDefault();
      scrollBy(Math.sign(event.deltaY));
    },
    { passive: false },
  );
}
