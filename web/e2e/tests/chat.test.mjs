// Two users in the general room, each in its own browser context: a typing
// indicator and messages cross between them; a mention is marked and
// notified; unread counts follow the read markers.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, shot, signedInPage, startHub, waitText } from "../helpers.mjs";

let hub;
let browser;

before(async () => {
  hub = await startHub();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

test("a message and a typing indicator cross between two users; a mention reaches the bell", async () => {
  await hub.user("awa@example.com", ["member"], "Awa");
  await hub.user("ben@example.com", ["member"], "Ben");

  const awa = await signedInPage(hub, "awa@example.com");
  await awa.page.goto(`${hub.baseUrl}/#/chat`);
  await awa.page.waitForSelector("#chat-input");
  const ben = await signedInPage(hub, "ben@example.com");
  await ben.page.goto(`${hub.baseUrl}/#/chat`);
  await ben.page.waitForSelector("#chat-input");
  // Both are in the same (general) room.
  assert.equal(new URL(awa.page.url()).hash, new URL(ben.page.url()).hash);
  // Presence names both, by their display names (neither is an admin: the room's member list).
  await waitText(ben.page, "#chat-online", /2.*Awa, Ben/);

  // Awa types: Ben sees the indicator.
  await awa.page.type("#chat-input", "Hello Ben");
  await waitText(ben.page, "#chat-typing", /^Awa is typing/);
  await shot(ben.page, "chat-typing");
  // Awa sends with Enter: Ben sees the message, and the indicator goes.
  await awa.page.press("#chat-input", "Enter");
  await waitText(ben.page, "#chat-messages li.msg:not(.system) .text", "Hello Ben");
  await waitText(ben.page, "#chat-messages li.msg:not(.system) .who", "Awa");
  await waitText(ben.page, "#chat-typing", "");
  assert.equal(await awa.page.inputValue("#chat-input"), "");

  // Ben answers with a mention: Awa's copy is marked, and her bell counts it.
  await ben.page.fill("#chat-input", "@awa the spot is ready");
  await ben.page.click("#chat-send");
  await awa.page.waitForSelector("#chat-messages li.msg.mention");
  await waitText(awa.page, "#bell-count", "1");
  await shot(awa.page, "chat");

  // A group room made by Ben is listed for him and opens empty.
  await ben.page.fill("#chat-new-name", "Spots");
  await ben.page.click("#chat-new-name + button");
  await waitText(ben.page, "#chat-room-title", "# Spots");
  await ben.page.waitForSelector("#chat-messages");

  assert.deepEqual(awa.errors, []);
  assert.deepEqual(ben.errors, []);
  await awa.context.close();
  await ben.context.close();
});
