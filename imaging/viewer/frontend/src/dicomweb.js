// Reads a study through the site's own DICOMweb (PS3.18): QIDO-RS for the series list,
// WADO-RS for series metadata; frames, rendered and thumbnail URLs are built here too.

const JSON_ACCEPT = { Accept: "application/dicom+json" };
// What Cornerstone's WADO-RS loader asks for: each frame as stored (compressed or not),
// the part naming its transfer syntax.
const FRAME_ACCEPT = { Accept: "multipart/related; type=application/octet-stream; transfer-syntax=*" };

export function tagValue(dataset, tag, index = 0) {
  const element = dataset?.[tag];
  if (!element || !element.Value) return undefined;
  const value = element.Value[index];
  if (element.vr === "PN" && value && typeof value === "object") return value.Alphabetic ?? "";
  return value;
}

export function tagValues(dataset, tag) {
  return dataset?.[tag]?.Value ?? [];
}

async function getJson(url, signal) {
  const response = await fetch(url, { headers: JSON_ACCEPT, credentials: "same-origin", signal });
  if (response.status === 204) return [];
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  return response.json();
}

export class StudyClient {
  constructor(root, studyUid) {
    this.root = root.replace(/\/$/, "");
    this.studyUid = studyUid;
    this.studyUrl = `${this.root}/studies/${encodeURIComponent(studyUid)}`;
  }

  seriesUrl(seriesUid) {
    return `${this.studyUrl}/series/${encodeURIComponent(seriesUid)}`;
  }

  instanceUrl(seriesUid, sopUid) {
    return `${this.seriesUrl(seriesUid)}/instances/${encodeURIComponent(sopUid)}`;
  }

  async series() {
    const found = await getJson(`${this.studyUrl}/series`);
    return found
      .map((ds) => ({
        uid: tagValue(ds, "0020000E"),
        number: tagValue(ds, "00200011"),
        modality: tagValue(ds, "00080060") ?? "",
        description: tagValue(ds, "0008103E") ?? "",
        count: tagValue(ds, "00201209") ?? 0,
      }))
      .filter((s) => s.uid)
      .sort((a, b) => (a.number ?? 0) - (b.number ?? 0));
  }

  // The series' instances in slice order, each with its full metadata (one request).
  async instances(seriesUid, signal) {
    const metadata = await getJson(`${this.seriesUrl(seriesUid)}/metadata`, signal);
    performance.mark("viewer:metadata");
    return sortSlices(metadata).map(instanceOf);
  }

  // QIDO-RS: the series' instance UIDs in Instance Number order, from the index alone.
  // Much quicker than the metadata, which the server reads from every file.
  async instanceList(seriesUid, signal) {
    const found = await getJson(`${this.seriesUrl(seriesUid)}/instances`, signal);
    return found.map((ds) => tagValue(ds, "00080018")).filter(Boolean);
  }

  async instance(seriesUid, sopUid, signal) {
    const [ds] = await getJson(`${this.instanceUrl(seriesUid, sopUid)}/metadata`, signal);
    return instanceOf(ds);
  }

  // One frame's response as it came: the multipart body and its Content-Type.
  async frame(seriesUid, sopUid, number) {
    const url = this.framesUrl(seriesUid, sopUid, number);
    const response = await fetch(url, { headers: FRAME_ACCEPT, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${url}`);
    return { contentType: response.headers.get("Content-Type") ?? "", body: new Uint8Array(await response.arrayBuffer()) };
  }

  thumbnailUrl(seriesUid) {
    return `${this.seriesUrl(seriesUid)}/thumbnail`;
  }

  framesUrl(seriesUid, sopUid, frame) {
    return `${this.instanceUrl(seriesUid, sopUid)}/frames/${frame}`;
  }

  renderedUrl(seriesUid, sopUid, voi) {
    const base = `${this.instanceUrl(seriesUid, sopUid)}/rendered`;
    if (!voi) return base;
    // PS3.18 8.3.5.1.3: window=center,width,function
    return `${base}?window=${Math.round(voi.center)},${Math.round(voi.width)},linear`;
  }
}

export function instanceOf(ds) {
  return { dataset: ds, sopUid: tagValue(ds, "00080018"), frames: Number(tagValue(ds, "00280008") ?? 1) || 1 };
}

// Slices in anatomical order, head first for an axial stack: down the slice normal when
// the geometry is known, else by Instance Number.
export function sortSlices(datasets) {
  const orientation = tagValues(datasets[0], "00200037").map(Number);
  const normal = orientation.length === 6 ? cross(orientation.slice(0, 3), orientation.slice(3)) : null;
  const key = (ds) => {
    const position = tagValues(ds, "00200032").map(Number);
    if (normal && position.length === 3) return dot(normal, position);
    return -Number(tagValue(ds, "00200013") ?? 0);
  };
  return [...datasets].sort((a, b) => key(b) - key(a));
}

function cross(a, b) {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

function dot(a, b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

// The dataset's own window: the first Window Center / Width pair, if any.
export function datasetWindow(ds) {
  const center = Number(tagValue(ds, "00281050"));
  const width = Number(tagValue(ds, "00281051"));
  if (!Number.isFinite(center) || !Number.isFinite(width) || width <= 0) return null;
  return { center, width };
}
