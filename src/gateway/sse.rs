//! `GET /api/v1/sse`: a read-only Server-Sent Events stream for consumers
//! that cannot hold a WebSocket.
//!
//! Same authentication, channel policies, outbound bound and recovery as the
//! WebSocket. Each `pub` event's id lists the position of every channel of
//! the stream (`channel@epoch:offset;…`), so the `Last-Event-ID` a browser
//! sends on reconnect lets the stream resume exactly where it stopped.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use axum::{
    extract::{Query, State},
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
    hub::ConnId,
    outbox::{Drained, Outbox},
    protocol::CloseReason,
};
use crate::{
    bus::{Position, Publication},
    channels::{ChannelKey, Operation},
    error::ApiError,
};

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

struct SseSub {
    key: ChannelKey,
    epoch: Arc<str>,
    delivered: u64,
}

/// Unsubscribes and deregisters when the stream is dropped (client gone or closed).
struct SseConnection {
    id: ConnId,
    gw: Arc<Gateway>,
    outbox: Arc<Outbox>,
    subs: Vec<SseSub>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        for sub in &self.subs {
            if self.gw.hub.unsubscribe(&sub.key, self.id) {
                self.gw.broker.local_interest(&sub.key, false);
            }
        }
        self.gw.hub.deregister(self.id);
    }
}

impl SseConnection {
    fn event_id(&self) -> String {
        let mut id = String::new();
        for (i, sub) in self.subs.iter().enumerate() {
            if i > 0 {
                id.push(';');
            }
            id.push_str(&format!(
                "{}@{}:{}",
                sub.key.name(),
                sub.epoch,
                sub.delivered
            ));
        }
        id
    }

    /// The event for `publication`, or `None` when it is a duplicate.
    fn admit(&mut self, publication: &Publication) -> Option<Result<Event, ()>> {
        let sub = self
            .subs
            .iter_mut()
            .find(|s| s.key == publication.channel)?;
        if publication.offset != 0 {
            if publication.epoch == sub.epoch && publication.offset <= sub.delivered {
                return None;
            }
            if publication.epoch != sub.epoch || publication.offset != sub.delivered + 1 {
                // A gap: end the stream; the client reconnects with its
                // Last-Event-ID and recovers (or is told it cannot).
                return Some(Err(()));
            }
            sub.delivered = publication.offset;
        }
        let kind = if publication.offset == 0 {
            "event"
        } else {
            "pub"
        };
        Some(Ok(Event::default()
            .event(kind)
            .id(self.event_id())
            .data(publication.frame.as_str())))
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
    Query(query): Query<SseQuery>,
) -> Result<Response, ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !gw.origins.allows(origin, host) {
        return Err(ApiError::forbidden("origin not allowed"));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_owned())
        })
        .or(query.access_token)
        .ok_or(ApiError::Unauthenticated)?;
    let principal = gw.auth.authenticate(&token).await.inspect_err(|_| {
        gw.metrics.auth_failures.inc();
    })?;
    let names: Vec<&str> = query
        .channels
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
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
        .map(|id| parse_event_id(&id))
        .unwrap_or_default();
    let mut resolved = Vec::with_capacity(names.len());
    for name in names {
        let (key, ns) = gw.resolve(&principal.tenant, name)?;
        gw.authorize(ns, Operation::Subscribe, &principal, &key)
            .await?;
        if !resolved.iter().any(|(k, _): &(ChannelKey, _)| *k == key) {
            resolved.push((key, ns.history));
        }
    }
    let permit = gw.admit()?;
    let (id, outbox) = gw.open_connection(&principal);
    let mut conn = SseConnection {
        id,
        gw: gw.clone(),
        outbox,
        subs: Vec::new(),
        _permit: permit,
    };
    let mut initial = Vec::new();
    for (key, history) in resolved {
        let (key, first) = gw.hub.subscribe(&key, id, conn.outbox.clone());
        if first {
            gw.broker.local_interest(&key, true);
        }
        // Registered before any await, so dropping the connection on an
        // error below also leaves the hub.
        conn.subs.push(SseSub {
            key: key.clone(),
            epoch: Arc::from(""),
            delivered: 0,
        });
        let since = resume.get(key.name().as_str());
        let position = async {
            gw.broker.ready_for(&key).await?;
            gw.broker
                .recover(&key, history, since, history.size.max(1))
                .await
        };
        let recovery = position
            .await
            .map_err(|e| ApiError::Unavailable("unavailable", e.to_string()))?;
        let subscribed = serde_json::json!({
            "channel": key.name().as_str(),
            "epoch": &*recovery.top.epoch,
            "offset": recovery.top.offset,
            "recovered": since.map(|_| recovery.recovered),
        });
        initial.push(
            Event::default()
                .event("subscribed")
                .data(subscribed.to_string()),
        );
        if let Some(sub) = conn.subs.last_mut() {
            sub.epoch = recovery.top.epoch.clone();
            sub.delivered = recovery.top.offset;
        }
        if recovery.recovered {
            let sub = conn.subs.last_mut().expect("just pushed");
            sub.delivered = since.map_or(sub.delivered, |s| s.offset);
            for publication in &recovery.publications {
                if let Some(Ok(event)) = conn.admit(publication) {
                    initial.push(event);
                }
            }
        }
    }
    let live = stream::unfold(Some(conn), |conn| async move {
        let mut conn = conn?;
        loop {
            conn.outbox.wait().await;
            match conn.outbox.drain() {
                Drained::Close(reason) => return Some((vec![close_event(reason)], None)),
                Drained::Items(items) => {
                    let mut events = Vec::with_capacity(items.len());
                    for publication in &items {
                        match conn.admit(publication) {
                            None => {}
                            Some(Ok(event)) => events.push(event),
                            Some(Err(())) => return Some((events, None)),
                        }
                    }
                    if !events.is_empty() {
                        return Some((events, Some(conn)));
                    }
                }
            }
        }
    })
    .flat_map(stream::iter);
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream::iter(initial).chain(live).map(Ok));
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
