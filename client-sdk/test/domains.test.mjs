// Domain helpers against a live hub: inbox, preferences, queues, planning.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Inbox, PlanningApi, PlanningView, Preferences, QueueCounts, Queues, RelaisError, RestClient } from "../dist/index.js";
import { Hub, makeClient, waitUntil } from "./helpers/hub.mjs";

describe("domain helpers against a live hub", { timeout: 90_000 }, () => {
  let hub;
  let tokens;
  let rest;
  const clients = [];
  before(async () => {
    hub = await Hub.start();
    tokens = await hub.login();
    rest = new RestClient({ baseUrl: hub.baseUrl, getToken: () => tokens.access_token });
  });
  after(async () => {
    for (const c of clients) c.close();
    await hub?.stop();
  });
  async function connected() {
    const { client } = makeClient(hub, async () => tokens.access_token);
    client.on("error", () => {});
    clients.push(client);
    await client.connect();
    return client;
  }
  function announce(title) {
    return rest.request("POST", "/notifications", {
      body: {
        type: "system.announcement",
        payload: { announcement: { title, body: `${title} body` } },
        recipients: { users: [tokens.user.id] },
      },
    });
  }

  test("inbox: store filled, live created/updated applied, counts by version", async () => {
    const inbox = new Inbox({ client: await connected(), rest });
    await inbox.start();
    assert.equal(inbox.items.length, 0);
    assert.ok(inbox.counts && typeof inbox.counts.version === "number");

    const arrived = [];
    inbox.on("notification", (n) => arrived.push(n));
    await announce("First");
    await announce("Second");
    await waitUntil(() => inbox.items.length === 2, "two live notifications");
    const name = (i) => i.data.announcement.title;
    assert.deepEqual(inbox.items.map(name).sort(), ["First", "Second"]);
    assert.equal(arrived.length, 2);
    await waitUntil(() => inbox.counts.unread === 2, "counts from the events");
    const v = inbox.counts.version;

    // An action applies at once, and its live event changes nothing more.
    const target = inbox.items.find((i) => name(i) === "First");
    const r = await inbox.read(target.id);
    assert.deepEqual(r.changed, [target.id]);
    assert.equal(inbox.items.find((i) => i.id === target.id).status, "read");
    assert.equal(inbox.counts.unread, 1);
    assert.ok(inbox.counts.version > v);

    // A change made elsewhere (another tab) arrives live.
    const other = inbox.items.find((i) => name(i) === "Second");
    await rest.request("POST", `/inbox/${other.id}/archive`);
    await waitUntil(() => !inbox.items.some((i) => i.id === other.id), "the archived item leaves the page");
    await waitUntil(() => inbox.counts.archived === 1, "archived count");

    await rest.request("POST", "/inbox/seen-all");
    const fresh = await rest.request("GET", "/inbox/counts");
    await waitUntil(() => inbox.counts.version === fresh.version, "the counts of seen-all");
    assert.deepEqual(inbox.counts, fresh);
    await inbox.stop();
  });

  test("preferences: get defaults, update, replace", async () => {
    const prefs = new Preferences(rest);
    const d = await prefs.get();
    assert.equal(d.digest_hour, 8);
    const u = await prefs.update({ timezone: "Europe/Paris", categories: { tasks: { email: false } } });
    assert.equal(u.timezone, "Europe/Paris");
    assert.equal(u.categories.tasks.email, false);
    const r = await prefs.replace({ digest_hour: 9 });
    assert.equal(r.digest_hour, 9);
    assert.equal(r.timezone, null);
    await assert.rejects(prefs.update({ timezone: "Mars/Olympus" }), (e) => e instanceof RelaisError && e.code === "invalid_timezone" && e.status === 422);
  });

  test("queues: live counts from the snapshot and updates; transitions over REST", async () => {
    const queues = new Queues(rest);
    const first = await queues.create("campaigns", { external_ref: "c-1", title: "Campaign 1", payload: { n: 1 } });
    assert.equal(first.status, "pending");

    const live = new QueueCounts(await connected());
    await live.start();
    assert.equal(live.counts.get("campaigns").pending, 1, "from the snapshot");

    await queues.create("campaigns", { external_ref: "c-2", title: "Campaign 2" });
    await waitUntil(() => live.counts.get("campaigns")?.pending === 2, "pending 2 from queue.counts");
    const reviewed = await queues.transition("campaigns", first.id, "in_review");
    assert.equal(reviewed.status, "in_review");
    await waitUntil(() => live.counts.get("campaigns")?.in_review === 1, "in_review 1");
    await assert.rejects(queues.transition("campaigns", first.id, "rejected"), (e) => e.code === "reason_required");
    await queues.transition("campaigns", first.id, "rejected", { reason: "blurry" });
    await waitUntil(() => live.counts.get("campaigns")?.rejected === 1 && live.counts.get("campaigns")?.in_review === 0, "rejected 1");
    const trail = await queues.events("campaigns", first.id);
    assert.deepEqual(trail.map((e) => e.to), ["pending", "in_review", "rejected"]);
    assert.deepEqual(await queues.counts(), Object.fromEntries(live.counts));
    await live.stop();
  });

  test("planning: snapshot and slot changes in a local view ordered by start", async () => {
    const api = new PlanningApi(rest);
    const station = await api.createStation({ name: "Radio Test", time_zone: "Europe/Paris" });
    const day = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const s9 = await api.createSlot(station.id, { starts_at: `${day}T09:00:00Z`, duration: 30, title: "nine" });

    const view = new PlanningView(await connected(), station.id, { from: `${day}T00:00:00Z`, to: `${day}T23:59:59Z` });
    await view.start();
    assert.equal(view.station.name, "Radio Test");
    assert.deepEqual(view.slots.map((s) => s.title), ["nine"]);

    const s8 = await api.createSlot(station.id, { starts_at: `${day}T08:00:00Z`, duration: 30, title: "eight" });
    await waitUntil(() => view.slots.length === 2, "slot.created");
    assert.deepEqual(view.slots.map((s) => s.title), ["eight", "nine"]);

    await api.confirm(s9.id);
    await waitUntil(() => view.slot(s9.id)?.status === "confirmed", "slot.confirmed");
    const moved = await api.updateSlot(s8.id, s8.version, { starts_at: `${day}T10:00:00Z` });
    await waitUntil(() => view.slot(s8.id)?.version === moved.version, "slot.moved");
    assert.deepEqual(view.slots.map((s) => s.title), ["nine", "eight"]);

    // An older version is ignored.
    view.apply({ type: "slot.updated", slot: { ...s8, title: "stale" } });
    assert.equal(view.slot(s8.id).title, "eight");

    await assert.rejects(api.updateSlot(s8.id, s8.version, { title: "x" }), (e) => e.code === "version_mismatch" && e.status === 412);
    await view.stop();
  });
});
