// The session and the shell: sign-in errors, a session that survives a
// reload and is shared by tabs that refresh their short-lived tokens one at
// a time (a refresh token used twice would end the session), sign-out in
// every tab, French, a narrow screen, keyboard use — and a screenshot of
// every page.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ADMIN_EMAIL, ADMIN_PASSWORD, TENANT, launchBrowser, shot, signedInPage, startHub, waitText } from "../helpers.mjs";

let hub;
let browser;

before(async () => {
  // Access tokens of 8 s: each tab refreshes every few seconds.
  hub = await startHub({ RELAIS_ACCESS_TOKEN_TTL_SECS: "8" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

test("a wrong password is refused with a clear message, in French too", async () => {
  const context = await browser.newContext({ locale: "fr-FR" });
  const page = await context.newPage();
  await page.goto(`${hub.baseUrl}/`);
  await waitText(page, "#page-title", "Connexion");
  // Empty fields are named.
  await page.click("#signin-form button[type=submit]");
  await waitText(page, "#signin-error", /E-mail/);
  await page.fill("#email", ADMIN_EMAIL);
  await page.fill("#password", "not-the-password");
  await page.click("#signin-form button[type=submit]");
  await waitText(page, "#signin-error", /incorrect/);
  await shot(page, "signin");
  await context.close();
});

test("tabs share one session through token refreshes and a reload, and sign out together", async () => {
  const { context, page, errors } = await signedInPage(hub, ADMIN_EMAIL, ADMIN_PASSWORD);
  const second = await context.newPage();
  await second.goto(`${hub.baseUrl}/#/inbox`);
  await second.waitForSelector('#conn[data-state="connected"]');
  const stored = () => page.evaluate(() => JSON.parse(localStorage.getItem("relais.session")).refresh);

  // Several refreshes happen while both tabs stay connected.
  const seen = new Set([await stored()]);
  const deadline = Date.now() + 40_000;
  while (seen.size < 4) {
    assert.ok(Date.now() < deadline, `only ${seen.size - 1} refreshes seen`);
    await page.waitForTimeout(250);
    seen.add(await stored());
  }
  // Neither tab was signed out (a reused refresh token revokes the session).
  await page.waitForSelector('#conn[data-state="connected"]');
  await second.waitForSelector('#conn[data-state="connected"]');
  assert.equal(await page.locator("#signin-form").count(), 0);
  assert.equal(await second.locator("#signin-form").count(), 0);
  // The session works: the tokens the tabs hold are good for REST.
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem("relais.session")).access);
  const me = await hub.call("GET", "/me", token);
  assert.equal(me.email, ADMIN_EMAIL);

  // A reload keeps the session.
  await second.reload();
  await second.waitForSelector('#conn[data-state="connected"]');

  // Signing out in one tab signs out the other.
  await page.click("#signout");
  await page.waitForSelector("#signin-form");
  await second.waitForSelector("#signin-form");
  assert.deepEqual(errors, []);
  await context.close();
});

test("every page renders, in English and French, wide and narrow, and the keyboard reaches the menu", async () => {
  const { context, page, errors } = await signedInPage(hub, ADMIN_EMAIL, ADMIN_PASSWORD);
  const admin = await hub.adminToken();
  await hub.call("POST", "/stations", admin, { name: "Radio Sud", time_zone: "Europe/Paris" });
  await hub.call("POST", "/queues/spots/items", admin, { external_ref: "s-1", title: "Spot de Noël" });
  for (const id of ["inbox", "preferences", "moderation", "planning", "chat", "assistant", "operator"]) {
    await page.goto(`${hub.baseUrl}/#/${id}`);
    await page.waitForSelector(`#main[data-page="${id}"] #page-title`);
    await page.waitForLoadState("networkidle");
    await shot(page, `page-${id}`);
  }
  // Preferences save.
  await page.goto(`${hub.baseUrl}/#/preferences`);
  await page.waitForSelector("#prefs-save");
  await page.uncheck('input[name="email:chat"]');
  await page.check("#quiet-on");
  await page.fill("#pref-tz", "Europe/Paris");
  await page.click("#prefs-save");
  await page.waitForSelector(".toast");
  const prefs = await hub.call("GET", "/me/preferences", await page.evaluate(() => JSON.parse(localStorage.getItem("relais.session")).access));
  assert.equal(prefs.categories.chat.email, false);
  assert.deepEqual(prefs.quiet_hours, { start: "22:00", end: "07:00" });
  assert.equal(prefs.timezone, "Europe/Paris");
  // A bad time zone is refused with the hub's message.
  await page.fill("#pref-tz", "Mars/Olympus");
  await page.click("#prefs-save");
  await waitText(page, "#prefs-error", /./);

  // French, kept after a reload.
  await page.selectOption(".topbar .lang select", "fr");
  await waitText(page, '#sidebar a[data-page="inbox"]', "Boîte de réception");
  await page.reload();
  await waitText(page, '#sidebar a[data-page="inbox"]', "Boîte de réception");
  assert.equal(await page.getAttribute("html", "lang"), "fr");
  await page.goto(`${hub.baseUrl}/#/planning`);
  await page.waitForSelector("#plan-board");
  await shot(page, "page-planning-fr");

  // Narrow screen: the menu is a drawer opened from the keyboard.
  await page.setViewportSize({ width: 390, height: 800 });
  await page.waitForSelector('#sidebar a[data-page="inbox"]', { state: "hidden" });
  await page.focus(".menu-toggle");
  await page.keyboard.press("Enter");
  await page.waitForSelector('#sidebar a[data-page="inbox"]', { state: "visible" });
  assert.equal(await page.getAttribute(".menu-toggle", "aria-expanded"), "true");
  await shot(page, "page-narrow-menu");
  await page.click('#sidebar a[data-page="inbox"]');
  await page.waitForSelector('#main[data-page="inbox"]');
  // Choosing a page closes the drawer.
  await page.waitForSelector('#sidebar a[data-page="inbox"]', { state: "hidden" });
  assert.equal(await page.getAttribute(".menu-toggle", "aria-expanded"), "false");

  // The developer console is still served.
  await page.goto(`${hub.baseUrl}/console/`);
  await page.waitForSelector("#signin-form");
  await page.fill("#tenant", TENANT);
  await shot(page, "console");
  assert.deepEqual(errors, []);
  await context.close();
});

test("the operator page lists this node, the tab's connection and its channel, live", async () => {
  const { context, page, errors } = await signedInPage(hub, ADMIN_EMAIL, ADMIN_PASSWORD);
  const admin = await hub.adminToken();
  const me = await hub.call("GET", "/me", admin);
  const { nodes } = await hub.call("GET", "/admin/nodes", admin);
  assert.equal(nodes.length, 1);
  await page.goto(`${hub.baseUrl}/#/operator`);
  const row = `#ops-nodes tr[data-id="${nodes[0].id}"]`;
  await page.waitForSelector(row);
  await waitText(page, row, /this node/);
  // The tab's own connection follows its inbox channel, `user:<id>`.
  const channel = `#ops-channels tr[data-name="user:${me.id}"]`;
  await page.waitForSelector(channel);
  assert.match(await page.textContent(`${channel} td`), /^[1-9]\d*$/);
  await waitText(page, `${channel} td:last-child`, nodes[0].id);
  await waitText(page, "#ops-connections", /WebSocket [1-9]/);
  // The filter is reached from the keyboard and narrows the list.
  await page.focus("#ops-channel-prefix");
  await page.keyboard.type("no-such-namespace:");
  await waitText(page, "#ops-channels", "No channel with subscribers.");
  await page.fill("#ops-channel-prefix", "user:");
  await page.waitForSelector(channel);
  await shot(page, "page-operator-cluster");
  assert.deepEqual(errors, []);
  await context.close();
});
