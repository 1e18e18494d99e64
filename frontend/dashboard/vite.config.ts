import { defineConfig } from 'vite';

// The build is embedded into the jobq binary (frontend/src/routes/dashboard.rs names each
// file), so the output names are fixed: no content hashes, one script, one style sheet.
export default defineConfig({
  base: '/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    cssCodeSplit: false,
    modulePreload: false,
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/app-[name].js',
        assetFileNames: (info) =>
          info.names?.some((n) => n.endsWith('.css')) ? 'assets/app.css' : 'assets/[name][extname]',
        inlineDynamicImports: true,
      },
    },
  },
  server: {
    // `npm run dev` against a jobq on 127.0.0.1:8080.
    proxy: { '/api': 'http://127.0.0.1:8080', '/auth': 'http://127.0.0.1:8080', '/health': 'http://127.0.0.1:8080' },
  },
});
