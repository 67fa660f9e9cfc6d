/** Codes of `error` frames (docs/protocol.md, section 6). */
export type ProtocolErrorCode =
  | "malformed_frame"
  | "unknown_command"
  | "unsupported_frame"
  | "unsupported_protocol"
  | "already_connected"
  | "invalid_channel"
  | "channel_not_found"
  | "forbidden"
  | "already_subscribed"
  | "not_subscribed"
  | "too_many_subscriptions"
  | "payload_too_large"
  | "too_deep"
  | "rate_limited"
  | "invalid_token"
  | "token_expired"
  | "session_revoked"
  | "wrong_user"
  | "method_not_found"
  | "unavailable"
  | "internal"
  /** A subscription refused by a namespace's snapshot (planning: unknown station). */
  | "not_found"
  | "invalid_window";

/** Codes of the REST API's `{"error":{"code"}}` bodies used by the helpers of this package. */
export type RestErrorCode =
  | "unauthenticated"
  | "invalid_api_key"
  | "not_found"
  | "method_not_allowed"
  | "bad_request"
  | "unsupported_media_type"
  | "invalid_body"
  | "invalid_query"
  | "invalid_filter"
  | "invalid_cursor"
  | "invalid_action"
  | "invalid_ids"
  | "invalid_preferences"
  | "invalid_timezone"
  | "invalid_quiet_hours"
  | "too_many_connections"
  // queues
  | "item_exists"
  | "invalid_transition"
  | "reason_required"
  | "invalid_item"
  // planning
  | "station_exists"
  | "slot_overlap"
  | "version_mismatch"
  | "precondition_required"
  | "invalid_station"
  | "invalid_slot"
  | "import_failed"
  // chat (docs/chat.md; the same codes come in `error` frames over the WebSocket)
  | "room_not_found"
  | "message_not_found"
  | "invalid_message"
  | "message_too_long"
  | "muted"
  | "room_archived"
  | "duplicate_message"
  | "message_rate_limited"
  | "typing_too_frequent"
  | "forbidden"
  // assistant (docs/assistant.md)
  | "assistant_not_configured"
  | "encryption_key_missing"
  | "invalid_request"
  | "provider_exists"
  | "not_running"
  | "too_many_streams"
  | "token_quota_exceeded";

/** Codes raised by the client itself. */
export type ClientErrorCode =
  /** The connection dropped before the reply arrived. */
  | "connection_lost"
  /** The client was closed (`close()`, or a close code after which it does not reconnect) before the command could be sent. */
  | "client_closed"
  /** Too many commands are waiting for the connection. */
  | "queue_full"
  /** The subscription was cancelled before it was confirmed. */
  | "unsubscribed"
  /** The server ended a subscription with a reason of a later protocol version. */
  | "insufficient_state"
  /** The WebSocket reported an error. */
  | "socket_error"
  /** A connection attempt ended before `connected`. */
  | "connect_failed"
  /** A command while the client receives over Server-Sent Events (read-only). */
  | "not_supported"
  /** A REST call failed without a JSON error body. */
  | "http_error"
  /** A connection closed for good with a code and no `error` frame (e.g. `closed_4000`). */
  | `closed_${number}`;

/**
 * Every code a {@link RelaisError} may carry. Features add codes of their own
 * (documented with each), so any other string is possible too; the union
 * still lets editors complete and check the known ones.
 */
export type RelaisErrorCode = ProtocolErrorCode | RestErrorCode | ClientErrorCode | (string & {});

/**
 * Error raised by the SDK: `code` is a server error code (from an `error`
 * frame or a REST error body) or one of the client's own
 * ({@link ClientErrorCode}).
 */
export class RelaisError extends Error {
  readonly code: RelaisErrorCode;
  /** HTTP status, for errors of the REST helpers. */
  readonly status: number | undefined;
  /** The whole REST error body (`current_version`, `conflicting_slot`, `errors`, …), when there is one. */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: RelaisErrorCode, message: string, status?: number, details?: Record<string, unknown>) {
    super(message);
    this.name = "RelaisError";
    this.code = code;
    this.status = status;
    this.details = details;
  }
}
