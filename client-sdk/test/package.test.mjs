// The published package: `npm pack`, installed into a fresh project, loads
// with `import` and `require`, its declarations type-check under both, and
// the browser bundle defines the global `Relais`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const sdk = fileURLToPath(new URL("..", import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const tsc = join(sdk, "node_modules/typescript/bin/tsc");
const pkg = JSON.parse(readFileSync(join(sdk, "package.json"), "utf8"));

let work;
let project;

before(() => {
  work = mkdtempSync(join(tmpdir(), "relais-sdk-pack-"));
  const out = execFileSync(npm, ["pack", "--json", "--pack-destination", work], { cwd: sdk, encoding: "utf8" });
  // `prepack` may print build output before the JSON.
  const tarball = join(work, JSON.parse(out.slice(out.indexOf("["))).at(-1).filename);
  project = join(work, "app");
  execFileSync("mkdir", ["-p", project]);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "app", private: true, version: "1.0.0" }));
  execFileSync(npm, ["install", tarball, "--no-audit", "--no-fund", "--offline"], { cwd: project, stdio: "pipe" });
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const EXPECTED = ["RelaisClient", "RelaisError", "Subscription", "CloseCode", "login", "RestClient", "Inbox", "Preferences", "Queues", "QueueCounts", "PlanningView", "ChatApi", "ChatRoom", "ChatUnread", "AssistantApi", "AssistantConversation"];

function run(file, source) {
  writeFileSync(join(project, file), source);
  return execFileSync(process.execPath, [file], { cwd: project, encoding: "utf8" }).trim();
}

test("the package is public, Apache-2.0, with no runtime dependency", () => {
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.license, "Apache-2.0");
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
});

test("a fresh project imports it with `import`", () => {
  const out = run("esm.mjs", `import * as r from "${pkg.name}"; console.log(JSON.stringify(Object.keys(r)));`);
  const names = JSON.parse(out);
  for (const n of EXPECTED) assert.ok(names.includes(n), `${n} exported`);
});

test("a fresh project loads it with `require`", () => {
  const out = run(
    "cjs.cjs",
    `const r = require("${pkg.name}");
     const e = new r.RelaisError("forbidden", "no");
     console.log(JSON.stringify({ keys: Object.keys(r), ok: e instanceof Error && e.code === "forbidden" }));`,
  );
  const { keys, ok } = JSON.parse(out);
  for (const n of EXPECTED) assert.ok(keys.includes(n), `${n} exported`);
  assert.ok(ok);
});

test("its declarations type-check from ESM and CommonJS code", () => {
  const code = `import { RelaisClient, type RelaisErrorCode } from "${pkg.name}";
const code: RelaisErrorCode = "forbidden";
const c = new RelaisClient({ url: "ws://x/ws", getToken: async () => "t", WebSocket: class {} as never });
c.on("state", (e) => e.newState);
c.subscribe("broadcast").on("subscribed", (i) => i.snapshot);
export { code };
`;
  writeFileSync(join(project, "a.mts"), code);
  writeFileSync(join(project, "b.cts"), code);
  writeFileSync(
    join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, lib: ["es2022", "dom"], types: [] },
      files: ["a.mts", "b.cts"],
    }),
  );
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: project, encoding: "utf8" });
});

test("the browser bundle defines the global `Relais`", () => {
  const src = readFileSync(join(project, "node_modules", pkg.name, "dist/browser/relais.iife.min.js"), "utf8");
  const ctx = { WebSocket: class {} };
  vm.createContext(ctx);
  vm.runInContext(`${src}; globalThis.__names = Object.keys(Relais);`, ctx);
  for (const n of EXPECTED) assert.ok(ctx.__names.includes(n), `${n} in the bundle`);
  const esm = readFileSync(join(project, "node_modules", pkg.name, "dist/browser/relais.min.js"), "utf8");
  assert.doesNotMatch(esm, /\brequire\(|from"\.\//, "one self-contained module");
});
