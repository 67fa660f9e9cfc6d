export { RelaisClient } from "./client.js";
export type {
  ClientState,
  ConnectedEvent,
  DisconnectedEvent,
  HistoryOptions,
  HistoryResult,
  PresenceResult,
  PublishResult,
  ReconnectOptions,
  RelaisClientEvents,
  RelaisClientOptions,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Subscription } from "./subscription.js";
export type {
  PresenceEvent,
  PublicationContext,
  SubscribedInfo,
  SubscriptionHandlers,
  SubscriptionState,
} from "./subscription.js";
export { RelaisError } from "./errors.js";
export { TypedEmitter } from "./emitter.js";
export type { Listener } from "./emitter.js";
export { CloseCode } from "./protocol.js";
export type { StreamPosition, JsonValue, ServerFrame, Command } from "./protocol.js";
export { login, refresh, logout } from "./rest.js";
export type { LoginCredentials, TokenPair, RestUser } from "./rest.js";
