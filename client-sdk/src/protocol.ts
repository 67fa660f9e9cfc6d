/**
 * Frame types of the Relais WebSocket protocol, version 1
 * (docs/protocol.md, section 2).
 */

/** A position in a channel's stream. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

// ----- server frames -------------------------------------------------------

export interface ConnectedFrame {
  type: "connected";
  id: number | null;
  protocol: number;
  client: string;
  tenant: string;
  user: string;
  expires_at: number;
  expires_in?: number;
  ping_interval: number;
}

export interface SubscribedFrame extends StreamPosition {
  type: "subscribed";
  id: number | null;
  channel: string;
  recovered?: boolean;
  snapshot?: unknown;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  id?: number | null;
  channel: string;
  reason?: string;
}

export interface PublishedFrame {
  type: "published";
  id: number | null;
  channel: string;
  epoch: string;
  offset: number;
  ephemeral?: boolean;
}

export interface PresenceMember {
  user: string;
  clients: number;
}

export interface PresenceFrame {
  type: "presence";
  id: number | null;
  channel: string;
  users: number;
  clients: number;
  members: PresenceMember[];
}

export interface PubFrame extends StreamPosition {
  type: "pub";
  channel: string;
  data: unknown;
}

export interface HistoryFrame extends StreamPosition {
  type: "history";
  id: number | null;
  channel: string;
  complete: boolean;
  publications: PubFrame[];
}

export interface RefreshedFrame {
  type: "refreshed";
  id: number | null;
  expires_at: number;
  expires_in?: number;
}

export interface RpcResultFrame {
  type: "rpc_result";
  id: number | null;
  data: unknown;
}

export interface EphemeralFrame {
  type: "ephemeral";
  channel: string;
  data: unknown;
}

export interface PongFrame {
  type: "pong";
  id: number | null;
}

export interface ErrorFrame {
  type: "error";
  id: number | null;
  code: string;
  message: string;
}

export interface JoinLeaveFrame {
  type: "join" | "leave";
  channel: string;
  user: string;
}

export type ServerFrame =
  | ConnectedFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | PublishedFrame
  | PresenceFrame
  | PubFrame
  | HistoryFrame
  | RefreshedFrame
  | PongFrame
  | ErrorFrame
  | JoinLeaveFrame
  | RpcResultFrame
  | EphemeralFrame;

// ----- client commands -----------------------------------------------------

export type Command =
  | { type: "connect"; token: string; protocol: 1 }
  | { type: "subscribe"; channel: string; recover?: StreamPosition; params?: Record<string, unknown> }
  | { type: "unsubscribe"; channel: string }
  | { type: "publish"; channel: string; data: unknown }
  | { type: "presence"; channel: string }
  | { type: "history"; channel: string; since?: StreamPosition; limit?: number }
  | { type: "refresh"; token: string }
  | { type: "rpc"; method: string; data?: unknown }
  | { type: "ping" };

/** Close codes of docs/protocol.md, section 7. */
export const CloseCode = {
  Normal: 1000,
  Abnormal: 1006,
  MessageTooBig: 1009,
  ProtocolError: 4000,
  AuthenticationFailed: 4001,
  TokenExpired: 4002,
  SessionRevoked: 4003,
  SlowConsumer: 4004,
  RateLimited: 4005,
  IdleTimeout: 4006,
  ServerShuttingDown: 4007,
  WriteTimeout: 4008,
} as const;
