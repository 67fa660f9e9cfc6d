// The embeddable widget on a third-party page: a plain HTTP server on its
// own port serves a page that includes the hub's /widget.js. A visitor asks
// a question and sees the answer stream in (also across a reload mid-answer),
// stops a second answer, and finds the conversation again after a reload. A
// page on an origin the widget does not list gets no visitor token.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { startFakeOpenAi } from "../fake-openai.mjs";
import { launchBrowser, shot, startHub, waitText } from "../helpers.mjs";

let hub;
let browser;
let fake;
let admin;
let assistantId;
let endlessProvider;
let allowedSite;
let otherSite;
let widget;

const SLOW = Array.from({ length: 30 }, (_, i) => `w${i} `);
const HELD = SLOW.slice(0, 10).join("");
const ENDLESS = Array.from({ length: 2000 }, (_, i) => `e${i} `);

/** A third-party site: one page that embeds the widget of `key()`. */
async function startSite(key) {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://site");
    if (url.pathname !== "/") {
      res.writeHead(404).end();
      return;
    }
    const lang = url.searchParams.get("lang") === "fr" ? "fr" : "en";
    const pk = url.searchParams.get("key") ?? key();
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html>
<html lang="${lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shop</title>
<style>
  /* A page whose CSS would break a widget that is not isolated. */
  * { font-family: Georgia, serif !important; color: #7a1f1f; }
  button { display: none !important; }
  div { border: 3px dashed orange !important; }
  body { margin: 0; background: #f4efe6; }
  main { max-width: 720px; margin: 0 auto; padding: 48px 24px; }
</style></head>
<body><main><h1>The Little Shop</h1><p>Hand-made things, shipped everywhere.</p></main>
<script src="${hub.baseUrl}/widget.js" data-key="${pk}" data-lang="${lang}" async></script>
</body></html>`);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

before(async () => {
  fake = await startFakeOpenAi({ slow: { tokens: SLOW, delayMs: 20, holdAfter: 10 }, endless: { tokens: ENDLESS, delayMs: 50 } });
  hub = await startHub({ RELAIS_ASSISTANT_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64") });
  browser = await launchBrowser();
  admin = await hub.adminToken();
  const slow = await hub.call("POST", "/assistant/providers", admin, { name: "slow", base_url: fake.baseUrl("slow"), api_key: "sk-e2e" });
  endlessProvider = (await hub.call("POST", "/assistant/providers", admin, { name: "endless", base_url: fake.baseUrl("endless"), api_key: "sk-e2e" })).id;
  const assistant = await hub.call("POST", "/assistant/assistants", admin, { name: "Shop helper", instructions: "Be brief.", model: "gpt-e2e", providers: [slow.id] });
  assistantId = assistant.id;
  allowedSite = await startSite(() => widget.public_key);
  otherSite = await startSite(() => widget.public_key);
  widget = await hub.call("POST", "/assistant/widgets", admin, { name: "Shop", assistant: assistantId, origins: [allowedSite.url] });
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  await fake?.close();
  await allowedSite?.close();
  await otherSite?.close();
});

async function visit(url, { viewport = { width: 1280, height: 800 }, locale = "en-US" } = {}) {
  const context = await browser.newContext({ viewport, locale, reducedMotion: "reduce" });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector(".launcher");
  return { context, page, errors };
}

const answer = ".msg.assistant[data-id]";
const stored = (page, key) => page.evaluate((k) => JSON.parse(localStorage.getItem(`relais-widget:${k}`) || "null"), key);

test("a visitor chats on a listed site: the answer streams, survives a reload, Stop ends one, history stays", async () => {
  const { context, page, errors } = await visit(`${allowedSite.url}/`);
  // The page's CSS does not reach the widget: its button shows.
  assert.equal(await page.isVisible(".launcher"), true);
  await page.click(".launcher");
  await page.waitForSelector("#rw-panel:not([hidden])");
  await waitText(page, "#rw-title", "Shop helper");
  assert.equal(await page.evaluate(() => document.querySelector("relais-widget").shadowRoot.activeElement?.id), "rw-input");

  await page.fill("#rw-input", "Say thirty words.");
  await page.press("#rw-input", "Enter");
  await waitText(page, ".msg.user .text", "Say thirty words.");
  await page.waitForSelector(`${answer}[data-status="streaming"]`);
  assert.equal(await page.isVisible("#rw-stop"), true);
  // The provider holds the stream after ten tokens.
  await waitText(page, `${answer} .text`, HELD);
  await shot(page, "widget-streaming");
  const session = await stored(page, widget.public_key);
  assert.ok(session?.session?.token, "a visitor token is kept");

  // A reload mid-answer: the panel opens again with the text so far, still streaming…
  await page.reload();
  await waitText(page, `${answer}[data-status="streaming"] .text`, HELD);
  // …and the rest streams in once the provider goes on.
  fake.release("slow");
  await page.waitForSelector(`${answer}[data-status="complete"]`, { timeout: 15_000 });
  assert.equal(await page.textContent(`${answer} .text`), SLOW.join(""));
  assert.equal((await stored(page, widget.public_key)).session.token, session.session.token, "the same session goes on");
  await shot(page, "widget");

  // A second question on a provider that never stops, and Stop.
  await hub.call("PATCH", `/assistant/assistants/${assistantId}`, admin, { providers: [endlessProvider] });
  await page.fill("#rw-input", "Go on forever.");
  await page.click("#rw-send");
  await waitText(page, `${answer}[data-status="streaming"] .text`, /e5 /);
  await page.click("#rw-stop");
  await page.waitForSelector(`${answer}[data-status="cancelled"]`);
  await page.waitForSelector("#rw-stop", { state: "hidden" });
  await waitText(page, `${answer}[data-status="cancelled"] .note`, "Stopped");
  const stopped = await page.textContent(`${answer}[data-status="cancelled"] .text`);
  assert.ok(stopped.length > 0 && stopped.length < ENDLESS.join("").length, `stopped part way: ${stopped.length} characters`);
  await shot(page, "widget-stopped");

  // Escape closes the panel and gives the focus back to the launcher.
  await page.focus("#rw-input");
  await page.keyboard.press("Escape");
  await page.waitForSelector("#rw-panel", { state: "hidden" });
  assert.equal(await page.evaluate(() => document.querySelector("relais-widget").shadowRoot.activeElement?.className), "launcher");

  // A reload: the conversation is still there (the host page opens the panel).
  await page.reload();
  await page.waitForSelector(".launcher");
  await page.evaluate(() => window.RelaisWidget.open());
  await waitText(page, ".msg.user .text", "Say thirty words.");
  await waitText(page, `${answer}[data-status="complete"] .text`, SLOW.join(""));
  await page.waitForSelector(`${answer}[data-status="cancelled"]`);
  assert.equal(await page.locator(".msg.user").count(), 2);
  assert.equal((await stored(page, widget.public_key)).session.token, session.session.token);

  assert.deepEqual(errors, []);
  await context.close();
});

test("on a narrow screen the panel takes the whole screen, in French", async () => {
  const { context, page, errors } = await visit(`${allowedSite.url}/?lang=fr`, { viewport: { width: 390, height: 760 }, locale: "fr-FR" });
  assert.equal(await page.getAttribute(".launcher", "aria-label"), "Ouvrir la discussion");
  await page.click(".launcher");
  await page.waitForSelector("#rw-panel:not([hidden])");
  const box = await page.locator("#rw-panel").boundingBox();
  assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, 390, 760]);
  await waitText(page, "#rw-title", "Shop helper");
  assert.equal(await page.getAttribute("#rw-input", "placeholder"), "Écrivez votre message…");
  await shot(page, "widget-mobile");
  assert.deepEqual(errors, []);
  await context.close();
});

test("an answer the provider could not give, then the visitor's message limit, read as sentences", async () => {
  // A provider nobody listens on: every answer ends incomplete.
  const dead = await hub.call("POST", "/assistant/providers", admin, { name: "dead", base_url: "http://127.0.0.1:9/v1", api_key: "sk-e2e" });
  const broken = await hub.call("POST", "/assistant/assistants", admin, { name: "Broken helper", instructions: "Be brief.", model: "gpt-e2e", providers: [dead.id] });
  const limited = await hub.call("POST", "/assistant/widgets", admin, { name: "Limited", assistant: broken.id, origins: [allowedSite.url], messages_per_visitor: 1 });
  const { context, page, errors } = await visit(`${allowedSite.url}/?key=${limited.public_key}`);
  await page.click(".launcher");
  await waitText(page, "#rw-title", "Broken helper");
  await waitText(page, "#rw-left", "1 message left");
  await page.fill("#rw-input", "Hello?");
  await page.press("#rw-input", "Enter");
  await page.waitForSelector(`${answer}[data-status="incomplete"]`, { timeout: 15_000 });
  await waitText(page, `${answer} .note`, "The assistant could not answer. Please try again.");
  await waitText(page, "#rw-left", "0 messages left");
  assert.equal(await page.isVisible("#rw-stop"), false);

  await page.fill("#rw-input", "Hello again?");
  await page.press("#rw-input", "Enter");
  await waitText(page, "#rw-error", "You have sent the maximum number of messages for this conversation.");
  // The refused text stays in the box.
  assert.equal(await page.inputValue("#rw-input"), "Hello again?");
  await shot(page, "widget-limit");
  assert.deepEqual(errors, []);
  await context.close();
});

test("a page on an origin the widget does not list is refused and gets no token", async () => {
  const { context, page, errors } = await visit(`${otherSite.url}/`);
  const refused = page.waitForResponse((r) => r.url().endsWith("/api/v1/widget/sessions"));
  await page.click(".launcher");
  const res = await refused;
  assert.equal(res.status(), 403);
  await waitText(page, "#rw-error", "This chat is not allowed on this site.");
  assert.equal(await page.isDisabled("#rw-input"), true);
  assert.equal(await stored(page, widget.public_key), null);
  await shot(page, "widget-refused");
  assert.deepEqual(errors, []);
  await context.close();
});
