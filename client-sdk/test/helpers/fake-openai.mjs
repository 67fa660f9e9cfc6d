// Test helper: a local OpenAI-compatible server speaking the real streaming
// format of `POST /v1/chat/completions` with `stream: true`: `data:` lines
// of `chat.completion.chunk`, one token per chunk, the usage chunk when
// `stream_options.include_usage` is set, then `data: [DONE]`.
// (Node 20's test runner also loads this file as a test file; it defines no test.)
import { createServer } from "node:http";

/**
 * Starts the server on 127.0.0.1. What it answers is chosen by the first
 * path segment of the provider's base URL (`baseUrl(mode)`):
 * `modes[mode] = { tokens: string[], delayMs?: number }`.
 * `requests` lists `{mode, body}` of every request; `dropped` counts
 * streams the hub closed before their end.
 */
export async function startFakeOpenAi(modes) {
  const requests = [];
  let dropped = 0;
  const server = createServer((req, res) => {
    const m = /^\/([^/]+)\/v1\/chat\/completions$/.exec(req.url ?? "");
    if (req.method !== "POST" || !m) {
      res.writeHead(404).end("no such route");
      return;
    }
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (raw += c));
    req.on("end", async () => {
      const mode = m[1];
      let body;
      try {
        body = JSON.parse(raw);
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "bad json", type: "invalid_request_error", param: null, code: null } }));
        return;
      }
      requests.push({ mode, body });
      const spec = modes[mode];
      if (!spec) {
        res.writeHead(404).end("no such mode");
        return;
      }
      const model = body.model ?? "test";
      const chunk = (delta, finish) => ({
        id: "chatcmpl-test",
        object: "chat.completion.chunk",
        created: 1_700_000_000,
        model,
        choices: [{ index: 0, delta, finish_reason: finish }],
      });
      let closed = false;
      let finished = false;
      res.on("close", () => {
        closed = true;
        if (!finished) dropped++;
      });
      const send = (v) => {
        if (!closed) res.write(`data: ${typeof v === "string" ? v : JSON.stringify(v)}\n\n`);
      };
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      send(chunk({ role: "assistant", content: "" }, null));
      for (const t of spec.tokens) {
        if (spec.delayMs) await new Promise((r) => setTimeout(r, spec.delayMs));
        if (closed) return;
        send(chunk({ content: t }, null));
      }
      send(chunk({}, "stop"));
      if (body.stream_options?.include_usage === true) {
        const n = spec.tokens.length;
        send({
          id: "chatcmpl-test",
          object: "chat.completion.chunk",
          created: 1_700_000_000,
          model,
          choices: [],
          usage: { prompt_tokens: 11, completion_tokens: n, total_tokens: 11 + n },
        });
      }
      finished = true;
      send("[DONE]");
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    requests,
    get dropped() {
      return dropped;
    },
    /** The base URL of a provider behaving as `mode`. */
    baseUrl: (mode) => `http://127.0.0.1:${port}/${mode}/v1`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
