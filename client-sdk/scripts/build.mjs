// Builds the package into a clean dist/: `tsc` writes the ES modules and
// their declarations, then esbuild adds
// - dist/cjs/: one CommonJS file for `require`, with a copy of the
//   declarations under a `"type": "commonjs"` package.json so TypeScript
//   reads them as CommonJS types;
// - dist/browser/: single-file bundles for pages without a build step, as an
//   ES module and as a script that defines the global `Relais`.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const entry = join(root, "src/index.ts");

const common = { entryPoints: [entry], bundle: true, target: "es2022", legalComments: "none", logLevel: "warning" };

// Clean first: files of removed sources must not end up in the package.
rmSync(dist, { recursive: true, force: true });
const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin/tsc");
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json")], { stdio: "inherit" });

await build({ ...common, platform: "neutral", format: "cjs", outfile: join(dist, "cjs/index.js") });
writeFileSync(join(dist, "cjs/package.json"), JSON.stringify({ type: "commonjs" }) + "\n");
for (const f of readdirSync(dist)) {
  if (f.endsWith(".d.ts")) cpSync(join(dist, f), join(dist, "cjs", f));
}

mkdirSync(join(dist, "browser"), { recursive: true });
await build({ ...common, platform: "browser", format: "esm", minify: true, sourcemap: true, outfile: join(dist, "browser/relais.min.js") });
await build({
  ...common,
  platform: "browser",
  format: "iife",
  globalName: "Relais",
  minify: true,
  sourcemap: true,
  outfile: join(dist, "browser/relais.iife.min.js"),
});
