import type { RelaisClient } from "./client.js";
import { TypedEmitter } from "./emitter.js";
import type { RestClient } from "./rest.js";
import type { Subscription } from "./subscription.js";

export type QueueItemStatus = "pending" | "in_review" | "approved" | "rejected" | "withdrawn";

/** Items of one queue by status. */
export type QueueStatusCounts = Record<QueueItemStatus, number>;

/** A moderation item (docs/queues.md). Times are Unix milliseconds. */
export interface QueueItem {
  id: string;
  queue: string;
  external_ref: string;
  title: string;
  submitter: string;
  payload: Record<string, unknown>;
  status: QueueItemStatus;
  assignee: string | null;
  reason: string | null;
  version: number;
  [field: string]: unknown;
}

export interface NewQueueItem {
  external_ref: string;
  title: string;
  submitter?: string;
  payload?: Record<string, unknown>;
}

export interface TransitionOptions {
  /** Required to reject; at most 2,000 characters. */
  reason?: string;
  /** Only with `in_review`: the reviewer (default: the acting user). */
  assignee?: string;
}

export interface BulkTransitionResult {
  applied: number;
  failed: number;
  results: Array<{ id: string; ok: boolean; item?: QueueItem; error?: { code: string; message: string } }>;
}

export interface QueueItemEvent {
  version: number;
  from: QueueItemStatus | null;
  to: QueueItemStatus;
  actor: string;
  assignee: string | null;
  reason: string | null;
  at: number;
}

/** The moderation queues' REST API. */
export class Queues {
  constructor(private readonly rest: RestClient) {}

  /** Puts an item in `queue`; sending the same item again returns the stored one. */
  create(queue: string, item: NewQueueItem): Promise<QueueItem> {
    return this.rest.request<QueueItem>("POST", `/queues/${enc(queue)}/items`, { body: item });
  }

  /** Moves an item to `to`; resolves with the item as it now is. */
  transition(queue: string, id: string, to: QueueItemStatus, options: TransitionOptions = {}): Promise<QueueItem> {
    return this.rest.request<QueueItem>("POST", `/queues/${enc(queue)}/items/${enc(id)}/transition`, {
      body: { to, ...options },
    });
  }

  /** Moves up to 500 items, each on its own; results in the order asked. */
  transitionMany(queue: string, ids: string[], to: QueueItemStatus, options: TransitionOptions = {}): Promise<BulkTransitionResult> {
    return this.rest.request<BulkTransitionResult>("POST", `/queues/${enc(queue)}/transitions`, {
      body: { ids, to, ...options },
    });
  }

  /** A page of items, oldest first. `status` is comma-separated (`pending,in_review`). */
  list(
    queue: string,
    query: { status?: string; assignee?: string; submitter?: string; limit?: number; cursor?: string } = {},
  ): Promise<{ items: QueueItem[]; next_cursor: string | null }> {
    return this.rest.request("GET", `/queues/${enc(queue)}/items`, { query });
  }

  get(queue: string, id: string): Promise<QueueItem> {
    return this.rest.request<QueueItem>("GET", `/queues/${enc(queue)}/items/${enc(id)}`);
  }

  /** The item's audit trail, oldest first. */
  async events(queue: string, id: string): Promise<QueueItemEvent[]> {
    const r = await this.rest.request<{ events: QueueItemEvent[] }>("GET", `/queues/${enc(queue)}/items/${enc(id)}/events`);
    return r.events;
  }

  /** Every queue's counts. */
  async counts(): Promise<Record<string, QueueStatusCounts>> {
    const r = await this.rest.request<{ queues: Record<string, QueueStatusCounts> }>("GET", "/queues");
    return r.queues;
  }
}

export interface QueueCountsEvents {
  /** The counts changed: `queues` lists the queues that moved (every queue after a snapshot). */
  change: { queues: string[]; asOf: number | undefined };
}

/**
 * Live counts of every queue of the tenant, from the `queues` channel: the
 * snapshot on subscribe, then `queue.counts` updates merged in. Updates carry
 * absolute values, so applying one twice is harmless; a failed recovery
 * brings a fresh snapshot, which replaces the map. Moderators and admins only.
 */
export class QueueCounts extends TypedEmitter<QueueCountsEvents> {
  private readonly client: RelaisClient;
  private sub: Subscription | undefined;
  private readonly map = new Map<string, QueueStatusCounts>();
  private _asOf: number | undefined;

  constructor(client: RelaisClient) {
    super();
    this.client = client;
  }

  /** Counts by queue name. */
  get counts(): ReadonlyMap<string, QueueStatusCounts> {
    return this.map;
  }

  /** When the latest counts were read (ms, the hub's clock). */
  get asOf(): number | undefined {
    return this._asOf;
  }

  /** Subscribes; resolves once the snapshot is in (rejects with `forbidden` for others). */
  async start(): Promise<void> {
    if (this.sub) return;
    this.sub = this.client.subscribe("queues", {
      onSubscribed: (info) => {
        if (info.snapshot !== undefined) this.merge(info.snapshot as CountsData, true);
      },
      onPublication: (data) => {
        if ((data as { type?: string })?.type === "queue.counts") this.merge(data as CountsData, false);
      },
    });
    await this.sub.ready;
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    await sub?.unsubscribe();
  }

  private merge(data: CountsData, replace: boolean): void {
    if (replace) this.map.clear();
    const queues = Object.keys(data.queues ?? {});
    for (const q of queues) this.map.set(q, data.queues[q] as QueueStatusCounts);
    if (data.as_of !== undefined) this._asOf = data.as_of;
    this.emit("change", { queues, asOf: this._asOf });
  }
}

interface CountsData {
  queues: Record<string, QueueStatusCounts>;
  as_of?: number;
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
