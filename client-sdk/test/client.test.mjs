// End-to-end tests of the SDK against the real hub (no mocks).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { RelaisError, logout, refresh } from "../dist/index.js";
import { Hub, makeClient, nextEvent, sleep, waitUntil } from "./helpers/hub.mjs";

describe("RelaisClient against a live hub", { timeout: 120_000 }, () => {
  /** @type {Hub} */
  let hub;
  const clients = [];

  before(async () => {
    hub = await Hub.start();
  });

  after(async () => {
    for (const c of clients) c.close();
    await hub?.stop();
  });

  function track(made) {
    clients.push(made.client);
    // Errors are expected in some tests (refused connects, dropped sockets).
    made.client.on("error", () => {});
    return made;
  }

  test("login, connect, subscribe to broadcast, receive a REST publication", { timeout: 20_000 }, async () => {
    const tokens = await hub.login();
    assert.equal(typeof tokens.access_token, "string");
    assert.equal(typeof tokens.refresh_token, "string");

    const { client } = track(makeClient(hub, async () => tokens.access_token));
    const connected = nextEvent(client, "connected");
    await client.connect();
    const info = await connected;
    assert.equal(client.state, "connected");
    assert.equal(info.user, tokens.user.id);
    assert.ok(info.expiresAt > Date.now() / 1000, "expires_at in the future");

    const received = [];
    const sub = client.subscribe("broadcast", {
      onPublication: (data, ctx) => received.push({ data, ...ctx }),
    });
    const subscribed = await sub.ready;
    assert.equal(subscribed.channel, "broadcast");
    assert.equal(typeof subscribed.epoch, "string");
    assert.equal(subscribed.recovered, undefined);
    assert.equal(sub.status, "subscribed");

    const published = await hub.publish(tokens.access_token, "broadcast", { text: "hello", n: 1 });
    await waitUntil(() => received.length >= 1, "the publication");
    assert.equal(received.length, 1);
    assert.deepEqual(received[0].data, { text: "hello", n: 1 });
    assert.equal(received[0].channel, "broadcast");
    assert.equal(received[0].epoch, published.epoch);
    assert.equal(received[0].offset, published.offset);
    assert.equal(received[0].offset, subscribed.offset + 1);

    // A publication over the WebSocket is answered with its position.
    const own = await client.publish("broadcast", { text: "from ws" });
    assert.equal(own.epoch, published.epoch);
    assert.equal(own.offset, published.offset + 1);
    await waitUntil(() => received.length >= 2, "the second publication");
    assert.deepEqual(received[1].data, { text: "from ws" });

    // History has both.
    const hist = await client.history("broadcast", { since: { epoch: published.epoch, offset: published.offset - 1 } });
    assert.equal(hist.complete, true);
    assert.deepEqual(
      hist.publications.map((p) => p.offset),
      [published.offset, published.offset + 1],
    );

    assert.ok((await client.ping()) >= 0);
    await sub.unsubscribe();
    assert.equal(client.subscriptions.has("broadcast"), false);
    client.close();
    assert.equal(client.state, "disconnected");
  });

  test("recovery: missed publications arrive exactly once and in order after a dropped socket", { timeout: 30_000 }, async () => {
    const tokens = await hub.login();
    // The test holds the socket's opening during the reconnect, so that it
    // can publish while the client is certainly disconnected.
    let gate = null;
    let tokenCalls = 0;
    let attempts = 0;
    const { client, sockets } = track(
      makeClient(
        hub,
        async () => {
          tokenCalls++;
          return tokens.access_token;
        },
        { openGate: () => gate?.promise },
      ),
    );
    client.on("connecting", () => attempts++);
    const disconnects = [];
    client.on("disconnected", (e) => disconnects.push(e));
    await client.connect();

    const received = [];
    const subscribedEvents = [];
    let recoveryFailed = 0;
    const sub = client.subscribe("broadcast", {
      onPublication: (data, ctx) => received.push({ data, ...ctx }),
      onSubscribed: (info) => subscribedEvents.push(info),
      onRecoveryFailed: () => recoveryFailed++,
    });
    const first = await sub.ready;
    const start = first.offset;

    for (let i = 1; i <= 3; i++) await hub.publish(tokens.access_token, "broadcast", { n: i });
    await waitUntil(() => received.length === 3, "the first three publications");

    // Drop the connection without a close frame.
    let release;
    gate = { promise: new Promise((r) => (release = r)) };
    const dropped = nextEvent(client, "disconnected");
    sockets.at(-1).terminate();
    const d = await dropped;
    assert.equal(d.code, 1006);
    assert.equal(d.reconnect, true);
    assert.notEqual(client.state, "connected");

    // Publish while disconnected: over REST, and through the client (queued).
    for (let i = 4; i <= 8; i++) await hub.publish(tokens.access_token, "broadcast", { n: i });
    const queued = client.publish("broadcast", { n: 9 });
    await waitUntil(() => attempts >= 2, "the reconnect attempt");
    assert.equal(tokenCalls, 1, "the still-valid token is reused: no getToken call");
    assert.equal(received.length, 3, "nothing arrives while disconnected");
    const reconnected = nextEvent(client, "connected");
    gate = null;
    release();
    await reconnected;

    const pub9 = await queued;
    assert.equal(pub9.offset, start + 9);

    await waitUntil(() => received.length >= 9, "the missed publications");
    await sleep(300); // nothing more (no duplicates) may follow
    assert.deepEqual(
      received.map((r) => r.data.n),
      [1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.deepEqual(
      received.map((r) => r.offset),
      Array.from({ length: 9 }, (_, i) => start + i + 1),
    );
    assert.ok(received.every((r) => r.epoch === first.epoch));
    assert.equal(subscribedEvents.length, 2);
    assert.equal(subscribedEvents[1].recovered, true);
    assert.equal(recoveryFailed, 0);
    assert.deepEqual(sub.position, { epoch: first.epoch, offset: start + 9 });
    assert.equal(disconnects.length, 1);
    client.close();
  });

  test("a forbidden channel is refused with `forbidden`; presence on broadcast works for the admin", { timeout: 20_000 }, async () => {
    const tokens = await hub.login();
    const { client } = track(makeClient(hub, async () => tokens.access_token));
    await client.connect();

    for (const channel of ["role:nonexistent", "user:someone-else"]) {
      const sub = client.subscribe(channel, { onPublication: () => {} });
      await assert.rejects(sub.ready, (err) => {
        assert.ok(err instanceof RelaisError);
        assert.equal(err.code, "forbidden");
        return true;
      });
      assert.equal(sub.status, "unsubscribed");
      assert.equal(client.subscriptions.has(channel), false);
    }
    // Commands reject with the server's error too.
    await assert.rejects(client.publish("user:someone-else", { x: 1 }), (err) => err.code === "forbidden");
    await assert.rejects(client.presence("user:someone-else"), (err) => err.code === "forbidden");

    const sub = client.subscribe("broadcast", { onPublication: () => {} });
    await sub.ready;
    const presence = await client.presence("broadcast");
    assert.equal(presence.channel, "broadcast");
    assert.ok(presence.users >= 1);
    assert.ok(presence.clients >= 1);
    const me = presence.members.find((m) => m.user === tokens.user.id);
    assert.ok(me, "the admin is among the members");
    assert.ok(me.clients >= 1);
    client.close();
  });

  test("token refresh: REST refresh, then the `refresh` command on the live connection", { timeout: 20_000 }, async () => {
    let tokens = await hub.login();
    const { client, sockets } = track(makeClient(hub, async () => tokens.access_token));
    await client.connect();
    const before = client.info.expiresAt;

    await sleep(1100); // a new token of a later second expires later
    tokens = await refresh(hub.baseUrl, tokens.refresh_token);
    assert.equal(typeof tokens.access_token, "string");
    const expiresAt = await client.refreshToken();
    assert.ok(expiresAt > before, "expires_at moved forward");
    assert.equal(client.info.expiresAt, expiresAt);
    assert.equal(client.state, "connected");
    assert.equal(sockets.length, 1, "same connection");

    // A refresh token is single-use: the REST helper reports the server's code.
    await assert.rejects(refresh(hub.baseUrl, "not-a-refresh-token"), (err) => err instanceof RelaisError && err.status === 401);
    client.close();
  });

  test("an invalid token: `connect` refused with 4001, no reconnect", { timeout: 20_000 }, async () => {
    let tokenCalls = 0;
    const { client, sockets } = track(
      makeClient(hub, async () => {
        tokenCalls++;
        return "not-a-token";
      }),
    );
    const disconnected = nextEvent(client, "disconnected");
    await assert.rejects(client.connect(), (err) => err instanceof RelaisError && err.code === "invalid_token");
    const e = await disconnected;
    assert.equal(e.code, 4001);
    assert.equal(e.reconnect, false);
    assert.equal(e.error?.code, "invalid_token");
    await sleep(1000);
    assert.equal(client.state, "disconnected");
    assert.equal(tokenCalls, 1);
    assert.equal(sockets.length, 1);
  });

  test("logout closes the socket with 4003 and the client does not reconnect", { timeout: 20_000 }, async () => {
    const tokens = await hub.login();
    let tokenCalls = 0;
    const { client, sockets } = track(
      makeClient(hub, async () => {
        tokenCalls++;
        return tokens.access_token;
      }),
    );
    let connectedEvents = 0;
    client.on("connected", () => connectedEvents++);
    await client.connect();
    const sub = client.subscribe("broadcast", { onPublication: () => {} });
    await sub.ready;

    const disconnected = nextEvent(client, "disconnected");
    await logout(hub.baseUrl, tokens.access_token);
    const e = await disconnected;
    assert.equal(e.code, 4003);
    assert.equal(e.reconnect, false);
    assert.equal(client.state, "disconnected");

    await sleep(1500); // longer than any reconnect delay after a drop
    assert.equal(client.state, "disconnected");
    assert.equal(tokenCalls, 1, "getToken not called again");
    assert.equal(connectedEvents, 1);
    assert.equal(sockets.length, 1, "no new socket opened");
    await assert.rejects(client.publish("broadcast", {}), (err) => err.code === "client_closed");
  });
});
