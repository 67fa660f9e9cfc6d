/**
 * Reads a Server-Sent Events stream (docs/protocol.md, section 8) with
 * `fetch`, not `EventSource`: `fetch` can send the token in the
 * `Authorization` header (URLs end up in logs) and the resume position in
 * `Last-Event-ID`, and works in Node as in browsers.
 */
export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

export interface SseHandlers {
  onEvent(event: SseEvent): void;
  /** Any bytes, keep-alive comments included: the stream is alive. */
  onActivity(): void;
}

/** Splits the body into events; resolves when the stream ends. */
export async function readEventStream(body: ReadableStream<Uint8Array>, handlers: SseHandlers): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    handlers.onActivity();
    buffer += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR that ends the chunk may be the first half of a CRLF: wait for the next byte.
      if (nl === buffer.length - 1 && buffer[nl] === "\r") break;
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) handlers.onEvent({ event, data: data.join("\n"), id });
        event = "message";
        data = [];
        id = undefined;
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
  }
}

/** `channel@epoch:offset;…`: the resume position of every channel, as the hub's event ids. */
export function eventId(positions: Array<{ channel: string; epoch: string; offset: number }>): string {
  return positions.map((p) => `${p.channel}@${p.epoch}:${p.offset}`).join(";");
}

/** The SSE endpoint next to a WebSocket endpoint: `ws://host/ws` → `http://host/api/v1/sse`. */
export function sseUrlFor(wsUrl: string): string {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = u.pathname.replace(/\/ws\/?$/, "") + "/api/v1/sse";
  u.search = "";
  return u.toString();
}
