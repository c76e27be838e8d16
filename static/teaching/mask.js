// The author's mask tool on a teaching case's flagged images: drag over an image to draw the
// rectangle to blank; its left, top, width and height (in the image's own pixels) fill the
// form, which the server checks and applies. Without this script the fields are typed.

function bind(area) {
  const form = area.closest("[data-image]").querySelector("[data-mask-form]");
  const box = area.querySelector("[data-mask-box]");
  const image = area.querySelector("img");
  const columns = Number(area.dataset.columns);
  const rows = Number(area.dataset.rows);
  const field = (name) => form.querySelector(`[data-mask="${name}"]`);
  let start = null;

  // A point of the pointer event in image pixels, clamped to the image.
  function pixel(event) {
    const rect = image.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return { x: Math.round((x / rect.width) * columns), y: Math.round((y / rect.height) * rows) };
  }

  function show(a, b) {
    const left = Math.min(a.x, b.x);
    const top = Math.min(a.y, b.y);
    const width = Math.max(Math.abs(a.x - b.x), 1);
    const height = Math.max(Math.abs(a.y - b.y), 1);
    field("x").value = left;
    field("y").value = top;
    field("width").value = Math.min(width, columns - left);
    field("height").value = Math.min(height, rows - top);
    box.hidden = false;
    box.style.left = `${(left / columns) * 100}%`;
    box.style.top = `${(top / rows) * 100}%`;
    box.style.width = `${(width / columns) * 100}%`;
    box.style.height = `${(height / rows) * 100}%`;
  }

  area.addEventListener("pointerdown", (event) => {
    start = pixel(event);
    area.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  area.addEventListener("pointermove", (event) => {
    if (start) show(start, pixel(event));
  });
  area.addEventListener("pointerup", (event) => {
    if (start) show(start, pixel(event));
    start = null;
  });
}

for (const area of document.querySelectorAll("[data-mask-area]")) bind(area);
