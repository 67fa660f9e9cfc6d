//! The extension points through which domain modules shape what happens on
//! their channels, without the gateway knowing any domain:
//!
//! - [`PublishHook`]: runs on every publication into a namespace by a
//!   client or an app backend: validate, transform, persist first
//!   (store-then-publish), reject, or deliver as *ephemeral* (not kept in
//!   history, no offset: typing indicators).
//! - [`SnapshotSource`]: the current state of a channel, sent with the
//!   `subscribed` reply when a client subscribes without (or fails to)
//!   recover, so it needs no separate REST fetch.
//! - [`RpcHandler`]: client `rpc` commands under a method prefix
//!   (`chat.mark_read`, `assistant.cancel`).
//! - [`PresenceObserver`]: told when a user's first connection enters a
//!   namespace's presence and when their last one leaves it (system
//!   messages such as "Awa is online").
//!
//! Each returns a [`DomainError`] with a stable code, mapped once to a REST
//! error ([`crate::error::ApiError`]) and to a WebSocket error frame.

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use crate::{
    auth::{Caller, Principal},
    bus::Position,
    channels::ChannelKey,
    error::ApiError,
};

/// What kind of refusal a [`DomainError`] is; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input breaks a rule of the domain (422).
    Invalid,
    /// The caller may not do this (403).
    Forbidden,
    /// The thing named does not exist (404).
    NotFound,
    /// The state does not allow it now (409).
    Conflict,
    /// Too many requests of this kind (429 over REST).
    RateLimited,
    /// A dependency is down; retry later (503).
    Unavailable,
    /// A bug or an unexpected failure (500; the message is not shown).
    Internal,
}

/// An error of a domain module: a stable `code` clients can branch on, and a
/// message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl DomainError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        DomainError {
            kind,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, "rate_limited", message)
    }
    /// Logs the cause and hides it from the caller.
    pub fn internal(cause: impl std::fmt::Debug) -> Self {
        tracing::error!(error = ?cause, "domain operation failed");
        Self::new(ErrorKind::Internal, "internal", "internal error")
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e.kind {
            ErrorKind::Invalid => ApiError::Invalid(e.code, e.message),
            ErrorKind::Forbidden => ApiError::Forbidden(e.message),
            ErrorKind::NotFound => ApiError::NoSuch(e.code, e.message),
            ErrorKind::Conflict => ApiError::Conflict(e.code, e.message),
            ErrorKind::RateLimited => ApiError::TooManyRequests(e.code, e.message),
            ErrorKind::Unavailable => ApiError::Unavailable(e.code, e.message),
            ErrorKind::Internal => ApiError::Internal(anyhow::anyhow!(e.message)),
        }
    }
}

/// Who is publishing: a signed-in user over the WebSocket or REST, or an
/// app backend with an API key.
#[derive(Clone, Copy)]
pub enum Publisher<'a> {
    User(&'a Principal),
    Backend,
}

impl<'a> From<&'a Caller> for Publisher<'a> {
    fn from(caller: &'a Caller) -> Self {
        match caller {
            Caller::User(p) => Publisher::User(p),
            Caller::Key(_) => Publisher::Backend,
        }
    }
}

/// What a hook decided for a publication.
pub enum PublishOutcome {
    /// Publish this data (the original, or a transformed one such as the
    /// stored record with its id) with an offset, kept in history.
    Publish(Box<RawValue>),
    /// Deliver this data to current subscribers only: no offset, no history,
    /// nothing to recover.
    Ephemeral(Box<RawValue>),
}

/// Runs before anything reaches the bus for a publication into a namespace.
/// A hook that persists (store-then-publish) commits before returning
/// [`PublishOutcome::Publish`]: if the bus then fails, the record exists and
/// the caller is told the live delivery failed.
pub trait PublishHook: Send + Sync {
    fn on_publish<'a>(
        &'a self,
        publisher: Publisher<'a>,
        channel: &'a ChannelKey,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<PublishOutcome, DomainError>>;
}

/// A channel's current state for a new subscriber.
///
/// Called after the subscriber has joined the fan-out and the channel's
/// position `at` was read, so every publication after `at` reaches it live
/// and none at or before `at` does: nothing falls between the snapshot and
/// the stream. A change committed before the snapshot was read but published
/// after `at` is in both; domain events therefore carry what makes applying
/// them twice harmless (an absolute value, or a version).
pub trait SnapshotSource: Send + Sync {
    fn snapshot<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelKey,
        at: &'a Position,
        params: Option<&'a RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>>;
}

/// One `rpc` command.
pub struct RpcCall<'a> {
    /// To publish what the call changes (e.g. new unread counts). Handlers
    /// get it here rather than holding it: the gateway holds the handlers,
    /// and a handler holding the gateway would keep both alive forever.
    pub gateway: &'a crate::gateway::Gateway,
    pub who: &'a Principal,
    /// The full method name, e.g. `chat.mark_read`.
    pub method: &'a str,
    pub data: Option<&'a RawValue>,
}

/// Handles the `rpc` methods under one prefix (the part before the first `.`).
pub trait RpcHandler: Send + Sync {
    /// Returns the result's JSON, or an error; unknown methods under the
    /// prefix answer [`DomainError`] `method_not_found`.
    fn call<'a>(&'a self, call: RpcCall<'a>) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>>;
}

/// The error an [`RpcHandler`] returns for a method it does not know.
pub fn method_not_found(method: &str) -> DomainError {
    DomainError::not_found("method_not_found", format!("no rpc method `{method}`"))
}

/// Told when a user becomes present on a channel (their first connection
/// subscribes, as the bus's presence counts them across nodes) and when
/// they stop being present (their last connection unsubscribes or closes).
///
/// Called inline by the connection's session: implementations must not
/// block; hand the event to a task of the module (a channel, a spawn) and
/// return. Only namespaces that keep presence (a presence rule other than
/// `Nobody`, or join/leave events) are observed.
pub trait PresenceObserver: Send + Sync {
    fn presence_changed(&self, who: &Principal, channel: &ChannelKey, present: bool);
}
