// Helpers of the end-to-end tests: the real hub binary as a child process,
// headless Chromium through playwright-core, users made over REST, and the
// sign-in of a browser context through the page itself.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ADMIN_EMAIL = "admin@example.com";
export const ADMIN_PASSWORD = "e2e-admin-password-0123";
export const PASSWORD = "e2e-user-password-0123";
export const TENANT = "default";

/** The hub binary: $RELAIS_BIN, else target/debug/relais of the repository. */
export const RELAIS_BIN = process.env.RELAIS_BIN ?? fileURLToPath(new URL("../../target/debug/relais", import.meta.url));
/** Chromium: $CHROMIUM, else Debian's. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Screenshots go here (not committed). */
export const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A hub on a free port with a fresh data directory; `env` adds variables. */
export async function startHub(env = {}) {
  if (!existsSync(RELAIS_BIN)) {
    throw new Error(`hub binary not found at ${RELAIS_BIN}: run \`cargo build -p relais\` in the repository root, or set RELAIS_BIN`);
  }
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "relais-web-e2e-"));
  const baseUrl = `http://127.0.0.1:${port}`;
  const proc = spawn(RELAIS_BIN, [], {
    env: {
      ...process.env,
      RELAIS_BIND: `127.0.0.1:${port}`,
      RELAIS_DATA_DIR: dataDir,
      RELAIS_BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
      RELAIS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      RELAIS_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  proc.stdout.on("data", collect);
  proc.stderr.on("data", collect);
  let exited = null;
  proc.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  const kill = () => proc.kill("SIGKILL");
  process.once("exit", kill);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`hub exited during start-up (${JSON.stringify(exited)}):\n${output}`);
    try {
      const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`hub not ready after 30 s:\n${output}`);
    }
    await sleep(50);
  }
  const hub = {
    baseUrl,
    output: () => output,
    async stop() {
      process.off("exit", kill);
      if (proc.exitCode === null && proc.signalCode === null) {
        const done = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await done;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
    /** A REST call; throws with the body on a non-2xx answer. */
    async call(method, path, token, body, headers = {}) {
      const res = await fetch(`${baseUrl}/api/v1${path}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      const json = text ? JSON.parse(text) : null;
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return json;
    },
    async login(email, password = PASSWORD) {
      return hub.call("POST", "/auth/login", null, { tenant: TENANT, email, password });
    },
    async adminToken() {
      return (await hub.login(ADMIN_EMAIL, ADMIN_PASSWORD)).access_token;
    },
    /** Creates a user with `roles`; returns its id. */
    async user(email, roles, displayName) {
      const admin = await hub.adminToken();
      const u = await hub.call("POST", "/admin/users", admin, { email, password: PASSWORD, roles, ...(displayName ? { display_name: displayName } : {}) });
      return u.id;
    },
  };
  return hub;
}

let browser = null;

/** One headless Chromium for the test file. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM`);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  return browser;
}

/**
 * A new browser context (its own storage, so its own session) with a page
 * signed in as `email`. Page errors fail the test that reads `errors`.
 */
export async function signedInPage(hub, email, password = PASSWORD, { locale = "en-US", viewport = { width: 1280, height: 800 } } = {}) {
  // Reduced motion: no transitions half-way in screenshots.
  const context = await browser.newContext({ locale, viewport, acceptDownloads: true, reducedMotion: "reduce" });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${hub.baseUrl}/`);
  await page.fill("#tenant", TENANT);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#bell");
  await page.waitForSelector('#conn[data-state="connected"]');
  return { context, page, errors };
}

/** Saves a full-page screenshot as artifacts/<name>.png. */
export async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** The text of `selector` once it matches `expected` (string or RegExp); fails after 10 s. */
export async function waitText(page, selector, expected, timeout = 10_000) {
  const loc = page.locator(selector);
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = (await loc.count()) ? await loc.first().textContent() : null;
    if (last !== null && (expected instanceof RegExp ? expected.test(last) : last.trim() === expected.trim())) return last;
    if (Date.now() > deadline) throw new Error(`${selector}: expected ${expected}, last saw ${JSON.stringify(last)}`);
    await sleep(50);
  }
}
