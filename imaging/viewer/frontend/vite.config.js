// Builds the viewer into the project's static/viewer/ folder, which is committed.
// base "./" makes every chunk, worker and WASM file load relative to the entry script,
// so the bundle works wherever STATIC_URL points (a sub-path, another host's prefix).
import { resolve } from "node:path";
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  publicDir: false,
  logLevel: "warn",
  build: {
    outDir: resolve(import.meta.dirname, "../../../static/viewer"),
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
