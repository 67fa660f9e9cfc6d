import type { RelaisClient } from "./client.js";
import { TypedEmitter } from "./emitter.js";
import type { RestClient } from "./rest.js";
import type { Subscription } from "./subscription.js";

export type SlotStatus = "planned" | "confirmed" | "aired" | "cancelled" | "missed";

/** A broadcast slot (docs/planning.md). Times are RFC 3339, UTC in responses. */
export interface Slot {
  id: string;
  station_id: string;
  starts_at: string;
  ends_at: string;
  /** Seconds. */
  duration: number;
  spot_ref: string | null;
  campaign_ref: string | null;
  advertiser_user: string | null;
  advertiser_ref: string | null;
  title: string | null;
  status: SlotStatus;
  notes: string | null;
  version: number;
  aired_at: string | null;
  cancel_reason: string | null;
  [field: string]: unknown;
}

export interface Station {
  id: string;
  name: string;
  time_zone: string;
  external_ref?: string | null;
  [field: string]: unknown;
}

export interface NewSlot {
  starts_at: string;
  duration: number;
  spot_ref?: string;
  campaign_ref?: string;
  advertiser_user?: string;
  advertiser_ref?: string;
  title?: string;
  notes?: string;
}

/** The planning REST API (planners; broadcasters for reads and actions). */
export class PlanningApi {
  constructor(private readonly rest: RestClient) {}

  createStation(station: { name: string; time_zone: string; external_ref?: string }): Promise<Station> {
    return this.rest.request<Station>("POST", "/stations", { body: station });
  }

  createSlot(stationId: string, slot: NewSlot): Promise<Slot> {
    return this.rest.request<Slot>("POST", `/stations/${enc(stationId)}/slots`, { body: slot });
  }

  /**
   * Changes a slot as of `version` (the one you hold): `version_mismatch`
   * (412, `details.current_version`) if someone changed it meanwhile.
   */
  updateSlot(id: string, version: number, patch: Partial<NewSlot>): Promise<Slot> {
    return this.rest.request<Slot>("PATCH", `/slots/${enc(id)}`, { body: patch, headers: { "if-match": `"${version}"` } });
  }

  confirm(id: string): Promise<Slot> {
    return this.rest.request<Slot>("POST", `/slots/${enc(id)}/confirm`);
  }

  aired(id: string, airedAt?: string): Promise<Slot> {
    return this.rest.request<Slot>("POST", `/slots/${enc(id)}/aired`, airedAt ? { body: { aired_at: airedAt } } : {});
  }

  cancel(id: string, reason: string): Promise<Slot> {
    return this.rest.request<Slot>("POST", `/slots/${enc(id)}/cancel`, { body: { reason } });
  }

  missed(id: string, reason?: string): Promise<Slot> {
    return this.rest.request<Slot>("POST", `/slots/${enc(id)}/missed`, reason ? { body: { reason } } : {});
  }

  /** Slots overlapping `[from, to)`, by start (one page). */
  listSlots(
    stationId: string,
    query: { from?: string; to?: string; status?: string; limit?: number; cursor?: string } = {},
  ): Promise<{ items: Slot[]; next_cursor: string | null }> {
    return this.rest.request("GET", `/stations/${enc(stationId)}/slots`, { query });
  }
}

export interface PlanningViewOptions {
  /** Window of the snapshot (RFC 3339 with an offset). Default: today ± 7 days in the station's zone. */
  from?: string;
  to?: string;
}

export interface PlanningViewEvents {
  /** The view changed: the slot that changed, or none after a (new) snapshot. */
  change: { slot?: Slot; type: string };
}

/**
 * A station's planning, live: the `planning:<station>` snapshot, then the
 * `slot.*` and `station.updated` events, kept per slot id at the highest
 * `version` (so an event also in the snapshot changes nothing) and listed
 * by start. A failed recovery brings a fresh snapshot that replaces the view.
 */
export class PlanningView extends TypedEmitter<PlanningViewEvents> {
  readonly stationId: string;
  private readonly client: RelaisClient;
  private readonly params: Record<string, unknown> | undefined;
  private sub: Subscription | undefined;
  private readonly byId = new Map<string, Slot>();
  private _station: Station | undefined;
  private window: { from: string; to: string } | undefined;
  private _truncated = false;

  constructor(client: RelaisClient, stationId: string, options: PlanningViewOptions = {}) {
    super();
    this.client = client;
    this.stationId = stationId;
    const params: Record<string, unknown> = {};
    if (options.from) params.from = options.from;
    if (options.to) params.to = options.to;
    this.params = Object.keys(params).length ? params : undefined;
  }

  get station(): Station | undefined {
    return this._station;
  }

  /** The snapshot's window, in UTC. */
  get from(): string | undefined {
    return this.window?.from;
  }
  get to(): string | undefined {
    return this.window?.to;
  }

  /** `true` when the window held more than 5,000 slots: ask for a narrower one. */
  get truncated(): boolean {
    return this._truncated;
  }

  /** Slots overlapping the window, by start (then id), cancelled ones included. */
  get slots(): Slot[] {
    return [...this.byId.values()].sort(
      (a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
  }

  slot(id: string): Slot | undefined {
    return this.byId.get(id);
  }

  /** Subscribes; resolves once the snapshot is in (`forbidden`, `not_found`, `invalid_window` otherwise). */
  async start(): Promise<void> {
    if (this.sub) return;
    this.sub = this.client.subscribe(
      `planning:${this.stationId}`,
      {
        onSubscribed: (info) => {
          if (info.snapshot !== undefined) this.takeSnapshot(info.snapshot as PlanningSnapshot);
        },
        onPublication: (data) => this.apply(data as PlanningEvent),
      },
      this.params ? { params: this.params } : {},
    );
    await this.sub.ready;
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    await sub?.unsubscribe();
  }

  private takeSnapshot(s: PlanningSnapshot): void {
    this.byId.clear();
    this._station = s.station;
    this.window = { from: s.from, to: s.to };
    this._truncated = s.truncated === true;
    for (const slot of s.slots ?? []) this.byId.set(slot.id, slot);
    this.emit("change", { type: "snapshot" });
  }

  /** Applies one event; older or equal versions of a slot are ignored. */
  apply(event: PlanningEvent): void {
    if (!event || typeof event !== "object") return;
    if (event.type === "station.updated" && event.station) {
      this._station = event.station;
      this.emit("change", { type: event.type });
      return;
    }
    const slot = event.slot;
    if (!event.type?.startsWith("slot.") || !slot) return;
    const held = this.byId.get(slot.id);
    if (held && held.version >= slot.version) return;
    if (this.inWindow(slot)) this.byId.set(slot.id, slot);
    else this.byId.delete(slot.id); // moved out of the window
    this.emit("change", { slot, type: event.type });
  }

  private inWindow(slot: Slot): boolean {
    if (!this.window) return true;
    return Date.parse(slot.starts_at) < Date.parse(this.window.to) && Date.parse(slot.ends_at) > Date.parse(this.window.from);
  }
}

export interface PlanningSnapshot {
  station: Station;
  from: string;
  to: string;
  slots: Slot[];
  truncated?: boolean;
}

export type PlanningEvent = { type: string; slot?: Slot; station?: Station };

function enc(s: string): string {
  return encodeURIComponent(s);
}
