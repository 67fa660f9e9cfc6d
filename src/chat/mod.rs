//! Collaboration chat: rooms, persisted messages, typing indicators, read
//! markers and mentions.
//!
//! A room is a channel `chat:<room id>`. Four kinds exist: the tenant's
//! general room (every active user), one room per project (its members,
//! read from `project_members` at check time), direct rooms (one per pair
//! of users) and named group rooms with stored members and an admin.
//!
//! Messages come in over the WebSocket (a `publish` into the room's
//! channel) or over REST. The namespace's publish hook ([`hook::ChatHook`])
//! validates them, applies the size limit, the per-user rate limit and
//! mutes, **stores first** with the room's next sequence number, and
//! returns the stored message for publication. Typing indicators go through
//! the same hook and come out as ephemeral publications: never stored.
//! Edits, deletions (tombstones) and system messages are the module's own
//! publications after commit. Read markers are set by the `chat.mark_read`
//! RPC; the new unread counts go to the user's `user:<id>` channel, so
//! every device of the user updates. Mentions become `chat.mention`
//! notifications through the notification module.
//!
//! What needs the notification service or must publish later (mentions,
//! the debounced "disconnected" message, the retention purge) runs in the
//! module's worker ([`worker`]): the objects registered on the gateway
//! only hold the store and a queue to that worker.

pub mod hook;
pub mod routes;
pub mod store;
pub mod worker;

use std::{collections::HashMap, sync::Arc, time::Instant};

use dashmap::DashMap;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Principal, Role},
    channels::{Access, HistoryPolicy, KeyRule, Namespace},
    config::ChatConfig,
    error::ApiError,
    extension::{DomainError, ErrorKind},
    gateway::Gateway,
    module::{Context, Module, Worker},
    store::Store,
};

/// The channel namespace of rooms: `chat:<room id>`.
pub const NAMESPACE: &str = "chat";

/// Longest message, in characters.
pub const MAX_TEXT: usize = 4000;
/// Longest room name, in characters.
pub const MAX_NAME: usize = 100;
/// Longest `client_id`.
pub const MAX_CLIENT_ID: usize = 64;
/// Shortest time between two typing indicators of a user in a room.
pub const TYPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long clients show a typing indicator (`expires_in`, milliseconds).
pub const TYPING_TTL_MS: u64 = 5000;

/// The chat module: the `chat` namespace with its hook, access rule and
/// presence observer, the `chat.` RPC methods, the routes and the worker.
pub fn module(ctx: &Context<'_>) -> anyhow::Result<Arc<dyn Module>> {
    let (jobs, queue) = mpsc::channel(JOB_QUEUE);
    let core = Arc::new(Core {
        store: ctx.store.clone(),
        config: ctx.config.chat.clone(),
        buckets: DashMap::new(),
        typing: DashMap::new(),
        unread: parking_lot::Mutex::new(HashMap::new()),
        jobs,
    });
    Ok(Arc::new(ChatModule {
        core,
        queue: std::sync::Mutex::new(Some(queue)),
        notify: ctx.state.notify.clone(),
        gateway: Arc::downgrade(&ctx.gateway),
    }))
}

/// What the hook, the access rule, the RPC handler, the presence observer
/// and the routes share. Holds no gateway: it is registered on it.
pub struct Core {
    pub store: Store,
    pub config: ChatConfig,
    /// Message budgets per `tenant/user`: (tokens, last refill).
    buckets: DashMap<String, (f64, Instant)>,
    /// Last typing indicator per `tenant/room/user`.
    typing: DashMap<String, Instant>,
    /// Rooms with new messages since the worker last pushed unread counts,
    /// by tenant: at most every room once, however many messages.
    unread: parking_lot::Mutex<HashMap<String, HashMap<String, Room>>>,
    /// Work for the module's worker, bounded ([`JOB_QUEUE`]).
    jobs: mpsc::Sender<worker::Job>,
}

/// Jobs waiting for the worker, at most. Senders that can wait (the hook,
/// with a mention to notify) wait for room, so a busy worker slows the
/// senders rather than growing a queue; presence changes, which cannot
/// wait, are dropped when it is full, and logged.
pub const JOB_QUEUE: usize = 4096;

impl Core {
    /// Takes one message from the user's budget: `messages_per_sec`, with a
    /// burst of twice as many.
    fn take_token(&self, tenant: &str, user: &str) -> Result<(), ChatError> {
        let rate = f64::from(self.config.messages_per_sec);
        let burst = rate * 2.0;
        let now = Instant::now();
        let mut entry = self
            .buckets
            .entry(format!("{tenant}/{user}"))
            .or_insert((burst, now));
        let (tokens, at) = *entry;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
        if tokens < 1.0 {
            *entry = (tokens, now);
            return Err(ChatError::RateLimited(self.config.messages_per_sec));
        }
        *entry = (tokens - 1.0, now);
        Ok(())
    }

    /// Allows one typing indicator per [`TYPING_INTERVAL`] per user and room.
    fn take_typing(&self, tenant: &str, room: &str, user: &str) -> Result<(), ChatError> {
        let now = Instant::now();
        let mut entry = self
            .typing
            .entry(format!("{tenant}/{room}/{user}"))
            .or_insert(now - TYPING_INTERVAL * 2);
        if now.duration_since(*entry) < TYPING_INTERVAL {
            return Err(ChatError::TypingTooFrequent);
        }
        *entry = now;
        Ok(())
    }

    /// Forgets budgets and typing times old enough not to matter.
    fn forget_idle(&self) {
        let idle = std::time::Duration::from_secs(60);
        self.buckets.retain(|_, (_, at)| at.elapsed() < idle);
        self.typing.retain(|_, at| at.elapsed() < idle);
    }

    /// Hands a job to the worker, waiting for room in its queue. A closed
    /// queue means the server is stopping.
    async fn job(&self, job: worker::Job) {
        let _ = self.jobs.send(job).await;
    }

    /// Hands a job to the worker if its queue has room; for callers that
    /// must not wait.
    fn try_job(&self, job: worker::Job) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.jobs.try_send(job) {
            tracing::warn!("chat worker behind: a presence change was dropped");
        }
    }

    /// Notes that `room` has a new message, for the next push of unread
    /// counts to its members.
    fn mark_unread(&self, tenant: &str, room: &Room) {
        self.unread
            .lock()
            .entry(tenant.to_owned())
            .or_default()
            .insert(room.id.clone(), room.clone());
    }

    /// The rooms marked since the last call.
    fn take_unread(&self) -> HashMap<String, HashMap<String, Room>> {
        std::mem::take(&mut *self.unread.lock())
    }
}

struct ChatModule {
    core: Arc<Core>,
    queue: std::sync::Mutex<Option<mpsc::Receiver<worker::Job>>>,
    notify: Arc<crate::notify::Notify>,
    /// The worker publishes through it; weak, as the gateway holds this
    /// module's namespace.
    gateway: std::sync::Weak<Gateway>,
}

impl Module for ChatModule {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn extend(&self, extensions: &mut crate::gateway::Extensions) {
        let members = Access::Check(Arc::new(hook::Members(self.core.clone())));
        extensions.channels.register(Namespace {
            name: NAMESPACE,
            key: KeyRule::Required,
            subscribe: members.clone(),
            publish: members.clone(),
            presence: members,
            join_leave: true,
            history: HistoryPolicy {
                size: 200,
                ttl: std::time::Duration::from_secs(24 * 3600),
            },
            hook: Some(Arc::new(hook::ChatHook(self.core.clone()))),
            snapshot: None,
        });
        extensions.rpc(NAMESPACE, Arc::new(hook::ChatRpc(self.core.clone())));
        extensions.observe_presence(NAMESPACE, Arc::new(hook::Presence(self.core.clone())));
    }

    fn router(&self) -> axum::Router<crate::state::AppState> {
        routes::router().layer(axum::Extension(self.core.clone()))
    }

    fn workers(&self, stop: &CancellationToken) -> Vec<Worker> {
        let Some(queue) = self.queue.lock().unwrap().take() else {
            return Vec::new();
        };
        let worker = worker::ChatWorker {
            core: self.core.clone(),
            notify: self.notify.clone(),
            gateway: self.gateway.clone(),
        };
        vec![
            Box::pin(worker.clone().run(queue, stop.clone())),
            Box::pin(worker.purge(stop.clone())),
        ]
    }
}

/// What kind of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    General,
    Project,
    Direct,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::General => "general",
            Kind::Project => "project",
            Kind::Direct => "direct",
            Kind::Group => "group",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::General, Kind::Project, Kind::Direct, Kind::Group]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A room as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Room {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub project_id: Option<String>,
    pub created_by: Option<String>,
    /// The sequence number of the room's latest message.
    pub last_seq: i64,
    pub archived: bool,
    pub created_at: i64,
}

/// A stored message: what is published live and what history returns.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// `message` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub room: String,
    /// Position in the room: dense, increasing, the history's order.
    pub seq: i64,
    /// The sender; `null` for system messages and app backends.
    pub author: Option<String>,
    /// What a system message reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Whom a system message is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// User ids mentioned, and `room` for `@room`.
    pub mentions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// Tenant moderators (and admins) may delete any message and mute anyone.
pub fn is_moderator(who: &Principal) -> bool {
    who.has_role(Role::Moderator) || who.has_role(Role::Admin)
}

/// Mention handles in a text: `@` followed by letters, digits, `.`, `_`,
/// `-`, at the start or after a character that is not part of a handle.
pub fn mention_handles(text: &str) -> Vec<String> {
    let is_handle = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let mut handles = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !is_handle(chars[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && is_handle(chars[end]) {
                end += 1;
            }
            let handle: String = chars[start..end].iter().collect();
            let handle = handle.trim_end_matches('.').to_owned();
            if !handle.is_empty() && !handles.contains(&handle) {
                handles.push(handle);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    handles
}

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("room not found")]
    RoomNotFound,
    #[error("message not found")]
    MessageNotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("a message is 1-{MAX_TEXT} characters")]
    TooLong,
    #[error("you are muted in this room")]
    Muted,
    #[error("at most {0} messages per second; wait a moment")]
    RateLimited(u32),
    #[error("at most one typing indicator every 2 seconds per room")]
    TypingTooFrequent,
    #[error("this room is archived")]
    Archived,
    #[error("a message with this client_id exists (id {0})")]
    Duplicate(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl ChatError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::RoomNotFound => "room_not_found",
            ChatError::MessageNotFound => "message_not_found",
            ChatError::Invalid(_) => "invalid_message",
            ChatError::TooLong => "message_too_long",
            ChatError::Muted => "muted",
            ChatError::RateLimited(_) => "message_rate_limited",
            ChatError::TypingTooFrequent => "typing_too_frequent",
            ChatError::Archived => "room_archived",
            ChatError::Duplicate(_) => "duplicate_message",
            ChatError::Forbidden(_) => "forbidden",
            ChatError::Store(_) => "internal",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            ChatError::RoomNotFound | ChatError::MessageNotFound => ErrorKind::NotFound,
            ChatError::Invalid(_) | ChatError::TooLong => ErrorKind::Invalid,
            ChatError::Forbidden(_) => ErrorKind::Forbidden,
            ChatError::RateLimited(_) | ChatError::TypingTooFrequent => ErrorKind::RateLimited,
            // A state of the room that refuses the sender now: 409 keeps the
            // code (`muted`) over REST, where 403 carries only `forbidden`.
            ChatError::Muted | ChatError::Archived | ChatError::Duplicate(_) => ErrorKind::Conflict,
            ChatError::Store(_) => ErrorKind::Internal,
        }
    }
}

impl From<ChatError> for DomainError {
    fn from(e: ChatError) -> Self {
        if let ChatError::Store(cause) = &e {
            return DomainError::internal(cause);
        }
        DomainError::new(e.kind(), e.code(), e.to_string())
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Store(e) => e.into(),
            e => DomainError::from(e).into(),
        }
    }
}

/// `data` as a raw JSON value.
pub(crate) fn raw(value: &impl Serialize) -> Result<Box<RawValue>, DomainError> {
    serde_json::value::to_raw_value(value).map_err(DomainError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_handles_are_found_once_and_emails_are_not_mentions() {
        assert_eq!(
            mention_handles("@awa and @bob.smith, see @awa. Mail me at x@y.com @room"),
            vec!["awa", "bob.smith", "room"]
        );
        assert!(mention_handles("no mention @ here").is_empty());
    }

    #[test]
    fn each_chat_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                ChatError::RoomNotFound,
                404,
                "room_not_found",
                "room not found",
            ),
            (
                ChatError::MessageNotFound,
                404,
                "message_not_found",
                "message not found",
            ),
            (
                ChatError::Invalid("text: required".into()),
                422,
                "invalid_message",
                "text: required",
            ),
            (
                ChatError::TooLong,
                422,
                "message_too_long",
                "a message is 1-4000 characters",
            ),
            (ChatError::Muted, 409, "muted", "you are muted in this room"),
            (
                ChatError::RateLimited(5),
                429,
                "message_rate_limited",
                "at most 5 messages per second; wait a moment",
            ),
            (
                ChatError::TypingTooFrequent,
                429,
                "typing_too_frequent",
                "at most one typing indicator every 2 seconds per room",
            ),
            (
                ChatError::Archived,
                409,
                "room_archived",
                "this room is archived",
            ),
            (
                ChatError::Duplicate("m1".into()),
                409,
                "duplicate_message",
                "a message with this client_id exists (id m1)",
            ),
            (
                ChatError::Forbidden("room admins only"),
                403,
                "forbidden",
                "room admins only",
            ),
            (
                ChatError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }

    #[test]
    fn chat_errors_keep_their_codes_on_the_socket() {
        let e = DomainError::from(ChatError::Muted);
        assert_eq!((e.kind, e.code), (ErrorKind::Conflict, "muted"));
        let e = DomainError::from(ChatError::RateLimited(5));
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::RateLimited, "message_rate_limited")
        );
    }
}
