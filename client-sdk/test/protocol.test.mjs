// State-change events, `since` on subscribe, `rpc`, and getToken only when needed.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { RelaisError } from "../dist/index.js";
import { Hub, makeClient, nextEvent, waitUntil } from "./helpers/hub.mjs";

describe("protocol features against a live hub", { timeout: 60_000 }, () => {
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
    made.client.on("error", () => {});
    return made;
  }

  test("client and subscription state-change events", async () => {
    const tokens = await hub.login();
    const { client, sockets } = track(makeClient(hub, async () => tokens.access_token));
    const states = [];
    client.on("state", (e) => states.push(`${e.oldState}>${e.newState}`));
    await client.connect();
    assert.deepEqual(states, ["disconnected>connecting", "connecting>connected"]);

    const sub = client.subscribe("broadcast");
    const subStates = [];
    sub.on("state", (e) => subStates.push(e.newState));
    const subscribed = nextEvent(sub, "subscribed");
    await sub.ready;
    assert.equal((await subscribed).channel, "broadcast");
    assert.deepEqual(subStates, ["subscribing", "subscribed"]);

    // A dropped socket: back to pending, then subscribed again with recovery.
    const again = nextEvent(sub, "subscribed");
    sockets.at(-1).terminate();
    const info = await again;
    assert.equal(info.recovered, true);
    assert.deepEqual(subStates, ["subscribing", "subscribed", "pending", "subscribing", "subscribed"]);
    assert.ok(states.includes("connected>reconnecting"));
    assert.equal(states.at(-1), "connecting>connected");

    // Publications are events too.
    const pub = nextEvent(sub, "publication");
    await hub.publish(tokens.access_token, "broadcast", { hello: 1 });
    assert.deepEqual((await pub).data, { hello: 1 });

    const unsubscribed = nextEvent(sub, "unsubscribed");
    await sub.unsubscribe();
    assert.deepEqual(await unsubscribed, { channel: "broadcast" });
    assert.equal(subStates.at(-1), "unsubscribed");
  });

  test("`since` resumes a subscription from a saved position (a page reload)", async () => {
    const tokens = await hub.login();
    const first = track(makeClient(hub, async () => tokens.access_token)).client;
    const got1 = [];
    const sub1 = first.subscribe("broadcast", { onPublication: (d) => got1.push(d) });
    await first.connect();
    await sub1.ready;
    await hub.publish(tokens.access_token, "broadcast", { n: 1 });
    await waitUntil(() => got1.length === 1, "n=1");
    const saved = sub1.position;
    first.close();

    await hub.publish(tokens.access_token, "broadcast", { n: 2 });
    await hub.publish(tokens.access_token, "broadcast", { n: 3 });

    const second = track(makeClient(hub, async () => tokens.access_token)).client;
    const got2 = [];
    const sub2 = second.subscribe("broadcast", { onPublication: (d) => got2.push(d) }, { since: saved });
    await second.connect();
    const info = await sub2.ready;
    assert.equal(info.recovered, true);
    await waitUntil(() => got2.length === 2, "the two missed publications");
    assert.deepEqual(got2, [{ n: 2 }, { n: 3 }]);

    // A position of another epoch cannot be honoured: onRecoveryFailed.
    let failed = 0;
    const sub3 = second.subscribe("user:" + tokens.user.id, { onRecoveryFailed: () => failed++ }, { since: { epoch: "gone", offset: 5 } });
    assert.equal((await sub3.ready).recovered, false);
    assert.equal(failed, 1);
  });

  test("rpc: an unknown method is refused with a typed code", async () => {
    const tokens = await hub.login();
    const { client } = track(makeClient(hub, async () => tokens.access_token));
    await client.connect();
    await assert.rejects(client.rpc("nothing.here", { a: 1 }), (e) => e instanceof RelaisError && e.code === "method_not_found");
  });

  test("getToken is called once: reconnects and a close/connect reuse the valid token", async () => {
    const tokens = await hub.login();
    let calls = 0;
    const { client, sockets } = track(
      makeClient(hub, async () => {
        calls++;
        return tokens.access_token;
      }),
    );
    await client.connect();
    const back = nextEvent(client, "connected");
    sockets.at(-1).terminate();
    await back;
    client.close();
    await client.connect();
    assert.equal(calls, 1);
    // An explicit refresh asks for a new token.
    await client.refreshToken();
    assert.equal(calls, 2);
  });

  test("an initial `token` option connects without calling getToken", async () => {
    const tokens = await hub.login();
    let calls = 0;
    const { client } = track(
      makeClient(
        hub,
        async () => {
          calls++;
          return tokens.access_token;
        },
        { token: tokens.access_token },
      ),
    );
    await client.connect();
    assert.equal(calls, 0);
  });
});
