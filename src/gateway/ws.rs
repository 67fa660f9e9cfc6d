//! One task per WebSocket connection.
//!
//! The task authenticates the first frame, then loops over three sources:
//! the socket (commands), the outbox (publications and close requests) and a
//! heartbeat tick (pings, idle and token-expiry checks). A single task keeps
//! an idle connection's memory small; large command futures are boxed so
//! they do not inflate the resting state.

use std::{fmt::Write, sync::Arc, time::Instant};

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::SinkExt;
use tokio::{sync::OwnedSemaphorePermit, time::timeout};
use tracing::Instrument;

use super::{
    ChannelOpError, Gateway,
    hub::ConnId,
    outbox::{Drained, Outbox},
    protocol::{CloseReason, Command, CommandBody, PROTOCOL_VERSION, Reply, codes},
    ratelimit::{TokenBucket, Verdict},
};
use crate::{
    auth::{Principal, tokens::unix_secs},
    bus::{Position, Publication},
    channels::{ChannelKey, Namespace, Operation},
    error::ApiError,
};

/// Initial capacity of a connection's read buffer. tungstenite allocates it
/// up front (128 KiB by default), which alone would be 16 times our memory
/// budget per idle connection; client commands are small, and the buffer
/// grows for the rare large one.
const READ_BUFFER: usize = 1024;

/// Every this many turns of a connection's loop, reading the socket and the
/// heartbeat take precedence over writing the outbox.
const READ_FIRST_EVERY: u32 = 8;

/// What woke a connection's loop.
enum Event {
    Outbox,
    Received(Option<Result<Message, axum::Error>>),
    Tick,
}

/// Most publications returned by one `history` command.
const HISTORY_MAX: usize = 1000;

/// `GET /ws`: checks origin and capacity, then upgrades.
pub async fn upgrade(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !gw.origins.allows(origin, host) {
        return ApiError::forbidden("origin not allowed").into_response();
    }
    let permit = match gw.admit() {
        Ok(permit) => permit,
        Err(e) => return e.into_response(),
    };
    let limit = gw.limits.max_message_bytes;
    let tasks = gw.tasks.clone();
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tasks.track_future(run(socket, gw, permit)))
}

async fn run(mut socket: WebSocket, gw: Arc<Gateway>, _permit: OwnedSemaphorePermit) {
    let (principal, connect_id) = match Box::pin(authenticate(&mut socket, &gw)).await {
        Ok(authenticated) => authenticated,
        Err(reason) => {
            if let Some(reason) = reason {
                if matches!(
                    reason,
                    CloseReason::AuthenticationFailed
                        | CloseReason::TokenExpired
                        | CloseReason::SessionRevoked
                ) {
                    gw.metrics.auth_failures.inc();
                }
                close(&mut socket, reason).await;
            }
            return;
        }
    };
    let (id, outbox) = gw.open_connection(&principal);
    let span =
        tracing::info_span!("ws", conn = id, tenant = %principal.tenant, user = %principal.user);
    async {
        tracing::debug!("connected");
        let limiter = TokenBucket::new(gw.limits.commands_per_sec, gw.limits.commands_burst);
        let mut conn = Connection {
            id,
            gw: gw.clone(),
            principal,
            outbox,
            subs: Subscriptions::default(),
            limiter,
        };
        let connected = Reply::Connected {
            id: connect_id,
            protocol: PROTOCOL_VERSION,
            client: id.to_string(),
            tenant: conn.principal.tenant.as_str(),
            user: conn.principal.user.as_str(),
            expires_at: conn.principal.expires_at,
            expires_in: conn.principal.expires_at.saturating_sub(unix_secs()),
            ping_interval: gw.limits.ping_interval.as_secs(),
        };
        let reason = match socket.send(Message::Text(connected.to_json().into())).await {
            Ok(()) => conn.serve(&mut socket).await,
            Err(_) => None,
        };
        conn.leave_all().await;
        gw.hub.deregister(id);
        if let Some(reason) = reason {
            tracing::debug!(code = reason.code(), "closing: {}", reason.text());
            close(&mut socket, reason).await;
        }
    }
    .instrument(span)
    .await
}

/// Waits for the `connect` frame; returns who connected and the command id.
/// `Err(None)` means the peer went away.
async fn authenticate(
    socket: &mut WebSocket,
    gw: &Gateway,
) -> Result<(Principal, Option<u64>), Option<CloseReason>> {
    // Not in the hub yet, so shutdown must be watched here too.
    let first = tokio::select! {
        first = timeout(gw.limits.auth_timeout, socket.recv()) => first,
        _ = gw.shutdown.cancelled() => return Err(Some(CloseReason::ShuttingDown)),
    };
    let first = match first {
        Err(_) => return Err(Some(CloseReason::AuthenticationFailed)),
        Ok(None) => return Err(None),
        Ok(Some(Err(e))) => return Err(read_error_reason(&e)),
        Ok(Some(Ok(msg))) => msg,
    };
    let text = match first {
        Message::Text(text) => text,
        Message::Close(_) => {
            answer_close(socket).await;
            return Err(None);
        }
        _ => {
            send_error(
                socket,
                None,
                codes::UNSUPPORTED_FRAME,
                "the first frame must be a JSON text `connect` command",
            )
            .await;
            return Err(Some(CloseReason::ProtocolError));
        }
    };
    let (id, token, protocol) = match serde_json::from_str::<Command>(&text) {
        Ok(Command {
            id,
            body: CommandBody::Connect { token, protocol },
        }) => (id, token, protocol),
        _ => {
            send_error(
                socket,
                None,
                codes::MALFORMED,
                "the first frame must be {\"type\":\"connect\",\"token\":…}",
            )
            .await;
            return Err(Some(CloseReason::ProtocolError));
        }
    };
    if protocol.is_some_and(|v| v != PROTOCOL_VERSION) {
        send_error(
            socket,
            id,
            codes::UNSUPPORTED_PROTOCOL,
            "this server speaks protocol 1",
        )
        .await;
        return Err(Some(CloseReason::ProtocolError));
    }
    match gw.auth.authenticate(&token).await {
        Ok(principal) => Ok((principal, id)),
        Err(e) => {
            let code = e.code();
            send_error(socket, id, code, &e.to_string()).await;
            Err(Some(if code == codes::TOKEN_EXPIRED {
                CloseReason::TokenExpired
            } else if code == codes::SESSION_REVOKED {
                CloseReason::SessionRevoked
            } else {
                CloseReason::AuthenticationFailed
            }))
        }
    }
}

/// Maps a read error to a close reason; `None` when the peer is gone.
fn read_error_reason(e: &axum::Error) -> Option<CloseReason> {
    let inner = e.source_ref();
    match inner.and_then(|s| s.downcast_ref::<tungstenite::Error>()) {
        Some(tungstenite::Error::Capacity(_)) => Some(CloseReason::MessageTooBig),
        Some(tungstenite::Error::Protocol(_)) => Some(CloseReason::ProtocolError),
        _ => None,
    }
}

trait SourceRef {
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)>;
}

impl SourceRef for axum::Error {
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self)
    }
}

async fn send_error(socket: &mut WebSocket, id: Option<u64>, code: &str, message: &str) {
    let frame = Reply::Error { id, code, message }.to_json();
    let _ = socket.send(Message::Text(frame.into())).await;
}

/// The closing handshake: send our close frame, then read (and discard)
/// until the peer's close arrives. Dropping the socket while the peer still
/// has frames in flight would make the kernel reset the connection, and the
/// client would never see the close code. A peer that does not cooperate
/// cannot hold the task beyond [`CLOSE_WAIT`].
async fn close(socket: &mut WebSocket, reason: CloseReason) {
    let frame = CloseFrame {
        code: reason.code(),
        reason: Utf8Bytes::from_static(reason.text()),
    };
    let _ = timeout(CLOSE_WAIT, async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Completes a closing handshake the client started: tungstenite queues the
/// reply to a received close frame, and only a flush sends it. Without it the
/// client sees an abnormal closure (1006) instead of its own code.
async fn answer_close(socket: &mut WebSocket) {
    let _ = timeout(CLOSE_WAIT, socket.flush()).await;
}

/// Longest wait for the peer during the closing handshake.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection's subscriptions. A vector, not a map: connections hold few
/// subscriptions, and the lookup done for every delivery compares canonical
/// keys by pointer (see [`super::hub::Hub::canonical`]) instead of hashing.
#[derive(Default)]
struct Subscriptions(Vec<(ChannelKey, Subscription)>);

impl Subscriptions {
    fn get_mut(&mut self, key: &ChannelKey) -> Option<&mut Subscription> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    fn contains_key(&self, key: &ChannelKey) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn insert(&mut self, key: ChannelKey, sub: Subscription) {
        self.0.push((key, sub));
    }

    fn remove(&mut self, key: &ChannelKey) -> Option<Subscription> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(i).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn keys(&self) -> impl Iterator<Item = ChannelKey> + '_ {
        self.0.iter().map(|(k, _)| k.clone())
    }
}

/// Where a subscription stands, to drop duplicates and catch gaps.
struct Subscription {
    epoch: Arc<str>,
    /// Last offset written to the client.
    delivered: u64,
    /// Whether this connection counts in the channel's presence.
    in_presence: bool,
    join_leave: bool,
}

/// An error frame to send in reply to a command.
struct CommandError {
    code: &'static str,
    message: String,
}

impl CommandError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
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

/// What the loop should do after a command.
type Flow = Result<(), CloseReason>;

struct Connection {
    id: ConnId,
    gw: Arc<Gateway>,
    principal: Principal,
    outbox: Arc<Outbox>,
    subs: Subscriptions,
    limiter: TokenBucket,
}

impl Connection {
    /// Runs until the connection ends; returns the close to send, if any.
    async fn serve(&mut self, socket: &mut WebSocket) -> Option<CloseReason> {
        let limits = &self.gw.limits;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ping_interval,
            limits.ping_interval,
        );
        let mut last_seen = Instant::now();
        let mut turn = 0u32;
        loop {
            // The outbox goes first: a wake-up for a delivery then costs no
            // poll of the socket's read side or of the heartbeat timer. So
            // that a busy outbox can never starve reads or heartbeats, every
            // READ_FIRST_EVERY-th turn the socket and the timer go first.
            turn = turn.wrapping_add(1);
            let read_first = turn.is_multiple_of(READ_FIRST_EVERY);
            let event = tokio::select! {
                biased;
                _ = self.outbox.wait(), if !read_first => Event::Outbox,
                msg = socket.recv() => Event::Received(msg),
                _ = tick.tick() => Event::Tick,
                _ = self.outbox.wait(), if read_first => Event::Outbox,
            };
            match event {
                Event::Outbox => match self.outbox.drain() {
                    Drained::Close(reason) => return Some(reason),
                    Drained::Items(items) => {
                        let write_timeout = self.gw.limits.write_timeout;
                        match timeout(write_timeout, self.write_batch(socket, items)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(())) => return None,
                            Err(_) => return Some(CloseReason::WriteTimeout),
                        }
                    }
                },
                Event::Received(msg) => {
                    last_seen = Instant::now();
                    let msg = match msg {
                        None => return None,
                        Some(Err(e)) => return read_error_reason(&e),
                        Some(Ok(msg)) => msg,
                    };
                    let flow = match msg {
                        Message::Text(text) => Box::pin(self.handle(socket, &text)).await,
                        Message::Binary(_) => {
                            let error = CommandError::new(
                                codes::UNSUPPORTED_FRAME,
                                "binary frames are not supported; send JSON text",
                            );
                            self.refuse(socket, None, error).await
                        }
                        Message::Ping(_) | Message::Pong(_) => Ok(()),
                        Message::Close(_) => {
                            answer_close(socket).await;
                            return None;
                        }
                    };
                    if let Err(reason) = flow {
                        return Some(reason);
                    }
                }
                Event::Tick => {
                    if last_seen.elapsed() > self.gw.limits.idle_timeout {
                        return Some(CloseReason::IdleTimeout);
                    }
                    if unix_secs() > self.principal.expires_at {
                        return Some(CloseReason::TokenExpired);
                    }
                    if socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .is_err()
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Writes a batch with one flush (write coalescing), dropping what the
    /// subscription state says is a duplicate and resynchronising on a gap.
    async fn write_batch(
        &mut self,
        socket: &mut WebSocket,
        items: std::collections::VecDeque<Arc<Publication>>,
    ) -> Result<(), ()> {
        for publication in items {
            let Some(sub) = self.subs.get_mut(&publication.channel) else {
                continue;
            };
            if publication.offset != 0 {
                if publication.epoch == sub.epoch && publication.offset <= sub.delivered {
                    continue;
                }
                if publication.epoch != sub.epoch || publication.offset != sub.delivered + 1 {
                    // A gap: never deliver past it silently. The client
                    // resubscribes with its last position and recovers.
                    let channel = publication.channel.clone();
                    self.leave(&channel).await;
                    let reply = Reply::Unsubscribed {
                        id: None,
                        channel: channel.name().as_str(),
                        reason: Some("insufficient_state"),
                    };
                    socket
                        .feed(Message::Text(reply.to_json().into()))
                        .await
                        .map_err(drop)?;
                    continue;
                }
                sub.delivered = publication.offset;
            }
            socket
                .feed(Message::Text(publication.frame.clone()))
                .await
                .map_err(drop)?;
        }
        socket.flush().await.map_err(drop)
    }

    async fn send(&self, socket: &mut WebSocket, frame: String) -> Flow {
        socket
            .send(Message::Text(frame.into()))
            .await
            .map_err(|_| CloseReason::WriteTimeout)
    }

    async fn refuse(&self, socket: &mut WebSocket, id: Option<u64>, error: CommandError) -> Flow {
        self.gw.metrics.command_errors.inc();
        self.send(
            socket,
            Reply::Error {
                id,
                code: error.code,
                message: &error.message,
            }
            .to_json(),
        )
        .await
    }

    async fn handle(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        match self.limiter.check() {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.gw.metrics.rate_limited.inc();
                let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|c| c.id);
                return self
                    .refuse(
                        socket,
                        id,
                        CommandError::new(codes::RATE_LIMITED, "too many commands; slow down"),
                    )
                    .await;
            }
            Verdict::Disconnect => return Err(CloseReason::RateLimited),
        }
        let command = match serde_json::from_str::<Command>(text) {
            Ok(command) => command,
            Err(e) => {
                let (id, error) = classify_parse_error(text, e);
                return self.refuse(socket, id, error).await;
            }
        };
        let id = command.id;
        let result = match command.body {
            CommandBody::Connect { .. } => Err(CommandError::new(
                codes::ALREADY_CONNECTED,
                "this connection is already authenticated",
            )),
            CommandBody::Subscribe { channel, recover } => {
                self.subscribe(socket, id, &channel, recover).await
            }
            CommandBody::Unsubscribe { channel } => self.unsubscribe(socket, id, &channel).await,
            CommandBody::Publish { channel, data } => {
                match serde_json::value::to_raw_value(&data) {
                    Ok(raw) => self.publish(socket, id, &channel, &raw).await,
                    Err(e) => Err(CommandError::new(codes::MALFORMED, e.to_string())),
                }
            }
            CommandBody::Presence { channel } => self.presence(socket, id, &channel).await,
            CommandBody::History {
                channel,
                since,
                limit,
            } => self.history(socket, id, &channel, since, limit).await,
            CommandBody::Refresh { token } => self.refresh(socket, id, &token).await,
            CommandBody::Ping => Ok(self.send(socket, Reply::Pong { id }.to_json()).await),
        };
        match result {
            Ok(flow) => flow,
            Err(error) => self.refuse(socket, id, error).await,
        }
    }

    fn resolve(&self, channel: &str) -> Result<(ChannelKey, Namespace), CommandError> {
        let (key, ns) = self.gw.resolve(&self.principal.tenant, channel)?;
        Ok((key, ns.clone()))
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: &str,
        recover: Option<Position>,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        if self.subs.contains_key(&key) {
            return Err(CommandError::new(
                codes::ALREADY_SUBSCRIBED,
                format!("already subscribed to `{channel}`"),
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
        self.gw
            .authorize(&ns, Operation::Subscribe, &self.principal, &key)
            .await?;
        // Join the fan-out first, wait until this node receives the channel,
        // then read the stream position: anything published in between
        // arrives both ways and is dropped by offset.
        let (key, first) = self.gw.hub.subscribe(&key, self.id, self.outbox.clone());
        if first {
            self.gw.broker.local_interest(&key, true);
        }
        let broker = &self.gw.broker;
        let position = async {
            broker.ready_for(&key).await?;
            broker
                .recover(&key, ns.history, recover.as_ref(), ns.history.size.max(1))
                .await
        };
        let recovery = match position.await {
            Ok(r) => r,
            Err(e) => {
                if self.gw.hub.unsubscribe(&key, self.id) {
                    self.gw.broker.local_interest(&key, false);
                }
                return Err(ChannelOpError::from(e).into());
            }
        };
        let in_presence = !matches!(ns.presence, crate::channels::Access::Nobody) || ns.join_leave;
        let mut first_for_user = false;
        if in_presence {
            first_for_user = self
                .gw
                .broker
                .presence_join(&key, &self.principal.user)
                .await
                .unwrap_or(false);
        }
        let recovered = recover.as_ref().map(|_| recovery.recovered);
        let delivered = recovery.top.offset;
        self.subs.insert(
            key.clone(),
            Subscription {
                epoch: recovery.top.epoch.clone(),
                delivered,
                in_presence,
                join_leave: ns.join_leave,
            },
        );
        let reply = Reply::Subscribed {
            id,
            channel: key.name().as_str(),
            epoch: &recovery.top.epoch,
            offset: recovery.top.offset,
            recovered,
        };
        if let Err(reason) = self.send(socket, reply.to_json()).await {
            return Ok(Err(reason));
        }
        if recovery.recovered {
            for publication in &recovery.publications {
                if socket
                    .feed(Message::Text(publication.frame.clone()))
                    .await
                    .is_err()
                {
                    return Ok(Err(CloseReason::WriteTimeout));
                }
            }
            if socket.flush().await.is_err() {
                return Ok(Err(CloseReason::WriteTimeout));
            }
        }
        if first_for_user && ns.join_leave {
            let _ = self
                .gw
                .broker
                .publish_ephemeral(&key, presence_event("join", &key, &self.principal))
                .await;
        }
        Ok(Ok(()))
    }

    async fn unsubscribe(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: &str,
    ) -> Result<Flow, CommandError> {
        let (key, _) = self.resolve(channel)?;
        if !self.subs.contains_key(&key) {
            return Err(CommandError::new(
                codes::NOT_SUBSCRIBED,
                format!("not subscribed to `{channel}`"),
            ));
        }
        self.leave(&key).await;
        Ok(self
            .send(
                socket,
                Reply::Unsubscribed {
                    id,
                    channel: key.name().as_str(),
                    reason: None,
                }
                .to_json(),
            )
            .await)
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
            if last && sub.join_leave {
                let _ = self
                    .gw
                    .broker
                    .publish_ephemeral(key, presence_event("leave", key, &self.principal))
                    .await;
            }
        }
    }

    async fn leave_all(&mut self) {
        let keys: Vec<ChannelKey> = self.subs.keys().collect();
        for key in keys {
            self.leave(&key).await;
        }
    }

    async fn publish(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Publish, &self.principal, &key)
            .await?;
        let position = self.gw.publish(&key, &ns, data).await?;
        let reply = Reply::Published {
            id,
            channel: key.name().as_str(),
            epoch: &position.epoch,
            offset: position.offset,
        };
        Ok(self.send(socket, reply.to_json()).await)
    }

    async fn presence(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: &str,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Presence, &self.principal, &key)
            .await?;
        let members = self
            .gw
            .broker
            .presence(&key)
            .await
            .map_err(ChannelOpError::from)?;
        let clients = members.iter().map(|m| m.clients as u64).sum();
        let reply = Reply::Presence {
            id,
            channel: key.name().as_str(),
            users: members.len(),
            clients,
            members: &members,
        };
        Ok(self.send(socket, reply.to_json()).await)
    }

    async fn history(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: &str,
        since: Option<Position>,
        limit: Option<usize>,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Subscribe, &self.principal, &key)
            .await?;
        let limit = limit.unwrap_or(100).clamp(1, HISTORY_MAX);
        let page = match &since {
            Some(position) => {
                self.gw
                    .broker
                    .recover(&key, ns.history, Some(position), limit)
                    .await
            }
            None => self.gw.broker.latest(&key, ns.history, limit).await,
        }
        .map_err(ChannelOpError::from)?;
        let mut frame = String::with_capacity(
            128 + page
                .publications
                .iter()
                .map(|p| p.frame.len() + 1)
                .sum::<usize>(),
        );
        frame.push_str(r#"{"type":"history","id":"#);
        frame.push_str(&serde_json::to_string(&id).unwrap_or_default());
        let _ = write!(
            frame,
            r#","channel":{},"epoch":{},"offset":{},"complete":{},"publications":["#,
            serde_json::to_string(key.name().as_str()).unwrap_or_default(),
            serde_json::to_string(&*page.top.epoch).unwrap_or_default(),
            page.top.offset,
            page.recovered,
        );
        for (i, publication) in page.publications.iter().enumerate() {
            if i > 0 {
                frame.push(',');
            }
            frame.push_str(publication.frame.as_str());
        }
        frame.push_str("]}");
        Ok(self.send(socket, frame).await)
    }

    async fn refresh(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        token: &str,
    ) -> Result<Flow, CommandError> {
        let principal = self
            .gw
            .auth
            .authenticate(token)
            .await
            .map_err(|e| CommandError::new(e.code(), e.to_string()))?;
        if principal.tenant != self.principal.tenant || principal.user != self.principal.user {
            return Err(CommandError::new(
                codes::WRONG_USER,
                "the new token belongs to another user",
            ));
        }
        self.gw.hub.set_session(self.id, principal.session.clone());
        let expires_at = principal.expires_at;
        self.principal = principal;
        Ok(self
            .send(
                socket,
                Reply::Refreshed {
                    id,
                    expires_at,
                    expires_in: expires_at.saturating_sub(unix_secs()),
                }
                .to_json(),
            )
            .await)
    }
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
    const KNOWN: [&str; 8] = [
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "history",
        "refresh",
        "ping",
    ];
    match value.get("type").and_then(|t| t.as_str()) {
        Some(t) if !KNOWN.contains(&t) => (
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
