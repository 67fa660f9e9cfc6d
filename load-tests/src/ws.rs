//! Opening authenticated WebSocket connections and speaking the small part
//! of the Relais protocol the load generator needs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::net::{self, SourceAddrs, Target};

/// A client WebSocket over plain TCP (no TLS: the load generator only
/// targets loopback).
pub type Ws = WebSocketStream<TcpStream>;

/// Everything needed to open one connection; cheap to clone into tasks.
#[derive(Clone)]
pub struct Connector {
    pub target: Arc<Target>,
    pub token: Arc<str>,
    pub sources: SourceAddrs,
    /// Bound for one whole attempt: TCP connect, upgrade, auth, subscribe.
    pub attempt_timeout: Duration,
    /// Extra attempts after a failed one.
    pub retries: u32,
}

/// Server reply to a request frame (`connected`, `subscribed`, `error`).
#[derive(Deserialize)]
struct Reply<'a> {
    id: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Small buffers: tungstenite allocates its read buffer eagerly (128 KiB by
/// default), which would cost the client gigabytes at 20k connections while
/// the frames here are a few hundred bytes. A write buffer of 0 sends each
/// frame immediately.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

impl Connector {
    /// Opens connection `index` (global across worker processes, which picks
    /// its source address), authenticates and optionally subscribes,
    /// retrying failed attempts with a short linear backoff.
    pub async fn open(&self, index: usize, subscribe: Option<&str>) -> Result<Ws> {
        self.open_as(index, &self.token, subscribe).await
    }

    /// Like [`Connector::open`], but authenticates with `token` instead of
    /// the connector's own (one user per connection).
    pub async fn open_as(&self, index: usize, token: &str, subscribe: Option<&str>) -> Result<Ws> {
        let mut attempt = 0;
        loop {
            let result =
                tokio::time::timeout(self.attempt_timeout, self.try_open(index, token, subscribe))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("connection attempt timed out")));
            match result {
                Ok(ws) => return Ok(ws),
                Err(e) if attempt >= self.retries => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
    }

    async fn try_open(&self, index: usize, token: &str, subscribe: Option<&str>) -> Result<Ws> {
        let stream = net::connect(
            &self.target,
            self.sources.for_index(index),
            self.attempt_timeout,
        )
        .await?;
        let (mut ws, _response) = tokio_tungstenite::client_async_with_config(
            self.target.ws_url.as_str(),
            stream,
            Some(ws_config()),
        )
        .await
        .context("WebSocket handshake")?;

        let connect = serde_json::json!({"id": 1, "type": "connect", "token": token});
        request(&mut ws, 1, connect, "connected").await?;
        if let Some(channel) = subscribe {
            let sub = serde_json::json!({"id": 2, "type": "subscribe", "channel": channel});
            request(&mut ws, 2, sub, "subscribed").await?;
        }
        Ok(ws)
    }
}

/// Sends a request frame and waits for the reply carrying the same id.
/// Unrelated frames in between are skipped; Pings are answered by
/// tungstenite while we read.
async fn request(ws: &mut Ws, id: u64, frame: serde_json::Value, expect: &str) -> Result<()> {
    ws.send(Message::text(frame.to_string()))
        .await
        .context("send request frame")?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("connection closed while waiting for {expect}"))?
            .context("read reply")?;
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(frame) => bail!("server closed while waiting for {expect}: {frame:?}"),
            _ => continue,
        };
        let reply: Reply<'_> = match serde_json::from_str(text.as_str()) {
            Ok(reply) => reply,
            Err(_) => continue,
        };
        if reply.id != Some(id) {
            continue;
        }
        if reply.kind == expect {
            return Ok(());
        }
        bail!(
            "server answered {} ({}): {}",
            reply.kind,
            reply.code.as_deref().unwrap_or("-"),
            reply.message.as_deref().unwrap_or("-")
        );
    }
}

/// The fields of a `pub` frame the fan-out subscribers look at. Everything
/// else (channel, epoch, offset) is skipped by serde without allocating.
#[derive(Deserialize)]
pub struct PubFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub data: Option<PubData>,
}

/// Payload the fan-out publisher sends (`{"seq":n,"ts":nanos}`); only the
/// send time matters for latency, so `seq` is skipped.
#[derive(Deserialize)]
pub struct PubData {
    pub ts: u64,
}
