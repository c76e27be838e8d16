// Builds the viewer into the project's static/viewer/ folder, which is committed.
// base "./" makes every chunk, worker and WASM file load relative to the entry script,
// so the bundle works wherever STATIC_URL points (a sub-path, another host's prefix).
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { defineConfig } from "vite";

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

export default defineConfig({
  base: "./",
  plugins: [gzipSiblings()],
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
