// Server-Sent Events as the fallback transport when WebSocket is blocked.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { RelaisClient, RelaisError } from "../dist/index.js";
import { Hub, nextEvent, waitUntil } from "./helpers/hub.mjs";
import WebSocket from "ws";

let hub;
let client;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  client?.close();
  await hub?.stop();
});

test("WebSocket blocked: the client falls back to SSE, subscribes, recovers, refuses commands", { timeout: 60_000 }, async () => {
  const tokens = await hub.login();
  client = new RelaisClient({
    // An endpoint that refuses the upgrade, as a blocking proxy would.
    url: `ws://127.0.0.1:${hub.port}/blocked`,
    WebSocket,
    getToken: async () => tokens.access_token,
    sseFallback: `${hub.baseUrl}/api/v1/sse`,
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
  });
  client.on("error", () => {});
  const received = [];
  const failures = [];
  const sub = client.subscribe("broadcast", {
    onPublication: (data) => received.push(data),
    onRecoveryFailed: (p) => failures.push(p),
  });
  await client.connect();
  assert.equal(client.transport, "sse");
  assert.equal(client.info.transport, "sse");
  const first = await sub.ready;
  assert.equal(typeof first.epoch, "string");

  await hub.publish(tokens.access_token, "broadcast", { n: 1 });
  await waitUntil(() => received.length === 1, "a publication over SSE");

  // A second channel reopens the stream; the first resumes without loss.
  const own = client.subscribe(`user:${tokens.user.id}`);
  await own.ready;
  await hub.publish(tokens.access_token, "broadcast", { n: 2 });
  await waitUntil(() => received.length === 2, "the next publication");

  // A forbidden channel is refused on its own; the others go on.
  const refused = client.subscribe("role:nobody");
  await assert.rejects(refused.ready, (e) => e instanceof RelaisError && e.status >= 400);
  await hub.publish(tokens.access_token, "broadcast", { n: 3 });
  await waitUntil(() => received.length === 3, "a publication after the refusal");

  // Commands need a WebSocket.
  await assert.rejects(client.publish("broadcast", {}), (e) => e.code === "not_supported");

  // Closed, then started again: publications in between are recovered.
  client.close();
  await hub.publish(tokens.access_token, "broadcast", { n: 4 });
  await hub.publish(tokens.access_token, "broadcast", { n: 5 });
  await client.connect();
  assert.equal(client.transport, "sse");
  await waitUntil(() => received.length === 5, "the missed publications");
  assert.deepEqual(received.map((d) => d.n), [1, 2, 3, 4, 5]);
  assert.equal(failures.length, 0);

  // A hub restart: the stream ends, the client comes back, recovery fails (new epoch).
  const down = nextEvent(client, "disconnected", 15_000);
  await hub.kill("SIGTERM");
  assert.equal((await down).reconnect, true);
  await hub.start();
  await waitUntil(() => failures.length === 1, "onRecoveryFailed after the restart", 30_000);
  await hub.publish(tokens.access_token, "broadcast", { n: 6 });
  await waitUntil(() => received.length === 6, "a publication in the new epoch");
});
