export { RelaisClient } from "./client.js";
export type {
  ClientState,
  ConnectedEvent,
  ConnectingEvent,
  DisconnectedEvent,
  HistoryOptions,
  HistoryResult,
  PresenceResult,
  PublishResult,
  ReconnectOptions,
  RelaisClientEvents,
  RelaisClientOptions,
  StateChangeEvent,
  Transport,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Subscription } from "./subscription.js";
export type {
  EphemeralEvent,
  PresenceEvent,
  PublicationContext,
  SubscribeOptions,
  SubscribedInfo,
  SubscriptionEvents,
  SubscriptionHandlers,
  SubscriptionState,
  SubscriptionStateEvent,
} from "./subscription.js";
export { RelaisError } from "./errors.js";
export type { ClientErrorCode, ProtocolErrorCode, RelaisErrorCode, RestErrorCode } from "./errors.js";
export { TypedEmitter } from "./emitter.js";
export type { Listener } from "./emitter.js";
export { CloseCode } from "./protocol.js";
export type { StreamPosition, JsonValue, ServerFrame, Command } from "./protocol.js";
export { RestClient, login, refresh, logout } from "./rest.js";
export type { LoginCredentials, RequestOptions, RestClientOptions, TokenPair, RestUser } from "./rest.js";
export { Inbox, applyAction } from "./inbox.js";
export type {
  CategoryCounts,
  InboxAction,
  InboxActionResult,
  InboxCounts,
  InboxEvents,
  InboxItem,
  InboxOptions,
  InboxPage,
  InboxQuery,
  NotificationEvent,
} from "./inbox.js";
export { Preferences } from "./preferences.js";
export type { CategoryPreferences, NotificationPreferences } from "./preferences.js";
export { QueueCounts, Queues } from "./queues.js";
export type {
  BulkTransitionResult,
  NewQueueItem,
  QueueCountsEvents,
  QueueItem,
  QueueItemEvent,
  QueueItemStatus,
  QueueStatusCounts,
  TransitionOptions,
} from "./queues.js";
export { PlanningApi, PlanningView } from "./planning.js";
export type { NewSlot, PlanningEvent, PlanningSnapshot, PlanningViewEvents, PlanningViewOptions, Slot, SlotStatus, Station } from "./planning.js";
export { ChatApi, ChatRoom, ChatUnread } from "./chat.js";
export type {
  ChatEvent,
  ChatHistoryPage,
  ChatHistoryQuery,
  ChatMember,
  ChatMembersPage,
  ChatMembersQuery,
  ChatMessage,
  ChatMessageDeleted,
  ChatMessageEdited,
  ChatReadTarget,
  ChatRoomEvents,
  ChatRoomInfo,
  ChatRoomKind,
  ChatRoomOptions,
  ChatRoomSummary,
  ChatSendOptions,
  ChatTypingEvent,
  ChatUnreadCountsEvent,
  ChatUnreadEvent,
  ChatUnreadEvents,
} from "./chat.js";
export { AssistantApi, AssistantConversation } from "./assistant.js";
export type {
  Assistant,
  AssistantConversationEvents,
  AssistantConversationInfo,
  AssistantConversationOptions,
  AssistantDeltaEvent,
  AssistantDoneEvent,
  AssistantEvent,
  AssistantHistoryPage,
  AssistantMessage,
  AssistantMessageStatus,
  AssistantProvider,
  AssistantSendResult,
  AssistantUsage,
  NewAssistant,
  NewAssistantProvider,
} from "./assistant.js";
