// The assistant helpers against a live hub and a local OpenAI-compatible provider.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AssistantApi, AssistantConversation, RelaisError, RestClient } from "../dist/index.js";
import { startFakeOpenAi } from "./helpers/fake-openai.mjs";
import { Hub, makeClient, nextEvent, waitUntil } from "./helpers/hub.mjs";

const OK = ["Hello", " ", "world", "!"];
const SLOW = Array.from({ length: 40 }, (_, i) => `w${i} `);
const ENDLESS = Array.from({ length: 1200 }, (_, i) => `e${i} `);

describe("assistant helpers against a live hub", { timeout: 90_000 }, () => {
  let hub;
  let fake;
  let tokens;
  let api;
  const assistants = {};
  const clients = [];
  before(async () => {
    fake = await startFakeOpenAi({
      ok: { tokens: OK },
      slow: { tokens: SLOW, delayMs: 100 },
      endless: { tokens: ENDLESS, delayMs: 50 },
    });
    hub = await Hub.start({ env: { RELAIS_ASSISTANT_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64") } });
    tokens = await hub.login();
    api = new AssistantApi(new RestClient({ baseUrl: hub.baseUrl, getToken: () => tokens.access_token }));
    for (const mode of ["ok", "slow", "endless"]) {
      const provider = await api.addProvider({ name: mode, base_url: fake.baseUrl(mode), api_key: "sk-test" });
      assert.equal(provider.has_key, true);
      assert.equal("api_key" in provider, false);
      assistants[mode] = await api.createAssistant({ name: mode, instructions: "Be brief.", model: "gpt-test", providers: [provider.id] });
    }
  });
  after(async () => {
    for (const c of clients) c.close();
    await hub?.stop();
    await fake?.close();
  });
  function connected() {
    const made = makeClient(hub, async () => tokens.access_token);
    made.client.on("error", () => {});
    clients.push(made.client);
    return made.client.connect().then(() => made);
  }
  async function live(conversation) {
    const { client, sockets } = await connected();
    const conv = new AssistantConversation(client, conversation);
    const deltas = [];
    conv.on("delta", (d) => deltas.push(d));
    // The state the snapshot left, before any live delta.
    let snapshot;
    conv.once("change", () => {
      const a = conv.answer;
      snapshot = { content: a?.content ?? "", deltaSeq: a?.delta_seq ?? 0, status: a?.status };
    });
    await conv.start();
    return { conv, deltas, sockets, snapshot: () => snapshot };
  }
  /** Every delta applied once, in order, from `first`. */
  function assertConsecutive(deltas, first) {
    assert.deepEqual(deltas.map((d) => d.seq), deltas.map((_, i) => first + i));
  }

  test("an answer streams into the conversation, then completes with usage", async () => {
    const { conversation, channel } = await api.createConversation(assistants.ok.id);
    assert.equal(channel, `assistant:${conversation.id}`);
    const { conv, deltas } = await live(conversation.id);
    assert.deepEqual(conv.messages, []);

    const started = nextEvent(conv, "started");
    const complete = nextEvent(conv, "complete");
    const sent = await conv.send("Say hello");
    assert.equal(sent.message.content, "Say hello");
    assert.equal(sent.reply.id, sent.run);
    assert.equal((await started).id, sent.run);
    const done = await complete;
    assert.equal(done.status, "complete");
    assert.equal(done.content, OK.join(""));
    assert.deepEqual(done.usage, { prompt_tokens: 11, completion_tokens: OK.length, estimated: false });
    assert.equal(deltas.map((d) => d.text).join(""), OK.join(""));
    assertConsecutive(deltas, 1);
    assert.equal(deltas.at(-1).content, OK.join(""));
    assert.equal(conv.text, OK.join(""));
    assert.deepEqual(conv.messages.map((m) => [m.role, m.status]), [["user", "complete"], ["assistant", "complete"]]);

    // The provider got the instructions and the question.
    const request = fake.requests.find((r) => r.mode === "ok").body;
    assert.equal(request.stream, true);
    assert.deepEqual(request.messages.map((m) => m.role), ["system", "user"]);

    // The same over REST.
    assert.ok((await api.assistants()).some((a) => a.id === assistants.ok.id));
    assert.ok((await api.conversations()).some((c) => c.id === conversation.id));
    const page = await api.history(conversation.id);
    assert.deepEqual(page.messages.map((m) => m.content), ["Say hello", OK.join("")]);
    const exported = await api.export(conversation.id);
    assert.deepEqual(exported.messages.map((m) => m.id), page.messages.map((m) => m.id));
    const csv = await api.export(conversation.id, "csv");
    assert.match(csv, /^seq,role,status,created_at,prompt_tokens,completion_tokens,usage_estimated,content\r\n/);
    assert.match(csv, /Hello world!/);
    await conv.stop();
  });

  test("a device joining mid-stream and one reconnecting end with exactly the same text", async () => {
    const { conversation } = await api.createConversation(assistants.slow.id);
    const first = await live(conversation.id);
    const sent = await api.send(conversation.id, "Count");
    // Frames are stored before they are published: once three arrived, a
    // snapshot holds at least three.
    await waitUntil(() => first.deltas.length >= 3, "three frames");

    const late = await live(conversation.id);
    const snap = late.snapshot();
    assert.equal(snap.status, "streaming", "joined while the answer streams");
    assert.ok(snap.deltaSeq >= 3);
    assert.equal(snap.content, SLOW.join("").slice(0, snap.content.length), "the text so far");

    // The first device loses its socket mid-stream and recovers.
    await waitUntil(() => first.deltas.length >= snap.deltaSeq + 2, "more frames");
    first.sockets.at(-1).terminate();

    const lateDone = nextEvent(late.conv, "done", 20_000);
    const firstDone = nextEvent(first.conv, "done", 20_000);
    const [a, b] = await Promise.all([firstDone, lateDone]);
    const expected = SLOW.join("");
    assert.equal(a.content, expected);
    assert.equal(b.content, expected);
    // No gap, no duplicate: snapshot text + live deltas rebuild the answer.
    assert.equal(snap.content + late.deltas.map((d) => d.text).join(""), expected);
    assertConsecutive(late.deltas, snap.deltaSeq + 1);
    assert.equal(first.deltas.map((d) => d.text).join(""), expected);
    assertConsecutive(first.deltas, 1);
    assert.equal(late.conv.text, expected);
    assert.equal(first.conv.text, expected);
    assert.equal(late.conv.message(sent.run).status, "complete");
    await late.conv.stop();
    await first.conv.stop();
  });

  test("cancel stops the stream: the answer ends cancelled with the text so far", async () => {
    const { conversation } = await api.createConversation(assistants.endless.id);
    const { conv, deltas } = await live(conversation.id);
    const cancelled = nextEvent(conv, "cancelled", 20_000);
    const sent = await conv.send("Go on forever");
    await waitUntil(() => deltas.length >= 2, "two frames");
    assert.equal(conv.streamingRun, sent.run);
    await conv.cancel();
    const done = await cancelled;
    assert.equal(done.status, "cancelled");
    assert.ok(done.content.length > 0 && done.content.length < ENDLESS.join("").length);
    assert.equal(done.content, ENDLESS.join("").slice(0, done.content.length));
    assert.equal(done.usage.estimated, true);
    assert.equal(conv.message(sent.run).status, "cancelled");
    assert.equal(conv.text, done.content);
    assert.equal(conv.streamingRun, undefined);
    // The hub dropped the upstream request.
    await waitUntil(() => fake.dropped >= 1, "the provider's stream closed");
    await assert.rejects(api.cancel(sent.run), (e) => e instanceof RelaisError && e.code === "not_running" && e.status === 409);
    await assert.rejects(conv.cancel(), (e) => e.code === "not_running");
    await conv.stop();
  });

  test("errors carry the hub's codes", async () => {
    await assert.rejects(api.createConversation("no-such-assistant"), (e) => e.code === "not_found" && e.status === 404);
    await assert.rejects(
      api.addProvider({ name: "ok", base_url: fake.baseUrl("ok") }),
      (e) => e.code === "provider_exists" && e.status === 409,
    );
  });
});
