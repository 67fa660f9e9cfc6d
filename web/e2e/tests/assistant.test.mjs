// The assistant page against a local OpenAI-compatible provider: an answer
// streams in, survives a reload mid-stream, is followed live by the same
// user's second device (another browser context), and Stop ends it.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startFakeOpenAi } from "../fake-openai.mjs";
import { launchBrowser, shot, signedInPage, startHub, waitText } from "../helpers.mjs";

let hub;
let browser;
let fake;

const SLOW = Array.from({ length: 30 }, (_, i) => `w${i} `);
const HELD = SLOW.slice(0, 10).join("");
const ENDLESS = Array.from({ length: 2000 }, (_, i) => `e${i} `);

before(async () => {
  fake = await startFakeOpenAi({ slow: { tokens: SLOW, delayMs: 20, holdAfter: 10 }, endless: { tokens: ENDLESS, delayMs: 50 } });
  hub = await startHub({ RELAIS_ASSISTANT_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64") });
  browser = await launchBrowser();
  const admin = await hub.adminToken();
  for (const mode of ["slow", "endless"]) {
    const provider = await hub.call("POST", "/assistant/providers", admin, { name: mode, base_url: fake.baseUrl(mode), api_key: "sk-e2e" });
    await hub.call("POST", "/assistant/assistants", admin, { name: `Helper ${mode}`, instructions: "Be brief.", model: "gpt-e2e", providers: [provider.id] });
  }
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  await fake?.close();
});

async function newConversation(page, assistantName) {
  await page.goto(`${hub.baseUrl}/#/assistant`);
  await page.waitForSelector("#asst-assistant option", { state: "attached" });
  await page.selectOption("#asst-assistant", { label: assistantName });
  await page.click("#asst-new");
  await page.waitForSelector("#asst-input");
  return new URL(page.url()).hash;
}

const answer = '#asst-turns li.turn.assistant';

test("an answer streams in, resumes after a reload, and is followed by a second device", async () => {
  await hub.user("ana@example.com", ["member"], "Ana");
  const a = await signedInPage(hub, "ana@example.com");
  const hash = await newConversation(a.page, "Helper slow");
  await a.page.fill("#asst-input", "Say thirty words.");
  await a.page.click("#asst-send");
  await a.page.waitForSelector(`${answer}[data-status="streaming"]`);
  // The provider holds the stream after ten tokens.
  await waitText(a.page, `${answer} .answer`, HELD);
  await shot(a.page, "assistant");

  // The same user on a second device joins mid-answer and sees the text so far.
  const b = await signedInPage(hub, "ana@example.com");
  await b.page.goto(`${hub.baseUrl}/${hash}`);
  await waitText(b.page, `${answer}[data-status="streaming"] .answer`, HELD);

  // A reload mid-answer shows the text so far, still streaming…
  await a.page.reload();
  await waitText(a.page, `${answer}[data-status="streaming"] .answer`, HELD);
  assert.equal(await a.page.isVisible("#asst-stop"), true);
  // …and the rest streams in once the provider goes on.
  fake.release("slow");
  await a.page.waitForSelector(`${answer}[data-status="complete"]`, { timeout: 15_000 });
  const text = await a.page.textContent(`${answer} .answer`);
  assert.equal(text, SLOW.join(""));
  await b.page.waitForSelector(`${answer}[data-status="complete"]`, { timeout: 15_000 });
  assert.equal(await b.page.textContent(`${answer} .answer`), SLOW.join(""));

  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.context.close();
  await b.context.close();
});

test("Stop ends a streaming answer, on every device", async () => {
  await hub.user("stop@example.com", ["member"], "Stella");
  const a = await signedInPage(hub, "stop@example.com");
  const hash = await newConversation(a.page, "Helper endless");
  const b = await signedInPage(hub, "stop@example.com");
  await b.page.goto(`${hub.baseUrl}/${hash}`);
  await b.page.waitForSelector("#asst-input");

  await a.page.fill("#asst-input", "Go on forever.");
  await a.page.click("#asst-send");
  await waitText(a.page, `${answer} .answer`, /e5 /);
  await b.page.waitForSelector(`${answer}[data-status="streaming"]`);
  assert.equal(await a.page.isVisible("#asst-stop"), true);
  await a.page.click("#asst-stop");
  await a.page.waitForSelector(`${answer}[data-status="cancelled"]`);
  await b.page.waitForSelector(`${answer}[data-status="cancelled"]`);
  await a.page.waitForSelector("#asst-stop", { state: "hidden" });
  const text = await a.page.textContent(`${answer} .answer`);
  assert.ok(text.length > 0 && text.length < ENDLESS.join("").length, `stopped part way: ${text.length} characters`);
  await shot(a.page, "assistant-stopped");

  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.context.close();
  await b.context.close();
});
