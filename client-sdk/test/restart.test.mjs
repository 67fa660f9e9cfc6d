// The hub process restarts: the client reconnects by itself and the
// subscription reports that recovery failed (the epoch changed).
// And a frozen hub (SIGSTOP) is detected by the application-level ping.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Hub, makeClient, sleep, waitUntil } from "./helpers/hub.mjs";

/** @type {Hub} */
let hub;
let client;
let pingClient;

before(async () => {
  hub = await Hub.start();
});

after(async () => {
  client?.close();
  pingClient?.close();
  await hub?.stop();
});

test("after a hub restart the client reconnects and reports recovery failure", { timeout: 60_000 }, async () => {
  const tokens = await hub.login();
  let tokenCalls = 0;
  ({ client } = makeClient(hub, async () => {
    tokenCalls++;
    return tokens.access_token;
  }));
  client.on("error", () => {}); // refused connections while the hub is down
  const disconnects = [];
  client.on("disconnected", (e) => disconnects.push(e));
  let connectedEvents = 0;
  client.on("connected", () => connectedEvents++);
  await client.connect();

  const received = [];
  const failures = [];
  const sub = client.subscribe("broadcast", {
    onPublication: (data, ctx) => received.push({ data, ...ctx }),
    onRecoveryFailed: (pos) => failures.push(pos),
  });
  await sub.ready;
  const before = await hub.publish(tokens.access_token, "broadcast", { phase: "before" });
  await waitUntil(() => received.length === 1, "the first publication");
  assert.equal(received[0].epoch, before.epoch);

  // Stop the hub and start it again on the same port and data directory:
  // first a graceful shutdown (close 4007), then a crash (no close frame, 1006).
  let lastEpoch = before.epoch;
  let expectedReceived = 1;
  const cases = [
    { signal: "SIGTERM", code: 4007 },
    { signal: "SIGKILL", code: 1006 },
  ];
  for (const [i, { signal, code }] of cases.entries()) {
    await hub.kill(signal);
    await waitUntil(() => disconnects.length >= i + 1, `the disconnect after ${signal}`, 10_000);
    assert.equal(disconnects.length, i + 1);
    assert.equal(disconnects[i].code, code);
    assert.equal(disconnects[i].reconnect, true);
    await hub.start();

    await waitUntil(() => failures.length >= i + 1, `onRecoveryFailed after ${signal}`, 45_000);
    assert.equal(client.state, "connected");
    assert.equal(connectedEvents, i + 2);
    assert.equal(failures.length, i + 1);
    assert.equal(disconnects.length, i + 1, "failed attempts are not disconnections");
    assert.equal(failures[i].channel, "broadcast");
    assert.notEqual(failures[i].epoch, lastEpoch, "a new epoch");
    assert.ok(disconnects.every((d) => d.reconnect === true));
    lastEpoch = failures[i].epoch;

    // The subscription goes on in the new epoch.
    const published = await hub.publish(tokens.access_token, "broadcast", { phase: `after ${signal}` });
    assert.equal(published.epoch, lastEpoch);
    expectedReceived++;
    await waitUntil(() => received.length === expectedReceived, `the publication after ${signal}`);
    const last = received.at(-1);
    assert.deepEqual(last.data, { phase: `after ${signal}` });
    assert.equal(last.epoch, published.epoch);
    assert.equal(last.offset, published.offset);
  }
  // Every reconnect reused the still-valid token.
  assert.equal(tokenCalls, 1);
});

test("app-level ping detects a frozen hub; after it resumes the subscription recovers", { timeout: 30_000 }, async () => {
  const tokens = await hub.login();
  ({ client: pingClient } = makeClient(hub, async () => tokens.access_token, {
    pingIntervalMs: 200,
    pingTimeoutMs: 500,
    connectTimeoutMs: 1000,
  }));
  pingClient.on("error", () => {});
  const disconnects = [];
  pingClient.on("disconnected", (e) => disconnects.push(e));
  await pingClient.connect();
  const subscribed = [];
  const received = [];
  const sub = pingClient.subscribe("broadcast", {
    onPublication: (data, ctx) => received.push({ data, ...ctx }),
    onSubscribed: (info) => subscribed.push(info),
  });
  await sub.ready;
  await sleep(700); // pings are answered: still connected
  assert.equal(pingClient.state, "connected");
  assert.equal(disconnects.length, 0);

  hub.signal("SIGSTOP");
  try {
    await waitUntil(() => disconnects.length >= 1, "the ping timeout", 5_000);
  } finally {
    hub.signal("SIGCONT");
  }
  assert.equal(disconnects[0].code, 1006);
  assert.equal(disconnects[0].reason, "ping timeout");
  assert.equal(disconnects[0].reconnect, true);

  await waitUntil(() => subscribed.length >= 2, "the resubscription", 20_000);
  assert.equal(pingClient.state, "connected");
  assert.equal(subscribed.at(-1).recovered, true, "same hub process: same epoch, recovered");
  const published = await hub.publish(tokens.access_token, "broadcast", { after: "freeze" });
  await waitUntil(() => received.some((r) => r.offset === published.offset), "a publication after the freeze");
  assert.equal(disconnects.length, 1);
});
