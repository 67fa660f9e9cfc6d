import type { PresenceResult, RelaisClient } from "./client.js";
import { TypedEmitter } from "./emitter.js";
import { RelaisError } from "./errors.js";
import type { RestClient } from "./rest.js";
import type { Subscription } from "./subscription.js";

export type ChatRoomKind = "general" | "project" | "direct" | "group";

/** A chat room (docs/chat.md). Times are Unix milliseconds. */
export interface ChatRoomInfo {
  id: string;
  kind: ChatRoomKind;
  /** Empty for direct rooms. */
  name: string;
  project_id: string | null;
  created_by: string | null;
  /** The `seq` of the room's latest message. */
  last_seq: number;
  archived: boolean;
  created_at: number;
  /** `chat:<id>`, in lists and `room()`. */
  channel?: string;
  [field: string]: unknown;
}

/** A room of `ChatApi.rooms()`: with the caller's read marker and unread count. */
export interface ChatRoomSummary extends ChatRoomInfo {
  channel: string;
  read_seq: number;
  unread: number;
}

/**
 * A stored message: a user's (`type: "message"`) or the hub's (`type: "system"`,
 * `author: null`, with `event` and `user`). A deleted one keeps its place
 * with `text: ""` and `deleted_at`.
 */
export interface ChatMessage {
  type: "message" | "system";
  id: string;
  room: string;
  /** Dense and increasing per room: the history's order. */
  seq: number;
  author: string | null;
  /** System messages: `joined`, `left`, `renamed`, `connected`, `disconnected`. */
  event?: string;
  /** System messages: whom it is about. */
  user?: string;
  text: string;
  reply_to?: string;
  /** Mentioned user ids (and `room` for `@room`). */
  mentions: string[];
  client_id?: string;
  created_at: number;
  edited_at?: number;
  deleted_at?: number;
  [field: string]: unknown;
}

export interface ChatHistoryPage {
  /** In `seq` order, system messages and tombstones included. */
  messages: ChatMessage[];
  has_more: boolean;
}

export interface ChatHistoryQuery {
  /** The newest `limit` older than this `seq` (scrolling back). */
  before?: number;
  /** The oldest `limit` newer than this `seq` (catching up). */
  after?: number;
  /** Default 50, at most 200. */
  limit?: number;
}

/** A member of a room as the member list shows it: never an email. */
export interface ChatMember {
  id: string;
  display_name: string;
  /** Group rooms only: the room's admin or a member. */
  role?: "admin" | "member";
}

export interface ChatMembersPage {
  /** In id order. */
  members: ChatMember[];
  /** Present when more members follow: pass it as `after` for the next page. */
  next_after?: string;
}

export interface ChatMembersQuery {
  /** Members whose id comes after this one (the previous page's `next_after`). */
  after?: string;
  /** Default 200, at most 500. */
  limit?: number;
}

/** Which message a read marker moves to: a `seq`, a message id, or (neither) the room's latest. */
export interface ChatReadTarget {
  seq?: number;
  messageId?: string;
}

/** `chat.unread` on `user:<id>`, and the result of marking a room read. */
export interface ChatUnreadEvent {
  type: "chat.unread";
  room: string;
  read_seq: number;
  unread: number;
  total: number;
}

/** `chat.unread_counts` on `user:<id>`: absolute counts of the rooms that moved. */
export interface ChatUnreadCountsEvent {
  type: "chat.unread_counts";
  rooms: Array<{ room: string; unread: number }>;
  total: number;
}

/** `message.edited` on `chat:<room>`. */
export interface ChatMessageEdited {
  type: "message.edited";
  id: string;
  room: string;
  seq: number;
  text: string;
  mentions: string[];
  edited_at: number;
}

/** `message.deleted` on `chat:<room>`. */
export interface ChatMessageDeleted {
  type: "message.deleted";
  id: string;
  room: string;
  seq: number;
  deleted_at: number;
  by: string;
}

/** The `data` of a publication on `chat:<room>`. */
export type ChatEvent =
  | ChatMessage
  | ChatMessageEdited
  | ChatMessageDeleted
  | { type: "room.updated"; room: string; archived: boolean };

/** The chat REST API (docs/chat.md). Rooms one is not in answer `room_not_found`. */
export class ChatApi {
  constructor(private readonly rest: RestClient) {}

  /** The caller's rooms (general, projects', direct and group rooms, not archived) and the badge total. */
  rooms(): Promise<{ rooms: ChatRoomSummary[]; total_unread: number }> {
    return this.rest.request("GET", "/chat/rooms");
  }

  /** A room and its member ids. */
  room(id: string): Promise<ChatRoomInfo & { channel: string; members: string[] }> {
    return this.rest.request("GET", `/chat/rooms/${enc(id)}`);
  }

  /** A page of the room's members with their display names (whoever may read its history). */
  members(id: string, query: ChatMembersQuery = {}): Promise<ChatMembersPage> {
    return this.rest.request<ChatMembersPage>("GET", `/chat/rooms/${enc(id)}/members`, { query: { ...query } });
  }

  /** Creates a group room; the caller is its admin. */
  createGroup(name: string, members: string[] = []): Promise<ChatRoomInfo> {
    return this.rest.request<ChatRoomInfo>("POST", "/chat/rooms", { body: { kind: "group", name, members } });
  }

  /** Opens the direct room with `user` (created on first use, one per pair). */
  openDirect(user: string): Promise<ChatRoomInfo> {
    return this.rest.request<ChatRoomInfo>("POST", "/chat/rooms", { body: { kind: "direct", user } });
  }

  /** Opens a project's room (created on first use by a member). */
  openProject(project: string): Promise<ChatRoomInfo> {
    return this.rest.request<ChatRoomInfo>("POST", "/chat/rooms", { body: { kind: "project", project } });
  }

  /** Renames a group room (its admin or a tenant admin). */
  rename(id: string, name: string): Promise<ChatRoomInfo> {
    return this.rest.request<ChatRoomInfo>("PATCH", `/chat/rooms/${enc(id)}`, { body: { name } });
  }

  /** Archives (or restores) a room other than the general one. */
  archive(id: string, archived = true): Promise<ChatRoomInfo> {
    return this.rest.request<ChatRoomInfo>("PATCH", `/chat/rooms/${enc(id)}`, { body: { archived } });
  }

  join(id: string): Promise<{ room: string; joined: boolean }> {
    return this.rest.request("POST", `/chat/rooms/${enc(id)}/join`);
  }

  leave(id: string): Promise<{ room: string; left: boolean }> {
    return this.rest.request("POST", `/chat/rooms/${enc(id)}/leave`);
  }

  invite(id: string, user: string): Promise<{ room: string; user: string; added: boolean }> {
    return this.rest.request("POST", `/chat/rooms/${enc(id)}/invite`, { body: { user } });
  }

  /** Mutes (or unmutes) a user in a room: the room's admin or a moderator. */
  mute(id: string, user: string, muted = true): Promise<{ room: string; user: string; muted: boolean }> {
    return this.rest.request("POST", `/chat/rooms/${enc(id)}/mutes`, { body: { user, muted } });
  }

  /** Moves the caller's read marker forward (it never goes back). */
  markRead(id: string, target: ChatReadTarget = {}): Promise<ChatUnreadEvent> {
    return this.rest.request<ChatUnreadEvent>("POST", `/chat/rooms/${enc(id)}/read`, { body: readBody(target) });
  }

  /** A history page: the newest, `before` a seq, or `after` one. */
  history(id: string, query: ChatHistoryQuery = {}): Promise<ChatHistoryPage> {
    return this.rest.request<ChatHistoryPage>("GET", `/chat/rooms/${enc(id)}/messages`, { query: { ...query } });
  }

  /** Posts a message over REST (app backends; users usually send over the socket with `ChatRoom.send`). */
  post(id: string, text: string, options: { replyTo?: string; clientId?: string } = {}): Promise<ChatMessage & { offset: number }> {
    const body: Record<string, unknown> = { text };
    if (options.replyTo) body.reply_to = options.replyTo;
    if (options.clientId) body.client_id = options.clientId;
    return this.rest.request("POST", `/chat/rooms/${enc(id)}/messages`, { body });
  }

  /** Edits one's own message. */
  edit(id: string, messageId: string, text: string): Promise<ChatMessage> {
    return this.rest.request<ChatMessage>("PATCH", `/chat/rooms/${enc(id)}/messages/${enc(messageId)}`, { body: { text } });
  }

  /** Deletes a message, leaving a tombstone. */
  delete(id: string, messageId: string): Promise<ChatMessageDeleted> {
    return this.rest.request<ChatMessageDeleted>("DELETE", `/chat/rooms/${enc(id)}/messages/${enc(messageId)}`);
  }

  /** The tenant's retention (tenant admins). */
  settings(): Promise<{ retention_days: number | null }> {
    return this.rest.request("GET", "/chat/settings");
  }

  setSettings(settings: { retention_days: number | null }): Promise<{ retention_days: number | null }> {
    return this.rest.request("PUT", "/chat/settings", { body: settings });
  }
}

export interface ChatTypingEvent {
  room: string;
  user: string;
  /** `true` when the indicator starts or is renewed, `false` when it expires or the user's message arrives. */
  typing: boolean;
  /** Local time (ms) at which the indicator expires, while `typing`. */
  expiresAt?: number;
}

export interface ChatRoomEvents {
  /** The local list changed (a message, an edit, a deletion, a history page). */
  change: { messages: readonly ChatMessage[] };
  /** A message (or system message) arrived live. */
  message: ChatMessage;
  /** A held message was edited or deleted. */
  updated: ChatMessage;
  typing: ChatTypingEvent;
  join: { user: string };
  leave: { user: string };
  /** The room was archived or restored. */
  archived: { archived: boolean };
  error: Error;
}

export interface ChatRoomOptions {
  /** Fills the list from the history on start and after a failed recovery, and fills gaps in `seq`. */
  api?: ChatApi;
  /** Messages loaded on start. Default 50. */
  initialLimit?: number;
}

export interface ChatSendOptions {
  /** The id of a message of the same room. */
  replyTo?: string;
  /** Makes a retry safe (1-64 characters). Default: a new random id. */
  clientId?: string;
}

/** How many offsets of recent publications `send` remembers (its reply may come after the publication). */
const RECENT = 200;

/**
 * A chat room, live: subscribes to `chat:<room>`, keeps the messages in
 * `seq` order with no duplicates (by id), applies `message.edited` and
 * `message.deleted`, tracks typing indicators, and sends messages, typing
 * frames and read markers over the socket. With `options.api` the list is
 * filled from the history at start, after a failed recovery, and whenever
 * a live message leaves a hole in `seq`.
 */
export class ChatRoom extends TypedEmitter<ChatRoomEvents> {
  readonly roomId: string;
  readonly channel: string;
  private readonly client: RelaisClient;
  private readonly api: ChatApi | undefined;
  private readonly initialLimit: number;
  private sub: Subscription | undefined;
  private readonly byId = new Map<string, ChatMessage>();
  private readonly bySeq = new Map<number, string>();
  private readonly typingTimers = new Map<string, { timer: ReturnType<typeof setTimeout>; expiresAt: number }>();
  /** Offset of a recent publication → the message it carried. */
  private readonly recent = new Map<number, ChatMessage>();
  private readonly waiting = new Map<number, { resolve(m: ChatMessage): void; reject(e: Error): void }>();
  private filling: Promise<void> | undefined;
  private refill = false;
  private lastTypingSent = 0;

  constructor(client: RelaisClient, roomId: string, options: ChatRoomOptions = {}) {
    super();
    this.client = client;
    this.roomId = roomId;
    this.channel = `chat:${roomId}`;
    this.api = options.api;
    this.initialLimit = options.initialLimit ?? 50;
  }

  /** Messages held, in `seq` order. */
  get messages(): ChatMessage[] {
    return [...this.byId.values()].sort((a, b) => a.seq - b.seq);
  }

  message(id: string): ChatMessage | undefined {
    return this.byId.get(id);
  }

  /** The highest `seq` held (0 when none). */
  get lastSeq(): number {
    let max = 0;
    for (const seq of this.bySeq.keys()) if (seq > max) max = seq;
    return max;
  }

  /** Users whose typing indicator is showing (the connected user left out). */
  get typingUsers(): string[] {
    const me = this.client.info?.user;
    return [...this.typingTimers.keys()].filter((u) => u !== me);
  }

  /**
   * Subscribes; resolves once subscribed and, with `api`, the newest page
   * is loaded. Rejects with `forbidden` for a room one is not in.
   */
  async start(): Promise<void> {
    if (this.sub) return;
    this.sub = this.client.subscribe(this.channel, {
      onSubscribed: () => this.catchUp(),
      onRecoveryFailed: () => this.catchUp(),
      onPublication: (data, ctx) => this.onPublication(data as ChatEvent, ctx.offset),
      onEphemeral: (e) => this.onEphemeral(e.data),
      onJoin: (e) => this.emit("join", { user: e.user }),
      onLeave: (e) => this.emit("leave", { user: e.user }),
      onError: (err) => this.emit("error", err),
    });
    await this.sub.ready;
    await this.filling;
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    for (const { timer } of this.typingTimers.values()) clearTimeout(timer);
    this.typingTimers.clear();
    for (const w of this.waiting.values()) w.reject(new RelaisError("unsubscribed", "the room was stopped"));
    this.waiting.clear();
    await sub?.unsubscribe();
  }

  /**
   * Sends a message over the socket; resolves with the stored message once
   * it is back on the channel. Rejects with the hub's code
   * (`message_too_long`, `muted`, `room_archived`, `duplicate_message`, …).
   */
  async send(text: string, options: ChatSendOptions = {}): Promise<ChatMessage> {
    const data: Record<string, unknown> = {
      type: "message",
      text,
      reply_to: options.replyTo ?? null,
      client_id: options.clientId ?? newClientId(),
    };
    if (!this.sub) throw new RelaisError("not_subscribed", "ChatRoom: call start() before send()");
    const r = await this.client.publish(this.channel, data);
    const offset = r.offset as number;
    const seen = this.recent.get(offset);
    if (seen) return this.byId.get(seen.id) ?? seen;
    return new Promise<ChatMessage>((resolve, reject) =>
      this.waiting.set(offset, { resolve, reject }),
    );
  }

  /**
   * Shows the others that the user is typing. Sends at most one indicator
   * every 2 s (the hub's limit): resolves `false` when this call sent nothing.
   * Call it on each keystroke.
   */
  async typing(): Promise<boolean> {
    const now = Date.now();
    if (now - this.lastTypingSent < 2000) return false;
    this.lastTypingSent = now;
    try {
      await this.client.publish(this.channel, { type: "typing" });
    } catch (e) {
      if (e instanceof RelaisError && e.code === "typing_too_frequent") return false;
      throw e;
    }
    return true;
  }

  /** Moves the read marker to `seq` (default: the room's latest message) with the `chat.mark_read` RPC. */
  markRead(seq?: number): Promise<ChatUnreadEvent> {
    const data: Record<string, unknown> = { room: this.roomId };
    if (seq !== undefined) data.seq = seq;
    return this.client.rpc<ChatUnreadEvent>("chat.mark_read", data);
  }

  /** Who is connected to the room, across nodes. */
  presence(): Promise<PresenceResult> {
    return this.client.presence(this.channel);
  }

  /** Loads the page before the oldest message held (scrolling back); resolves with whether older ones remain. */
  async loadOlder(limit = 50): Promise<boolean> {
    if (!this.api) throw new RelaisError("not_supported", "ChatRoom: loading history needs `options.api`");
    const held = this.messages;
    const query: ChatHistoryQuery = { limit };
    if (held.length) query.before = held[0]!.seq;
    const page = await this.api.history(this.roomId, query);
    this.merge(page.messages);
    return page.has_more;
  }

  /** Applies one event of the channel (also usable with events from elsewhere). */
  apply(event: ChatEvent): void {
    if (!event || typeof event !== "object") return;
    switch (event.type) {
      case "message":
      case "system": {
        const m = event as ChatMessage;
        if (this.put(m) === "added") {
          if (m.author) this.stopTyping(m.author);
          this.emit("message", m);
          this.changed();
          this.checkGap(m.seq);
        }
        return;
      }
      case "message.edited": {
        const held = this.byId.get(event.id);
        if (!held || (held.edited_at !== undefined && held.edited_at >= event.edited_at) || held.deleted_at !== undefined) return;
        const m = { ...held, text: event.text, mentions: event.mentions, edited_at: event.edited_at };
        this.byId.set(m.id, m);
        this.emit("updated", m);
        this.changed();
        return;
      }
      case "message.deleted": {
        const held = this.byId.get(event.id);
        if (!held || held.deleted_at !== undefined) return;
        const m = { ...held, text: "", deleted_at: event.deleted_at };
        this.byId.set(m.id, m);
        this.emit("updated", m);
        this.changed();
        return;
      }
      case "room.updated":
        this.emit("archived", { archived: event.archived });
        return;
    }
  }

  private onPublication(event: ChatEvent, offset: number): void {
    this.apply(event);
    if (event && (event.type === "message" || event.type === "system")) {
      const m = this.byId.get((event as ChatMessage).id) ?? (event as ChatMessage);
      this.recent.set(offset, m);
      if (this.recent.size > RECENT) this.recent.delete(this.recent.keys().next().value as number);
      const w = this.waiting.get(offset);
      if (w) {
        this.waiting.delete(offset);
        w.resolve(m);
      }
    }
  }

  private onEphemeral(data: unknown): void {
    const d = data as { type?: string; user?: string; expires_in?: number } | null;
    if (!d || d.type !== "typing" || typeof d.user !== "string") return;
    const user = d.user;
    const held = this.typingTimers.get(user);
    if (held) clearTimeout(held.timer);
    const ttl = typeof d.expires_in === "number" ? d.expires_in : 5000;
    const expiresAt = Date.now() + ttl;
    const timer = setTimeout(() => this.stopTyping(user), ttl);
    this.typingTimers.set(user, { timer, expiresAt });
    this.emit("typing", { room: this.roomId, user, typing: true, expiresAt });
  }

  private stopTyping(user: string): void {
    const held = this.typingTimers.get(user);
    if (!held) return;
    clearTimeout(held.timer);
    this.typingTimers.delete(user);
    this.emit("typing", { room: this.roomId, user, typing: false });
  }

  /** Adds a message, or replaces the one held by a later state of it (edited, deleted). */
  private put(m: ChatMessage): "added" | "replaced" | undefined {
    const held = this.byId.get(m.id);
    if (held) {
      const newer =
        (m.deleted_at !== undefined && held.deleted_at === undefined) ||
        (m.edited_at !== undefined && (held.edited_at === undefined || m.edited_at > held.edited_at) && held.deleted_at === undefined);
      if (!newer) return undefined;
      this.byId.set(m.id, m);
      return "replaced";
    }
    this.byId.set(m.id, m);
    this.bySeq.set(m.seq, m.id);
    return "added";
  }

  private merge(messages: ChatMessage[]): void {
    let changed = false;
    for (const m of messages) if (this.put(m)) changed = true;
    if (changed) this.changed();
  }

  private changed(): void {
    this.emit("change", { messages: this.messages });
  }

  /** A live message whose `seq` skips some: fetch what lies between. */
  private checkGap(seq: number): void {
    if (!this.api || this.bySeq.has(seq - 1) || seq - 1 < this.minSeq()) return;
    this.catchUp();
  }

  private minSeq(): number {
    let min = Infinity;
    for (const seq of this.bySeq.keys()) if (seq < min) min = seq;
    return min;
  }

  /** Loads what is newer than the last message held (or the newest page), once at a time. */
  private catchUp(): void {
    if (!this.api) return;
    if (this.filling) {
      this.refill = true;
      return;
    }
    const api = this.api;
    this.filling = (async () => {
      try {
        do {
          this.refill = false;
          const held = this.bySeq.size;
          if (held === 0) {
            const page = await api.history(this.roomId, { limit: this.initialLimit });
            this.merge(page.messages);
          } else {
            // From the first hole (or the end) onwards, page by page.
            let from = this.minSeq();
            while (this.bySeq.has(from + 1)) from++;
            for (;;) {
              const page = await api.history(this.roomId, { after: from, limit: 200 });
              this.merge(page.messages);
              if (!page.has_more || page.messages.length === 0) break;
              from = page.messages[page.messages.length - 1]!.seq;
            }
          }
        } while (this.refill);
      } catch (e) {
        this.emit("error", e instanceof Error ? e : new Error(String(e)));
      } finally {
        this.filling = undefined;
      }
    })();
  }
}

export interface ChatUnreadEvents {
  /** Counts changed: `rooms` lists the rooms that moved (every room after `refresh`). */
  change: { rooms: string[]; total: number };
}

/**
 * The user's unread chat counts, live: `chat.unread` and
 * `chat.unread_counts` from `user:<id>` (absolute counts, so an event
 * applied twice does no harm), loaded first with the `chat.unread` RPC and
 * again after a failed recovery. Shares the client's subscription to
 * `user:<id>` when one exists (e.g. an `Inbox`'s); start this one after it.
 */
export class ChatUnread extends TypedEmitter<ChatUnreadEvents> {
  private readonly client: RelaisClient;
  private userId: string | undefined;
  private sub: Subscription | undefined;
  private own = false;
  private offs: Array<() => void> = [];
  private readonly map = new Map<string, number>();
  private _total = 0;

  constructor(client: RelaisClient, options: { userId?: string } = {}) {
    super();
    this.client = client;
    this.userId = options.userId;
  }

  /** Unread messages by room id. */
  get rooms(): ReadonlyMap<string, number> {
    return this.map;
  }

  /** The badge: unread messages over all rooms. */
  get total(): number {
    return this._total;
  }

  async start(): Promise<void> {
    if (this.sub) return;
    if (!this.userId) {
      await this.client.connect();
      this.userId = this.client.info?.user;
    }
    const channel = `user:${this.userId}`;
    const existing = this.client.subscriptions.get(channel);
    if (existing) {
      this.sub = existing;
      this.offs.push(existing.on("publication", (p) => this.apply(p.data as ChatUnreadEvent | ChatUnreadCountsEvent)));
      this.offs.push(existing.on("subscribed", (info) => {
        if (info.recovered === false) void this.refresh().catch(() => undefined);
      }));
    } else {
      this.own = true;
      this.sub = this.client.subscribe(channel, {
        onPublication: (data) => this.apply(data as ChatUnreadEvent | ChatUnreadCountsEvent),
        onRecoveryFailed: () => void this.refresh().catch(() => undefined),
      });
    }
    await this.sub.ready;
    await this.refresh();
  }

  async stop(): Promise<void> {
    for (const off of this.offs) off();
    this.offs = [];
    const sub = this.sub;
    this.sub = undefined;
    if (this.own) await sub?.unsubscribe();
    this.own = false;
  }

  /** Reloads every room's count (`chat.unread` RPC). */
  async refresh(): Promise<void> {
    const r = await this.client.rpc<{ rooms: Array<{ room: string; unread: number }>; total: number }>("chat.unread");
    this.map.clear();
    for (const { room, unread } of r.rooms) this.map.set(room, unread);
    this._total = r.total;
    this.emit("change", { rooms: [...this.map.keys()], total: this._total });
  }

  /** Applies a `chat.unread` or `chat.unread_counts` event (others are ignored). */
  apply(event: ChatUnreadEvent | ChatUnreadCountsEvent): void {
    if (!event || typeof event !== "object") return;
    if (event.type === "chat.unread") {
      this.map.set(event.room, event.unread);
      this._total = event.total;
      this.emit("change", { rooms: [event.room], total: this._total });
    } else if (event.type === "chat.unread_counts") {
      for (const { room, unread } of event.rooms) this.map.set(room, unread);
      this._total = event.total;
      this.emit("change", { rooms: event.rooms.map((r) => r.room), total: this._total });
    }
  }
}

function readBody(target: ChatReadTarget): Record<string, unknown> {
  if (target.seq !== undefined) return { seq: target.seq };
  if (target.messageId !== undefined) return { message_id: target.messageId };
  return {};
}

function newClientId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
