// Test helper: runs the real Relais hub as a child process.
// (Node 20's test runner also loads this file as a test file; it defines no test.)
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

import { RelaisClient, login } from "../../dist/index.js";

export const ADMIN_EMAIL = "admin@example.com";
export const ADMIN_PASSWORD = "test-password-0123";
/** The tenant the hub creates at first start (printed in its start-up banner). */
export const TENANT = "default";

/** The hub binary: $RELAIS_BIN, else ../../target/debug/relais from the test folder. */
export const RELAIS_BIN =
  process.env.RELAIS_BIN ?? fileURLToPath(new URL("../../../target/debug/relais", import.meta.url));

/** A free TCP port on 127.0.0.1. */
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until `predicate()` is truthy, polling every 20 ms.
 * Rejects after `timeoutMs` with `what` in the message.
 */
export async function waitUntil(predicate, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves with the payload of the next `event` of `emitter`, or rejects after `timeoutMs`. */
export function nextEvent(emitter, event, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    const off = emitter.once(event, (payload) => {
      clearTimeout(timer);
      resolve(payload);
    });
  });
}

/** A running hub. `start()` (again) reuses the same port and data directory. */
export class Hub {
  constructor({ port, dataDir, env = {} }) {
    this.port = port;
    /** Extra environment of the hub process (e.g. `RELAIS_ASSISTANT_ENCRYPTION_KEY`). */
    this.env = env;
    this.dataDir = dataDir;
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.wsUrl = `ws://127.0.0.1:${port}/ws`;
    this.proc = null;
    this.output = "";
    this.exitHandler = () => this.proc?.kill("SIGKILL");
  }

  /** `options.env`: extra environment variables for the hub. */
  static async start(options = {}) {
    if (!existsSync(RELAIS_BIN)) {
      throw new Error(
        `hub binary not found at ${RELAIS_BIN}: run \`cargo build -p relais\` in the repository root, or set RELAIS_BIN`,
      );
    }
    const hub = new Hub({
      port: await freePort(),
      dataDir: mkdtempSync(join(tmpdir(), "relais-sdk-test-")),
      env: options.env ?? {},
    });
    await hub.start();
    return hub;
  }

  async start(timeoutMs = 30_000) {
    const proc = spawn(RELAIS_BIN, [], {
      env: {
        ...process.env,
        RELAIS_BIND: `127.0.0.1:${this.port}`,
        RELAIS_DATA_DIR: this.dataDir,
        RELAIS_BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
        RELAIS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
        RELAIS_LOG: "warn",
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    this.output = "";
    const collect = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    proc.stdout.on("data", collect);
    proc.stderr.on("data", collect);
    let exited = null;
    proc.on("exit", (code, signal) => {
      exited = { code, signal };
    });
    process.once("exit", this.exitHandler);

    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exited) {
        throw new Error(`hub exited during start-up (${JSON.stringify(exited)}):\n${this.output}`);
      }
      try {
        const res = await fetch(`${this.baseUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
        await res.body?.cancel();
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`hub not ready after ${timeoutMs} ms:\n${this.output}`);
      }
      await sleep(50);
    }
  }

  /** Kills the process (SIGKILL by default) and waits for it to exit. */
  async kill(signal = "SIGKILL") {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    process.off("exit", this.exitHandler);
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }

  /** Sends `signal` to the running process (e.g. SIGSTOP / SIGCONT). */
  signal(signal) {
    this.proc?.kill(signal);
  }

  /** Kills the process and removes the data directory. */
  async stop() {
    this.signal("SIGCONT"); // in case a test left it stopped
    await this.kill("SIGTERM");
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Signs the bootstrap admin in (a new session each time). */
  login() {
    return login(this.baseUrl, { tenant: TENANT, email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  }

  /**
   * Creates a user of the default tenant with the admin's `accessToken`
   * (`POST /api/v1/admin/users`), then signs them in: resolves with their token pair.
   */
  async createUser(accessToken, email, roles = ["member"], password = "user-password-123") {
    const res = await fetch(`${this.baseUrl}/api/v1/admin/users`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${accessToken}` },
      body: JSON.stringify({ email, password, roles }),
    });
    const body = await res.json();
    if (res.status !== 201) throw new Error(`user not created: ${res.status} ${JSON.stringify(body)}`);
    return login(this.baseUrl, { tenant: TENANT, email, password });
  }

  /** `POST /api/v1/publish` with a bearer token; returns `{channel, epoch, offset}`. */
  async publish(accessToken, channel, data) {
    const res = await fetch(`${this.baseUrl}/api/v1/publish`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${accessToken}` },
      body: JSON.stringify({ channel, data }),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
    return body;
  }
}

/**
 * A RelaisClient on `hub` using the `ws` package. `sockets` lists every
 * WebSocket it opened, so a test can terminate the current one.
 * `options.openGate` (test only) delays each socket's `open` until the promise it returns settles.
 */
export function makeClient(hub, getToken, options = {}) {
  const sockets = [];
  // `openGate()` may return a promise: the client sees the socket open only
  // once it settles, so a test can hold a reconnect while it acts.
  const { openGate, ...clientOptions } = options;
  class TrackedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
    get onopen() {
      return super.onopen;
    }
    set onopen(fn) {
      super.onopen = fn && openGate ? async (ev) => {
        await openGate();
        fn(ev);
      } : fn;
    }
  }
  const client = new RelaisClient({
    url: hub.wsUrl,
    getToken,
    WebSocket: TrackedWebSocket,
    ...clientOptions,
  });
  return { client, sockets };
}
