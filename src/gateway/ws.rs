//! The WebSocket transport: one task per connection.
//!
//! The task authenticates the first frame, then loops over three sources:
//! the socket (commands, handed to the [`Session`]), the outbox
//! (publications and close requests) and a heartbeat tick (pings, idle and
//! token-expiry checks). A single task keeps an idle connection's memory
//! small. The task's future is as large as its largest await point, and it
//! is allocated at that size for the connection's whole life, idle or not:
//! so everything awaited once (authentication, the closing steps) or rarely
//! (commands, error replies, a write that has to wait) is boxed, and only
//! the loop's resting state and the common write stay inline.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt, SinkExt};
use tokio::{sync::OwnedSemaphorePermit, time::timeout};
use tracing::Instrument;

use super::{
    Gateway,
    outbox::Drained,
    protocol::{CloseReason, Command, CommandBody, PROTOCOL_VERSION, Reply, codes},
    session::{Closed, CommandError, FrameKind, Frames, OnGap, Session, Subscriptions},
};
use crate::{
    auth::{
        Principal,
        service::AccessRefused,
        tokens::{TokenError, unix_secs},
    },
    error::ApiError,
};

/// Initial capacity of a connection's read buffer, and the most read from
/// the socket at once. tungstenite allocates the buffer up front (128 KiB
/// by default, 16 times our memory budget per idle connection) and keeps
/// it, grown to the largest frame read (the `connect` frame, for most
/// connections), for the connection's life. Client commands are small and
/// rare: at 256 bytes an idle connection costs 3.61 KiB instead of 3.96 at
/// 1 KiB (19,000 connections, `load-tests/`; 3.41 at 64 bytes), and the
/// largest command allowed (`RELAIS_WS_MAX_MESSAGE_BYTES`, 64 KiB) takes
/// 256 reads instead of 64, well under a millisecond.
const READ_BUFFER: usize = 256;

/// Bytes a connection gathers before writing them to its socket. A batch
/// is written when it is complete anyway (one flush per batch); this bounds
/// what a large one (a recovery replay, a burst after a stall) leaves
/// behind, since the buffer keeps its capacity for the connection's life.
/// With tungstenite's default of 128 KiB, a node whose 19,000 clients had
/// just recovered after its restart held 492 MB, against 151 MB before the
/// restart; at 8 KiB 303 MB, at 4 KiB 234 MB (against 117 MB). Up to about
/// a dozen frames still go out in one system call.
const WRITE_BUFFER: usize = 4 * 1024;

/// Every this many turns of a connection's loop, reading the socket and the
/// heartbeat take precedence over writing the outbox.
const READ_FIRST_EVERY: u32 = 8;

/// What woke a connection's loop.
enum Event {
    Outbox,
    Received(Option<Result<Message, axum::Error>>),
    Tick,
}

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
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tasks.track_future(run(socket, gw, permit)))
}

/// The connection task. A plain function returning an `async move` block
/// rather than an `async fn`: an `async fn` moves its arguments into locals,
/// and a future keeps both copies, which for the socket would be one more
/// socket's worth of memory in every connection's task.
#[allow(clippy::manual_async_fn)]
fn run(
    mut socket: WebSocket,
    gw: Arc<Gateway>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        let _permit = permit;
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
                    Box::pin(close(&mut socket, reason)).await;
                }
                return;
            }
        };
        let mut session = Session::open(
            gw.clone(),
            principal,
            super::hub::Transport::WebSocket,
            OnGap::Unsubscribe,
        );
        let span = tracing::info_span!(
            "ws",
            conn = session.id,
            tenant = %session.principal().tenant,
            user = %session.principal().user
        );
        async {
            tracing::debug!("connected");
            // In a block of its own: a reply still in scope at an await would
            // be kept in the task for the connection's whole life.
            let connected = {
                let principal = session.principal();
                Reply::Connected {
                    id: connect_id,
                    protocol: PROTOCOL_VERSION,
                    client: session.id.to_string(),
                    tenant: principal.tenant.as_str(),
                    user: principal.user.as_str(),
                    expires_at: principal.expires_at,
                    expires_in: principal.expires_at.saturating_sub(unix_secs()),
                    ping_interval: gw.limits.ping_interval.as_secs(),
                }
                .to_json()
            };
            let reason = match socket.send(Message::Text(connected.into())).await {
                Ok(()) => serve(&mut session, &gw, &mut socket).await,
                Err(_) => None,
            };
            Box::pin(session.close()).await;
            if let Some(reason) = reason {
                tracing::debug!(code = reason.code(), "closing: {}", reason.text());
                Box::pin(close(&mut socket, reason)).await;
            }
        }
        .instrument(span)
        .await
    }
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
    match gw.auth.verify_access(&token).await {
        Ok(principal) => Ok((principal, id)),
        Err(e) => {
            send_error(socket, id, e.code(), &e.to_string()).await;
            Err(Some(match e {
                AccessRefused::Token(TokenError::Expired) => CloseReason::TokenExpired,
                AccessRefused::Revoked => CloseReason::SessionRevoked,
                AccessRefused::Token(TokenError::Invalid) | AccessRefused::Store(_) => {
                    CloseReason::AuthenticationFailed
                }
            }))
        }
    }
}

/// Maps a read error to a close reason; `None` when the peer is gone.
fn read_error_reason(e: &axum::Error) -> Option<CloseReason> {
    let inner = e.source_ref();
    match inner.and_then(|s| s.downcast_ref::<tungstenite::Error>()) {
        Some(tungstenite::Error::Capacity(_)) => Some(CloseReason::MessageTooBig),
        Some(tungstenite::Error::Utf8(_)) => Some(CloseReason::InvalidPayload),
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

/// The WebSocket as a session's frame sink: frames are fed, then flushed
/// together (write coalescing).
struct WsFrames<'a>(&'a mut WebSocket);

/// Plain functions rather than `async fn`s: an `async fn` would keep its
/// arguments (the frame) beside the sink's own future, and the largest of
/// these futures is part of every connection's task.
impl Frames for WsFrames<'_> {
    fn feed(
        &mut self,
        frame: Utf8Bytes,
        _kind: FrameKind,
        _subs: &Subscriptions,
    ) -> impl Future<Output = Result<(), Closed>> + Send {
        self.0
            .feed(Message::Text(frame))
            .map(|sent| sent.map_err(|_| Closed))
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), Closed>> + Send {
        self.0.flush().map(|flushed| flushed.map_err(|_| Closed))
    }
}

/// Handles a frame from the client other than a ping or pong. `Err` ends
/// the connection, with the close to send, if any.
async fn received(
    session: &mut Session,
    socket: &mut WebSocket,
    msg: Message,
) -> Result<(), Option<CloseReason>> {
    let flow = match msg {
        Message::Text(text) => session.handle_text(&text, &mut WsFrames(socket)).await,
        Message::Binary(_) => {
            let error = CommandError::new(
                codes::UNSUPPORTED_FRAME,
                "binary frames are not supported; send JSON text",
            );
            session.refuse(&mut WsFrames(socket), None, error).await
        }
        Message::Ping(_) | Message::Pong(_) => Ok(()),
        Message::Close(_) => {
            answer_close(socket).await;
            return Err(None);
        }
    };
    flow.map_err(Some)
}

/// Runs the session over the socket until the connection ends; returns the
/// close to send, if any.
async fn serve(session: &mut Session, gw: &Gateway, socket: &mut WebSocket) -> Option<CloseReason> {
    let limits = &gw.limits;
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
        let outbox = session.outbox();
        let event = tokio::select! {
            biased;
            _ = outbox.wait(), if !read_first => Event::Outbox,
            msg = socket.recv() => Event::Received(msg),
            _ = tick.tick() => Event::Tick,
            _ = outbox.wait(), if read_first => Event::Outbox,
        };
        match event {
            Event::Outbox => {
                // A statement of its own: the drained value is then not
                // kept in the task across the write.
                let items = match session.outbox().drain() {
                    Drained::Close(reason) => return Some(reason),
                    Drained::Items(items) => items,
                };
                let mut frames = WsFrames(socket);
                let mut written = std::pin::pin!(session.write_batch(&mut frames, items));
                // Most batches fit the socket's send buffer and finish
                // at the first poll: only a write that has to wait
                // arms the write timeout (a timer per delivery costs a
                // timer-wheel entry and its removal). Polling again
                // under the real waker re-registers the socket's
                // readiness, so no wake-up is lost. The timer is boxed:
                // inline it would enlarge every idle connection's task,
                // and this path already pays for a timer registration.
                let outcome = match written.as_mut().now_or_never() {
                    Some(done) => Ok(done),
                    None => Box::pin(timeout(limits.write_timeout, written)).await,
                };
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(CloseReason::WriteTimeout),
                }
            }
            Event::Received(msg) => {
                last_seen = Instant::now();
                let msg = match msg {
                    None => return None,
                    Some(Err(e)) => return read_error_reason(&e),
                    Some(Ok(msg)) => msg,
                };
                // Pings and pongs need nothing (tungstenite answers pings);
                // anything else is handled in one boxed future, as a
                // command's handling was before.
                if matches!(msg, Message::Ping(_) | Message::Pong(_)) {
                    continue;
                }
                if let Err(end) = Box::pin(received(session, socket, msg)).await {
                    return end;
                }
            }
            Event::Tick => {
                if last_seen.elapsed() > limits.idle_timeout {
                    return Some(CloseReason::IdleTimeout);
                }
                if unix_secs() > session.principal().expires_at {
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
