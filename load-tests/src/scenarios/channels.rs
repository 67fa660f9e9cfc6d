//! `channels`: how the hub's cost grows with the channels it holds.
//!
//! The hub keeps every channel that has history in memory, so its memory
//! and its publish path must stay flat per channel as their number grows.
//! The scenario grows the number of channels in steps (by default 1, 10, …
//! 1,000,000), each channel filled with `--history` publications through
//! the REST batch endpoint, and at every step reads the server's RSS and
//! times three things, one request at a time so nothing queues:
//! - a publication to a channel one WebSocket subscribes to, from the
//!   request to the frame's arrival (`delivery`) and to the REST answer
//!   (`publish`);
//! - a publication to a random channel among those held (`publish_random`).
//!
//! At the end, with every channel still held, `--subscribers` connections
//! of the admin open, then each subscribes to the three channels a user may
//! join (`broadcast`, its `user:` and `role:` channels): the RSS difference
//! divided by the subscriptions is the server's memory per subscription to
//! an existing channel.
//!
//! The server must keep `--history` publications on the filled namespace and
//! hold more than the last step's channels, e.g.
//! `RELAIS_CHANNEL_HISTORY=user=10/86400 RELAIS_MAX_CHANNELS=1100000`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hyper::body::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::server_rss_required;
use crate::cli::ChannelsArgs;
use crate::http::{self, HttpConn};
use crate::mint;
use crate::net::{SourceAddrs, Target};
use crate::stats::{Percentiles, new_histogram, record_us, round3, unix_nanos};
use crate::ws::{Connector, Ws};

/// The channel the probe subscriber listens on.
const PROBE_CHANNEL: &str = "broadcast";
/// Longest wait for one probe's frame before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct ChannelsResult {
    scenario: &'static str,
    history: usize,
    payload_bytes: usize,
    probes: usize,
    /// Server RSS once the probe subscriber was connected, before filling.
    rss_base_kib: u64,
    steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<Subscriptions>,
}

#[derive(Serialize)]
struct Step {
    /// Channels filled so far (the probe channel not counted).
    channels: u64,
    rss_kib: u64,
    /// `(rss − rss_base) / channels`, in bytes.
    bytes_per_channel: f64,
    /// The same for the channels added since the previous step only.
    bytes_per_added_channel: f64,
    /// Publications per second while filling up to this step.
    fill_publications_per_sec: f64,
    /// Request to the subscriber's receipt of the frame.
    delivery: Percentiles,
    /// Request to the REST answer, same publications.
    publish: Percentiles,
    /// Request to the REST answer, to a random filled channel.
    publish_random: Percentiles,
    /// Probe frames that did not arrive within 5 s.
    probes_lost: u64,
}

#[derive(Serialize)]
struct Subscriptions {
    connections: u64,
    subscriptions: u64,
    rss_connected_kib: u64,
    rss_subscribed_kib: u64,
    bytes_per_subscription: f64,
}

pub async fn run(args: ChannelsArgs) -> Result<Option<String>> {
    if args.history == 0 || args.batch < args.history {
        bail!("--history must be at least 1 and --batch at least --history");
    }
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    if steps.first().is_none_or(|&s| s == 0) {
        bail!("--steps must be positive channel counts");
    }
    let pid = args
        .server
        .server_pid
        .context("channels needs --server-pid to measure memory")?;
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key: Arc<str> = http::create_publish_key(&target, &token).await?.into();
    let connector = Connector {
        target: Arc::clone(&target),
        token: token.as_str().into(),
        sources: SourceAddrs::new(args.source_addrs, &target),
        attempt_timeout: Duration::from_secs(10),
        retries: 3,
    };

    let probe_ws = connector.open(0, Some(PROBE_CHANNEL)).await?;
    let probe = ProbeReader::spawn(probe_ws);
    let mut conn = HttpConn::connect(&target).await?;
    let pad = "x".repeat(args.payload_bytes.saturating_sub(60));
    // Warm the paths once so the first step does not pay for lazy setup.
    probe_round(&mut conn, &key, &probe, &pad, 20, 0, &args.namespace).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_base_kib = server_rss_required(pid)?;

    let mut filled = 0u64;
    let mut previous_rss = rss_base_kib;
    let mut out = Vec::with_capacity(steps.len());
    for &target_channels in &steps {
        let started = Instant::now();
        fill(&target, &key, &args, &pad, filled, target_channels).await?;
        let fill_secs = started.elapsed().as_secs_f64();
        let added = target_channels - filled;
        let fill_pubs = added * args.history as u64;
        filled = target_channels;
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let rss_kib = server_rss_required(pid)?;
        let round = probe_round(
            &mut conn,
            &key,
            &probe,
            &pad,
            args.probes,
            filled,
            &args.namespace,
        )
        .await?;
        let step = Step {
            channels: filled,
            rss_kib,
            bytes_per_channel: round3(
                rss_kib.saturating_sub(rss_base_kib) as f64 * 1024.0 / filled as f64,
            ),
            bytes_per_added_channel: round3(
                rss_kib.saturating_sub(previous_rss) as f64 * 1024.0 / added as f64,
            ),
            fill_publications_per_sec: round3(fill_pubs as f64 / fill_secs.max(1e-9)),
            delivery: Percentiles::of(&round.delivery),
            publish: Percentiles::of(&round.publish),
            publish_random: Percentiles::of(&round.publish_random),
            probes_lost: round.lost,
        };
        previous_rss = rss_kib;
        log!(
            "channels: {filled} held, RSS {rss_kib} KiB ({} B/channel), delivery p99 {} ms, random publish p99 {} ms",
            step.bytes_per_channel,
            step.delivery.p99_ms,
            step.publish_random.p99_ms
        );
        out.push(step);
    }

    let subscriptions = if args.subscribers > 0 {
        Some(measure_subscriptions(&connector, &token, args.subscribers, pid).await?)
    } else {
        None
    };
    probe.stop();

    let result = ChannelsResult {
        scenario: "channels",
        history: args.history,
        payload_bytes: args.payload_bytes,
        probes: args.probes,
        rss_base_kib,
        steps: out,
        subscriptions,
    };
    Ok(Some(serde_json::to_string(&result)?))
}

/// The name of filled channel `i`.
fn channel_name(namespace: &str, i: u64) -> String {
    format!("{namespace}:scale-{i}")
}

/// Fills channels `from..to` with `history` publications each, over
/// `--connections` keep-alive connections, `batch / history` channels per
/// request.
async fn fill(
    target: &Arc<Target>,
    key: &Arc<str>,
    args: &ChannelsArgs,
    pad: &str,
    from: u64,
    to: u64,
) -> Result<()> {
    let per_request = (args.batch / args.history) as u64;
    let next = Arc::new(AtomicU64::new(from));
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..args.connections.max(1) {
        let (target, key, next) = (Arc::clone(target), Arc::clone(key), Arc::clone(&next));
        let (namespace, pad, history) = (args.namespace.clone(), pad.to_owned(), args.history);
        joins.spawn(async move {
            let mut conn = HttpConn::connect(&target).await?;
            loop {
                let first = next.fetch_add(per_request, Ordering::Relaxed);
                if first >= to {
                    return anyhow::Ok(());
                }
                let last = (first + per_request).min(to);
                let body = fill_body(&namespace, first..last, history, &pad);
                let (status, bytes) = conn
                    .post_json("/api/v1/publish/batch", Some(&key), body)
                    .await?;
                if !status.is_success() {
                    bail!(
                        "batch publish: {status} {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        });
    }
    while let Some(joined) = joins.join_next().await {
        joined.context("fill task")??;
    }
    Ok(())
}

/// One batch body: `history` publications to each channel of `range`.
fn fill_body(namespace: &str, range: std::ops::Range<u64>, history: usize, pad: &str) -> Bytes {
    let mut out = String::from(r#"{"publications":["#);
    let mut first = true;
    for i in range {
        let channel = channel_name(namespace, i);
        for seq in 0..history {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(
                r#"{{"channel":"{channel}","data":{{"seq":{seq},"pad":"{pad}"}}}}"#
            ));
        }
    }
    out.push_str("]}");
    Bytes::from(out)
}

struct Round {
    delivery: Histogram<u64>,
    publish: Histogram<u64>,
    publish_random: Histogram<u64>,
    lost: u64,
}

/// `probes` publications to the probe channel, each waited for on the
/// subscriber before the next, then `probes` to random filled channels.
async fn probe_round(
    conn: &mut HttpConn,
    key: &str,
    probe: &ProbeReader,
    pad: &str,
    probes: usize,
    filled: u64,
    namespace: &str,
) -> Result<Round> {
    let mut round = Round {
        delivery: new_histogram(),
        publish: new_histogram(),
        publish_random: new_histogram(),
        lost: 0,
    };
    for _ in 0..probes {
        let seq = probe.next_seq();
        let data = format!(r#"{{"seq":{seq},"ts":{},"pad":"{pad}"}}"#, unix_nanos());
        let sent = Instant::now();
        publish_one(conn, key, PROBE_CHANNEL, &data).await?;
        record_us(&mut round.publish, sent.elapsed().as_micros() as u64);
        match probe.wait_for(seq).await {
            Some(latency_us) => record_us(&mut round.delivery, latency_us),
            None => round.lost += 1,
        }
    }
    // Spread over the held channels by a stride coprime with most counts
    // (a large prime), so the probes touch channels of every age.
    let mut at = 0u64;
    for _ in 0..if filled > 0 { probes } else { 0 } {
        at = (at + 1_000_003) % filled;
        let channel = channel_name(namespace, at);
        let data = format!(r#"{{"seq":0,"pad":"{pad}"}}"#);
        let sent = Instant::now();
        publish_one(conn, key, &channel, &data).await?;
        record_us(&mut round.publish_random, sent.elapsed().as_micros() as u64);
    }
    Ok(round)
}

async fn publish_one(conn: &mut HttpConn, key: &str, channel: &str, data: &str) -> Result<()> {
    let (status, bytes) = conn
        .post_json(
            "/api/v1/publish",
            Some(key),
            http::publish_body(channel, data),
        )
        .await?;
    if !status.is_success() {
        bail!("publish: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(())
}

/// The probe subscriber: a task reading its socket, which reports the
/// latest probe it received and that probe's latency.
struct ProbeReader {
    /// `(seq, latency µs)` of the latest probe frame.
    latest: watch::Receiver<(u64, u64)>,
    next: AtomicU64,
    task: tokio::task::JoinHandle<()>,
    /// Why the reader stopped, for the log.
    error: Arc<Mutex<Option<String>>>,
}

/// The `data` of a probe frame.
#[derive(serde::Deserialize)]
struct ProbeData {
    seq: u64,
    ts: u64,
}

impl ProbeReader {
    fn spawn(mut ws: Ws) -> Self {
        let (tx, latest) = watch::channel((0, 0));
        let error = Arc::new(Mutex::new(None));
        let task_error = Arc::clone(&error);
        let task = tokio::spawn(async move {
            while let Some(msg) = ws.next().await {
                let text = match msg {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Ping(p)) => {
                        let _ = ws.send(Message::Pong(p)).await;
                        continue;
                    }
                    Ok(Message::Close(frame)) => {
                        *task_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("closed: {frame:?}"));
                        return;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        *task_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        return;
                    }
                };
                let received = unix_nanos();
                let Ok(frame) = serde_json::from_str::<ProbeFrame<'_>>(text.as_str()) else {
                    continue;
                };
                if frame.kind != "pub" {
                    continue;
                }
                if let Some(data) = frame.data {
                    let latency_us = received.saturating_sub(data.ts) / 1000;
                    let _ = tx.send((data.seq, latency_us));
                }
            }
        });
        ProbeReader {
            latest,
            next: AtomicU64::new(1),
            task,
            error,
        }
    }

    fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until probe `seq` arrives; its latency, or `None` after
    /// [`PROBE_TIMEOUT`].
    async fn wait_for(&self, seq: u64) -> Option<u64> {
        let mut latest = self.latest.clone();
        let wait = latest.wait_for(|&(s, _)| s >= seq);
        match tokio::time::timeout(PROBE_TIMEOUT, wait).await {
            Ok(Ok(seen)) if seen.0 == seq => Some(seen.1),
            Ok(Ok(_)) => None,
            _ => {
                if let Some(e) = self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    log!("channels: probe subscriber: {e}");
                }
                None
            }
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

#[derive(serde::Deserialize)]
struct ProbeFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    data: Option<ProbeData>,
}

/// Opens `count` admin connections, then subscribes each to the three
/// channels a user may join; answers the server's memory per subscription.
async fn measure_subscriptions(
    connector: &Connector,
    token: &str,
    count: usize,
    pid: u32,
) -> Result<Subscriptions> {
    let user = mint::unverified_claims(token)?.sub;
    let channels = [
        PROBE_CHANNEL.to_owned(),
        format!("user:{user}"),
        "role:admin".to_owned(),
    ];
    let mut conns = open_all(connector, count).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected_kib = server_rss_required(pid)?;
    // Subscribe 64 connections at a time; each waits for its replies.
    let mut subscribed = 0u64;
    for chunk in conns.chunks_mut(64) {
        let mut pending = Vec::with_capacity(chunk.len());
        for ws in chunk.iter_mut() {
            pending.push(subscribe_all(ws, &channels));
        }
        for done in futures_util::future::join_all(pending).await {
            subscribed += done? as u64;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_subscribed_kib = server_rss_required(pid)?;
    let result = Subscriptions {
        connections: conns.len() as u64,
        subscriptions: subscribed,
        rss_connected_kib,
        rss_subscribed_kib,
        bytes_per_subscription: round3(
            rss_subscribed_kib.saturating_sub(rss_connected_kib) as f64 * 1024.0
                / subscribed.max(1) as f64,
        ),
    };
    drop(conns);
    Ok(result)
}

/// Opens `count` connections, 64 attempts at a time.
async fn open_all(connector: &Connector, count: usize) -> Result<Vec<Ws>> {
    let mut out = Vec::with_capacity(count);
    let mut index = 1;
    while out.len() < count {
        let n = (count - out.len()).min(64);
        let opened =
            futures_util::future::join_all((index..index + n).map(|i| connector.open(i, None)))
                .await;
        index += n;
        for ws in opened {
            out.push(ws?);
        }
    }
    Ok(out)
}

/// Subscribes one connection to every channel; answers how many succeeded.
async fn subscribe_all(ws: &mut Ws, channels: &[String]) -> Result<usize> {
    for (i, channel) in channels.iter().enumerate() {
        let id = 10 + i as u64;
        let frame = serde_json::json!({"id": id, "type": "subscribe", "channel": channel});
        ws.send(Message::text(frame.to_string())).await?;
    }
    let mut replies = 0;
    while replies < channels.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| anyhow!("no subscribe reply within 10 s"))?
            .ok_or_else(|| anyhow!("closed while subscribing"))??;
        let Message::Text(text) = msg else { continue };
        let reply: serde_json::Value = serde_json::from_str(text.as_str())?;
        match reply["type"].as_str() {
            Some("subscribed") => replies += 1,
            Some("error") => bail!("subscribe refused: {text}"),
            _ => {}
        }
    }
    Ok(replies)
}
