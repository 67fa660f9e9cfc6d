//! The WebSocket protocol, version 1: client commands, server replies and
//! close codes. `docs/protocol.md` is the prose form of this file.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bus::{Position, PresenceEntry};

pub const PROTOCOL_VERSION: u32 = 1;

/// Every command type of version 1, to tell an unknown command from a malformed one.
pub const COMMANDS: [&str; 9] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "refresh",
    "rpc",
    "ping",
];

/// A command from the client. `id` correlates the reply.
#[derive(Debug, Deserialize)]
pub struct Command {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: CommandBody,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandBody {
    Connect {
        token: String,
        #[serde(default)]
        protocol: Option<u32>,
    },
    Subscribe {
        channel: String,
        #[serde(default)]
        recover: Option<Position>,
        /// Passed to the namespace's snapshot source (e.g. a time window).
        #[serde(default)]
        params: Option<serde_json::Value>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        /// A `Value`, not a `RawValue`: raw values cannot pass through the
        /// `flatten` of [`Command`]. Client publishes are rare; backends use REST.
        data: serde_json::Value,
    },
    Presence {
        channel: String,
    },
    History {
        channel: String,
        #[serde(default)]
        since: Option<Position>,
        #[serde(default)]
        limit: Option<usize>,
    },
    Refresh {
        token: String,
    },
    /// A call to a domain module, routed by the method's prefix.
    Rpc {
        method: String,
        #[serde(default)]
        data: Option<serde_json::Value>,
    },
    Ping,
}

/// A reply or event from the server (publications are encoded separately,
/// once per publication, in [`crate::bus::Publication::encode`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    Connected {
        id: Option<u64>,
        protocol: u32,
        client: String,
        tenant: &'a str,
        user: &'a str,
        expires_at: u64,
        /// Seconds until `expires_at`, so clients need no synchronised clock.
        expires_in: u64,
        ping_interval: u64,
    },
    Subscribed {
        id: Option<u64>,
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The channel's state at `offset`, from the namespace's snapshot source.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<&'a RawValue>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    Published {
        id: Option<u64>,
        channel: &'a str,
        /// Absent for an ephemeral publication, which has no place in the stream.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    Presence {
        id: Option<u64>,
        channel: &'a str,
        users: usize,
        clients: u64,
        members: &'a [PresenceEntry],
    },
    Refreshed {
        id: Option<u64>,
        expires_at: u64,
        expires_in: u64,
    },
    RpcResult {
        id: Option<u64>,
        data: &'a RawValue,
    },
    Pong {
        id: Option<u64>,
    },
    Error {
        id: Option<u64>,
        code: &'a str,
        message: &'a str,
    },
}

impl Reply<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why the server closes a connection. Codes are in the private range
/// 4000-4999 except the standard ones; `docs/protocol.md` lists each with
/// whether to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1007: a text frame that is not valid UTF-8. Fix the client.
    InvalidPayload,
    /// 1009: a message exceeded the size limit. Do not resend it.
    MessageTooBig,
    /// 4000: protocol violation (first frame not `connect`, unsupported version).
    ProtocolError,
    /// 4001: no valid token (missing, forged, wrong algorithm, unknown tenant,
    /// or no `connect` within the auth timeout). Reconnect only with a new token.
    AuthenticationFailed,
    /// 4002: the access token expired. Refresh it, then reconnect.
    TokenExpired,
    /// 4003: the session was revoked (logout, disabled user, role change). Sign in again.
    SessionRevoked,
    /// 4004: the client read too slowly and its queue filled up. Reconnect and recover.
    SlowConsumer,
    /// 4005: too many commands. Reconnect after a back-off.
    RateLimited,
    /// 4006: nothing received within the idle timeout. Reconnect.
    IdleTimeout,
    /// 4007: the server is shutting down. Reconnect (to another node) and recover.
    ShuttingDown,
    /// 4008: the socket did not accept writes within the write timeout. Reconnect.
    WriteTimeout,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::InvalidPayload => 1007,
            CloseReason::MessageTooBig => 1009,
            CloseReason::ProtocolError => 4000,
            CloseReason::AuthenticationFailed => 4001,
            CloseReason::TokenExpired => 4002,
            CloseReason::SessionRevoked => 4003,
            CloseReason::SlowConsumer => 4004,
            CloseReason::RateLimited => 4005,
            CloseReason::IdleTimeout => 4006,
            CloseReason::ShuttingDown => 4007,
            CloseReason::WriteTimeout => 4008,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::InvalidPayload => "invalid UTF-8 in a text frame",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::AuthenticationFailed => "authentication failed",
            CloseReason::TokenExpired => "token expired",
            CloseReason::SessionRevoked => "session revoked",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::RateLimited => "rate limited",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::WriteTimeout => "write timeout",
        }
    }
}

/// Stable error codes of error frames.
pub mod codes {
    pub const MALFORMED: &str = "malformed_frame";
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    pub const UNSUPPORTED_FRAME: &str = "unsupported_frame";
    pub const ALREADY_CONNECTED: &str = "already_connected";
    pub const INVALID_CHANNEL: &str = "invalid_channel";
    pub const CHANNEL_NOT_FOUND: &str = "channel_not_found";
    pub const FORBIDDEN: &str = "forbidden";
    pub const ALREADY_SUBSCRIBED: &str = "already_subscribed";
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const INTERNAL: &str = "internal";
    pub const INVALID_TOKEN: &str = "invalid_token";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const SESSION_REVOKED: &str = "session_revoked";
    pub const WRONG_USER: &str = "wrong_user";
    pub const UNSUPPORTED_PROTOCOL: &str = "unsupported_protocol";
    pub const METHOD_NOT_FOUND: &str = "method_not_found";
    pub const TOO_DEEP: &str = "too_deep";
}
