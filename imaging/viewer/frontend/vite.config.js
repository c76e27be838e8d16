// Builds the viewer into the project's static/viewer/ folder, which is committed.
// base "./" makes every chunk, worker and WASM file load relative to the entry script,
// so the bundle works wherever STATIC_URL points (a sub-path, another host's prefix).
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { defineConfig } from "vite";

import { dcmjsSubset } from "./dcmjs-subset.js";

const OUT_DIR = resolve(import.meta.dirname, "../../../static/viewer");

// WhiteNoise serves a file's ".gz" sibling to browsers that accept gzip. The bundle is
// mostly Cornerstone and vtk.js (about 3.6 MB of JavaScript, a quarter of that gzipped):
// on a 10 Mbit/s clinic line that is the difference between 3 s and 0.8 s before the
// first image can be drawn, so every sizeable text file and WASM codec ships gzipped too.
function gzipSiblings() {
  const walk = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? walk(path) : [path];
    });
  return {
    name: "gzip-siblings",
    apply: "build",
    closeBundle() {
      for (const path of walk(OUT_DIR)) {
        if (!/\.(js|css|wasm)$/.test(path) || statSync(path).size < 4096) continue;
        writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }));
      }
    },
  };
}

// Code that Cornerstone's packages import but this viewer never runs, left out of the
// bundle: Chromium parses and runs every module of the Cornerstone chunk before the first
// image can be drawn, so each of these cost time on every cold visit. Each entry names
// the importer and what it imports; that import becomes a stub whose functions throw
// (a loud error, should a later change start to use one), and the importer stays as is.
const LEFT_OUT = [
  {
    // Surface meshes (PLY, STL, OBJ, VTK XML) for 3D views: vtk.js's readers and the XML
    // and YAML libraries behind them. The viewer shows image stacks only.
    importer: /@cornerstonejs\/core\/dist\/esm\/cache\/classes\/Mesh\.js$/,
    source: /^@kitware\/vtk\.js\/IO\//,
    exports: [],
  },
  {
    // vtk.js registers WebGPU views beside WebGL ones; Cornerstone draws with WebGL or
    // on the CPU and never asks for WebGPU.
    importer: /@kitware\/vtk\.js\/Rendering\/Profiles\/\w+\.js$/,
    source: /^\.\.\/WebGPU\//,
    exports: [],
  },
  {
    // The loader's index re-exports its decoders for use outside its web worker; here
    // only the worker decodes (it is built from its own entry, with the decoders).
    importer: /@cornerstonejs\/dicom-image-loader\/dist\/esm\/index\.js$/,
    source: /^\.\/(decodeImageFrameWorker|shared\/decoders\/index)\.js$/,
    exports: ["decodeImageFrame", "postProcessDecodedPixels", "initializers", "decoders"],
  },
  {
    // Inflating deflated Part 10 files for the WADO-URI loader; the viewer reads frames
    // through WADO-RS only (the worker, which decodes them, keeps its own copy).
    importer: /@cornerstonejs\/dicom-image-loader\/dist\/esm\/imageLoader\/wadouri\/parseDicomWithInflater\.js$/,
    source: /^pako$/,
    exports: ["inflateRaw"],
  },
];
const STUB_PREFIX = "\0left-out:";

function leaveOut() {
  return {
    name: "leave-out",
    apply: "build",
    enforce: "pre",
    resolveId(source, importer) {
      const rule = LEFT_OUT.find((r) => importer && r.importer.test(importer) && r.source.test(source));
      return rule ? `${STUB_PREFIX}${LEFT_OUT.indexOf(rule)}:${source}` : null;
    },
    load(id) {
      if (!id.startsWith(STUB_PREFIX)) return null;
      const [index, source] = id.slice(STUB_PREFIX.length).split(/:(.*)/s);
      const names = LEFT_OUT[Number(index)].exports;
      return [
        `const leftOut = () => { throw new Error(${JSON.stringify(`${source} is left out of the viewer bundle`)}); };`,
        `const stub = { ${["newInstance", ...names].map((name) => `${name}: leftOut`).join(", ")} };`,
        "export default stub;",
        ...names.map((name) => `export const ${name} = leftOut;`),
      ].join("\n");
    },
  };
}

// preload.json: what the page asks for beside viewer.js, so those downloads start with
// the page instead of one after another (viewer.js, then its imports, then the
// Cornerstone chunk, then at the first decode the worker). The Django view reads it.
function preloadList() {
  return {
    name: "preload-list",
    apply: "build",
    generateBundle(_options, bundle) {
      const chunks = Object.values(bundle).filter((file) => file.type === "chunk");
      const modules = new Set();
      const add = (fileName) => {
        if (modules.has(fileName)) return;
        modules.add(fileName);
        bundle[fileName].imports.forEach(add);
      };
      for (const chunk of chunks) {
        if (chunk.isEntry) chunk.imports.forEach(add);
        if (chunk.facadeModuleId?.endsWith("/src/stack.js")) add(chunk.fileName);
      }
      const worker = Object.keys(bundle).find((name) => name.startsWith("workers/decodeImageFrameWorker-"));
      if (!worker) this.error("the decode worker is not in the bundle");
      const source = `${JSON.stringify({ modules: [...modules].sort(), worker }, null, 2)}\n`;
      this.emitFile({ type: "asset", fileName: "preload.json", source });
    },
  };
}

export default defineConfig({
  base: "./",
  plugins: [leaveOut(), dcmjsSubset(), preloadList(), gzipSiblings()],
  publicDir: false,
  logLevel: "warn",
  build: {
    outDir: OUT_DIR,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 3000,
    assetsInlineLimit: 0,
    lib: false,
    rollupOptions: {
      input: resolve(import.meta.dirname, "src/main.js"),
      output: {
        format: "es",
        entryFileNames: "viewer.js",
        chunkFileNames: "chunks/[name]-[hash].js",
        assetFileNames: (info) => (info.names?.[0]?.endsWith(".css") ? "viewer.css" : "assets/[name]-[hash][extname]"),
      },
    },
  },
  worker: {
    format: "es",
    rollupOptions: {
      output: {
        entryFileNames: "workers/[name]-[hash].js",
        chunkFileNames: "workers/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
      },
    },
  },
  optimizeDeps: { exclude: ["@cornerstonejs/dicom-image-loader"] },
});
