import type { RelaisClient } from "./client.js";
import { TypedEmitter } from "./emitter.js";
import { RelaisError } from "./errors.js";
import type { RestClient } from "./rest.js";
import type { Subscription } from "./subscription.js";

/** An OpenAI-compatible endpoint (docs/assistant.md). Its key is never returned. */
export interface AssistantProvider {
  id: string;
  name: string;
  base_url: string;
  has_key: boolean;
  created_at: number;
}

export interface NewAssistantProvider {
  name: string;
  /** E.g. `https://api.openai.com/v1`. */
  base_url: string;
  /** Stored encrypted (needs `RELAIS_ASSISTANT_ENCRYPTION_KEY` on the hub). */
  api_key?: string;
}

export interface Assistant {
  id: string;
  name: string;
  instructions: string;
  model: string;
  /** Provider ids, tried in order. */
  providers: string[];
  temperature: number | null;
  max_tokens: number | null;
  steps: unknown[] | null;
  created_at: number;
}

export interface NewAssistant {
  name: string;
  instructions?: string;
  model: string;
  providers: string[];
  /** 0-2. */
  temperature?: number;
  max_tokens?: number;
  steps?: unknown[];
}

export interface AssistantConversationInfo {
  id: string;
  user_id: string;
  assistant_id: string;
  title: string;
  created_at: number;
  updated_at: number;
}

export interface AssistantUsage {
  prompt_tokens: number;
  completion_tokens: number;
  /** `true` when the provider sent no usage (cut or cancelled): about four characters per token. */
  estimated: boolean;
}

export type AssistantMessageStatus = "complete" | "streaming" | "incomplete" | "cancelled";

/** A message of a conversation: the user's question or the assistant's answer (whose id is the run id). */
export interface AssistantMessage {
  id: string;
  conversation: string;
  seq: number;
  role: "user" | "assistant";
  /** The text (so far, while `streaming`). */
  content: string;
  status: AssistantMessageStatus;
  /** Frames included in `content`: only deltas with a greater `seq` apply. */
  delta_seq: number;
  usage: AssistantUsage;
  provider: string | null;
  error: string | null;
  created_at: number;
}

/** What sending a message answers: the stored question, the empty answer and its run id. */
export interface AssistantSendResult {
  message: AssistantMessage;
  reply: AssistantMessage;
  run: string;
}

export interface AssistantHistoryPage {
  conversation: AssistantConversationInfo;
  /** Oldest first. */
  messages: AssistantMessage[];
  has_more: boolean;
  /** Pass as `before` for the previous page. */
  next_before: number | null;
}

/** The `data` of a publication on `assistant:<conversation>`. */
export type AssistantEvent =
  | { type: "assistant.message"; message: AssistantMessage }
  | { type: "assistant.started"; message: AssistantMessage }
  | { type: "assistant.delta"; message: string; seq: number; text: string }
  | { type: "assistant.fallback"; message: string; from: string; to: string; reason: string }
  | {
      type: "assistant.done";
      message: string;
      status: Exclude<AssistantMessageStatus, "streaming">;
      content: string;
      seq: number;
      usage: AssistantUsage;
      provider: string | null;
      incomplete: boolean;
      error?: string;
    };

/** The assistant REST API (docs/assistant.md). */
export class AssistantApi {
  constructor(private readonly rest: RestClient) {}

  /** Tenant admins. */
  async providers(): Promise<AssistantProvider[]> {
    return (await this.rest.request<{ providers: AssistantProvider[] }>("GET", "/assistant/providers")).providers;
  }

  /** Tenant admins; `encryption_key_missing` (503) with a key when the hub has no encryption key. */
  addProvider(provider: NewAssistantProvider): Promise<AssistantProvider> {
    return this.rest.request<AssistantProvider>("POST", "/assistant/providers", { body: provider });
  }

  async deleteProvider(id: string): Promise<void> {
    await this.rest.request<unknown>("DELETE", `/assistant/providers/${enc(id)}`);
  }

  /** Tenant admins. */
  createAssistant(assistant: NewAssistant): Promise<Assistant> {
    return this.rest.request<Assistant>("POST", "/assistant/assistants", { body: assistant });
  }

  /** The tenant's assistants (any user). */
  async assistants(): Promise<Assistant[]> {
    return (await this.rest.request<{ assistants: Assistant[] }>("GET", "/assistant/assistants")).assistants;
  }

  /** The caller's conversations. */
  async conversations(): Promise<AssistantConversationInfo[]> {
    return (await this.rest.request<{ conversations: AssistantConversationInfo[] }>("GET", "/assistant/conversations")).conversations;
  }

  /** Opens a conversation with `assistant` (default: the tenant's first); `assistant_not_configured` (503) when there is none. */
  createConversation(assistant?: string): Promise<{ conversation: AssistantConversationInfo; channel: string }> {
    return this.rest.request("POST", "/assistant/conversations", { body: assistant ? { assistant } : {} });
  }

  /** A history page, newest page first (`before` a `seq` for older ones). */
  history(conversation: string, query: { before?: number; limit?: number } = {}): Promise<AssistantHistoryPage> {
    return this.rest.request<AssistantHistoryPage>("GET", `/assistant/conversations/${enc(conversation)}/messages`, { query: { ...query } });
  }

  /** A conversation with its latest messages (the first history page). */
  get(conversation: string): Promise<AssistantHistoryPage> {
    return this.history(conversation);
  }

  /** Sends a user message; the answer streams on the conversation's channel. */
  send(conversation: string, text: string): Promise<AssistantSendResult> {
    return this.rest.request<AssistantSendResult>("POST", `/assistant/conversations/${enc(conversation)}/messages`, { body: { text } });
  }

  /** Cancels an answer; `not_running` (409) when it has ended. */
  async cancel(run: string): Promise<void> {
    await this.rest.request<unknown>("POST", `/assistant/runs/${enc(run)}/cancel`);
  }

  /** The whole conversation as JSON. */
  export(conversation: string, format?: "json"): Promise<{ conversation: AssistantConversationInfo; messages: AssistantMessage[] }>;
  /** The whole conversation as CSV text. */
  export(conversation: string, format: "csv"): Promise<string>;
  export(conversation: string, format: "json" | "csv" = "json"): Promise<unknown> {
    const path = `/assistant/conversations/${enc(conversation)}/export`;
    if (format === "csv") return this.rest.requestText("GET", path, { query: { format } });
    return this.rest.request("GET", path, { query: { format } });
  }

  /** The tenant's retention (tenant admins). */
  setSettings(settings: { retention_days: number }): Promise<{ retention_days: number }> {
    return this.rest.request("PUT", "/assistant/settings", { body: settings });
  }

  /** Figures per UTC day, user and assistant (tenant admins). */
  analytics(days?: number): Promise<Record<string, unknown>> {
    return this.rest.request("GET", "/assistant/analytics", { query: { days } });
  }
}

export interface AssistantDeltaEvent {
  /** The answer's id (the run). */
  message: string;
  seq: number;
  /** What this frame adds. */
  text: string;
  /** The answer's text so far. */
  content: string;
}

export interface AssistantDoneEvent {
  message: string;
  status: Exclude<AssistantMessageStatus, "streaming">;
  /** The whole answer. */
  content: string;
  usage: AssistantUsage;
  provider: string | null;
  /** Why it is `incomplete`, when it is. */
  error?: string;
}

export interface AssistantConversationEvents {
  /** The messages changed (a message, a delta, an end, a snapshot). */
  change: { messages: readonly AssistantMessage[] };
  /** The user's message is stored. */
  message: AssistantMessage;
  /** An answer starts streaming. */
  started: AssistantMessage;
  /** A frame of tokens, applied in order, once. */
  delta: AssistantDeltaEvent;
  /** A provider failed before its first token; the next one is tried. */
  fallback: { message: string; from: string; to: string; reason: string };
  /** The answer ended, whatever its status. */
  done: AssistantDoneEvent;
  /** The answer ended `complete`. */
  complete: AssistantDoneEvent;
  /** The answer ended `incomplete` (a provider failed): `error` says why. */
  incomplete: AssistantDoneEvent & { error: string };
  /** The answer was cancelled. */
  cancelled: AssistantDoneEvent;
  error: Error;
}

export interface AssistantConversationOptions {
  /** Send and cancel over REST instead of the `assistant.send` / `assistant.cancel` RPCs. */
  api?: AssistantApi;
}

/**
 * A conversation, live: subscribes to `assistant:<conversation>` and keeps
 * its latest messages, the answer in flight included. Joining late, or
 * reconnecting when the missed frames cannot be replayed, takes the text so
 * far and its `delta_seq` from the channel's snapshot, then applies only
 * the deltas numbered `delta_seq + 1`, `+ 2`, … (docs/assistant.md, "Resume
 * rule"): the text has no gap and no duplicate. `assistant.done` carries
 * the whole answer, which then replaces the text.
 */
export class AssistantConversation extends TypedEmitter<AssistantConversationEvents> {
  readonly conversationId: string;
  readonly channel: string;
  private readonly client: RelaisClient;
  private readonly api: AssistantApi | undefined;
  private sub: Subscription | undefined;
  private readonly byId = new Map<string, AssistantMessage>();
  /** Answers whose end was announced (`done`). */
  private readonly ended = new Set<string>();
  /** Answers whose `started` event was emitted (the RPC reply and the
   * channel's `assistant.started` may arrive in either order). */
  private readonly announced = new Set<string>();

  constructor(client: RelaisClient, conversationId: string, options: AssistantConversationOptions = {}) {
    super();
    this.client = client;
    this.conversationId = conversationId;
    this.channel = `assistant:${conversationId}`;
    this.api = options.api;
  }

  /** The messages held (the snapshot's last 50 and those since), by `seq`. */
  get messages(): AssistantMessage[] {
    return [...this.byId.values()].sort((a, b) => a.seq - b.seq);
  }

  message(id: string): AssistantMessage | undefined {
    return this.byId.get(id);
  }

  /** The latest answer (streaming or ended). */
  get answer(): AssistantMessage | undefined {
    const answers = this.messages.filter((m) => m.role === "assistant");
    return answers[answers.length - 1];
  }

  /** The latest answer's text so far. */
  get text(): string {
    return this.answer?.content ?? "";
  }

  /** The id of the answer streaming now, if any. */
  get streamingRun(): string | undefined {
    const a = this.answer;
    return a?.status === "streaming" ? a.id : undefined;
  }

  /** Subscribes; resolves once the snapshot is in (`forbidden` for someone else's conversation). */
  async start(): Promise<void> {
    if (this.sub) return;
    this.sub = this.client.subscribe(this.channel, {
      onSubscribed: (info) => {
        if (info.snapshot !== undefined) this.takeSnapshot(info.snapshot as { messages?: AssistantMessage[] });
      },
      onPublication: (data) => this.apply(data as AssistantEvent),
      onError: (err) => this.emit("error", err),
    });
    await this.sub.ready;
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    await sub?.unsubscribe();
  }

  /** Sends a user message (RPC `assistant.send`, or REST with `options.api`). */
  async send(text: string): Promise<AssistantSendResult> {
    const r = this.api
      ? await this.api.send(this.conversationId, text)
      : await this.client.rpc<AssistantSendResult>("assistant.send", { conversation: this.conversationId, text });
    let changed = this.upsert(r.message);
    changed = this.upsert(r.reply) || changed;
    if (changed) this.changed();
    this.announce(r.reply.id);
    return r;
  }

  /**
   * Cancels `run` (default: the answer streaming now). The answer ends
   * `cancelled` with the text so far (`cancelled` and `done` events).
   * Rejects with `not_running` when it has ended.
   */
  async cancel(run?: string): Promise<void> {
    const id = run ?? this.streamingRun;
    if (!id) throw new RelaisError("not_running", "no answer is streaming");
    if (this.api) await this.api.cancel(id);
    else await this.client.rpc("assistant.cancel", { run: id });
  }

  /** Applies one event of the channel. */
  apply(event: AssistantEvent): void {
    if (!event || typeof event !== "object") return;
    switch (event.type) {
      case "assistant.message":
        if (this.upsert(event.message)) {
          this.emit("message", event.message);
          this.changed();
        }
        return;
      case "assistant.started": {
        if (this.upsert(event.message)) this.changed();
        this.announce(event.message.id);
        return;
      }
      case "assistant.delta": {
        const held = this.byId.get(event.message);
        // Unknown answer, already included (seq <= delta_seq), or ended: skip.
        if (!held || held.status !== "streaming" || event.seq <= held.delta_seq) return;
        if (event.seq !== held.delta_seq + 1) {
          // A hole (not expected: the snapshot and the channel cover every
          // frame). `assistant.done` brings the whole text.
          return;
        }
        const m = { ...held, content: held.content + event.text, delta_seq: event.seq };
        this.byId.set(m.id, m);
        this.emit("delta", { message: m.id, seq: event.seq, text: event.text, content: m.content });
        this.changed();
        return;
      }
      case "assistant.fallback":
        this.emit("fallback", { message: event.message, from: event.from, to: event.to, reason: event.reason });
        return;
      case "assistant.done": {
        if (this.ended.has(event.message)) return;
        this.ended.add(event.message);
        const held = this.byId.get(event.message);
        if (held) {
          this.byId.set(held.id, {
            ...held,
            content: event.content,
            status: event.status,
            delta_seq: event.seq,
            usage: event.usage,
            provider: event.provider,
            error: event.error ?? null,
          });
        }
        const done: AssistantDoneEvent = {
          message: event.message,
          status: event.status,
          content: event.content,
          usage: event.usage,
          provider: event.provider,
        };
        if (event.error !== undefined) done.error = event.error;
        this.changed();
        this.emit("done", done);
        if (event.status === "complete") this.emit("complete", done);
        else if (event.status === "cancelled") this.emit("cancelled", done);
        else this.emit("incomplete", { ...done, error: event.error ?? event.status });
        return;
      }
    }
  }

  /** Emits `started` for answer `id`, once, whichever way it became known first. */
  private announce(id: string): void {
    const m = this.byId.get(id);
    if (!m || this.announced.has(id)) return;
    this.announced.add(id);
    this.emit("started", m);
  }

  /**
   * A snapshot (first subscribe, or a failed recovery): its messages
   * replace the ones held, unless one held is further along (more frames,
   * or ended while the snapshot says streaming).
   */
  private takeSnapshot(s: { messages?: AssistantMessage[] }): void {
    for (const m of s.messages ?? []) this.upsert(m);
    this.changed();
  }

  /** Adds `m` or replaces the one held when `m` is at least as far along; `true` when something changed. */
  private upsert(m: AssistantMessage): boolean {
    const held = this.byId.get(m.id);
    if (held) {
      const heldEnded = held.status !== "streaming";
      const mEnded = m.status !== "streaming";
      if (heldEnded && !mEnded) return false;
      if (!mEnded && m.delta_seq <= held.delta_seq) return false;
      if (heldEnded && mEnded) return false;
    }
    this.byId.set(m.id, m);
    return true;
  }

  private changed(): void {
    this.emit("change", { messages: this.messages });
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
