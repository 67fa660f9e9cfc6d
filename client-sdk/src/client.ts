import { TypedEmitter } from "./emitter.js";
import { RelaisError } from "./errors.js";
import { CloseCode } from "./protocol.js";
import type {
  Command,
  ConnectedFrame,
  EphemeralFrame,
  HistoryFrame,
  JoinLeaveFrame,
  PongFrame,
  PresenceFrame,
  PubFrame,
  PublishedFrame,
  RefreshedFrame,
  RpcResultFrame,
  StreamPosition,
  SubscribedFrame,
  UnsubscribedFrame,
} from "./protocol.js";
import { eventId, readEventStream, sseUrlFor } from "./sse.js";
import type { SseEvent } from "./sse.js";
import { Subscription } from "./subscription.js";
import type { SubscribeOptions, SubscribedInfo, SubscriptionHandlers, SubscriptionHost } from "./subscription.js";

/**
 * The part of the WebSocket API the client uses: the browser's `WebSocket`
 * and the `ws` package's both fit.
 */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => unknown) | null;
  onmessage: ((ev: any) => unknown) | null;
  onclose: ((ev: any) => unknown) | null;
  onerror: ((ev: any) => unknown) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** First delay, in ms. Default 500. */
  initialDelayMs?: number;
  /** Largest delay before jitter, in ms. Default 30,000. */
  maxDelayMs?: number;
  /** Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]. Default 0.5. */
  jitter?: number;
}

export interface RelaisClientOptions {
  /** WebSocket endpoint, e.g. `ws://localhost:8080/ws`. */
  url: string;
  /**
   * Returns a valid access token. Called only when one is needed: before the
   * first connection (unless `token` is given), before the current token
   * expires (the client then sends `refresh`), and after the server refused
   * or expired it. A reconnect while the token is still valid reuses it.
   */
  getToken: () => Promise<string>;
  /** A first access token, used until it expires instead of calling `getToken`. */
  token?: string;
  /** WebSocket constructor. Default `globalThis.WebSocket` (browsers, Node ≥ 22). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect back-off. */
  reconnect?: ReconnectOptions;
  /**
   * Send an application-level `ping` this often (ms) and drop the connection
   * (then reconnect) when its `pong` does not come back within
   * `pingTimeoutMs`. `0` turns it off. Default: in browsers, which cannot
   * see the server's WebSocket pings, every `ping_interval` the server
   * announces; elsewhere off (WebSocket libraries answer the server's pings,
   * and a dead peer closes the socket).
   */
  pingIntervalMs?: number;
  /** How long to wait for a `pong` before dropping the connection (ms). Default: `pingIntervalMs`, or 10,000 in browsers. */
  pingTimeoutMs?: number;
  /** Refresh the token this long (ms) before `expires_at`. Default 60,000. */
  refreshMarginMs?: number;
  /** Give up on an attempt that is not `connected` after this long (ms). Default 15,000. */
  connectTimeoutMs?: number;
  /** Largest number of commands waiting for the connection. Default 1000. */
  maxQueuedCommands?: number;
  /**
   * Server-Sent Events as a fallback when WebSocket is blocked (a proxy that
   * refuses upgrades): `true` uses the hub's `/api/v1/sse` next to `url`, a
   * string is the SSE endpoint. Over SSE the client only receives: the
   * subscriptions work (with recovery), commands (`publish`, `rpc`, …)
   * reject with `not_supported`.
   */
  sseFallback?: boolean | string;
  /** WebSocket attempts in a row that fail before opening, after which SSE is used. Default 2. */
  sseFallbackAfter?: number;
  /** `"sse"` to use SSE from the start (with `sseFallback`'s endpoint). Default `"websocket"`. */
  transport?: Transport;
  /** `fetch` for SSE. Default: the global one. */
  fetch?: typeof fetch;
}

export type Transport = "websocket" | "sse";

/**
 * `disconnected` (not started, closed, or stopped for good), `connecting` (an
 * attempt is under way), `connected`, or `reconnecting` (waiting for the
 * back-off before the next attempt).
 */
export type ClientState = "disconnected" | "connecting" | "connected" | "reconnecting";

export interface StateChangeEvent {
  oldState: ClientState;
  newState: ClientState;
}

export interface ConnectingEvent {
  /** Attempts since the last `connected` (0 for the first). */
  attempt: number;
}

export interface ConnectedEvent {
  /** Connection id given by the server. */
  client: string;
  tenant: string;
  user: string;
  /** Token expiry, Unix seconds. */
  expiresAt: number;
  /** Seconds between the server's WebSocket pings. */
  pingInterval: number;
  /**
   * `sse` after a fallback: `client`, `tenant` and `user` are then empty and
   * `expiresAt`, `pingInterval` 0 (the stream does not tell them).
   */
  transport: Transport;
}

export interface DisconnectedEvent {
  /** WebSocket close code (1006 when the connection dropped without one or was dropped by the client). */
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** The `error` frame the server sent before closing, if any (e.g. `session_revoked`). */
  error?: RelaisError;
}

export interface RelaisClientEvents {
  /** Every change of `state`. */
  state: StateChangeEvent;
  /** A connection attempt starts. */
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: Error;
}

export interface HistoryOptions {
  /** Only publications after this position. */
  since?: StreamPosition;
  /** 1-1000, server default 100. */
  limit?: number;
}

export interface HistoryResult extends StreamPosition {
  channel: string;
  /** `false` when `since` could not be honoured (epoch changed or outside the window). */
  complete: boolean;
  publications: Array<{ channel: string; epoch: string; offset: number; data: unknown }>;
}

export interface PublishResult {
  channel: string;
  /** Absent when the publication was `ephemeral` (delivered without a place in the stream). */
  epoch?: string;
  offset?: number;
  /** `true` when the namespace delivered it as an `ephemeral` frame (e.g. typing). */
  ephemeral?: boolean;
}

export interface PresenceResult {
  channel: string;
  users: number;
  clients: number;
  members: Array<{ user: string; clients: number }>;
}

/** Close codes after which the client does not reconnect (section 7). */
const NO_RECONNECT = new Set<number>([
  CloseCode.ProtocolError,
  CloseCode.AuthenticationFailed,
  CloseCode.SessionRevoked,
]);

/** Close codes after which the first reconnect is immediate (with jitter). */
const QUICK_RECONNECT = new Set<number>([
  CloseCode.Abnormal,
  CloseCode.TokenExpired,
  CloseCode.ServerShuttingDown,
]);

/** Errors after which a (re)subscribe is retried rather than given up. */
const TRANSIENT_ERRORS = new Set(["unavailable", "internal", "rate_limited"]);

interface PendingCommand {
  cmd: Command;
  onReply(frame: any): void;
  onError(err: RelaisError): void;
}

interface ConnectWaiter {
  resolve(): void;
  reject(err: Error): void;
}

const MAX_TIMER_MS = 2_147_483_647;

/** An SSE stream silent for this long (the hub sends keep-alives every `ping_interval`, 25 s by default) is dead. */
const SSE_IDLE_TIMEOUT_MS = 40_000;

/**
 * A client of the Relais WebSocket protocol, version 1.
 *
 * ```ts
 * const client = new RelaisClient({ url, getToken });
 * client.on("disconnected", (e) => console.log(e.code, e.reconnect));
 * await client.connect();
 * const sub = client.subscribe("broadcast", { onPublication: (data) => ... });
 * ```
 */
export class RelaisClient extends TypedEmitter<RelaisClientEvents> implements SubscriptionHost {
  private readonly url: string;
  private readonly getToken: () => Promise<string>;
  private readonly WS: WebSocketConstructor;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly jitter: number;
  /** Explicit interval, `0` for off, undefined for the default (browsers: the server's). */
  private readonly pingOption: number | undefined;
  private readonly pingTimeoutOption: number | undefined;
  private readonly refreshMarginMs: number;
  private readonly connectTimeoutMs: number;
  private readonly maxQueued: number;

  private _state: ClientState = "disconnected";
  /** True after `close()` or a close code that forbids reconnecting. */
  private stopped = false;
  /** Bumped on each new socket and on close(): stale callbacks compare against it. */
  private generation = 0;
  private ws: WebSocketLike | null = null;
  private nextId = 1;
  private attempts = 0;
  private expiresAt: number | undefined;
  /** The last access token and until when (local ms) it may be reused; undefined: ask `getToken`. */
  private token: string | undefined;
  private tokenValidUntil = 0;
  private _info: ConnectedEvent | undefined;
  private lastServerError: RelaisError | undefined;
  /** Whether an `error` event was already emitted for the current attempt. */
  private attemptErrorReported = false;

  private readonly pending = new Map<number, PendingCommand>();
  private queue: PendingCommand[] = [];
  private readonly subs = new Map<string, Subscription>();
  private connectWaiters: ConnectWaiter[] = [];

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;

  private readonly sseUrl: string | undefined;
  private readonly sseFallbackAfter: number;
  private readonly preferSse: boolean;
  private readonly fetchImpl: typeof fetch;
  private mode: Transport = "websocket";
  /** WebSocket attempts in a row that never opened. */
  private wsFailures = 0;
  /** The live SSE request; aborting it ends the stream. */
  private sseAbort: AbortController | undefined;
  private sseRestartQueued = false;
  private sseIdleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: RelaisClientOptions) {
    super();
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "RelaisClient: no WebSocket implementation; pass options.WebSocket (e.g. the `ws` package)",
      );
    }
    if (typeof options.getToken !== "function") {
      throw new TypeError("RelaisClient: options.getToken is required");
    }
    this.url = options.url;
    this.getToken = options.getToken;
    this.WS = WS;
    this.initialDelayMs = options.reconnect?.initialDelayMs ?? 500;
    this.maxDelayMs = options.reconnect?.maxDelayMs ?? 30_000;
    this.jitter = options.reconnect?.jitter ?? 0.5;
    this.pingOption = options.pingIntervalMs;
    this.pingTimeoutOption = options.pingTimeoutMs;
    if (options.token) {
      this.token = options.token;
      this.tokenValidUntil = Infinity; // until the server says otherwise
    }
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    this.maxQueued = options.maxQueuedCommands ?? 1000;
    const sse = options.sseFallback;
    this.sseUrl = typeof sse === "string" ? sse : sse || options.transport === "sse" ? sseUrlFor(options.url) : undefined;
    this.sseFallbackAfter = options.sseFallbackAfter ?? 2;
    this.preferSse = options.transport === "sse";
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /** `disconnected`, `connecting`, `connected`, or `reconnecting` (waiting for the back-off). */
  get state(): ClientState {
    return this._state;
  }

  /** `websocket`, or `sse` after a fallback. */
  get transport(): Transport {
    return this.mode;
  }

  /** What the server said in its last `connected` reply (undefined until then). */
  get info(): ConnectedEvent | undefined {
    return this._info;
  }

  /** The subscriptions the client keeps, by channel. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.subs;
  }

  // ------------------------------------------------------------------ public

  /**
   * Starts the client. Resolves on the next `connected`; keeps retrying with
   * back-off on transient failures; rejects if the client stops for good
   * (close codes 4000/4001/4003, or `close()`).
   */
  connect(): Promise<void> {
    if (this._state === "connected") return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    this.stopped = false;
    if (this._state === "disconnected") {
      this.attempts = 0;
      this.wsFailures = 0; // try WebSocket again
      this.mode = "websocket";
      void this.open();
    }
    return p;
  }

  /**
   * Closes the connection (code 1000) and stops reconnecting. Commands waiting
   * for a reply or for the connection are rejected with `client_closed`.
   * Subscriptions are kept: a later `connect()` resubscribes them with `recover`.
   */
  close(): void {
    const wasActive = this._state !== "disconnected";
    this.stopped = true;
    this.generation++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.clearConnectionTimers();
    this.stopSse();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(CloseCode.Normal, "client closed");
      } catch {
        /* already closed */
      }
    }
    const err = new RelaisError("client_closed", "the client was closed");
    this.failPending(err);
    this.failQueue(err);
    this.resetSubscriptions();
    this.failConnectWaiters(err);
    this.setState("disconnected");
    if (wasActive) {
      this.emit("disconnected", { code: CloseCode.Normal, reason: "client closed", reconnect: false });
    }
  }

  /**
   * Subscribes to `channel`. The subscription is kept across reconnects and
   * recovered with `recover` each time. Throws if the client already holds a
   * subscription to this channel.
   */
  subscribe(channel: string, handlers: SubscriptionHandlers = {}, options: SubscribeOptions = {}): Subscription {
    if (this.subs.has(channel)) {
      throw new RelaisError("already_subscribed", `already subscribed to \`${channel}\``);
    }
    const sub = new Subscription(this, channel, handlers, options);
    this.subs.set(channel, sub);
    // Sent after the caller's synchronous code, so that listeners added right
    // after `subscribe()` see every state change, `subscribing` included.
    queueMicrotask(() => {
      if (this.subs.get(channel) === sub && sub.state === "pending" && this._state === "connected") {
        this.sendSubscribe(sub);
      }
    });
    return sub;
  }

  /** Publishes `data` (any JSON value) to `channel`. */
  async publish(channel: string, data: unknown): Promise<PublishResult> {
    const f = await this.request<PublishedFrame>({ type: "publish", channel, data });
    if (f.ephemeral) return { channel: f.channel, ephemeral: true };
    return { channel: f.channel, epoch: f.epoch, offset: f.offset };
  }

  /**
   * Calls a method of a server feature (`chat.mark_read`, …) and resolves
   * with its result. Rejects with `method_not_found`, `forbidden`, or a code
   * of the feature. Waits for the connection like every command.
   */
  async rpc<T = unknown>(method: string, data?: unknown): Promise<T> {
    const cmd: Command = data === undefined ? { type: "rpc", method } : { type: "rpc", method, data };
    const f = await this.request<RpcResultFrame>(cmd);
    return f.data as T;
  }

  /** Who is subscribed to `channel`. */
  async presence(channel: string): Promise<PresenceResult> {
    const f = await this.request<PresenceFrame>({ type: "presence", channel });
    return { channel: f.channel, users: f.users, clients: f.clients, members: f.members };
  }

  /** Stored publications of `channel`: the latest `limit`, or those after `since`. */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const cmd: Command = { type: "history", channel };
    if (options.since) cmd.since = { epoch: options.since.epoch, offset: options.since.offset };
    if (options.limit !== undefined) cmd.limit = options.limit;
    const f = await this.request<HistoryFrame>(cmd);
    return {
      channel: f.channel,
      epoch: f.epoch,
      offset: f.offset,
      complete: f.complete,
      publications: (f.publications ?? []).map((p: PubFrame) => ({
        channel: p.channel,
        epoch: p.epoch,
        offset: p.offset,
        data: p.data,
      })),
    };
  }

  /** Sends an application-level `ping`; resolves with the round-trip time in ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.request<PongFrame>({ type: "ping" });
    return Date.now() - start;
  }

  // -------------------------------------------------------- subscriptions

  /** @internal */
  unsubscribeInternal(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.channel) !== sub) return Promise.resolve();
    this.subs.delete(sub.channel);
    clearTimeout(sub.retryTimer);
    const onServer = sub.state === "subscribing" || sub.state === "subscribed";
    sub.setState("unsubscribed");
    sub.rejectReady(new RelaisError("unsubscribed", `unsubscribed from \`${sub.channel}\``));
    if (!onServer || this._state !== "connected") return Promise.resolve();
    if (this.mode === "sse") {
      this.scheduleSseRestart(); // a stream without this channel
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      // Whatever happens (reply, not_subscribed, connection lost), the server
      // no longer delivers this channel to us.
      this.sendNow({ cmd: { type: "unsubscribe", channel: sub.channel }, onReply: () => resolve(), onError: () => resolve() });
    });
  }

  private sendSubscribe(sub: Subscription): void {
    clearTimeout(sub.retryTimer);
    sub.retryTimer = undefined;
    if (this.mode === "sse") {
      // The stream's channels are fixed: open a new one with this channel too.
      sub.setState("subscribing");
      this.scheduleSseRestart();
      return;
    }
    const cmd: Command = { type: "subscribe", channel: sub.channel };
    const recover = sub.epoch !== undefined;
    if (recover) cmd.recover = { epoch: sub.epoch as string, offset: sub.offset };
    // Sent on every subscribe: a failed recovery answers with a fresh snapshot of the same window.
    if (sub.params) cmd.params = sub.params;
    sub.setState("subscribing");
    this.sendNow({
      cmd,
      onReply: (f: SubscribedFrame) => this.onSubscribed(sub, f, recover),
      onError: (err) => this.onSubscribeError(sub, err),
    });
  }

  private onSubscribed(sub: Subscription, f: SubscribedFrame, withRecover: boolean): void {
    if (this.subs.get(sub.channel) !== sub) return; // unsubscribed meanwhile
    sub.setState("subscribed");
    sub.retries = 0;
    const recovered = withRecover ? f.recovered === true : undefined;
    if (!withRecover || !recovered) {
      // Either a fresh subscription or a failed recovery: continue from the
      // position of the reply. With `recovered: true` the missed publications
      // follow as `pub` frames and move the position themselves.
      sub.epoch = f.epoch;
      sub.offset = f.offset;
    }
    const info: SubscribedInfo = { channel: sub.channel, epoch: f.epoch, offset: f.offset, recovered };
    if (f.snapshot !== undefined) info.snapshot = f.snapshot;
    sub.resolveReady(info);
    this.callHandler(() => sub.handlers.onSubscribed?.(info));
    sub.fire("subscribed", info);
    if (withRecover && !recovered) {
      this.callHandler(() =>
        sub.handlers.onRecoveryFailed?.({ channel: sub.channel, epoch: f.epoch, offset: f.offset }),
      );
    }
  }

  private onSubscribeError(sub: Subscription, err: RelaisError): void {
    if (this.subs.get(sub.channel) !== sub) return;
    sub.setState("pending");
    if (err.code === "connection_lost" || err.code === "client_closed") {
      return; // resubscribed on the next connection
    }
    if (TRANSIENT_ERRORS.has(err.code)) {
      const delay = this.backoff(sub.retries++);
      sub.retryTimer = setTimeout(() => {
        sub.retryTimer = undefined;
        if (this.subs.get(sub.channel) === sub && sub.state === "pending" && this._state === "connected") {
          this.sendSubscribe(sub);
        }
      }, delay);
      return;
    }
    // Refused for good (forbidden, invalid_channel, ...): forget it.
    this.subs.delete(sub.channel);
    sub.setState("unsubscribed", err);
    if (!sub.readySettled) {
      sub.rejectReady(err);
    } else if (sub.handlers.onError) {
      this.callHandler(() => sub.handlers.onError?.(err));
    } else {
      this.emit("error", err);
    }
  }

  private onPub(f: PubFrame): void {
    const sub = this.subs.get(f.channel);
    if (!sub || sub.state !== "subscribed") return;
    if (sub.epoch === f.epoch && f.offset <= sub.offset) return; // already processed
    sub.epoch = f.epoch;
    sub.offset = f.offset;
    const ctx = { channel: f.channel, epoch: f.epoch, offset: f.offset };
    this.callHandler(() => sub.handlers.onPublication?.(f.data, ctx));
    sub.fire("publication", { ...ctx, data: f.data });
  }

  private onServerUnsubscribed(f: UnsubscribedFrame): void {
    const sub = this.subs.get(f.channel);
    if (!sub) return;
    if (f.reason === "insufficient_state") {
      // The server saw a gap: resubscribe from our last position.
      sub.setState("pending");
      if (this._state === "connected") this.sendSubscribe(sub);
      return;
    }
    this.subs.delete(f.channel);
    const err = new RelaisError(
      f.reason ?? "unsubscribed",
      `the server ended the subscription to \`${f.channel}\`${f.reason ? ` (${f.reason})` : ""}`,
    );
    sub.setState("unsubscribed", err);
    sub.rejectReady(err);
    if (sub.handlers.onError) this.callHandler(() => sub.handlers.onError?.(err));
    else this.emit("error", err);
  }

  private resetSubscriptions(): void {
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.retryTimer = undefined;
      sub.setState("pending");
    }
  }

  // ------------------------------------------------------------- commands

  private request<T>(cmd: Command): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: PendingCommand = { cmd, onReply: resolve, onError: reject };
      if (this.mode === "sse" && this._state === "connected") {
        reject(notOverSse(cmd.type));
      } else if (this._state === "connected") {
        this.sendNow(entry);
      } else if (this.stopped) {
        reject(new RelaisError("client_closed", "the client is closed; call connect() first"));
      } else if (this.queue.length >= this.maxQueued) {
        reject(new RelaisError("queue_full", `more than ${this.maxQueued} commands wait for the connection`));
      } else {
        this.queue.push(entry);
      }
    });
  }

  /** Sends a command on the current socket; its reply is matched by `id`. */
  private sendNow(entry: PendingCommand): void {
    const ws = this.ws;
    if (!ws) {
      entry.onError(new RelaisError("connection_lost", "not connected"));
      return;
    }
    const id = this.nextId++;
    this.pending.set(id, entry);
    try {
      ws.send(JSON.stringify({ id, ...entry.cmd }));
    } catch (e) {
      this.pending.delete(id);
      entry.onError(new RelaisError("connection_lost", `send failed: ${(e as Error)?.message ?? e}`));
    }
  }

  private failPending(err: RelaisError): void {
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const e of entries) e.onError(err);
  }

  private failQueue(err: RelaisError): void {
    const entries = this.queue;
    this.queue = [];
    for (const e of entries) e.onError(err);
  }

  private failConnectWaiters(err: Error): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  // ----------------------------------------------------------- connection

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.setState("connecting");
    this.lastServerError = undefined;
    this.attemptErrorReported = false;
    let token: string;
    try {
      token = await this.currentToken();
    } catch (e) {
      if (gen !== this.generation || this.stopped) return;
      this.emit("error", asError(e, "getToken failed"));
      this.scheduleReconnect(CloseCode.Abnormal, false);
      return;
    }
    if (gen !== this.generation || this.stopped) return;

    if (this.sseUrl && (this.preferSse || this.mode === "sse" || this.wsFailures >= this.sseFallbackAfter)) {
      this.mode = "sse";
      this.startSseStream();
      return;
    }

    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.url);
    } catch (e) {
      // An invalid URL: retrying cannot help.
      const err = asError(e, "cannot open the WebSocket");
      this.emit("error", err);
      this.stopped = true;
      this.setState("disconnected");
      this.failQueue(new RelaisError("client_closed", err.message));
      this.failConnectWaiters(err);
      return;
    }
    this.ws = ws;
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && this._state === "connecting") this.dropSocket("connect timeout");
    }, this.connectTimeoutMs);

    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.wsFailures = 0;
      this.sendNow({
        cmd: { type: "connect", token, protocol: 1 },
        onReply: (f: ConnectedFrame) => this.onConnected(f),
        onError: (err) => {
          if (err.code === "connection_lost" || err.code === "client_closed") return;
          if (err.code === "invalid_token" || err.code === "token_expired") this.forgetToken();
          // invalid_token, token_expired, session_revoked, unsupported_protocol…
          // The server closes the socket next; the close code decides what follows.
          this.lastServerError = err;
          this.attemptErrorReported = true;
          this.emit("error", err);
        },
      });
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.ws !== ws) return;
      if (typeof ev.data !== "string") return; // the server only sends text frames
      this.onMessage(ev.data);
    };
    ws.onerror = (ev: { message?: string; error?: unknown }) => {
      if (this.ws !== ws) return;
      const msg = ev?.message ?? (ev?.error as Error | undefined)?.message ?? "WebSocket error";
      this.attemptErrorReported = true;
      this.emit("error", new RelaisError("socket_error", msg));
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (this.ws !== ws) return;
      if (!opened) this.wsFailures++;
      this.onSocketClosed(ev?.code ?? CloseCode.Abnormal, ev?.reason ?? "");
    };
  }

  private onMessage(text: string): void {
    let f: any;
    try {
      f = JSON.parse(text);
    } catch {
      this.emit("error", new RelaisError("malformed_frame", "the server sent a frame that is not JSON"));
      return;
    }
    if (!f || typeof f !== "object" || typeof f.type !== "string") return;

    // Replies carry the id of their command.
    if (typeof f.id === "number") {
      const entry = this.pending.get(f.id);
      if (entry) {
        this.pending.delete(f.id);
        if (f.type === "error") entry.onError(new RelaisError(String(f.code), String(f.message ?? f.code)));
        else entry.onReply(f);
        return;
      }
    }

    switch (f.type) {
      case "pub":
        this.onPub(f as PubFrame);
        break;
      case "join":
      case "leave": {
        const jf = f as JoinLeaveFrame;
        const sub = this.subs.get(jf.channel);
        if (!sub || sub.state !== "subscribed") break;
        const event = { channel: jf.channel, user: jf.user };
        this.callHandler(() =>
          jf.type === "join" ? sub.handlers.onJoin?.(event) : sub.handlers.onLeave?.(event),
        );
        sub.fire(jf.type, event);
        break;
      }
      case "ephemeral": {
        const ef = f as EphemeralFrame;
        const sub = this.subs.get(ef.channel);
        if (!sub || sub.state !== "subscribed") break;
        const event = { channel: ef.channel, data: ef.data };
        this.callHandler(() => sub.handlers.onEphemeral?.(event));
        sub.fire("ephemeral", event);
        break;
      }
      case "unsubscribed":
        this.onServerUnsubscribed(f as UnsubscribedFrame);
        break;
      case "error": {
        const err = new RelaisError(String(f.code), String(f.message ?? f.code));
        this.lastServerError = err;
        this.attemptErrorReported = true;
        this.emit("error", err);
        break;
      }
      default:
        // A reply to nothing we are waiting for, or a frame type of a later
        // protocol version: ignore.
        break;
    }
  }

  // ------------------------------------------------------------------ SSE

  /**
   * (Re)opens the SSE stream with every subscription's channel, resuming
   * each from its position through `Last-Event-ID`. With no subscription
   * there is nothing to read: the client counts as connected.
   */
  private startSseStream(): void {
    this.stopSse();
    const subs = [...this.subs.values()];
    if (subs.length === 0) {
      if (this._state === "connecting") this.onSseConnected();
      return;
    }
    const ctrl = new AbortController();
    this.sseAbort = ctrl;
    const resumed = new Set<string>();
    const positions: Array<{ channel: string; epoch: string; offset: number }> = [];
    for (const sub of subs) {
      sub.setState("subscribing");
      if (sub.epoch !== undefined) {
        resumed.add(sub.channel);
        positions.push({ channel: sub.channel, epoch: sub.epoch, offset: sub.offset });
      }
    }
    const url = new URL(this.sseUrl as string);
    url.searchParams.set("channels", subs.map((s) => s.channel).join(","));
    const headers: Record<string, string> = { accept: "text/event-stream", authorization: `Bearer ${this.token ?? ""}` };
    if (positions.length) headers["last-event-id"] = eventId(positions);
    const live = () => this.sseAbort === ctrl;
    this.fetchImpl(url.toString(), { headers, signal: ctrl.signal })
      .then(async (res) => {
        if (!live()) return;
        if (!res.ok || !res.body) {
          await this.onSseRefused(res, subs);
          return;
        }
        if (this._state === "connecting") this.onSseConnected();
        this.armSseIdle(ctrl);
        await readEventStream(res.body, {
          onActivity: () => live() && this.armSseIdle(ctrl),
          onEvent: (e) => live() && this.onSseEvent(e, resumed),
        });
        if (live()) this.onSocketClosed(CloseCode.Abnormal, "the event stream ended");
      })
      .catch((e: unknown) => {
        if (!live()) return;
        this.attemptErrorReported = true;
        this.emit("error", new RelaisError("socket_error", asError(e, "event stream failed").message));
        this.onSocketClosed(CloseCode.Abnormal, "event stream failed");
      });
  }

  private onSseConnected(): void {
    this.attempts = 0;
    this._info = { client: "", tenant: "", user: "", expiresAt: 0, pingInterval: 0, transport: "sse" };
    this.setState("connected");
    this.failQueue(notOverSse("command"));
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.resolve();
    this.emit("connected", this._info);
  }

  private onSseEvent(e: SseEvent, resumed: Set<string>): void {
    if (e.event === "subscribed") {
      let f: SubscribedFrame;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      const sub = this.subs.get(f.channel);
      if (sub) this.onSubscribed(sub, f, resumed.has(f.channel));
    } else if (e.event === "pub" || e.event === "event") {
      this.onMessage(e.data); // the same JSON as the WebSocket frame
    } else if (e.event === "close") {
      let code: number = CloseCode.Abnormal;
      let reason = "";
      try {
        ({ code, reason } = JSON.parse(e.data));
      } catch {
        /* keep 1006 */
      }
      this.onSocketClosed(code, reason);
    }
  }

  /** The stream was refused with an HTTP error, before it started. */
  private async onSseRefused(res: Response, subs: Subscription[]): Promise<void> {
    let code = "http_error";
    let message = `HTTP ${res.status} from the event stream`;
    try {
      const body = (await res.json()) as { error?: { code?: string; message?: string } };
      if (body?.error?.code) ({ code, message = code } = body.error as { code: string; message?: string });
    } catch {
      /* not JSON */
    }
    const err = new RelaisError(code, message, res.status);
    if (res.status === 401) {
      this.lastServerError = err;
      this.attemptErrorReported = true;
      this.emit("error", err);
      this.onSocketClosed(code === "token_expired" ? CloseCode.TokenExpired : CloseCode.AuthenticationFailed, message);
      return;
    }
    // A channel refused (forbidden, invalid, unknown) refuses the whole
    // stream: give up the subscriptions not confirmed yet, go on with the rest.
    const fresh = res.status >= 400 && res.status < 500 && res.status !== 429 ? subs.filter((s) => !s.readySettled) : [];
    if (fresh.length > 0) {
      for (const sub of fresh) {
        if (this.subs.get(sub.channel) !== sub) continue;
        this.subs.delete(sub.channel);
        sub.setState("unsubscribed", err);
        sub.rejectReady(err);
      }
      this.startSseStream();
      return;
    }
    this.attemptErrorReported = true;
    this.emit("error", err);
    this.onSocketClosed(CloseCode.Abnormal, message);
  }

  private scheduleSseRestart(): void {
    if (this.sseRestartQueued) return;
    this.sseRestartQueued = true;
    queueMicrotask(() => {
      this.sseRestartQueued = false;
      if (this.mode === "sse" && this._state === "connected") this.startSseStream();
    });
  }

  private armSseIdle(ctrl: AbortController): void {
    clearTimeout(this.sseIdleTimer);
    this.sseIdleTimer = setTimeout(() => {
      if (this.sseAbort === ctrl) this.onSocketClosed(CloseCode.Abnormal, "event stream idle");
    }, SSE_IDLE_TIMEOUT_MS);
  }

  private stopSse(): void {
    clearTimeout(this.sseIdleTimer);
    this.sseIdleTimer = undefined;
    const ctrl = this.sseAbort;
    this.sseAbort = undefined;
    ctrl?.abort();
  }

  private onConnected(f: ConnectedFrame): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.attempts = 0;
    this.expiresAt = f.expires_at;
    this.noteTokenLifetime(f.expires_at, f.expires_in);
    this._info = {
      client: f.client,
      tenant: f.tenant,
      user: f.user,
      expiresAt: f.expires_at,
      pingInterval: f.ping_interval,
      transport: "websocket",
    };
    this.setState("connected");
    this.scheduleRefresh();
    this.startPing();
    for (const sub of this.subs.values()) {
      if (sub.state === "pending") this.sendSubscribe(sub);
    }
    const queued = this.queue;
    this.queue = [];
    for (const entry of queued) this.sendNow(entry);
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.resolve();
    this.emit("connected", this._info);
  }

  private onSocketClosed(code: number, reason: string): void {
    const wasConnected = this._state === "connected";
    this.ws = null;
    this.stopSse();
    this.clearConnectionTimers();
    this.failPending(new RelaisError("connection_lost", `connection closed (${code})`));
    this.resetSubscriptions();
    const error = this.lastServerError;
    this.lastServerError = undefined;
    if (code === CloseCode.AuthenticationFailed || code === CloseCode.TokenExpired) this.forgetToken();

    if (NO_RECONNECT.has(code)) {
      this.stopped = true;
      this.setState("disconnected");
      const err = error ?? new RelaisError(`closed_${code}`, `connection closed with ${code}${reason ? `: ${reason}` : ""}`);
      this.failQueue(new RelaisError("client_closed", err.message));
      this.failConnectWaiters(err);
      this.emit("disconnected", { code, reason, reconnect: false, ...(error ? { error } : {}) });
      return;
    }
    this.scheduleReconnect(code, wasConnected);
    if (wasConnected) {
      this.emit("disconnected", { code, reason, reconnect: true, ...(error ? { error } : {}) });
    } else if (!this.attemptErrorReported) {
      // A failed attempt is not a disconnection: report it as an error.
      this.emit(
        "error",
        new RelaisError("connect_failed", `connection attempt failed (${code}${reason ? `: ${reason}` : ""})`),
      );
    }
  }

  /** Drops the current socket without waiting for a closing handshake. */
  private dropSocket(reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    detach(ws);
    try {
      const terminate = (ws as { terminate?: () => void }).terminate;
      if (typeof terminate === "function") terminate.call(ws);
      else ws.close(CloseCode.Normal, reason);
    } catch {
      /* ignore */
    }
    this.onSocketClosed(CloseCode.Abnormal, reason);
  }

  private scheduleReconnect(code: number, wasConnected: boolean): void {
    if (this.stopped) return;
    let delay: number;
    if (wasConnected && QUICK_RECONNECT.has(code)) {
      // "At once (with jitter)": a dropped connection, a shutting-down node,
      // or an expired token (getToken() is called again before connecting).
      delay = Math.random() * this.initialDelayMs;
    } else {
      delay = this.backoff(this.attempts);
    }
    this.attempts++;
    this.setState("reconnecting");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.stopped && this._state === "reconnecting") void this.open();
    }, delay);
  }

  /** 0.5 s doubling to 30 s, times a random factor in [0.5, 1.5] (defaults). */
  private backoff(attempt: number): number {
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(attempt, 30));
    const factor = 1 - this.jitter + Math.random() * 2 * this.jitter;
    return Math.max(0, base * factor);
  }

  private clearConnectionTimers(): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.connectTimer = this.refreshTimer = this.pingTimer = this.pongTimer = undefined;
  }

  // ---------------------------------------------------------- token refresh

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.expiresAt === undefined) return;
    const remaining = this.expiresAt * 1000 - Date.now();
    // Refresh `refreshMarginMs` before expiry; with a short-lived token, at
    // half its remaining life; never in a tight loop.
    const delay = Math.min(MAX_TIMER_MS, Math.max(remaining - this.refreshMarginMs, remaining / 2, 1000));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.refreshInBackground();
    }, delay);
  }

  private refreshInBackground(): void {
    const gen = this.generation;
    this.refreshToken().catch((err: unknown) => {
      if (gen !== this.generation || this._state !== "connected") return; // a new connection, a new token
      this.emit("error", asError(err, "token refresh failed"));
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = undefined;
        this.refreshInBackground();
      }, 5000);
    });
  }

  /**
   * Refreshes the token of the live connection now: calls `getToken()` and
   * sends `refresh`. Resolves with the new `expires_at` (Unix seconds). The
   * client does this by itself about `refreshMarginMs` before expiry.
   * Rejects with `wrong_user`, `invalid_token`, ... if the server refuses the
   * token, or `connection_lost` if the client is not connected.
   */
  async refreshToken(): Promise<number> {
    if (this._state !== "connected") throw new RelaisError("connection_lost", "not connected");
    if (this.mode === "sse") throw notOverSse("refresh");
    const gen = this.generation;
    const token = await this.getToken();
    this.token = token;
    this.tokenValidUntil = 0; // until `refreshed` tells its lifetime
    if (gen !== this.generation || this._state !== "connected") {
      throw new RelaisError("connection_lost", "the connection changed during the refresh");
    }
    const f = await new Promise<RefreshedFrame>((resolve, reject) =>
      this.sendNow({ cmd: { type: "refresh", token }, onReply: resolve, onError: reject }),
    );
    this.noteTokenLifetime(f.expires_at, f.expires_in);
    if (gen === this.generation) {
      this.expiresAt = f.expires_at;
      if (this._info) this._info = { ...this._info, expiresAt: f.expires_at };
      this.scheduleRefresh();
    }
    return f.expires_at;
  }

  /** The token to connect with: the last one while it stays valid, else a new one. */
  private async currentToken(): Promise<string> {
    if (this.token !== undefined && Date.now() < this.tokenValidUntil) return this.token;
    const token = await this.getToken();
    this.token = token;
    this.tokenValidUntil = 0;
    return token;
  }

  /**
   * Records until when the current token may be reused for a reconnect:
   * counted from `expires_in` (the protocol's advice, immune to clock skew),
   * minus the refresh margin so a reconnect never starts with a token about
   * to expire.
   */
  private noteTokenLifetime(expiresAt: number, expiresIn: number | undefined): void {
    const lifeMs = expiresIn !== undefined ? expiresIn * 1000 : expiresAt * 1000 - Date.now();
    this.tokenValidUntil = Date.now() + Math.max(0, lifeMs - Math.min(this.refreshMarginMs, lifeMs / 5));
  }

  private forgetToken(): void {
    this.token = undefined;
    this.tokenValidUntil = 0;
  }

  // ------------------------------------------------------------------ ping

  private startPing(): void {
    const serverMs = (this._info?.pingInterval ?? 25) * 1000;
    const intervalMs = this.pingOption ?? (isBrowser() ? serverMs : 0);
    if (!(intervalMs > 0)) return;
    const timeoutMs = this.pingTimeoutOption ?? (this.pingOption ?? 10_000);
    const ws = this.ws;
    let waiting = false;
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws || this._state !== "connected" || waiting) return;
      waiting = true;
      this.pongTimer = setTimeout(() => {
        if (this.ws === ws) this.dropSocket("ping timeout");
      }, timeoutMs);
      this.sendNow({
        cmd: { type: "ping" },
        onReply: () => {
          waiting = false;
          clearTimeout(this.pongTimer);
          this.pongTimer = undefined;
        },
        onError: (err) => {
          waiting = false;
          clearTimeout(this.pongTimer);
          this.pongTimer = undefined;
          // A refused ping (e.g. rate_limited) still proves the link is alive.
          void err;
        },
      });
    }, intervalMs);
  }

  // ----------------------------------------------------------------- misc

  private setState(state: ClientState): void {
    const oldState = this._state;
    if (oldState === state) return;
    this._state = state;
    this.emit("state", { oldState, newState: state });
    if (state === "connecting") this.emit("connecting", { attempt: this.attempts });
  }

  /** Runs an application handler; its exception is reported as an `error` event. */
  private callHandler(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (this.listenerCount("error") > 0) this.emit("error", asError(e, "a subscription handler threw"));
      else
        queueMicrotask(() => {
          throw e;
        });
    }
  }

  protected override onListenerError(err: unknown, event: keyof RelaisClientEvents): void {
    if (event === "error" || this.listenerCount("error") === 0) {
      queueMicrotask(() => {
        throw err;
      });
    } else {
      this.emit("error", asError(err, "an event listener threw"));
    }
  }
}

/** A page (window or worker): no access to WebSocket pings, so liveness is checked with `ping`. */
function isBrowser(): boolean {
  const g = globalThis as { document?: unknown; importScripts?: unknown; process?: { versions?: { node?: string } } };
  return (g.document !== undefined || typeof g.importScripts === "function") && !g.process?.versions?.node;
}

function notOverSse(what: string): RelaisError {
  return new RelaisError("not_supported", `\`${what}\` is not available over Server-Sent Events`);
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  // Keep a no-op error handler: some implementations throw on unhandled errors.
  ws.onerror = () => undefined;
}

function asError(e: unknown, fallback: string): Error {
  if (e instanceof Error) return e;
  return new Error(typeof e === "string" ? e : fallback);
}
