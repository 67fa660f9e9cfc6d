// Pure parts, without a hub: inbox actions, the planning view's rules, the SSE reader.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PlanningView, applyAction } from "../dist/index.js";
import { readEventStream } from "../dist/sse.js";

const item = { id: 1, status: "unread", seen_at: null, read_at: null, archived_at: null };

test("inbox actions follow the hub's rules", () => {
  const read = applyAction(item, "read", 5);
  assert.deepEqual([read.status, read.read_at, read.seen_at], ["read", 5, 5]);
  assert.equal(applyAction(read, "read", 6), read, "not applicable: unchanged");
  assert.equal(applyAction(item, "unread", 6), item);
  const archived = applyAction(read, "archive", 7);
  assert.deepEqual([archived.status, archived.archived_at, archived.seen_at], ["archived", 7, 5]);
  assert.equal(applyAction(archived, "seen", 8), archived, "archived items are not marked seen");
  const back = applyAction(applyAction(item, "archive", 7), "unarchive", 9);
  assert.deepEqual([back.status, back.archived_at, back.read_at], ["read", null, 9]);
});

test("planning view: versions win, slots leave the window, order by start", () => {
  const view = new PlanningView(/** @type {any} */ ({}), "st");
  // A snapshot as the subscription would apply it.
  view["takeSnapshot"]({
    station: { id: "st", name: "S", time_zone: "UTC" },
    from: "2026-12-05T00:00:00Z",
    to: "2026-12-06T00:00:00Z",
    slots: [{ id: "b", starts_at: "2026-12-05T09:00:00Z", ends_at: "2026-12-05T09:00:30Z", version: 2 }],
  });
  view.apply({ type: "slot.created", slot: { id: "a", starts_at: "2026-12-05T08:00:00Z", ends_at: "2026-12-05T08:00:30Z", version: 1 } });
  assert.deepEqual(view.slots.map((s) => s.id), ["a", "b"]);
  view.apply({ type: "slot.updated", slot: { id: "b", starts_at: "2026-12-05T07:00:00Z", ends_at: "2026-12-05T07:00:30Z", version: 2 } });
  assert.deepEqual(view.slots.map((s) => s.id), ["a", "b"], "same version: ignored");
  view.apply({ type: "slot.moved", slot: { id: "b", starts_at: "2026-12-07T07:00:00Z", ends_at: "2026-12-07T07:00:30Z", version: 3 } });
  assert.deepEqual(view.slots.map((s) => s.id), ["a"], "moved out of the window");
});

test("SSE reader: events split across chunks, CRLF, comments, multi-line data", async () => {
  const text = ': keep-alive\r\nevent: pub\r\nid: c@e:1\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: close\ndata: {"code":4007}\n\n';
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 7) c.enqueue(bytes.slice(i, i + 7));
      c.close();
    },
  });
  const events = [];
  let activity = 0;
  await readEventStream(body, { onEvent: (e) => events.push(e), onActivity: () => activity++ });
  assert.deepEqual(events, [
    { event: "pub", data: '{"a":\n1}', id: "c@e:1" },
    { event: "close", data: '{"code":4007}', id: undefined },
  ]);
  assert.ok(activity > 1);
});
