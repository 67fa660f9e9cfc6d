//! The bus: how publications get their place in a channel's stream, reach
//! every node, and are kept for recovery.
//!
//! The gateway talks only to the [`Broker`] trait. The in-process
//! [`memory::MemoryBroker`] serves a single node; a Redis broker implements
//! the same trait for cluster mode. A broker assigns offsets, keeps bounded
//! history, tracks presence, carries control messages to every node, and
//! hands every publication to the node's [`Delivery`] for fan-out. It also
//! keeps each node's [`nodes::NodeReport`] (what the operator view lists).
//!
//! The bus sits below the gateway: it knows channels and publications, never
//! connections. What it delivers to ([`Delivery`]) and what it does with
//! control messages ([`control::ControlRouter`]) are injected when the
//! application is built.

mod coalesce;
pub mod control;
pub mod memory;
pub mod nodes;
pub mod redis;

pub use control::{Control, ControlMessage, ControlRouter};

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    channels::{ChannelKey, HistoryPolicy},
    ids::{ApiKeyId, SessionId, TenantId, UserId},
};

/// A place in a channel's stream. Offsets increase by one per publication
/// within an epoch; a new epoch means the previous stream (and its history)
/// is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// One publication, encoded once as the exact text frame every subscriber
/// receives, so fan-out shares bytes instead of re-serialising.
#[derive(Debug)]
pub struct Publication {
    pub channel: ChannelKey,
    pub epoch: Arc<str>,
    /// 0 for ephemeral events (join/leave), which have no place in the stream.
    pub offset: u64,
    pub frame: Utf8Bytes,
    /// When this node built it (published it, or received it from the
    /// cluster): the start of its delivery latency.
    pub received: std::time::Instant,
}

impl Publication {
    /// Encodes `{"type":"pub","channel":…,"epoch":…,"offset":…,"data":…}`.
    ///
    /// The frame is built at its exact length: a history holds it for as
    /// long as the channel keeps it (10 publications of 200 bytes on each
    /// of a million channels is gigabytes), and a buffer without spare
    /// capacity becomes the frame's shared bytes without a second
    /// allocation for their reference count.
    pub fn encode(
        channel: ChannelKey,
        epoch: Arc<str>,
        offset: u64,
        data: &RawValue,
    ) -> Publication {
        const PARTS: [&str; 5] = [
            r#"{"type":"pub","channel":"#,
            r#","epoch":"#,
            r#","offset":"#,
            r#","data":"#,
            "}",
        ];
        let name = json_str(channel.name().as_str());
        let epoch_json = json_str(&epoch);
        let offset_text = offset.to_string();
        let len = PARTS.iter().map(|p| p.len()).sum::<usize>()
            + name.len()
            + epoch_json.len()
            + offset_text.len()
            + data.get().len();
        let mut frame = String::with_capacity(len);
        frame.push_str(PARTS[0]);
        frame.push_str(&name);
        frame.push_str(PARTS[1]);
        frame.push_str(&epoch_json);
        frame.push_str(PARTS[2]);
        frame.push_str(&offset_text);
        frame.push_str(PARTS[3]);
        frame.push_str(data.get());
        frame.push_str(PARTS[4]);
        debug_assert_eq!(frame.len(), frame.capacity());
        Publication {
            channel,
            epoch,
            offset,
            frame: frame.into(),
            received: std::time::Instant::now(),
        }
    }

    /// The frame of an ephemeral publication:
    /// `{"type":"ephemeral","channel":…,"data":…}`. A type of its own, so a
    /// client never mistakes it for a place in the stream.
    pub fn ephemeral_frame(channel: &ChannelKey, data: &RawValue) -> String {
        let name = channel.name().as_str();
        let mut frame = String::with_capacity(48 + name.len() + data.get().len());
        frame.push_str(r#"{"type":"ephemeral","channel":"#);
        push_json_str(&mut frame, name);
        frame.push_str(r#","data":"#);
        frame.push_str(data.get());
        frame.push('}');
        frame
    }

    /// An event delivered to current subscribers only (never stored).
    pub fn ephemeral(channel: ChannelKey, frame: String) -> Publication {
        Publication {
            channel,
            epoch: Arc::from(""),
            offset: 0,
            frame: frame.into(),
            received: std::time::Instant::now(),
        }
    }

    /// A marker that this node may have missed publications of `channel`:
    /// its offset can never follow a real one, so every local subscriber
    /// detects a gap and is told to resubscribe with recovery. Never written
    /// to a socket.
    pub fn resync(channel: ChannelKey) -> Publication {
        Publication {
            channel,
            epoch: Arc::from(""),
            offset: u64::MAX,
            frame: "".into(),
            received: std::time::Instant::now(),
        }
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&json_str(s));
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// The outcome of asking for what followed a position.
#[derive(Debug)]
pub struct Recovery {
    /// The channel's current position (last offset assigned).
    pub top: Position,
    /// Publications after the requested position, in order.
    pub publications: Vec<Arc<Publication>>,
    /// `true` when `publications` is exactly everything after the requested
    /// position; `false` when the epoch changed or history was trimmed.
    pub recovered: bool,
}

/// A page of history after a position.
#[derive(Debug)]
pub struct HistoryPage {
    /// The channel's current position.
    pub top: Position,
    /// The first publications after the requested position, in order.
    pub publications: Vec<Arc<Publication>>,
    /// `false` when what followed the position is gone (another epoch, or
    /// trimmed from history): `publications` is then empty.
    pub complete: bool,
    /// More publications follow the last one of this page.
    pub more: bool,
}

/// Who is present in a channel.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceEntry {
    pub user: UserId,
    /// Connections of this user subscribed to the channel.
    pub clients: u32,
}

/// Where the bus hands publications on this node: the gateway's hub
/// implements it. A trait, so the bus depends on nothing above it.
pub trait Delivery: Send + Sync + 'static {
    /// Hands `publication` to every local subscriber of its channel, without waiting.
    fn deliver(&self, publication: &Arc<Publication>);
    /// Whether this node has a subscriber of `channel`.
    fn has_subscribers(&self, channel: &ChannelKey) -> bool;
    /// The key this node's subscribers hold for `channel` (shared
    /// allocations make the per-delivery lookup a pointer comparison).
    fn canonical(&self, channel: &ChannelKey) -> Option<ChannelKey>;
}

/// Something to stop trusting, on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// One session, or every session of the user: their sockets close.
    Sessions {
        tenant: TenantId,
        user: UserId,
        session: Option<SessionId>,
    },
    /// An API key: nodes forget it from their key caches.
    ApiKey { tenant: TenantId, key: ApiKeyId },
}

impl Control for Revocation {
    const TOPIC: &'static str = "revoke";
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("too many channels on this node")]
    TooManyChannels,
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// What the gateway needs from a bus. Methods return boxed futures so the
/// trait stays object-safe and brokers can be swapped at start-up.
pub trait Broker: Send + Sync + 'static {
    /// Assigns the next offset, stores the publication in history and delivers
    /// it to subscribers on every node.
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<Position, BusError>>;

    /// [`Broker::publish`] at most once per `id` (derived from a request's
    /// `Idempotency-Key`): if a publication was already made under `id`,
    /// its position is returned with `true` and nothing is published. Only a
    /// broker whose publish can time out after taking effect (Redis) needs
    /// to remember ids; in-process publishing either happens or fails.
    fn publish_once<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        data: &'a RawValue,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(Position, bool), BusError>> {
        Box::pin(async move { Ok((self.publish(channel, history, data).await?, false)) })
    }

    /// Delivers an event to current subscribers without storing it.
    fn publish_ephemeral(
        &self,
        channel: &ChannelKey,
        frame: String,
    ) -> BoxFuture<'_, Result<(), BusError>>;

    /// The channel's position and, with `since`, what followed it (at most `limit`
    /// publications; `recovered` is false when more than `limit` followed).
    fn recover<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>>;

    /// The first `limit` publications after `since`, for paging forward
    /// through history (`history` with `since`).
    fn page_after<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<HistoryPage, BusError>>;

    /// The most recent publications (up to `limit`), oldest first.
    fn latest<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>>;

    /// Records that one more connection of `user` is in `channel`; returns
    /// `true` when it is the user's first.
    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>>;

    /// The reverse of [`Broker::presence_join`]; returns `true` when it was the user's last.
    fn presence_leave<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>>;

    fn presence<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, BusError>>;

    /// Hands a control message to the [`ControlRouter`] of every node, this
    /// one included (at once, even when the cluster link is down).
    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), BusError>>;

    /// Applies a revocation on every node.
    fn revoke(&self, revocation: Revocation) -> BoxFuture<'_, Result<(), BusError>> {
        self.control(ControlMessage::of(&revocation))
    }

    /// This node gained its first (`true`) or lost its last (`false`) local
    /// subscriber of `channel`; a clustered broker (un)subscribes upstream.
    fn local_interest(&self, channel: &ChannelKey, interested: bool);

    /// Resolves once this node receives `channel`'s publications. A
    /// subscriber must wait for it before reading the channel's position,
    /// or a publication landing in between could reach neither the history
    /// it read nor its live stream.
    fn ready_for<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<(), BusError>>;

    /// `true` while the broker can serve publications (for `/readyz`).
    fn healthy(&self) -> bool;

    /// This node's id, as its reports name it.
    fn node_id(&self) -> &str;

    /// Stores this node's report, visible to every node for `ttl`.
    fn report_node(
        &self,
        report: nodes::NodeReport,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<(), BusError>>;

    /// The reports of every live node (reported within its TTL), each
    /// holding only `tenant`'s share.
    fn nodes<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Vec<nodes::NodeReport>, BusError>>;
}
