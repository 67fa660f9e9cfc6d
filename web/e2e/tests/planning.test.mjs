// A broadcaster follows a station on the planning board: a planner's
// changes (made over REST) are pushed to it, and its own actions reach the
// planner's board in another browser context.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
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

test("a broadcaster sees slot changes pushed, confirms and reports aired, and downloads the CSV", async () => {
  await hub.user("planner@example.com", ["editor"], "Paula Planner");
  await hub.user("broadcaster@example.com", ["broadcaster"], "Bob Broadcaster");
  const planner = (await hub.login("planner@example.com")).access_token;
  const station = await hub.call("POST", "/stations", planner, { name: "Radio Nord", time_zone: "UTC" });
  const today = new Date().toISOString().slice(0, 10);
  const slot = await hub.call("POST", `/stations/${station.id}/slots`, planner, {
    starts_at: `${today}T12:00:00Z`,
    duration: 30,
    title: "Winter sales",
    spot_ref: "SPOT-118",
  });

  const bc = await signedInPage(hub, "broadcaster@example.com");
  await bc.page.goto(`${hub.baseUrl}/#/planning`);
  const row = `#plan-board li.slot[data-id="${slot.id}"]`;
  await bc.page.waitForSelector(`${row}[data-status="planned"]`);

  // The planner's board, in its own context.
  const pl = await signedInPage(hub, "planner@example.com");
  await pl.page.goto(`${hub.baseUrl}/#/planning`);
  await pl.page.waitForSelector(`${row}[data-status="planned"]`);

  // A change over REST is pushed to the broadcaster's board.
  await hub.call("PATCH", `/slots/${slot.id}`, planner, { title: "Winter sales, last days" }, { "if-match": `"${slot.version}"` });
  await waitText(bc.page, `${row} strong`, "Winter sales, last days");
  // A new slot appears too.
  const late = await hub.call("POST", `/stations/${station.id}/slots`, planner, { starts_at: `${today}T18:00:00Z`, duration: 60, title: "Evening spot" });
  await bc.page.waitForSelector(`#plan-board li.slot[data-id="${late.id}"]`);

  // The broadcaster confirms; the planner's board follows.
  await bc.page.click(`${row} button[data-action="confirm"]`);
  await pl.page.waitForSelector(`${row}[data-status="confirmed"]`);
  await bc.page.click(`${row} button[data-action="aired"]`);
  await pl.page.waitForSelector(`${row}[data-status="aired"]`);
  await bc.page.waitForSelector(`${row}[data-status="aired"]`);

  // Cancel the other one with a reason.
  await bc.page.click(`#plan-board li.slot[data-id="${late.id}"] button[data-action="cancel"]`);
  await bc.page.fill("dialog[open] textarea", "Studio unavailable");
  await bc.page.click('dialog[open] button[value="ok"]');
  await pl.page.waitForSelector(`#plan-board li.slot[data-id="${late.id}"][data-status="cancelled"]`);
  await shot(bc.page, "planning");

  // The week view holds the same slots.
  await bc.page.click('.tabs button[data-view="week"]');
  await bc.page.waitForSelector(`${row}[data-status="aired"]`);
  await shot(bc.page, "planning-week");

  // CSV of the window shown.
  const [download] = await Promise.all([bc.page.waitForEvent("download"), bc.page.click("#plan-csv")]);
  const csv = await readFile(await download.path(), "utf8");
  assert.match(csv, new RegExp(slot.id));
  assert.match(csv, /aired/);
  assert.match(download.suggestedFilename(), /\.csv$/);
  const [ics] = await Promise.all([bc.page.waitForEvent("download"), bc.page.click("#plan-ics")]);
  assert.match(await readFile(await ics.path(), "utf8"), /BEGIN:VCALENDAR/);

  assert.deepEqual(bc.errors, []);
  assert.deepEqual(pl.errors, []);
  await bc.context.close();
  await pl.context.close();
});
