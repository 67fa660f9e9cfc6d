/**
 * Error raised by the SDK.
 *
 * `code` is either a server error code from the protocol (`forbidden`,
 * `rate_limited`, `invalid_token`, ...) or one of the client-side codes:
 *
 * - `connection_lost`: the connection dropped before the reply arrived;
 * - `client_closed`: the client was closed (`close()`, or a close code after
 *   which it does not reconnect) before the command could be sent;
 * - `queue_full`: too many commands are waiting for the connection;
 * - `unsubscribed`: the subscription was cancelled before it was confirmed;
 * - `socket_error`: the WebSocket reported an error;
 * - `connect_failed`: a connection attempt ended before `connected`;
 * - `http_error`: a REST call failed without a JSON error body.
 */
export class RelaisError extends Error {
  readonly code: string;
  /** HTTP status, for errors of the REST helpers. */
  readonly status: number | undefined;

  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = "RelaisError";
    this.code = code;
    this.status = status;
  }
}
