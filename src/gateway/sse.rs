//! `GET /api/v1/sse`: a read-only Server-Sent Events stream for consumers
//! that cannot hold a WebSocket.
//!
//! A thin transport over the same [`Session`] as the WebSocket: same
//! authentication, channel policies, outbound bound, recovery and
//! snapshots. Every event's id lists the position of every channel of the
//! stream (`channel@epoch:offset;…`), so the `Last-Event-ID` a browser sends
//! on reconnect lets the stream resume exactly where it stopped. A channel
//! missing from a resumed id is answered `recovered: false`.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use axum::{
    extract::{Query, State, rejection::QueryRejection, ws::Utf8Bytes},
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{
    Gateway,
    outbox::Drained,
    protocol::CloseReason,
    session::{Closed, FrameKind, Frames, OnGap, Session, Subscriptions},
};
use crate::{auth::extract::bearer_token, bus::Position, channels::Operation, error::ApiError};

/// Most channels one SSE stream may follow.
const MAX_SSE_CHANNELS: usize = 32;

#[derive(Deserialize)]
pub struct SseQuery {
    /// Comma-separated channel names.
    channels: String,
    /// For `EventSource`, which cannot set headers. Prefer the header: URLs end up in logs.
    access_token: Option<String>,
    /// Resume position when the header cannot be set.
    last_event_id: Option<String>,
}

/// Parses `channel@epoch:offset;…` into positions by channel name.
pub fn parse_event_id(id: &str) -> HashMap<String, Position> {
    id.split(';')
        .filter_map(|part| {
            let (channel, position) = part.rsplit_once('@')?;
            let (epoch, offset) = position.split_once(':')?;
            Some((
                channel.to_owned(),
                Position {
                    epoch: epoch.into(),
                    offset: offset.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// The SSE stream as a session's frame sink: frames become events, each
/// with an id that carries every resumable channel's position.
#[derive(Default)]
struct SseFrames(Vec<Event>);

impl Frames for SseFrames {
    async fn feed(
        &mut self,
        frame: Utf8Bytes,
        kind: FrameKind,
        subs: &Subscriptions,
    ) -> Result<(), Closed> {
        let name = match kind {
            FrameKind::Subscribed => "subscribed",
            FrameKind::Publication => "pub",
            FrameKind::Event => "event",
            FrameKind::Unsubscribed => "unsubscribed",
            FrameKind::Reply => "reply",
        };
        self.0.push(
            Event::default()
                .event(name)
                .id(subs.event_id())
                .data(frame.as_str()),
        );
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        Ok(())
    }
}

/// Owns the session while the response streams; when the stream is dropped
/// (client gone, or closed) the session leaves its channels in a task of
/// its own, since leaving presence awaits the bus.
struct SseConnection {
    session: Option<Session>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        if let Some(mut session) = self.session.take() {
            let tasks = session.gateway().tasks.clone();
            if tokio::runtime::Handle::try_current().is_ok() {
                tasks.spawn(async move { session.close().await });
            }
        }
    }
}

fn close_event(reason: CloseReason) -> Event {
    Event::default().event("close").data(format!(
        r#"{{"code":{},"reason":"{}"}}"#,
        reason.code(),
        reason.text()
    ))
}

pub async fn stream(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = crate::error::query(query)?;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let token = bearer_token(&headers)
        .map(str::to_owned)
        .or(query.access_token)
        .ok_or(ApiError::Unauthenticated)?;
    let principal = gw
        .auth
        .verify_connection(&token)
        .await
        .map_err(ApiError::from)
        .inspect_err(|_| {
            gw.metrics.auth_failures.inc();
        })?;
    // A visitor's token works from its page's origin only (and from there
    // even if the hub's policy does not list it); a user's follows the policy.
    let allowed = match &principal.origin {
        Some(bound) => origin == Some(bound.as_str()),
        None => gw.origins.allows(origin, host),
    };
    if !allowed {
        return Err(ApiError::forbidden("origin not allowed"));
    }
    let mut names: Vec<&str> = Vec::new();
    for name in query.channels.split(',').map(str::trim) {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() || names.len() > MAX_SSE_CHANNELS {
        return Err(ApiError::invalid(
            "invalid_channels",
            format!("give 1 to {MAX_SSE_CHANNELS} comma-separated channels"),
        ));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .map(|id| parse_event_id(&id));
    // Refuse the request with a proper HTTP error before the stream starts.
    let mut channels = Vec::with_capacity(names.len());
    for name in names {
        let (key, ns) = gw.resolve(&principal.tenant, name)?;
        gw.authorize(ns, Operation::Subscribe, &principal, &key)
            .await?;
        channels.push((name, key, ns.clone()));
    }
    let permit = gw.admit()?;
    let mut conn = SseConnection {
        session: Some(Session::open(
            gw.clone(),
            principal,
            super::hub::Transport::Sse,
            OnGap::End,
        )),
        _permit: permit,
    };
    let session = conn.session.as_mut().expect("just opened");
    // Join every channel before announcing any, so that every event id,
    // from the first, carries the resume position of every channel.
    let mut joined = Vec::with_capacity(channels.len());
    for (name, key, ns) in channels {
        let since = resume.as_ref().and_then(|r| r.get(name).cloned());
        // Resuming, with no position for this channel: it cannot be recovered.
        let resuming = resume.is_some() && since.is_none();
        let mut j = session
            .enter(key, &ns, since, None)
            .await
            .map_err(|e| ApiError::Unavailable(e.code, e.message))?;
        if resuming {
            j.mark_unrecovered();
        }
        joined.push(j);
    }
    let mut initial = SseFrames::default();
    for j in joined {
        // Writing into a vector cannot fail.
        let _ = session.announce(&mut initial, None, j).await;
    }
    let live = stream::unfold(Some(conn), |conn| async move {
        let mut conn = conn?;
        let session = conn.session.as_mut()?;
        let outbox = session.outbox().clone();
        loop {
            outbox.wait().await;
            match outbox.drain() {
                Drained::Close(reason) => return Some((vec![close_event(reason)], None)),
                Drained::Items(items) => {
                    let mut frames = SseFrames::default();
                    match session.write_batch(&mut frames, items).await {
                        Ok(()) if frames.0.is_empty() => {}
                        Ok(()) => return Some((frames.0, Some(conn))),
                        // A gap: end the stream; the client reconnects with
                        // its Last-Event-ID and recovers (or is told it cannot).
                        Err(_) => return Some((frames.0, None)),
                    }
                }
            }
        }
    })
    .flat_map(stream::iter);
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream::iter(initial.0).chain(live).map(Ok));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(gw.limits.ping_interval))
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_round_trip_positions_of_several_channels() {
        let parsed = super::parse_event_id("user:a:b@Ep1:7;broadcast@x:0;garbage");
        assert_eq!(parsed["user:a:b"].offset, 7);
        assert_eq!(&*parsed["user:a:b"].epoch, "Ep1");
        assert_eq!(parsed["broadcast"].offset, 0);
        assert_eq!(parsed.len(), 2);
    }
}
