// A moderator decides in the moderation console; the submitter, signed in
// in another browser context, sees the bell and the inbox change live.
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

test("a moderator approves and rejects items; the submitter's bell and inbox update live", async () => {
  await hub.user("mod@example.com", ["moderator"], "Mona Moderator");
  const submitterId = await hub.user("sub@example.com", ["member"], "Sam Submitter");
  const admin = await hub.adminToken();
  const first = await hub.call("POST", "/queues/campaigns/items", admin, {
    external_ref: "camp-1",
    title: "Winter campaign",
    submitter: submitterId,
    payload: { budget: 12000 },
  });
  const second = await hub.call("POST", "/queues/campaigns/items", admin, {
    external_ref: "camp-2",
    title: "Spring campaign",
    submitter: submitterId,
  });

  const submitter = await signedInPage(hub, "sub@example.com");
  await submitter.page.goto(`${hub.baseUrl}/#/inbox`);
  await submitter.page.waitForSelector("#inbox-list");
  // Nothing unread yet: the badge is hidden.
  assert.equal(await submitter.page.locator("#bell-count").isHidden(), true);

  const moderator = await signedInPage(hub, "mod@example.com");
  await moderator.page.goto(`${hub.baseUrl}/#/moderation`);
  await moderator.page.waitForSelector(`#mod-list li[data-id="${first.id}"]`);
  await waitText(moderator.page, '#queue-stats [data-queue="campaigns"] [data-count="pending"]', "2");
  await shot(moderator.page, "moderation");

  // Approve the first item: the submitter's bell shows 1 without a reload.
  await moderator.page.click(`#mod-list li[data-id="${first.id}"] button[data-action="approved"]`);
  await waitText(submitter.page, "#bell-count", "1");
  await submitter.page.waitForSelector("#inbox-list li.notif.unread");
  // And the moderator's live count went down.
  await waitText(moderator.page, '#queue-stats [data-queue="campaigns"] [data-count="pending"]', "1");

  // Reject the second with a reason, typed in the dialog.
  await moderator.page.click(`#mod-list li[data-id="${second.id}"] button[data-action="rejected"]`);
  await moderator.page.waitForSelector("dialog[open] textarea");
  // An empty reason is refused.
  await moderator.page.click('dialog[open] button[value="ok"]');
  await waitText(moderator.page, "#ask-error", /required/);
  await moderator.page.fill("dialog[open] textarea", "The visual is blurred.");
  await moderator.page.click('dialog[open] button[value="ok"]');
  await waitText(submitter.page, "#bell-count", "2");
  await waitText(moderator.page, '#queue-stats [data-queue="campaigns"] [data-count="pending"]', "0");
  const rejected = await hub.call("GET", `/queues/campaigns/items/${second.id}`, admin);
  assert.equal(rejected.status, "rejected");
  assert.equal(rejected.reason, "The visual is blurred.");

  await submitter.page.waitForFunction(() => document.querySelectorAll("#inbox-list li.notif.unread").length === 2);
  await shot(submitter.page, "inbox");

  // The bell's panel lists them; marking one read in the inbox lowers the badge.
  await submitter.page.click("#bell");
  await submitter.page.waitForSelector("#bell-panel .bell-item");
  await shot(submitter.page, "bell");
  await submitter.page.keyboard.press("Escape");
  await submitter.page.locator('#inbox-list li.notif.unread button[data-action="read"]').first().click();
  await waitText(submitter.page, "#bell-count", "1");
  await submitter.page.locator('#inbox-list li.notif button[data-action="archive"]').first().click();
  await submitter.page.click('.tabs button[data-status="archived"]');
  await submitter.page.waitForSelector("#inbox-list li.notif.archived");

  assert.deepEqual(submitter.errors, []);
  assert.deepEqual(moderator.errors, []);
  await submitter.context.close();
  await moderator.context.close();
});
