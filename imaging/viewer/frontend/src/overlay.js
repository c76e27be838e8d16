// The four-corner text overlay: patient, study, series, slice position and window.
// Text only (textContent), so nothing from a DICOM header is ever parsed as HTML.

import { tagValue, tagValues } from "./dicomweb.js";

function format(template, values) {
  return template.replace(/%\((\w+)\)s/g, (_, key) => (values[key] ?? "").toString());
}

function fill(element, lines) {
  element.replaceChildren(
    ...lines.filter(Boolean).map((text) => {
      const line = document.createElement("div");
      line.textContent = text;
      return line;
    }),
  );
}

function slicePosition(dataset) {
  const location = tagValue(dataset, "00201041");
  if (location !== undefined && location !== "") return Number(location);
  const position = tagValues(dataset, "00200032");
  return position.length === 3 ? Number(position[2]) : null;
}

export function renderOverlay(pane, { config, series, dataset, index, count, voi, zoom }) {
  const s = config.strings;
  const corner = (name) => pane.querySelector(`[data-ov="${name}"]`);
  const patient = config.patient;
  fill(corner("tl"), [patient.name, patient.id && `${s.patient_id} ${patient.id}`, patient.sex_birth]);
  const study = config.study;
  fill(corner("tr"), [study.institution, study.description, study.date]);
  const position = dataset ? slicePosition(dataset) : null;
  fill(corner("bl"), [
    series && format(s.series_line, { number: series.number ?? "", description: series.description }),
    count ? format(s.image_line, { index: index === null ? "…" : index + 1, count }) : "",
    position !== null && Number.isFinite(position) ? format(s.position_line, { position: position.toFixed(1) }) : "",
  ]);
  fill(corner("br"), [
    voi ? format(s.window_line, { width: Math.round(voi.width), center: Math.round(voi.center) }) : "",
    zoom ? format(s.zoom_line, { zoom: zoom.toFixed(2) }) : "",
  ]);
  pane.dataset.index = index === null ? "" : String(index);
  pane.dataset.count = String(count);
  pane.dataset.zoom = zoom ? zoom.toFixed(2) : "1.00";
  if (voi) pane.dataset.window = `${Math.round(voi.width)}/${Math.round(voi.center)}`;
}
