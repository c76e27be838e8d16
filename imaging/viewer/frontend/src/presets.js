// Window presets in Hounsfield units (center, width), as radiologists commonly read CT.
export const PRESETS = [
  { id: "lung", center: -600, width: 1500 },
  { id: "mediastinum", center: 50, width: 350 },
  { id: "bone", center: 400, width: 1800 },
  { id: "brain", center: 40, width: 80 },
  { id: "abdomen", center: 50, width: 400 },
];

// PS3.3 C.11.2.1.2.1, the linear VOI function: a window covers
// [center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2].
export function voiRange({ center, width }) {
  return { lower: center - 0.5 - (width - 1) / 2, upper: center - 0.5 + (width - 1) / 2 };
}

export function windowOf({ lower, upper }) {
  return { center: (lower + upper) / 2 + 0.5, width: upper - lower + 1 };
}
