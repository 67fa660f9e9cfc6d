//! The transport-free core of a client connection: subscriptions with
//! recovery and snapshots, the ordering checks on delivery, and every
//! command. The WebSocket ([`super::ws`]) and SSE ([`super::sse`]) tasks are
//! thin transports around it: they read commands, wake on the outbox, and
//! hand frames to a [`Frames`] sink. Tests drive a session with a vector as
//! the sink, no socket needed.

use std::{collections::VecDeque, fmt::Write, future::Future, sync::Arc};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;

mod commands;

use super::{
    ChannelOpError, Gateway,
    hub::{ConnId, Transport},
    outbox::Outbox,
    protocol::{CloseReason, Command, CommandBody, Reply, codes},
    ratelimit::{TokenBucket, Verdict},
};
use crate::{
    auth::Principal,
    bus::{Position, Publication},
    channels::{Access, ChannelKey, Namespace, Operation},
    extension::DomainError,
};

/// What a frame is, for transports that label frames (SSE event names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A reply to a command (or an error frame).
    Reply,
    /// The `subscribed` reply, which starts a channel's stream.
    Subscribed,
    /// The server ended a subscription (`unsubscribed`).
    Unsubscribed,
    /// A publication with an offset.
    Publication,
    /// Something without an offset: join/leave, ephemeral publications.
    Event,
}

/// The transport is gone (or did not accept the write in time).
#[derive(Debug)]
pub struct Closed;

/// Where a session writes. `subs` is the session's state *after* the frame,
/// for transports that stamp each frame with every channel's position.
pub trait Frames: Send {
    fn feed(
        &mut self,
        frame: Utf8Bytes,
        kind: FrameKind,
        subs: &Subscriptions,
    ) -> impl Future<Output = Result<(), Closed>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<(), Closed>> + Send;
}

/// What to do when a live subscription misses a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGap {
    /// Drop the subscription and tell the client (`unsubscribed`,
    /// `insufficient_state`); it resubscribes with recovery (WebSocket).
    Unsubscribe,
    /// End the whole stream; the client reconnects with its last position (SSE).
    End,
}

/// Why writing stopped.
#[derive(Debug)]
pub enum Stop {
    /// The transport is gone.
    Closed,
    /// A gap under [`OnGap::End`].
    Resync,
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

/// A session's subscriptions. A vector, not a map: connections hold few
/// subscriptions, and the lookup done for every delivery compares canonical
/// keys by pointer (see [`crate::bus::Delivery::canonical`]) instead of hashing.
#[derive(Default)]
pub struct Subscriptions(Vec<(ChannelKey, Subscription)>);

/// Where a subscription stands, to drop duplicates and catch gaps.
struct Subscription {
    epoch: Arc<str>,
    /// Last offset written to the client.
    delivered: u64,
    /// Whether this connection counts in the channel's presence.
    in_presence: bool,
    join_leave: bool,
    /// Whether the client may resume from this subscription's position:
    /// false until the client has seen its `subscribed` frame, unless the
    /// position is the one the client asked to resume from.
    resumable: bool,
}

impl Subscriptions {
    fn get_mut(&mut self, key: &ChannelKey) -> Option<&mut Subscription> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    fn contains_key(&self, key: &ChannelKey) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn remove(&mut self, key: &ChannelKey) -> Option<Subscription> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every resumable channel's position as `channel@epoch:offset;…`: the
    /// SSE event id, from which a reconnecting client resumes every channel.
    pub fn event_id(&self) -> String {
        let mut id = String::new();
        for (key, sub) in self.0.iter().filter(|(_, s)| s.resumable) {
            if !id.is_empty() {
                id.push(';');
            }
            let _ = write!(id, "{}@{}:{}", key.name(), sub.epoch, sub.delivered);
        }
        id
    }
}

/// An error frame to send in reply to a command.
#[derive(Debug)]
pub struct CommandError {
    pub code: &'static str,
    pub message: String,
}

impl CommandError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

impl From<ChannelOpError> for CommandError {
    fn from(e: ChannelOpError) -> Self {
        if let ChannelOpError::Internal(e) = &e {
            tracing::error!(error = ?e, "command failed");
        }
        CommandError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<DomainError> for CommandError {
    fn from(e: DomainError) -> Self {
        CommandError {
            code: e.code,
            message: e.message,
        }
    }
}

/// What the connection should do after a command.
pub type Flow = Result<(), CloseReason>;

/// A subscription just joined, not yet announced to the client.
pub struct Joined {
    key: ChannelKey,
    top: Position,
    /// `Some` when the client asked to recover.
    recovered: Option<bool>,
    /// What the client missed (when recovered).
    publications: Vec<Arc<Publication>>,
    snapshot: Option<Box<RawValue>>,
    /// Announce the user's arrival (first connection of the user, join/leave on).
    announce_join: bool,
}

impl Joined {
    /// Reports the subscription as not recovered although no position was
    /// given: a resumed SSE stream whose id did not name this channel.
    pub fn mark_unrecovered(&mut self) {
        self.recovered.get_or_insert(false);
    }
}

/// One client's connection state, whatever carries it.
pub struct Session {
    pub id: ConnId,
    gw: Arc<Gateway>,
    principal: Principal,
    outbox: Arc<Outbox>,
    subs: Subscriptions,
    limiter: TokenBucket,
    on_gap: OnGap,
}

impl Session {
    /// Registers the connection with the hub (for revocation, shutdown and
    /// fan-out) and gives it its bounded outbox.
    pub fn open(
        gw: Arc<Gateway>,
        principal: Principal,
        transport: Transport,
        on_gap: OnGap,
    ) -> Session {
        let (id, outbox) = gw.open_connection(&principal, transport);
        let limiter = TokenBucket::new(gw.limits.commands_per_sec, gw.limits.commands_burst);
        Session {
            id,
            gw,
            principal,
            outbox,
            subs: Subscriptions::default(),
            limiter,
            on_gap,
        }
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subs
    }

    /// Leaves every channel (presence and leave events included) and
    /// deregisters from the hub. Call once, when the connection ends.
    pub async fn close(&mut self) {
        let keys: Vec<ChannelKey> = self.subs.0.iter().map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.leave(&key).await;
        }
        self.gw.hub.deregister(self.id);
    }

    /// Handles one text command: rate limit, parse, dispatch, reply.
    pub async fn handle_text(&mut self, text: &str, out: &mut impl Frames) -> Flow {
        match self.limiter.check() {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.gw.metrics.rate_limited.inc();
                let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|c| c.id);
                let error = CommandError::new(codes::RATE_LIMITED, "too many commands; slow down");
                return self.refuse(out, id, error).await;
            }
            Verdict::Disconnect => return Err(CloseReason::RateLimited),
        }
        // The same nesting limit as every REST body, checked before parsing.
        if let Err(e) = crate::json_depth::check_depth(text, crate::json_depth::MAX_JSON_DEPTH) {
            let error = CommandError::new(codes::TOO_DEEP, e.to_string());
            return self.refuse(out, None, error).await;
        }
        let command = match serde_json::from_str::<Command>(text) {
            Ok(command) => command,
            Err(e) => {
                let (id, error) = classify_parse_error(text, e);
                return self.refuse(out, id, error).await;
            }
        };
        let id = command.id;
        let result = match command.body {
            CommandBody::Connect { .. } => Err(CommandError::new(
                codes::ALREADY_CONNECTED,
                "this connection is already authenticated",
            )),
            CommandBody::Subscribe {
                channel,
                recover,
                params,
            } => {
                let params = params.map(|p| serde_json::value::to_raw_value(&p));
                match params.transpose() {
                    Ok(params) => match self.join(&channel, recover, params.as_deref()).await {
                        Ok(joined) => Ok(self.announce(out, id, joined).await),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(CommandError::new(codes::MALFORMED, e.to_string())),
                }
            }
            CommandBody::Unsubscribe { channel } => self.unsubscribe(out, id, &channel).await,
            CommandBody::Publish { channel, data } => {
                match serde_json::value::to_raw_value(&data) {
                    Ok(raw) => self.publish(out, id, &channel, &raw).await,
                    Err(e) => Err(CommandError::new(codes::MALFORMED, e.to_string())),
                }
            }
            CommandBody::Presence { channel } => self.presence(out, id, &channel).await,
            CommandBody::History {
                channel,
                since,
                limit,
            } => self.history(out, id, &channel, since, limit).await,
            CommandBody::Refresh { token } => self.refresh(out, id, &token).await,
            CommandBody::Rpc { method, data } => self.rpc(out, id, &method, data).await,
            CommandBody::Ping => Ok(self.reply(out, Reply::Pong { id }.to_json()).await),
        };
        match result {
            Ok(flow) => flow,
            Err(error) => self.refuse(out, id, error).await,
        }
    }

    /// Joins `channel`: authorises, enters the fan-out, reads the position
    /// (and what the client missed, or a snapshot), enters presence. Nothing
    /// is written; [`Session::announce`] does that, so a transport can join
    /// several channels before announcing any (SSE).
    pub async fn join(
        &mut self,
        channel: &str,
        recover: Option<Position>,
        params: Option<&RawValue>,
    ) -> Result<Joined, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Subscribe, &self.principal, &key)
            .await?;
        self.enter(key, &ns, recover, params).await
    }

    /// [`Session::join`] for a channel the caller has resolved and
    /// authorised already (SSE checks every channel before streaming).
    pub async fn enter(
        &mut self,
        key: ChannelKey,
        ns: &Namespace,
        recover: Option<Position>,
        params: Option<&RawValue>,
    ) -> Result<Joined, CommandError> {
        if self.subs.contains_key(&key) {
            return Err(CommandError::new(
                codes::ALREADY_SUBSCRIBED,
                format!("already subscribed to `{}`", key.name()),
            ));
        }
        if self.subs.len() >= self.gw.limits.max_subscriptions {
            return Err(CommandError::new(
                codes::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "at most {} subscriptions per connection",
                    self.gw.limits.max_subscriptions
                ),
            ));
        }
        // Join the fan-out first, wait until this node receives the channel,
        // then read the stream position: anything published in between
        // arrives both ways and is dropped by offset.
        let (key, first) = self.gw.hub.subscribe(&key, self.id, self.outbox.clone());
        if first {
            self.gw.broker.local_interest(&key, true);
        }
        let read = async {
            let broker = &self.gw.broker;
            broker.ready_for(&key).await?;
            let recovery = broker
                .recover(&key, ns.history, recover.as_ref(), ns.history.size.max(1))
                .await?;
            // A snapshot replaces what could not be recovered.
            let snapshot = match &ns.snapshot {
                Some(source) if !recovery.recovered => Some(
                    source
                        .snapshot(&self.principal, &key, &recovery.top, params)
                        .await?,
                ),
                _ => None,
            };
            Ok::<_, ChannelOpError>((recovery, snapshot))
        };
        let (recovery, snapshot) = match read.await {
            Ok(read) => read,
            Err(e) => {
                if self.gw.hub.unsubscribe(&key, self.id) {
                    self.gw.broker.local_interest(&key, false);
                }
                return Err(e.into());
            }
        };
        let in_presence = !matches!(ns.presence, Access::Nobody) || ns.join_leave;
        let first_for_user = in_presence
            && self
                .gw
                .broker
                .presence_join(&key, &self.principal.user)
                .await
                .unwrap_or(false);
        if first_for_user && let Some(observer) = self.gw.presence_observer(key.name().namespace())
        {
            observer.presence_changed(&self.principal, &key, true);
        }
        // A recovered client is at its own position until the replay
        // advances it; anyone else starts at the top.
        let (delivered, resumable) = match (&recover, recovery.recovered) {
            (Some(since), true) => (since.offset, true),
            _ => (recovery.top.offset, false),
        };
        self.subs.0.push((
            key.clone(),
            Subscription {
                epoch: recovery.top.epoch.clone(),
                delivered,
                in_presence,
                join_leave: ns.join_leave,
                resumable,
            },
        ));
        Ok(Joined {
            key,
            recovered: recover.as_ref().map(|_| recovery.recovered),
            top: recovery.top,
            publications: if recovery.recovered {
                recovery.publications
            } else {
                Vec::new()
            },
            snapshot,
            announce_join: first_for_user && ns.join_leave,
        })
    }

    /// Writes the `subscribed` frame (with the snapshot, if any), then what
    /// the client missed, then announces the user's arrival.
    pub async fn announce(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        joined: Joined,
    ) -> Flow {
        let Joined {
            key,
            top,
            recovered,
            publications,
            snapshot,
            announce_join,
        } = joined;
        if let Some(sub) = self.subs.get_mut(&key) {
            sub.resumable = true;
        }
        let reply = Reply::Subscribed {
            id,
            channel: key.name().as_str(),
            epoch: &top.epoch,
            offset: top.offset,
            recovered,
            snapshot: snapshot.as_deref(),
        };
        let written = async {
            out.feed(reply.to_json().into(), FrameKind::Subscribed, &self.subs)
                .await?;
            for publication in &publications {
                if self.admit(publication) == Admit::Deliver {
                    out.feed(
                        publication.frame.clone(),
                        FrameKind::Publication,
                        &self.subs,
                    )
                    .await?;
                }
            }
            out.flush().await
        };
        if written.await.is_err() {
            return Err(CloseReason::WriteTimeout);
        }
        if announce_join {
            let _ = self
                .gw
                .broker
                .publish_ephemeral(&key, presence_event("join", &key, &self.principal))
                .await;
        }
        Ok(())
    }

    /// Writes a batch from the outbox with one flush (write coalescing),
    /// dropping what the subscription state says is a duplicate and
    /// resynchronising on a gap.
    pub async fn write_batch(
        &mut self,
        out: &mut impl Frames,
        items: VecDeque<Arc<Publication>>,
    ) -> Result<(), Stop> {
        // The oldest delivered publication of the batch: one latency sample
        // per flush, not per frame, keeps the metric off the per-delivery cost.
        let mut oldest = None;
        for publication in items {
            match self.admit(&publication) {
                Admit::Skip => continue,
                Admit::Deliver => {
                    oldest.get_or_insert(publication.received);
                    let kind = if publication.offset == 0 {
                        FrameKind::Event
                    } else {
                        FrameKind::Publication
                    };
                    out.feed(publication.frame.clone(), kind, &self.subs)
                        .await?;
                }
                Admit::Gap => {
                    if self.on_gap == OnGap::End {
                        out.flush().await?;
                        return Err(Stop::Resync);
                    }
                    // Never deliver past a gap silently. The client
                    // resubscribes with its last position and recovers.
                    // Boxed: a gap is rare, and inline its future would
                    // enlarge this one, which a WebSocket task keeps for
                    // the connection's whole life.
                    let channel = publication.channel.clone();
                    Box::pin(self.drop_on_gap(out, channel)).await?;
                }
            }
        }
        out.flush().await?;
        if let Some(oldest) = oldest {
            self.gw.metrics.delivery_latency.observe(oldest.elapsed());
        }
        Ok(())
    }

    /// Leaves `channel` after a gap and tells the client (`unsubscribed`,
    /// `insufficient_state`).
    async fn drop_on_gap(
        &mut self,
        out: &mut impl Frames,
        channel: ChannelKey,
    ) -> Result<(), Closed> {
        self.leave(&channel).await;
        let reply = Reply::Unsubscribed {
            id: None,
            channel: channel.name().as_str(),
            reason: Some("insufficient_state"),
        };
        out.feed(reply.to_json().into(), FrameKind::Unsubscribed, &self.subs)
            .await
    }

    /// Whether `publication` is next for its subscription; advances it.
    fn admit(&mut self, publication: &Publication) -> Admit {
        let Some(sub) = self.subs.get_mut(&publication.channel) else {
            return Admit::Skip;
        };
        if publication.offset == 0 {
            return Admit::Deliver;
        }
        if publication.epoch == sub.epoch && publication.offset <= sub.delivered {
            return Admit::Skip;
        }
        if publication.epoch != sub.epoch || publication.offset != sub.delivered + 1 {
            return Admit::Gap;
        }
        sub.delivered = publication.offset;
        Admit::Deliver
    }

    async fn reply(&self, out: &mut impl Frames, frame: String) -> Flow {
        let sent = async {
            out.feed(frame.into(), FrameKind::Reply, &self.subs).await?;
            out.flush().await
        };
        sent.await.map_err(|_| CloseReason::WriteTimeout)
    }

    /// Sends an error frame for a refused command.
    pub async fn refuse(
        &self,
        out: &mut impl Frames,
        id: Option<u64>,
        error: CommandError,
    ) -> Flow {
        self.gw.metrics.command_errors.inc();
        let frame = Reply::Error {
            id,
            code: error.code,
            message: &error.message,
        }
        .to_json();
        self.reply(out, frame).await
    }

    fn resolve(&self, channel: &str) -> Result<(ChannelKey, Namespace), CommandError> {
        let (key, ns) = self.gw.resolve(&self.principal.tenant, channel)?;
        Ok((key, ns.clone()))
    }

    /// Drops a subscription: fan-out, presence and the leave event.
    async fn leave(&mut self, key: &ChannelKey) {
        let Some(sub) = self.subs.remove(key) else {
            return;
        };
        if self.gw.hub.unsubscribe(key, self.id) {
            self.gw.broker.local_interest(key, false);
        }
        if sub.in_presence {
            let last = self
                .gw
                .broker
                .presence_leave(key, &self.principal.user)
                .await
                .unwrap_or(false);
            if last && let Some(observer) = self.gw.presence_observer(key.name().namespace()) {
                observer.presence_changed(&self.principal, key, false);
            }
            if last && sub.join_leave {
                let _ = self
                    .gw
                    .broker
                    .publish_ephemeral(key, presence_event("leave", key, &self.principal))
                    .await;
            }
        }
    }
}

/// The verdict on one publication for one subscription.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Deliver,
    /// A duplicate, or a channel this session left.
    Skip,
    Gap,
}

fn presence_event(kind: &str, key: &ChannelKey, who: &Principal) -> String {
    serde_json::json!({ "type": kind, "channel": key.name().as_str(), "user": who.user.as_str() })
        .to_string()
}

#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<u64>,
}

/// Tells a malformed frame from a well-formed command of an unknown type.
fn classify_parse_error(text: &str, error: serde_json::Error) -> (Option<u64>, CommandError) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (
            None,
            CommandError::new(codes::MALFORMED, format!("not valid JSON: {error}")),
        );
    };
    let id = value.get("id").and_then(|v| v.as_u64());
    match value.get("type").and_then(|t| t.as_str()) {
        Some(t) if !super::protocol::COMMANDS.contains(&t) => (
            id,
            CommandError::new(
                codes::UNKNOWN_COMMAND,
                format!("unknown command type `{t}`"),
            ),
        ),
        _ => (
            id,
            CommandError::new(codes::MALFORMED, format!("invalid command: {error}")),
        ),
    }
}

#[cfg(test)]
mod tests;
