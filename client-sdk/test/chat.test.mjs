// The chat helpers against a live hub: two users in a group room.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ChatApi, ChatRoom, ChatUnread, RelaisError, RestClient } from "../dist/index.js";
import { Hub, makeClient, nextEvent, waitUntil } from "./helpers/hub.mjs";

describe("chat helpers against a live hub", { timeout: 90_000 }, () => {
  let hub;
  let alice;
  let bob;
  const clients = [];
  before(async () => {
    // Short unread window so the counts after new messages come quickly.
    hub = await Hub.start({ env: { RELAIS_CHAT_UNREAD_WINDOW_MS: "100" } });
    const admin = await hub.login();
    alice = await user(await hub.createUser(admin.access_token, "alice@example.com"));
    bob = await user(await hub.createUser(admin.access_token, "bob@example.com"));
  });
  after(async () => {
    for (const c of clients) c.close();
    await hub?.stop();
  });
  async function user(tokens) {
    const rest = new RestClient({ baseUrl: hub.baseUrl, getToken: () => tokens.access_token });
    return { tokens, id: tokens.user.id, api: new ChatApi(rest) };
  }
  async function connected(u) {
    const { client } = makeClient(hub, async () => u.tokens.access_token);
    client.on("error", () => {});
    clients.push(client);
    await client.connect();
    return client;
  }
  const texts = (room) => room.messages.filter((m) => m.type === "message").map((m) => m.text);

  test("messages, typing, read markers, edits and tombstones between two users", async () => {
    const created = await alice.api.createGroup("Campagne", [bob.id]);
    assert.equal(created.kind, "group");
    const aliceRoom = new ChatRoom(await connected(alice), created.id, { api: alice.api });
    const bobClient = await connected(bob);
    const bobRoom = new ChatRoom(bobClient, created.id, { api: bob.api });
    const unread = new ChatUnread(bobClient);
    await aliceRoom.start();
    await bobRoom.start();
    await unread.start();
    assert.equal(unread.rooms.get(created.id), 0);

    // Sent over the socket, stored, received in order by the other member.
    const received = [];
    bobRoom.on("message", (m) => received.push(m));
    const m1 = await aliceRoom.send("one");
    const m2 = await aliceRoom.send("two");
    const m3 = await aliceRoom.send("three", { replyTo: m1.id });
    assert.equal(m1.author, alice.id);
    assert.equal(m3.reply_to, m1.id);
    assert.deepEqual([m2.seq, m3.seq], [m1.seq + 1, m1.seq + 2]);
    await waitUntil(() => texts(bobRoom).length === 3, "three messages at bob's");
    assert.deepEqual(texts(bobRoom), ["one", "two", "three"]);
    assert.deepEqual(received.filter((m) => m.type === "message").map((m) => m.id), [m1.id, m2.id, m3.id]);
    const seqs = bobRoom.messages.map((m) => m.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), "dense seq, no duplicate");
    assert.deepEqual(aliceRoom.messages.map((m) => m.id), bobRoom.messages.map((m) => m.id));

    // Members learn each other's names: users created without one are named by their email's local part, never the email.
    const names = await bob.api.members(created.id);
    assert.deepEqual(
      names,
      { members: [{ id: alice.id, display_name: "alice", role: "admin" }, { id: bob.id, display_name: "bob", role: "member" }].sort((a, b) => (a.id < b.id ? -1 : 1)) },
    );

    // The hub refuses a bad message with its code.
    await assert.rejects(aliceRoom.send(""), (e) => e instanceof RelaisError && e.code === "message_too_long");

    // Presence lists both members.
    const presence = await bobRoom.presence();
    assert.deepEqual(presence.members.map((m) => m.user).sort(), [alice.id, bob.id].sort());

    // Typing crosses as an ephemeral frame with an expiry; a second one at once is held back locally.
    const typing = nextEvent(bobRoom, "typing");
    assert.equal(await aliceRoom.typing(), true);
    const t = await typing;
    assert.equal(t.user, alice.id);
    assert.equal(t.typing, true);
    assert.ok(t.expiresAt > 0);
    assert.deepEqual(bobRoom.typingUsers, [alice.id]);
    assert.equal(await aliceRoom.typing(), false);
    // Alice's next message ends her indicator at once.
    const stopped = nextEvent(bobRoom, "typing");
    const m4 = await aliceRoom.send("four");
    assert.deepEqual(await stopped, { room: created.id, user: alice.id, typing: false });
    assert.deepEqual(bobRoom.typingUsers, []);

    // Unread counts pushed on user:<bob>, then the read marker brings them to 0.
    await waitUntil(() => unread.rooms.get(created.id) === 4, "4 unread at bob's");
    assert.equal(unread.total, 4);
    const marked = await bobRoom.markRead(m2.seq);
    assert.deepEqual([marked.type, marked.room, marked.read_seq, marked.unread], ["chat.unread", created.id, m2.seq, 2]);
    await waitUntil(() => unread.rooms.get(created.id) === 2, "2 unread after the marker");
    await bobRoom.markRead(m4.seq);
    await waitUntil(() => unread.total === 0, "no unread after reading all");
    const listed = await bob.api.rooms();
    const row = listed.rooms.find((r) => r.id === created.id);
    assert.deepEqual([row.read_seq, row.unread, listed.total_unread], [m4.seq, 0, 0]);

    // Edits and deletions apply to the held messages.
    const edited = await alice.api.edit(created.id, m2.id, "two, edited");
    assert.equal(edited.text, "two, edited");
    await waitUntil(() => bobRoom.message(m2.id)?.text === "two, edited", "the edit at bob's");
    assert.ok(bobRoom.message(m2.id).edited_at > 0);
    await alice.api.delete(created.id, m3.id);
    await waitUntil(() => bobRoom.message(m3.id)?.deleted_at !== undefined, "the tombstone at bob's");
    assert.equal(bobRoom.message(m3.id).text, "");
    assert.deepEqual(texts(bobRoom), ["one", "two, edited", "", "four"]);
    await assert.rejects(bob.api.edit(created.id, m1.id, "not mine"), (e) => e.code === "forbidden" && e.status === 403);
    await assert.rejects(alice.api.delete(created.id, m3.id), (e) => e.code === "message_not_found" && e.status === 404);

    // A room opened later fills from the history: the same list, tombstone and edit included.
    const late = new ChatRoom(await connected(bob), created.id, { api: bob.api });
    await late.start();
    assert.deepEqual(late.messages, bobRoom.messages);
    const page = await bob.api.history(created.id, { after: m1.seq, limit: 2 });
    assert.deepEqual(page.messages.map((m) => m.id), [m2.id, m3.id]);
    assert.equal(page.has_more, true);

    await late.stop();
    await unread.stop();
    await bobRoom.stop();
    await aliceRoom.stop();
  });

  test("rooms: direct room, invite, rename, leave, archive", async () => {
    const direct = await alice.api.openDirect(bob.id);
    assert.equal(direct.kind, "direct");
    assert.equal((await bob.api.openDirect(alice.id)).id, direct.id, "one room per pair");

    const group = await alice.api.createGroup("Solo");
    await assert.rejects(bob.api.history(group.id), (e) => e.code === "room_not_found" && e.status === 404);
    const invited = await alice.api.invite(group.id, bob.id);
    assert.equal(invited.added, true);
    assert.deepEqual((await bob.api.room(group.id)).members.sort(), [alice.id, bob.id].sort());
    assert.equal((await alice.api.rename(group.id, "Duo")).name, "Duo");
    assert.equal((await bob.api.leave(group.id)).left, true);
    assert.equal((await bob.api.join(group.id)).joined, true);
    const system = (await alice.api.history(group.id)).messages.filter((m) => m.type === "system").map((m) => m.event);
    assert.deepEqual(system, ["joined", "renamed", "left", "joined"]);

    const room = new ChatRoom(await connected(alice), group.id, { api: alice.api });
    await room.start();
    const archivedEvent = nextEvent(room, "archived");
    assert.equal((await alice.api.archive(group.id)).archived, true);
    assert.deepEqual(await archivedEvent, { archived: true });
    await assert.rejects(room.send("late"), (e) => e.code === "room_archived");
    assert.ok(!(await alice.api.rooms()).rooms.some((r) => r.id === group.id), "archived rooms leave the list");
    await room.stop();
  });
});
