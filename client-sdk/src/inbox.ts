import type { RelaisClient } from "./client.js";
import { TypedEmitter } from "./emitter.js";
import type { RestClient } from "./rest.js";
import type { Subscription } from "./subscription.js";

/** An inbox item (docs/notifications.md, section 5.1). Times are Unix milliseconds. */
export interface InboxItem {
  id: number;
  type: string;
  category: string;
  priority: "low" | "normal" | "high" | "critical";
  title: string;
  body: string;
  url?: string;
  data: Record<string, unknown>;
  status: "unread" | "read" | "archived";
  seen_at: number | null;
  read_at: number | null;
  archived_at: number | null;
  created_at: number;
}

export interface CategoryCounts {
  unread: number;
  read: number;
  archived: number;
}

/** The user's counters; `version` grows with every change: keep the highest. */
export interface InboxCounts extends CategoryCounts {
  unseen: number;
  version: number;
  categories: Record<string, CategoryCounts>;
}

export type InboxAction = "read" | "unread" | "archive" | "unarchive" | "seen";

export interface InboxQuery {
  status?: "unread" | "read" | "archived";
  category?: string;
  /** Comma-separated, e.g. `high,critical`. */
  priority?: string;
  /** 1-100, default 20. */
  limit?: number;
  cursor?: string;
}

export interface InboxPage {
  items: InboxItem[];
  next_cursor: string | null;
}

export interface InboxActionResult {
  changed: number[];
  counts: InboxCounts;
}

/** The `data` of a publication on `user:<id>`. */
export type NotificationEvent =
  | { type: "notification.created"; notification: InboxItem; counts: InboxCounts }
  | { type: "notification.updated"; action: InboxAction; ids?: number[]; category?: string; counts: InboxCounts };

export interface InboxEvents {
  /** The local store changed (items or counts). */
  change: { items: readonly InboxItem[]; counts: InboxCounts | undefined };
  /** A new notification arrived live. */
  notification: InboxItem;
  error: Error;
}

export interface InboxOptions {
  /** The connected client, for live events. */
  client: RelaisClient;
  /** REST calls with the user's access token. */
  rest: RestClient;
  /** The user whose inbox this is. Default: the connected user (`client.info.user`). */
  userId?: string;
  /** Filter and size of the page kept locally. Default: unread and read, 20 items. */
  query?: Omit<InboxQuery, "cursor">;
}

/**
 * The signed-in user's inbox: REST calls, plus a local store (the first page
 * and the counters) kept current by the live `notification.created` /
 * `notification.updated` events of `user:<id>`, and refetched when those
 * could not be recovered. The REST API is the source of truth; events only
 * spare refetches (docs/notifications.md, section 6).
 */
export class Inbox extends TypedEmitter<InboxEvents> {
  private readonly client: RelaisClient;
  private readonly rest: RestClient;
  private readonly query: Omit<InboxQuery, "cursor">;
  private userId: string | undefined;
  private sub: Subscription | undefined;
  private readonly byId = new Map<number, InboxItem>();
  private _counts: InboxCounts | undefined;

  constructor(options: InboxOptions) {
    super();
    this.client = options.client;
    this.rest = options.rest;
    this.userId = options.userId;
    this.query = options.query ?? {};
  }

  /** Items of the local store, newest first. */
  get items(): InboxItem[] {
    return [...this.byId.values()].sort((a, b) => b.created_at - a.created_at || b.id - a.id);
  }

  /** The counters of the highest `version` seen from any source. */
  get counts(): InboxCounts | undefined {
    return this._counts;
  }

  /**
   * Subscribes to `user:<id>` (first, so nothing falls between), then loads
   * the counters and the first page. Resolves when the store is filled.
   */
  async start(): Promise<void> {
    if (this.sub) return;
    if (!this.userId) {
      await this.client.connect();
      this.userId = this.client.info?.user;
    }
    this.sub = this.client.subscribe(`user:${this.userId}`, {
      onPublication: (data) => this.apply(data as NotificationEvent),
      onRecoveryFailed: () => void this.reload().catch((e) => this.emit("error", e)),
    });
    await this.sub.ready;
    await this.reload();
  }

  /** Stops following live events; the store stays as it is. */
  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    await sub?.unsubscribe();
  }

  /** Refetches the counters and the first page into the store. */
  async reload(): Promise<void> {
    const [counts, page] = await Promise.all([this.getCounts(), this.list(this.query)]);
    this.byId.clear();
    for (const item of page.items) this.byId.set(item.id, item);
    this.takeCounts(counts);
    this.changed();
  }

  // ------------------------------------------------------------------ REST

  /** `GET /inbox`: a page, newest first. Does not touch the store. */
  list(query: InboxQuery = {}): Promise<InboxPage> {
    return this.rest.request<InboxPage>("GET", "/inbox", { query: { ...query } });
  }

  /** `GET /inbox/{id}`. */
  get(id: number): Promise<InboxItem> {
    return this.rest.request<InboxItem>("GET", `/inbox/${id}`);
  }

  /** `GET /inbox/counts`; also offered to the store. */
  async getCounts(): Promise<InboxCounts> {
    const counts = await this.rest.request<InboxCounts>("GET", "/inbox/counts");
    if (this.takeCounts(counts)) this.changed();
    return counts;
  }

  read(id: number): Promise<InboxActionResult> {
    return this.act(id, "read");
  }
  unread(id: number): Promise<InboxActionResult> {
    return this.act(id, "unread");
  }
  archive(id: number): Promise<InboxActionResult> {
    return this.act(id, "archive");
  }
  unarchive(id: number): Promise<InboxActionResult> {
    return this.act(id, "unarchive");
  }
  seen(id: number): Promise<InboxActionResult> {
    return this.act(id, "seen");
  }

  /** `POST /inbox/{id}/{action}`, applied to the store at once (the live event changes nothing more). */
  async act(id: number, action: InboxAction): Promise<InboxActionResult> {
    const r = await this.rest.request<InboxActionResult>("POST", `/inbox/${id}/${action}`);
    this.apply({ type: "notification.updated", action, ids: r.changed, counts: r.counts });
    return r;
  }

  /** `POST /inbox/batch`: 1-500 ids. */
  async batch(action: InboxAction, ids: number[]): Promise<InboxActionResult> {
    const r = await this.rest.request<InboxActionResult>("POST", "/inbox/batch", { body: { action, ids } });
    this.apply({ type: "notification.updated", action, ids: r.changed, counts: r.counts });
    return r;
  }

  /** `POST /inbox/read-all`, of one category or all. */
  async readAll(category?: string): Promise<InboxActionResult> {
    const body = category === undefined ? {} : { category };
    const r = await this.rest.request<InboxActionResult>("POST", "/inbox/read-all", { body });
    this.apply({ type: "notification.updated", action: "read", ...(category ? { category } : {}), counts: r.counts });
    return r;
  }

  /** `POST /inbox/seen-all`. */
  async seenAll(): Promise<InboxActionResult> {
    const r = await this.rest.request<InboxActionResult>("POST", "/inbox/seen-all");
    this.apply({ type: "notification.updated", action: "seen", counts: r.counts });
    return r;
  }

  // ----------------------------------------------------------------- store

  /**
   * Applies a live event (or an action's answer) to the store. Idempotent:
   * the same change from the REST answer and from the event is harmless.
   */
  apply(event: NotificationEvent): void {
    if (!event || typeof event !== "object") return;
    if (event.type === "notification.created") {
      const item = event.notification;
      const isNew = !this.byId.has(item.id);
      if (isNew && this.matches(item)) this.byId.set(item.id, item);
      this.takeCounts(event.counts);
      this.changed();
      if (isNew) this.emit("notification", item);
    } else if (event.type === "notification.updated") {
      const now = Date.now();
      const targets = event.ids
        ? event.ids.map((id) => this.byId.get(id)).filter((i): i is InboxItem => i !== undefined)
        : [...this.byId.values()].filter((i) => event.category === undefined || i.category === event.category);
      for (const item of targets) {
        const next = applyAction(item, event.action, now);
        if (next === item) continue;
        if (this.matches(next)) this.byId.set(item.id, next);
        else this.byId.delete(item.id);
      }
      this.takeCounts(event.counts);
      this.changed();
    }
  }

  /** Whether an item belongs in the kept page's filter. */
  private matches(item: InboxItem): boolean {
    const q = this.query;
    if (q.status ? item.status !== q.status : item.status === "archived") return false;
    if (q.category && item.category !== q.category) return false;
    if (q.priority && !q.priority.split(",").includes(item.priority)) return false;
    return true;
  }

  private takeCounts(counts: InboxCounts | undefined): boolean {
    if (!counts || (this._counts && counts.version <= this._counts.version)) return false;
    this._counts = counts;
    return true;
  }

  private changed(): void {
    this.emit("change", { items: this.items, counts: this._counts });
  }
}

/**
 * An item after `action`, as the hub applies it (section 5.3); the same
 * object when the action does not apply to it.
 */
export function applyAction(item: InboxItem, action: InboxAction, now: number): InboxItem {
  switch (action) {
    case "read":
      if (item.status !== "unread") return item;
      return { ...item, status: "read", read_at: now, seen_at: item.seen_at ?? now };
    case "unread":
      if (item.status !== "read") return item;
      return { ...item, status: "unread", read_at: null };
    case "archive":
      if (item.status === "archived") return item;
      return { ...item, status: "archived", archived_at: now, seen_at: item.seen_at ?? now };
    case "unarchive":
      if (item.status !== "archived") return item;
      return { ...item, status: "read", archived_at: null, read_at: item.read_at ?? now };
    case "seen":
      if (item.status === "archived" || item.seen_at !== null) return item;
      return { ...item, seen_at: now };
    default:
      return item;
  }
}
