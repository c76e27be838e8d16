// Build-time plugin: @cornerstonejs/metadata and @cornerstonejs/utils import dcmjs (0.7 MB,
// a fifth of the code parsed before the first image) for four things: a logger, four
// transfer syntax UIDs, the DICOM dictionary (tag, VR, VM and keyword, looked up by
// "GGGGEEEE" or "(GGGG,EEEE)", and by keyword through nameMap), and two Part 10 stream
// readers that only the WADO-URI path uses. This plugin gives them a module with exactly
// those: the logger is the same loglevel that dcmjs bundles, the dictionary is dcmjs's own
// (read from it here, at build time) with the same lookup, and the readers throw.
//
// The build checks the subset against dcmjs and fails on any difference: every standard
// tag by both key forms, every group of the repeating ranges (50xx, 60xx ...), random
// keys, and nameMap entry by entry.

import dcmjs from "dcmjs";

const VIRTUAL_ID = "\0dcmjs-subset";
const IMPORTERS = /@cornerstonejs\/(metadata|utils)\/dist\/esm\//;
const TRANSFER_SYNTAXES = [
  "IMPLICIT_LITTLE_ENDIAN",
  "EXPLICIT_LITTLE_ENDIAN",
  "DEFLATED_EXPLICIT_LITTLE_ENDIAN",
  "EXPLICIT_BIG_ENDIAN",
];

// The lookup of dcmjs's dictionary Proxy for standard tags (dcmjs 0.52 data/dictionary):
// "(GGGG,EEEE)" or "GGGGEEEE", exact tags first, then the repeating-group ranges. The same
// source runs in the bundle and in the check below.
const LOOKUP_SOURCE = `
function lookupTag(prop, standard, ranges) {
  let hex, tag;
  if (prop.length === 11 && prop[0] === "(" && prop[5] === "," && prop[10] === ")") {
    hex = prop.slice(1, 5) + prop.slice(6, 10);
    tag = prop;
  } else if (prop.length === 8) {
    hex = prop;
    tag = "(" + prop.slice(0, 4) + "," + prop.slice(4, 8) + ")";
  } else {
    return undefined;
  }
  const group = parseInt(hex.slice(0, 4), 16);
  const elem = parseInt(hex.slice(4, 8), 16);
  if (!Number.isFinite(group) || !Number.isFinite(elem)) return undefined;
  let found = standard.get(group * 65536 + elem);
  if (!found) {
    const range = ranges.find((r) => group >= r[0] && group <= r[1] && elem === r[2]);
    found = range && range.slice(3);
  }
  return found ? { tag, vr: found[0], vm: found[1], name: found[2], version: "DICOM" } : undefined;
}
`;
const lookupTag = new Function(`${LOOKUP_SOURCE}; return lookupTag;`)();

const hex4 = (n) => n.toString(16).toUpperCase().padStart(4, "0");
const groupOf = (tag) => parseInt(tag.slice(1, 5), 16);
const elemOf = (tag) => parseInt(tag.slice(6, 10), 16);

// dcmjs's tables, read through its public dictionary: every element of every group that
// has a keyword, and each repeating range from its first group to its last.
function readDictionary() {
  const { dictionary, nameMap } = dcmjs.data.DicomMetaDictionary;
  const entries = Object.values(nameMap);
  const named = (group, elem, name) => dictionary[hex4(group) + hex4(elem)]?.name === name;
  // A repeating group (PS3.5 7.6) varies in the low byte of the group number: 50xx, 60xx,
  // 7Fxx; exact tags inside one (7FE0 within 7Fxx) are answered first.
  const ranges = [];
  for (const entry of entries) {
    const [group, elem] = [groupOf(entry.tag), elemOf(entry.tag)];
    if (!named(group + 1, elem, entry.name)) continue;
    const window = Array.from({ length: 256 }, (_, low) => (group & 0xff00) | low);
    const members = window.filter((g) => named(g, elem, entry.name));
    ranges.push([members[0], members.at(-1), elem, entry.vr, entry.vm, entry.name]);
  }
  const fromRange = (group, elem, found) =>
    ranges.some((r) => group >= r[0] && group <= r[1] && elem === r[2] && same(r.slice(3), [found.vr, found.vm, found.name]));
  const standard = [];
  for (const group of new Set(entries.map((e) => groupOf(e.tag)))) {
    for (let elem = 0; elem <= 0xffff; elem += 1) {
      const found = dictionary[hex4(group) + hex4(elem)];
      if (found && !fromRange(group, elem, found)) standard.push([group * 65536 + elem, found.vr, found.vm, found.name]);
    }
  }
  // nameMap is keyed by each entry's own keyword: its tags, in its order, rebuild it.
  const names = Object.values(nameMap).map((entry) => groupOf(entry.tag) * 65536 + elemOf(entry.tag));
  return { standard, ranges, names };
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function check({ standard, ranges, names }) {
  const { dictionary, nameMap } = dcmjs.data.DicomMetaDictionary;
  const table = new Map(standard.map(([key, ...rest]) => [key, rest]));
  const keys = [];
  for (const [key] of standard) keys.push(hex4(key >>> 16) + hex4(key & 0xffff));
  for (const range of ranges) {
    for (let group = Math.max(0, range[0] - 2); group <= Math.min(0xffff, range[1] + 2); group += 1) {
      keys.push(hex4(group) + hex4(range[2]));
    }
  }
  let seed = 7;
  for (let i = 0; i < 50000; i += 1) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    keys.push(seed.toString(16).toUpperCase().padStart(8, "0"));
  }
  for (const hex of keys) {
    for (const prop of [hex, hex.toLowerCase(), `(${hex.slice(0, 4)},${hex.slice(4)})`]) {
      if (!same(lookupTag(prop, table, ranges), dictionary[prop])) {
        throw new Error(`dcmjs subset: the dictionary answers ${prop} differently from dcmjs`);
      }
    }
  }
  const rebuilt = nameMapOf(names, table, ranges);
  if (!same(Object.keys(rebuilt), Object.keys(nameMap)) || !same(rebuilt, nameMap)) {
    throw new Error("dcmjs subset: nameMap differs from dcmjs's");
  }
}

const NAME_MAP_SOURCE = `
function nameMapOf(names, standard, ranges) {
  const out = {};
  const hex4 = (n) => n.toString(16).toUpperCase().padStart(4, "0");
  for (const key of names) {
    const entry = lookupTag(hex4(key >>> 16) + hex4(key & 0xffff), standard, ranges);
    out[entry.name] = entry;
  }
  return out;
}
`;
const nameMapOf = new Function("lookupTag", `${NAME_MAP_SOURCE}; return nameMapOf;`)(lookupTag);

function moduleSource(data) {
  const constants = Object.fromEntries(TRANSFER_SYNTAXES.map((name) => [name, dcmjs.constants[name]]));
  return `import log from "loglevel";
${LOOKUP_SOURCE}
${NAME_MAP_SOURCE}
const { standard: STANDARD, ranges: RANGES, names: NAMES } = JSON.parse(${JSON.stringify(JSON.stringify(data))});
const table = new Map(STANDARD.map(([key, ...rest]) => [key, rest]));
const cache = new Map();
const dictionary = new Proxy(Object.create(null), {
  get(_target, prop) {
    if (typeof prop !== "string") return undefined;
    if (cache.has(prop)) return cache.get(prop);
    const found = lookupTag(prop, table, RANGES);
    if (found) cache.set(prop, found);
    return found;
  },
  has(_target, prop) {
    return typeof prop === "string" && lookupTag(prop, table, RANGES) !== undefined;
  },
});
const leftOut = (what) =>
  class {
    constructor() {
      throw new Error("dcmjs " + what + " is left out of the viewer bundle (Part 10 streams are read by WADO-URI only)");
    }
  };
export const constants = ${JSON.stringify(constants)};
export const data = { DicomMetaDictionary: { dictionary, nameMap: nameMapOf(NAMES, table, RANGES) } };
export const async = { AsyncDicomReader: leftOut("AsyncDicomReader") };
export const utilities = { DicomMetadataListener: leftOut("DicomMetadataListener") };
export { log };
export default { constants, data, async, utilities, log };
`;
}

export function dcmjsSubset() {
  let source = null;
  return {
    name: "dcmjs-subset",
    apply: "build",
    enforce: "pre",
    resolveId(id, importer) {
      return id === "dcmjs" && importer && IMPORTERS.test(importer) ? VIRTUAL_ID : null;
    },
    load(id) {
      if (id !== VIRTUAL_ID) return null;
      if (!source) {
        const data = readDictionary();
        check(data);
        source = moduleSource(data);
      }
      return source;
    },
  };
}
