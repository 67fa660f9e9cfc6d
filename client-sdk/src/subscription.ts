import { TypedEmitter } from "./emitter.js";
import { RelaisError } from "./errors.js";
import type { StreamPosition } from "./protocol.js";

/** Where a publication sits in its channel's stream. */
export interface PublicationContext extends StreamPosition {
  channel: string;
}

export interface SubscribedInfo extends StreamPosition {
  channel: string;
  /** `true`/`false` when the subscription was made with `recover`, otherwise `undefined`. */
  recovered: boolean | undefined;
  /**
   * The channel's state as of `offset`, on namespaces that serve one (queue
   * counts, planning), when nothing was recovered: it replaces what you held.
   */
  snapshot?: unknown;
}

export interface EphemeralEvent {
  channel: string;
  data: unknown;
}

export interface PresenceEvent {
  channel: string;
  user: string;
}

export interface SubscriptionHandlers {
  /** A publication, delivered once and in offset order. */
  onPublication?(data: unknown, ctx: PublicationContext): void;
  /** An `ephemeral` frame (e.g. typing): current subscribers only, no offset, never recovered. */
  onEphemeral?(event: EphemeralEvent): void;
  /** A `join` event (only on namespaces that send them). */
  onJoin?(event: PresenceEvent): void;
  /** A `leave` event (only on namespaces that send them). */
  onLeave?(event: PresenceEvent): void;
  /**
   * After a reconnect (or a server-side `insufficient_state`), the server could
   * not replay what was missed (`recovered: false`): the epoch changed, or the
   * missed publications left the history window. Nothing was replayed;
   * refetch the state this channel feeds (for example over REST). Delivery
   * continues from `position`.
   */
  onRecoveryFailed?(position: StreamPosition & { channel: string }): void;
  /** Every successful `subscribed` reply (first subscribe and each resubscribe). */
  onSubscribed?(info: SubscribedInfo): void;
  /**
   * The subscription ended on the server's initiative and will not be
   * restored: a resubscribe was refused (for example `forbidden` after a role
   * change), or the server unsubscribed it for a reason other than
   * `insufficient_state`. The subscription is removed from the client.
   */
  onError?(error: RelaisError): void;
}

/**
 * `pending`: waiting for a connection (or for a retry); `subscribing`: the
 * `subscribe` command is on its way; `subscribed`; `unsubscribed`: over for good.
 */
export type SubscriptionState = "pending" | "subscribing" | "subscribed" | "unsubscribed";

export interface SubscribeOptions {
  /**
   * Resume from this position (saved, e.g., before a page reload): the first
   * subscribe sends it as `recover`, so the missed publications are replayed,
   * or `onRecoveryFailed` says they are gone.
   */
  since?: StreamPosition;
  /** Parameters of the namespace's snapshot (e.g. planning's `{from, to}` window). */
  params?: Record<string, unknown>;
}

export interface SubscriptionStateEvent {
  oldState: SubscriptionState;
  newState: SubscriptionState;
}

export interface SubscriptionEvents {
  /** Every change of `status`. */
  state: SubscriptionStateEvent;
  subscribing: { channel: string };
  subscribed: SubscribedInfo;
  /** The subscription ended: by `unsubscribe()` (no `error`) or refused by the server. */
  unsubscribed: { channel: string; error?: RelaisError };
  publication: PublicationContext & { data: unknown };
  ephemeral: EphemeralEvent;
  join: PresenceEvent;
  leave: PresenceEvent;
}

/** @internal the part of the client a subscription talks to. */
export interface SubscriptionHost {
  unsubscribeInternal(sub: Subscription): Promise<void>;
}

/**
 * A channel subscription, kept across reconnects.
 * Created by `RelaisClient.subscribe()`.
 */
export class Subscription extends TypedEmitter<SubscriptionEvents> {
  readonly channel: string;
  /**
   * Settles on the first `subscribed` reply, or rejects with a
   * {@link RelaisError} if the server refuses the subscription (`forbidden`,
   * `invalid_channel`, `channel_not_found`, ...). A refused subscription is
   * removed from the client. Waits for the connection if the client is not
   * connected.
   */
  readonly ready: Promise<SubscribedInfo>;

  /** @internal */ handlers: SubscriptionHandlers;
  /** @internal */ params: Record<string, unknown> | undefined;
  private _state: SubscriptionState = "pending";
  /** @internal last processed epoch (undefined before the first `subscribed`). */
  epoch: string | undefined;
  /** @internal last processed offset. */
  offset = 0;
  /** @internal */ readySettled = false;
  /** @internal */ resolveReady!: (info: SubscribedInfo) => void;
  /** @internal */ rejectReady!: (err: RelaisError) => void;
  /** @internal */ retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal */ retries = 0;

  private readonly host: SubscriptionHost;

  /** @internal */
  constructor(host: SubscriptionHost, channel: string, handlers: SubscriptionHandlers, options: SubscribeOptions = {}) {
    super();
    this.host = host;
    this.channel = channel;
    this.handlers = handlers;
    this.params = options.params;
    if (options.since) {
      this.epoch = options.since.epoch;
      this.offset = options.since.offset;
    }
    this.ready = new Promise<SubscribedInfo>((resolve, reject) => {
      this.resolveReady = (info) => {
        if (this.readySettled) return;
        this.readySettled = true;
        resolve(info);
      };
      this.rejectReady = (err) => {
        if (this.readySettled) return;
        this.readySettled = true;
        reject(err);
      };
    });
    // Nobody has to look at `ready`: do not report its rejection as unhandled.
    this.ready.catch(() => undefined);
  }

  /** The last position processed (undefined before the first `subscribed`). */
  get position(): StreamPosition | undefined {
    return this.epoch === undefined ? undefined : { epoch: this.epoch, offset: this.offset };
  }

  /** `pending` (waiting for a connection), `subscribing`, `subscribed` or `unsubscribed`. */
  get status(): SubscriptionState {
    return this._state;
  }

  /** @internal */
  get state(): SubscriptionState {
    return this._state;
  }

  /** @internal moves to `state` and tells the listeners (nothing if unchanged). */
  setState(state: SubscriptionState, error?: RelaisError): void {
    const oldState = this._state;
    if (oldState === state) return;
    this._state = state;
    this.emit("state", { oldState, newState: state });
    if (state === "subscribing") this.emit("subscribing", { channel: this.channel });
    if (state === "unsubscribed") this.emit("unsubscribed", error ? { channel: this.channel, error } : { channel: this.channel });
  }

  /** @internal */
  fire<K extends keyof SubscriptionEvents>(event: K, payload: SubscriptionEvents[K]): void {
    this.emit(event, payload);
  }

  /**
   * Stops the subscription: no handler is called after this returns. Resolves
   * when the server confirmed (at once when not connected).
   */
  unsubscribe(): Promise<void> {
    return this.host.unsubscribeInternal(this);
  }
}
