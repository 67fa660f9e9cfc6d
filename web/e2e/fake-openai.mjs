// A local OpenAI-compatible provider for the assistant scenario: the
// streaming format of `POST /v1/chat/completions` (`data:` lines of
// `chat.completion.chunk`, one token each, then `data: [DONE]`). The first
// path segment of the base URL picks the behaviour: `modes[mode] =
// { tokens, delayMs, holdAfter }`: with `holdAfter: n`, the stream stops
// after n tokens until `release(mode)` is called.
import { createServer } from "node:http";

export async function startFakeOpenAi(modes) {
  const gates = new Map();
  const gate = (mode) => {
    if (!gates.has(mode)) {
      let open;
      const promise = new Promise((r) => (open = r));
      gates.set(mode, { promise, open });
    }
    return gates.get(mode);
  };
  const server = createServer((req, res) => {
    const m = /^\/([^/]+)\/v1\/chat\/completions$/.exec(req.url ?? "");
    const spec = m && modes[m[1]];
    if (req.method !== "POST" || !spec) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "no such route", type: "invalid_request_error" } }));
      return;
    }
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (raw += c));
    req.on("end", async () => {
      const model = JSON.parse(raw || "{}").model ?? "test";
      const chunk = (delta, finish) => ({ id: "chatcmpl-e2e", object: "chat.completion.chunk", created: 1_700_000_000, model, choices: [{ index: 0, delta, finish_reason: finish }] });
      let closed = false;
      res.on("close", () => (closed = true));
      const send = (v) => !closed && res.write(`data: ${typeof v === "string" ? v : JSON.stringify(v)}\n\n`);
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      send(chunk({ role: "assistant", content: "" }, null));
      for (const [i, token] of spec.tokens.entries()) {
        if (i === spec.holdAfter) await gate(m[1]).promise;
        await new Promise((r) => setTimeout(r, spec.delayMs ?? 0));
        if (closed) return;
        send(chunk({ content: token }, null));
      }
      send(chunk({}, "stop"));
      send("[DONE]");
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    /** Lets the held streams of `mode` go on. */
    release: (mode) => gate(mode).open(),
    baseUrl: (mode) => `http://127.0.0.1:${port}/${mode}/v1`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
