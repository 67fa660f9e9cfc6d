// One live connection per tab while signed in: the SDK's RelaisClient (one
// WebSocket, every subscription of every page), its REST client, and the
// inbox that feeds the bell on every page.
import { Inbox, RelaisClient, RestClient } from "/vendor/relais.js";
import { session } from "./session.js";

const listeners = new Set();

export const live = {
  /** @type {RelaisClient | null} */
  client: null,
  /** @type {RestClient | null} */
  rest: null,
  /** @type {Inbox | null} */
  inbox: null,
  /** Settles once the inbox holds `user:<id>` (which other helpers then share). */
  inboxReady: Promise.resolve(),
  state: "disconnected",

  /** `fn(state)` whenever the connection state changes. */
  onState(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
};

function setState(state) {
  live.state = state;
  for (const fn of listeners) fn(state);
}

export function startLive() {
  if (live.client) return;
  const getToken = () => session.token();
  const rest = new RestClient({ baseUrl: location.origin, getToken });
  const client = new RelaisClient({
    url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`,
    getToken,
    // Where WebSockets are blocked (a proxy refusing upgrades), receive over SSE.
    sseFallback: true,
  });
  client.on("state", (e) => setState(e.newState));
  client.on("disconnected", (e) => {
    // Revoked or refused for good: the session is over in every tab.
    if (!e.reconnect && (e.code === 4001 || e.code === 4003)) session.expire();
  });
  client.on("error", (e) => {
    if (e?.code === "signed_out") session.expire();
  });
  live.client = client;
  live.rest = rest;
  live.inbox = new Inbox({ client, rest });
  client.connect().catch(() => {});
  live.inboxReady = live.inbox.start().catch(() => {});
}

export function stopLive() {
  const client = live.client;
  live.client = null;
  live.rest = null;
  live.inbox = null;
  client?.close();
  setState("disconnected");
}

/**
 * A REST call through the SDK's client with an error the pages can show.
 * A refused session (401) ends it in every tab.
 */
export async function api(method, path, options) {
  if (!live.rest) throw Object.assign(new Error("not signed in"), { code: "signed_out" });
  try {
    return await live.rest.request(method, path, options);
  } catch (e) {
    if (e?.status === 401) session.expire();
    throw e;
  }
}

/** A GET returning the raw response (exports): bearer token, error bodies read as JSON. */
export async function fetchFile(path) {
  const token = await session.token();
  const res = await fetch(`/api/v1${path}`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    throw Object.assign(new Error(body?.error?.message || `HTTP ${res.status}`), {
      code: body?.error?.code,
      status: res.status,
    });
  }
  return res;
}
