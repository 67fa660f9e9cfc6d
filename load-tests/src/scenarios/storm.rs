//! `storm`: a reconnection storm. `--clients` WebSockets subscribe to one
//! channel on node A (`--url`) while a publisher sends `--rate`
//! publications per second through another node's REST API
//! (`--publish-url`) for the whole run. After a warm-up, `--exec-restart`
//! restarts node A; every client sees its socket close, waits a random
//! delay spread uniformly over `--spread-secs`, reconnects (retrying with a
//! short back-off while A is down) and resubscribes with `recover` from the
//! last position it processed.
//!
//! Measured: how long until every client is resubscribed (from the restart
//! and from A's readiness), how many recoveries succeeded, whether each
//! client's offsets stayed contiguous (gaps = lost, offsets not above the
//! last = duplicates) and ended at the channel's final offset, hub A's CPU
//! during the storm and its memory after, and delivery latency before,
//! during and after the storm.
//!
//! Everything runs in this one process (the sandbox's 20,000 open files
//! fit 19,000 sockets); per-client state lives in its task, shared figures
//! are atomics and sharded histograms, and no queue is unbounded.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{secs, server_rss};
use crate::cli::ServerArgs;
use crate::http::{self, HttpConn};
use crate::net::{self, SourceAddrs, Target};
use crate::stats::{self, Percentiles, ShardedHistogram, round3, unix_nanos};
use crate::ws::{PubData, Ws};

/// Options of `relais-load storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// `--url` is node A: the clients connect there and `--exec-restart`
    /// restarts it; `--server-pid` is its PID before the restart.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Node whose REST API the publications go through (node B), so
    /// publishing goes on while A is down. Default: `--url`.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// WebSocket clients subscribed to the channel on node A.
    #[arg(long, default_value_t = 19_000)]
    pub clients: usize,
    /// Channel the clients subscribe to and the publisher targets.
    #[arg(long, default_value = "broadcast")]
    pub channel: String,
    /// Publications per second, from once every client is subscribed until
    /// `--after-secs` after the storm.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Keep-alive HTTP connections the publisher spreads its requests over.
    #[arg(long, default_value_t = 4)]
    pub publish_connections: usize,
    /// Publishing before the restart (latency baseline).
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Shell command (`sh -c`) that restarts node A and exits once it is
    /// ready again; the last line of its stdout must be the new PID.
    #[arg(long, value_name = "CMD")]
    pub exec_restart: String,
    /// Longest the restart command may run.
    #[arg(long, default_value_t = 120)]
    pub restart_timeout_secs: u64,
    /// Each client waits a random delay, uniform in 0..this, between
    /// seeing its socket close and its first reconnection attempt.
    #[arg(long, default_value_t = 5.0)]
    pub spread_secs: f64,
    /// First back-off after a failed reconnection attempt; doubles up to
    /// `--retry-max-ms`, times a random factor between 0.5 and 1.5.
    #[arg(long, default_value_t = 100)]
    pub retry_ms: u64,
    /// Longest back-off between reconnection attempts.
    #[arg(long, default_value_t = 1000)]
    pub retry_max_ms: u64,
    /// A client still not resubscribed this long after its socket closed
    /// gives up; the storm phase ends at the latest this long after the
    /// restart command returned.
    #[arg(long, default_value_t = 120)]
    pub storm_timeout_secs: u64,
    /// Publishing goes on this long after the last client resubscribed
    /// (latency after the storm).
    #[arg(long, default_value_t = 10)]
    pub after_secs: u64,
    /// After the last publication, longest wait for every client to reach
    /// the channel's final offset.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// Loopback source addresses to spread sockets over (127.0.0.2
    /// onwards); 0 lets the kernel pick.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Initial connection attempts in flight at once (the reconnections
    /// are paced by `--spread-secs` only, as real clients would be).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Bound for one attempt: TCP connect, upgrade, `connect`, `subscribe`.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Give up on initial connections not open after this long.
    #[arg(long, default_value_t = 180)]
    pub open_timeout_secs: u64,
    /// Seed of the reconnection delays (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Extra attempts for a client's first connection.
const OPEN_RETRIES: u32 = 3;
/// How many connection errors are printed before going quiet.
const LOGGED_ERRORS: u64 = 5;
const HISTOGRAM_SHARDS: usize = 16;
/// Largest restart-command output kept (only its last line matters).
const HOOK_OUTPUT_LIMIT: u64 = 64 * 1024;

/// Run phases, in order; latency is recorded per phase.
const WARMUP: u8 = 0;
const STORM: u8 = 1;
const AFTER: u8 = 2;

/// Client states (one `AtomicU8` each) the coordinator reads.
const OPENING: u8 = 0;
const CONNECTED: u8 = 1;
const DOWN: u8 = 2;
const GAVE_UP: u8 = 3;
const OPEN_FAILED: u8 = 4;

/// "Not set" for instants kept as nanoseconds since the run's start.
const UNSET: u64 = u64::MAX;

/// Small read buffer, immediate writes (as `ws.rs` does): at 19,000
/// sockets tungstenite's 128 KiB default would cost gigabytes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// splitmix64: reproducible per-client randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Any frame the clients look at: replies (`connected`, `subscribed`,
/// `error`) and `pub`.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
    offset: Option<u64>,
    recovered: Option<bool>,
    data: Option<PubData>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// A client's place in the channel's stream.
#[derive(Default)]
struct Position {
    epoch: String,
    /// Offset of the last publication processed.
    offset: u64,
    /// Publications up to this offset are replays (or were already current
    /// at subscribe time): not counted as live deliveries for latency.
    live_after: u64,
}

/// Request id of a resubscription on a live connection.
const RESYNC_ID: u64 = 3;

/// What a frame on an established connection asks the client to do.
enum Action {
    None,
    Resubscribe,
    Reconnect,
}

/// How a connection ended.
enum Ended {
    Stop,
    Close4007,
    CloseOther,
    Reset,
}

/// Counters shared by all clients.
#[derive(Default)]
struct Counters {
    open_failed: AtomicU64,
    closes_4007: AtomicU64,
    closes_other: AtomicU64,
    resets: AtomicU64,
    /// Clients resubscribed at least once after the restart began.
    resubscribed: AtomicU64,
    gave_up: AtomicU64,
    /// Disconnects of clients that had already resubscribed after the
    /// restart (should be 0).
    disconnects_after_resubscribe: AtomicU64,
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
    max_attempts: AtomicU64,
    recovered_true: AtomicU64,
    recovered_false: AtomicU64,
    /// `subscribed` replies to a `recover` without a `recovered` field.
    recovered_missing: AtomicU64,
    received: AtomicU64,
    replayed: AtomicU64,
    duplicates: AtomicU64,
    /// Offsets skipped between two publications a client processed.
    lost: AtomicU64,
    gap_events: AtomicU64,
    /// Publications skipped by a `recovered: false` (reply offset beyond
    /// the client's position in the same epoch).
    lost_unrecovered: AtomicU64,
    epoch_changes: AtomicU64,
    /// Server-initiated `unsubscribed` (a gap the hub detected).
    resyncs: AtomicU64,
    bad_frames: AtomicU64,
    errors_logged: AtomicU64,
}

/// Instants as nanoseconds since the run's start, min / max over clients.
struct Marks {
    first_close: AtomicU64,
    last_close: AtomicU64,
    first_resubscribed: AtomicU64,
    last_resubscribed: AtomicU64,
}

struct Ctx {
    target: Arc<Target>,
    token: Arc<str>,
    channel: Arc<str>,
    sources: SourceAddrs,
    attempt_timeout: Duration,
    spread: Duration,
    retry: Duration,
    retry_max: Duration,
    give_up_after: Duration,
    seed: u64,
    t0: Instant,
    phase: AtomicU8,
    /// Set once the initial opening is over; later connections close.
    opening_over: AtomicBool,
    permits: Semaphore,
    status: Vec<AtomicU8>,
    /// Each client's last processed offset.
    last_offsets: Vec<AtomicU64>,
    initial_min: AtomicU64,
    initial_max: AtomicU64,
    counters: Counters,
    marks: Marks,
    latency: [ShardedHistogram; 3],
    /// Reconnection overhead: resubscribed minus the planned attempt time.
    overhead: ShardedHistogram,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn log_error(&self, what: impl FnOnce() -> String) {
        if self.counters.errors_logged.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
            log!("storm: {}", what());
        }
    }

    /// Opens a connection, authenticates and subscribes (with `recover`
    /// from `pos` when `recover` is set), bounded by the attempt timeout.
    /// Publications arriving before the `subscribed` reply are processed.
    async fn open(&self, index: usize, pos: &mut Position, recover: bool) -> Result<Ws> {
        tokio::time::timeout(self.attempt_timeout, self.try_open(index, pos, recover))
            .await
            .unwrap_or_else(|_| Err(anyhow!("connection attempt timed out")))
    }

    async fn try_open(&self, index: usize, pos: &mut Position, recover: bool) -> Result<Ws> {
        let stream = net::connect(
            &self.target,
            self.sources.for_index(index),
            self.attempt_timeout,
        )
        .await?;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            self.target.ws_url.as_str(),
            stream,
            Some(ws_config()),
        )
        .await
        .context("WebSocket handshake")?;
        let connect = serde_json::json!({"id": 1, "type": "connect", "token": &*self.token});
        send(&mut ws, &connect).await?;
        let mut sub = serde_json::json!({"id": 2, "type": "subscribe", "channel": &*self.channel});
        if recover {
            sub["recover"] = serde_json::json!({"epoch": pos.epoch, "offset": pos.offset});
        }
        // Pipelined: replies come in command order.
        send(&mut ws, &sub).await?;
        loop {
            let msg = ws
                .next()
                .await
                .ok_or_else(|| anyhow!("connection closed before `subscribed`"))?
                .context("read reply")?;
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(frame) => bail!("closed before `subscribed`: {frame:?}"),
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
                self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match (frame.kind.as_ref(), frame.id) {
                ("pub", _) => self.on_pub(index, pos, &frame),
                ("error", _) => bail!(
                    "server answered error ({}): {}",
                    frame.code.as_deref().unwrap_or("-"),
                    frame.message.as_deref().unwrap_or("-")
                ),
                ("subscribed", Some(2)) => {
                    self.on_subscribed(index, pos, &frame, recover);
                    return Ok(ws);
                }
                _ => {}
            }
        }
    }

    /// Applies a `subscribed` reply to the client's position (protocol §5).
    fn on_subscribed(&self, index: usize, pos: &mut Position, frame: &Frame<'_>, recover: bool) {
        let c = &self.counters;
        let epoch = frame.epoch.as_deref().unwrap_or_default();
        let offset = frame.offset.unwrap_or(0);
        if !recover {
            pos.epoch = epoch.to_owned();
            pos.offset = offset;
            pos.live_after = offset;
            self.initial_min.fetch_min(offset, Ordering::Relaxed);
            self.initial_max.fetch_max(offset, Ordering::Relaxed);
            self.last_offsets[index].store(offset, Ordering::Relaxed);
            return;
        }
        match frame.recovered {
            Some(true) => {
                c.recovered_true.fetch_add(1, Ordering::Relaxed);
                if epoch != pos.epoch {
                    // Recovered into another epoch: a hub bug; start over.
                    c.epoch_changes.fetch_add(1, Ordering::Relaxed);
                    pos.epoch = epoch.to_owned();
                    pos.offset = offset;
                }
                // Keep our own position: the missed publications follow.
                pos.live_after = offset;
            }
            recovered => {
                if recovered.is_some() {
                    c.recovered_false.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.recovered_missing.fetch_add(1, Ordering::Relaxed);
                }
                if epoch == pos.epoch {
                    if offset > pos.offset {
                        c.lost_unrecovered
                            .fetch_add(offset - pos.offset, Ordering::Relaxed);
                    }
                } else {
                    c.epoch_changes.fetch_add(1, Ordering::Relaxed);
                }
                pos.epoch = epoch.to_owned();
                pos.offset = offset;
                pos.live_after = offset;
            }
        }
        self.last_offsets[index].store(pos.offset, Ordering::Relaxed);
    }

    /// Handles a frame on an established connection.
    fn on_text(&self, index: usize, pos: &mut Position, text: &str) -> Action {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
            self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
            return Action::None;
        };
        match (frame.kind.as_ref(), frame.id) {
            ("pub", _) => self.on_pub(index, pos, &frame),
            // The hub saw a gap on the live subscription (protocol §5):
            // resubscribe with `recover` on the same connection.
            ("unsubscribed", None) => {
                self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                return Action::Resubscribe;
            }
            ("subscribed", Some(RESYNC_ID)) => self.on_subscribed(index, pos, &frame, true),
            ("error", Some(RESYNC_ID)) => {
                self.log_error(|| {
                    format!(
                        "client {index}: resubscription refused ({}); reconnecting",
                        frame.code.as_deref().unwrap_or("-")
                    )
                });
                return Action::Reconnect;
            }
            _ => {}
        }
        Action::None
    }

    /// Checks one `pub` against the client's position: contiguous offsets,
    /// no duplicates; times live ones.
    fn on_pub(&self, index: usize, pos: &mut Position, frame: &Frame<'_>) {
        let c = &self.counters;
        let (Some(epoch), Some(offset)) = (frame.epoch.as_deref(), frame.offset) else {
            c.bad_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        c.received.fetch_add(1, Ordering::Relaxed);
        if epoch != pos.epoch {
            c.epoch_changes.fetch_add(1, Ordering::Relaxed);
            pos.epoch = epoch.to_owned();
            pos.offset = offset;
            pos.live_after = 0;
            self.last_offsets[index].store(offset, Ordering::Relaxed);
            return;
        }
        if offset <= pos.offset {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if offset > pos.offset + 1 {
            c.lost.fetch_add(offset - pos.offset - 1, Ordering::Relaxed);
            c.gap_events.fetch_add(1, Ordering::Relaxed);
        }
        pos.offset = offset;
        self.last_offsets[index].store(offset, Ordering::Relaxed);
        if offset <= pos.live_after {
            c.replayed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match &frame.data {
            Some(data) => {
                let micros = unix_nanos().saturating_sub(data.ts) / 1_000;
                let phase = usize::from(self.phase()).min(self.latency.len() - 1);
                self.latency[phase].record_us(index, micros);
            }
            None => {
                c.bad_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The back-off after `failures` failed attempts, with jitter.
    fn backoff(&self, failures: u32, rng: &mut Rng) -> Duration {
        let base = self
            .retry
            .saturating_mul(1 << failures.min(16))
            .min(self.retry_max);
        base.mul_f64(0.5 + rng.unit())
    }
}

async fn send(ws: &mut Ws, frame: &serde_json::Value) -> Result<()> {
    ws.send(Message::text(frame.to_string()))
        .await
        .context("send request frame")
}

/// Reads one connection until it ends or `stop` flips.
async fn read_until_closed(
    ctx: &Ctx,
    index: usize,
    ws: &mut Ws,
    pos: &mut Position,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        tokio::select! {
            // Also fires when the sender is gone, which likewise means stop.
            _ = stop.changed() => return Ended::Stop,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match ctx.on_text(index, pos, text.as_str()) {
                    Action::None => {}
                    Action::Resubscribe => {
                        let sub = serde_json::json!({
                            "id": RESYNC_ID, "type": "subscribe", "channel": &*ctx.channel,
                            "recover": {"epoch": pos.epoch, "offset": pos.offset},
                        });
                        if send(ws, &sub).await.is_err() {
                            return Ended::Reset;
                        }
                    }
                    Action::Reconnect => return Ended::Reset,
                },
                Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 4007 => {
                    return Ended::Close4007;
                }
                Some(Ok(Message::Close(_))) => return Ended::CloseOther,
                Some(Err(_)) | None => return Ended::Reset,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One client: connects, then reads; after every disconnect waits its
/// random delay and reconnects with `recover` until it succeeds, gives up
/// or the run stops.
async fn run_client(ctx: Arc<Ctx>, index: usize, mut stop: watch::Receiver<bool>) {
    let mut rng = Rng::new(ctx.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut pos = Position::default();
    let status = &ctx.status[index];
    let c = &ctx.counters;

    let opened = {
        let Ok(_permit) = ctx.permits.acquire().await else {
            return;
        };
        let mut attempt = 0;
        loop {
            match ctx.open(index, &mut pos, false).await {
                Ok(ws) => break Some(ws),
                Err(e) if attempt >= OPEN_RETRIES || *stop.borrow() => {
                    ctx.log_error(|| format!("client {index} failed to open: {e:#}"));
                    break None;
                }
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
    };
    let mut ws = match opened {
        Some(ws) if !ctx.opening_over.load(Ordering::Acquire) => ws,
        _ => {
            status.store(OPEN_FAILED, Ordering::Release);
            c.open_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    status.store(CONNECTED, Ordering::Release);

    let mut resubscribed_after_restart = false;
    loop {
        let ended = read_until_closed(&ctx, index, &mut ws, &mut pos, &mut stop).await;
        let closed_at = Instant::now();
        match ended {
            Ended::Stop => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            Ended::Close4007 => c.closes_4007.fetch_add(1, Ordering::Relaxed),
            Ended::CloseOther => c.closes_other.fetch_add(1, Ordering::Relaxed),
            Ended::Reset => c.resets.fetch_add(1, Ordering::Relaxed),
        };
        status.store(DOWN, Ordering::Release);
        let in_storm = ctx.phase() >= STORM;
        if in_storm {
            let at = ctx.now_ns();
            ctx.marks.first_close.fetch_min(at, Ordering::Relaxed);
            ctx.marks.last_close.fetch_max(at, Ordering::Relaxed);
        }
        if resubscribed_after_restart {
            c.disconnects_after_resubscribe
                .fetch_add(1, Ordering::Relaxed);
        }

        let due = closed_at + ctx.spread.mul_f64(rng.unit());
        // Let tungstenite send its answer to the server's close frame while
        // we wait (the server waits up to a second for it), then drop.
        let flush_until = due.min(closed_at + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(flush_until, async { while ws.next().await.is_some() {} })
            .await;
        drop(ws);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(due) => {}
        }

        let give_up_at = closed_at + ctx.give_up_after;
        let mut failures = 0u32;
        let mut attempts = 0u64;
        ws = loop {
            if *stop.borrow() {
                return;
            }
            if Instant::now() >= give_up_at {
                status.store(GAVE_UP, Ordering::Release);
                c.gave_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            attempts += 1;
            c.attempts.fetch_add(1, Ordering::Relaxed);
            match ctx.open(index, &mut pos, true).await {
                Ok(ws) => break ws,
                Err(e) => {
                    c.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    // Refused connections are expected while A is down.
                    if ctx.phase() == AFTER {
                        ctx.log_error(|| format!("client {index} reconnect: {e:#}"));
                    }
                    let wait = ctx.backoff(failures, &mut rng);
                    failures += 1;
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        status.store(CONNECTED, Ordering::Release);
        c.max_attempts.fetch_max(attempts, Ordering::Relaxed);
        if in_storm && !resubscribed_after_restart {
            resubscribed_after_restart = true;
            let at = ctx.now_ns();
            ctx.marks
                .first_resubscribed
                .fetch_min(at, Ordering::Relaxed);
            ctx.marks.last_resubscribed.fetch_max(at, Ordering::Relaxed);
            ctx.overhead
                .record_us(index, (Instant::now() - due).as_micros() as u64);
            c.resubscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// --- publisher ----------------------------------------------------------------

#[derive(Default)]
struct PublishCounters {
    seq: AtomicU64,
    published: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    /// Highest offset the hub answered.
    max_offset: AtomicU64,
    errors_logged: AtomicU64,
}

/// Publishes `rate`/s of `{"seq","ts"}` until `stop` flips: a pacer hands
/// due times to `connections` sender tasks through a queue of one second
/// of publications; beyond it, publications are dropped and counted.
async fn publish_until(
    target: Arc<Target>,
    key: Arc<str>,
    channel: Arc<str>,
    rate: u32,
    connections: usize,
    counters: Arc<PublishCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = connections.max(1);
    let (jobs_tx, jobs_rx) = mpsc::channel::<u64>(connections.max(rate as usize));
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let mut senders = JoinSet::new();
    for _ in 0..connections {
        let (jobs, counters) = (Arc::clone(&jobs_rx), Arc::clone(&counters));
        let (target, key, channel) = (Arc::clone(&target), Arc::clone(&key), Arc::clone(&channel));
        senders.spawn(async move {
            let mut conn: Option<HttpConn> = None;
            loop {
                let job = jobs.lock().await.recv().await;
                let Some(ts) = job else { break };
                publish_one(&target, &key, &channel, &counters, &mut conn, ts).await;
            }
        });
    }
    let rate = rate.clamp(1, 1000);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                if jobs_tx.try_send(unix_nanos()).is_err() {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    drop(jobs_tx);
    if tokio::time::timeout(http::REQUEST_TIMEOUT * 2, async {
        while senders.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        log!("storm: publishers did not finish in time; aborting them");
        senders.abort_all();
    }
}

#[derive(Deserialize)]
struct PublishedReply {
    offset: Option<u64>,
}

async fn publish_one(
    target: &Target,
    key: &str,
    channel: &str,
    counters: &PublishCounters,
    conn: &mut Option<HttpConn>,
    ts: u64,
) {
    let error = |what: String| {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        if counters.errors_logged.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
            log!("storm: publish error: {what}");
        }
    };
    if conn.as_ref().is_none_or(HttpConn::is_closed) {
        match HttpConn::connect(target).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return error(format!("connect: {e:#}")),
        }
    }
    let Some(c) = conn.as_mut() else { return };
    let seq = counters.seq.fetch_add(1, Ordering::Relaxed);
    let data = format!(r#"{{"seq":{seq},"ts":{ts}}}"#);
    match c
        .post_json(
            "/api/v1/publish",
            Some(key),
            http::publish_body(channel, &data),
        )
        .await
    {
        Ok((status, body)) if status.is_success() => {
            counters.published.fetch_add(1, Ordering::Relaxed);
            if let Ok(PublishedReply {
                offset: Some(offset),
            }) = serde_json::from_slice(&body)
            {
                counters.max_offset.fetch_max(offset, Ordering::Relaxed);
            }
        }
        Ok((status, body)) => error(format!("{status}: {}", String::from_utf8_lossy(&body))),
        Err(e) => {
            error(format!("{e:#}"));
            *conn = None;
        }
    }
}

// --- restart hook and CPU ------------------------------------------------------

/// Runs the restart command and answers the PID on the last line of its
/// stdout. Its stderr is ours; its stdout is read (bounded) for the PID.
async fn run_restart(command: &str, timeout: Duration) -> Result<u32> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => std::process::Stdio::from(fd),
            Err(_) => std::process::Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .context("cannot run --exec-restart")?;
    let stdout = child.stdout.take().context("restart command stdout")?;
    let run = async {
        let mut out = Vec::new();
        stdout
            .take(HOOK_OUTPUT_LIMIT)
            .read_to_end(&mut out)
            .await
            .context("read restart command output")?;
        let status = child.wait().await.context("wait for restart command")?;
        anyhow::Ok((status, out))
    };
    let (status, out) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("restart command still running after {timeout:?}"))??;
    let out = String::from_utf8_lossy(&out);
    if !status.success() {
        bail!("restart command exited with {status}");
    }
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim()
        .parse()
        .with_context(|| format!("restart command's last output line {last:?} is not a PID"))
}

/// Samples a process's CPU time until `stop` flips; answers the highest
/// use over any window of about one second, in % of one core.
async fn sample_cpu_peak(pid: u32, mut stop: watch::Receiver<bool>) -> Option<f64> {
    let mut samples: VecDeque<(Instant, f64)> = VecDeque::with_capacity(8);
    let mut peak: Option<f64> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.changed() => return peak,
            now = ticker.tick() => {
                let Ok(cpu) = stats::cpu_secs(pid) else { return peak };
                // Keep just over one second of samples.
                while samples.len() > 1 && now - samples[1].0 >= Duration::from_secs(1) {
                    samples.pop_front();
                }
                if let Some(&(t, c)) = samples.front() {
                    let span = (now - t).as_secs_f64();
                    if span >= 0.9 {
                        let pct = 100.0 * (cpu - c) / span;
                        peak = Some(peak.map_or(pct, |p: f64| p.max(pct)));
                    }
                }
                samples.push_back((now, cpu));
            }
        }
    }
}

// --- result -------------------------------------------------------------------

#[derive(Serialize)]
struct Latency {
    count: u64,
    #[serde(flatten)]
    percentiles: Percentiles,
}

impl Latency {
    fn of(hist: &Histogram<u64>) -> Self {
        Self {
            count: hist.len(),
            percentiles: Percentiles::of(hist),
        }
    }
}

#[derive(Serialize)]
struct StormResult {
    scenario: &'static str,
    clients: usize,
    /// Clients connected and subscribed before the restart.
    established: u64,
    open_failed: u64,
    connect_secs: f64,
    spread_secs: f64,
    rate: u32,
    /// Clients resubscribed after the restart.
    reconnected: u64,
    /// Established clients not resubscribed when the storm phase ended.
    failed: u64,
    gave_up: u64,
    all_resubscribed: bool,
    /// Last client resubscribed, counted from the restart command's start.
    storm_secs_from_restart: Option<f64>,
    /// The same, counted from node A's readiness (the restart command's
    /// exit; negative if every client was back before /readyz said so).
    storm_secs_from_ready: Option<f64>,
    /// The same, counted from the first close a client saw.
    storm_secs_from_first_close: Option<f64>,
    /// Milliseconds after the restart command's start.
    restart_ready_ms: f64,
    first_close_ms: Option<f64>,
    last_close_ms: Option<f64>,
    first_resubscribed_ms: Option<f64>,
    closes_4007: u64,
    closes_other: u64,
    resets: u64,
    disconnects_after_resubscribe: u64,
    attempts: u64,
    failed_attempts: u64,
    max_attempts: u64,
    /// Resubscribed minus the time the client planned its first attempt
    /// (its close plus its random delay): waiting for A plus retries plus
    /// the handshake.
    reconnect_overhead: Latency,
    recovered_true: u64,
    recovered_false: u64,
    #[serde(skip_serializing_if = "is_zero")]
    recovered_missing: u64,
    published: u64,
    publish_errors: u64,
    publish_dropped: u64,
    /// The channel's last offset after publishing (highest offset the
    /// publish answers gave).
    final_offset: u64,
    /// Offset the clients subscribed at (min and max over clients).
    initial_offset: u64,
    #[serde(skip_serializing_if = "is_zero")]
    initial_offset_spread: u64,
    /// Every client's expected publications: final − initial offset.
    expected_per_client: u64,
    received: u64,
    /// Publications replayed after a `recovered: true`.
    replayed: u64,
    duplicates: u64,
    /// Offsets a client skipped between two publications it got.
    lost: u64,
    gap_events: u64,
    lost_unrecovered: u64,
    epoch_changes: u64,
    /// Server-initiated `unsubscribed` frames (the hub saw a gap on a live
    /// subscription); the client resubscribed with `recover`.
    resyncs: u64,
    /// Connected clients whose last offset is the final offset after the
    /// drain, and those behind it.
    clients_complete: u64,
    clients_incomplete: u64,
    /// Σ over the incomplete clients of (final − last offset).
    missing_at_end: u64,
    /// Clients still trying to reconnect when the run ended (not in the
    /// three figures above).
    down_at_end: u64,
    drain_secs: f64,
    bad_frames: u64,
    hub_old_pid: Option<u32>,
    hub_pid: u32,
    /// Hub A's CPU (utime + stime, all threads) from its readiness to the
    /// last resubscription, and in % of one core over that time.
    hub_cpu_secs_storm: Option<f64>,
    hub_cpu_pct_storm: Option<f64>,
    /// Highest use over ~1 s windows while the storm lasted.
    hub_cpu_peak_pct: Option<f64>,
    /// CPU the new process used from its start to its readiness.
    hub_cpu_secs_startup: Option<f64>,
    hub_rss_before_kib: Option<u64>,
    hub_rss_after_storm_kib: Option<u64>,
    hub_rss_end_kib: Option<u64>,
    /// This process's CPU over the same storm window (it shares the cores).
    generator_cpu_secs_storm: Option<f64>,
    generator_rss_kib: Option<u64>,
    latency_warmup: Latency,
    /// Live publications received while the storm lasted.
    latency_storm: Latency,
    latency_after: Latency,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn ms(ns: u64) -> Option<f64> {
    (ns != UNSET && ns != 0).then(|| round3(ns as f64 / 1e6))
}

// --- the run ------------------------------------------------------------------

pub async fn run(args: StormArgs) -> Result<Option<String>> {
    if args.clients == 0 || args.rate == 0 {
        bail!("--clients and --rate must be at least 1");
    }
    if !(args.spread_secs >= 0.0 && args.spread_secs.is_finite()) {
        bail!("--spread-secs must be a non-negative number");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let publish_target = match &args.publish_url {
        Some(url) => Arc::new(Target::resolve(url).await.context("--publish-url")?),
        None => Arc::clone(&target),
    };
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key: Arc<str> = http::create_publish_key(&publish_target, &token)
        .await?
        .into();
    let self_pid = std::process::id();

    let ctx = Arc::new(Ctx {
        sources: SourceAddrs::new(args.source_addrs, &target),
        target: Arc::clone(&target),
        token: token.into(),
        channel: args.channel.as_str().into(),
        attempt_timeout: secs(args.connect_timeout_secs),
        spread: Duration::from_secs_f64(args.spread_secs),
        retry: Duration::from_millis(args.retry_ms.max(1)),
        retry_max: Duration::from_millis(args.retry_max_ms.max(args.retry_ms.max(1))),
        give_up_after: secs(args.storm_timeout_secs),
        seed: args.seed.unwrap_or_else(unix_nanos),
        t0: Instant::now(),
        phase: AtomicU8::new(WARMUP),
        opening_over: AtomicBool::new(false),
        permits: Semaphore::new(args.concurrency.max(1)),
        status: (0..args.clients).map(|_| AtomicU8::new(OPENING)).collect(),
        last_offsets: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        initial_min: AtomicU64::new(u64::MAX),
        initial_max: AtomicU64::new(0),
        counters: Counters::default(),
        marks: Marks {
            first_close: AtomicU64::new(UNSET),
            last_close: AtomicU64::new(0),
            first_resubscribed: AtomicU64::new(UNSET),
            last_resubscribed: AtomicU64::new(0),
        },
        latency: std::array::from_fn(|_| ShardedHistogram::new(HISTOGRAM_SHARDS)),
        overhead: ShardedHistogram::new(HISTOGRAM_SHARDS),
    });

    // Open every client.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for index in 0..args.clients {
        clients.spawn(run_client(Arc::clone(&ctx), index, stop_rx.clone()));
    }
    let opened = Instant::now();
    let open_deadline = opened + secs(args.open_timeout_secs);
    let count = |state: u8| {
        ctx.status
            .iter()
            .filter(|s| s.load(Ordering::Acquire) == state)
            .count() as u64
    };
    let mut last_log = Instant::now();
    loop {
        let (connected, failed) = (count(CONNECTED), count(OPEN_FAILED));
        if connected + failed >= args.clients as u64 {
            break;
        }
        if Instant::now() >= open_deadline {
            log!(
                "storm: open timeout: {connected}/{} connected",
                args.clients
            );
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(2) {
            log!(
                "storm: opening: {connected}/{} connected, {failed} failed ({:.1}s)",
                args.clients,
                opened.elapsed().as_secs_f64()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.opening_over.store(true, Ordering::Release);
    let connect_secs = opened.elapsed().as_secs_f64();
    // Connections that completed after the check count as failed by
    // themselves; everything CONNECTED now is established.
    let established = count(CONNECTED);
    if established == 0 {
        bail!("no client could connect");
    }
    log!(
        "storm: {established} subscribed in {connect_secs:.1}s; publishing {}/s through {}, warm-up {}s",
        args.rate,
        publish_target.authority,
        args.warmup_secs
    );

    // Publish for the rest of the run.
    let publish_counters = Arc::new(PublishCounters::default());
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(publish_until(
        Arc::clone(&publish_target),
        Arc::clone(&key),
        Arc::clone(&ctx.channel),
        args.rate,
        args.publish_connections,
        Arc::clone(&publish_counters),
        pub_stop_rx,
    ));
    tokio::time::sleep(secs(args.warmup_secs)).await;

    // Restart node A.
    let hub_old_pid = args.server.server_pid;
    let hub_rss_before_kib = server_rss(hub_old_pid);
    log!("storm: restarting node A");
    let restart_started = Instant::now();
    let restart_started_ns = ctx.now_ns();
    ctx.phase.store(STORM, Ordering::Relaxed);
    let gen_cpu_start = stats::cpu_secs(self_pid).ok();
    let hub_pid = match run_restart(&args.exec_restart, secs(args.restart_timeout_secs)).await {
        Ok(pid) => pid,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = pub_stop_tx.send(true);
            return Err(e);
        }
    };
    let ready_at = Instant::now();
    let restart_ready_ms = round3((ready_at - restart_started).as_secs_f64() * 1e3);
    let hub_cpu_at_ready = stats::cpu_secs(hub_pid).ok();
    log!(
        "storm: node A ready again (pid {hub_pid}) after {restart_ready_ms:.0} ms; waiting for the clients"
    );
    let (cpu_stop_tx, cpu_stop_rx) = watch::channel(false);
    let cpu_peak = tokio::spawn(sample_cpu_peak(hub_pid, cpu_stop_rx));

    // Wait until every established client is back (or gave up).
    let storm_deadline = ready_at + secs(args.storm_timeout_secs);
    let mut last_log = Instant::now();
    loop {
        let back = ctx.counters.resubscribed.load(Ordering::Relaxed);
        let gave_up = ctx.counters.gave_up.load(Ordering::Relaxed);
        if back + gave_up >= established {
            break;
        }
        if Instant::now() >= storm_deadline {
            log!("storm: timeout: {back}/{established} resubscribed");
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(2) {
            log!("storm: {back}/{established} resubscribed, {gave_up} gave up");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let storm_end = Instant::now();
    let hub_cpu_at_end = stats::cpu_secs(hub_pid).ok();
    let gen_cpu_end = stats::cpu_secs(self_pid).ok();
    let _ = cpu_stop_tx.send(true);
    let hub_cpu_peak_pct = cpu_peak.await.ok().flatten().map(round3);
    let hub_rss_after_storm_kib = server_rss(Some(hub_pid));
    ctx.phase.store(AFTER, Ordering::Relaxed);
    let reconnected = ctx.counters.resubscribed.load(Ordering::Relaxed);
    log!(
        "storm: {reconnected}/{established} resubscribed {:.2}s after the restart began; publishing {}s more",
        (storm_end - restart_started).as_secs_f64(),
        args.after_secs
    );

    tokio::time::sleep(secs(args.after_secs)).await;
    let _ = pub_stop_tx.send(true);
    let _ = publisher.await;
    let published = publish_counters.published.load(Ordering::Relaxed);
    let final_offset = publish_counters.max_offset.load(Ordering::Relaxed);

    // Drain: every client connected should reach the final offset (those
    // still reconnecting are counted apart).
    let drain_start = Instant::now();
    let live = |i: usize| ctx.status[i].load(Ordering::Acquire) == CONNECTED;
    while drain_start.elapsed() < secs(args.drain_secs) {
        let behind = (0..args.clients)
            .any(|i| live(i) && ctx.last_offsets[i].load(Ordering::Relaxed) < final_offset);
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let (mut complete, mut incomplete, mut missing) = (0u64, 0u64, 0u64);
    for i in 0..args.clients {
        if !live(i) {
            continue;
        }
        let last = ctx.last_offsets[i].load(Ordering::Relaxed);
        if last >= final_offset {
            complete += 1;
        } else {
            incomplete += 1;
            missing += final_offset - last;
        }
    }
    let down_at_end = count(DOWN);
    let hub_rss_end_kib = server_rss(Some(hub_pid));
    let generator_rss_kib = stats::rss_kib(self_pid).ok();

    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(20), async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        log!("storm: clients did not close in time; aborting them");
        clients.abort_all();
    }

    let c = &ctx.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mark = |a: &AtomicU64| {
        let v = load(a);
        (v != UNSET && v != 0).then_some(v)
    };
    let since = |from: u64, to: Option<u64>| to.map(|to| round3((to as f64 - from as f64) / 1e9));
    let ready_ns = restart_started_ns + (ready_at - restart_started).as_nanos() as u64;
    let last_resub = mark(&ctx.marks.last_resubscribed);
    let first_close = mark(&ctx.marks.first_close);
    let all_back = reconnected >= established;
    let rel_ms = |a: &AtomicU64| mark(a).and_then(|v| ms(v.saturating_sub(restart_started_ns)));
    let hub_cpu_secs_storm = match (hub_cpu_at_ready, hub_cpu_at_end) {
        (Some(a), Some(b)) => Some(round3(b - a)),
        _ => None,
    };
    let storm_window = (storm_end - ready_at).as_secs_f64();
    let initial_min = load(&ctx.initial_min).min(load(&ctx.initial_max));
    let initial_max = load(&ctx.initial_max);
    let result = StormResult {
        scenario: "storm",
        clients: args.clients,
        established,
        open_failed: args.clients as u64 - established,
        connect_secs: round3(connect_secs),
        spread_secs: args.spread_secs,
        rate: args.rate,
        reconnected,
        failed: established.saturating_sub(reconnected),
        gave_up: load(&c.gave_up),
        all_resubscribed: all_back,
        storm_secs_from_restart: since(restart_started_ns, last_resub).filter(|_| all_back),
        storm_secs_from_ready: last_resub
            .filter(|_| all_back)
            .map(|t| round3((t as f64 - ready_ns as f64) / 1e9)),
        storm_secs_from_first_close: first_close
            .and_then(|f| since(f, last_resub))
            .filter(|_| all_back),
        restart_ready_ms,
        first_close_ms: rel_ms(&ctx.marks.first_close),
        last_close_ms: rel_ms(&ctx.marks.last_close),
        first_resubscribed_ms: rel_ms(&ctx.marks.first_resubscribed),
        closes_4007: load(&c.closes_4007),
        closes_other: load(&c.closes_other),
        resets: load(&c.resets),
        disconnects_after_resubscribe: load(&c.disconnects_after_resubscribe),
        attempts: load(&c.attempts),
        failed_attempts: load(&c.failed_attempts),
        max_attempts: load(&c.max_attempts),
        reconnect_overhead: Latency::of(&ctx.overhead.merged()),
        recovered_true: load(&c.recovered_true),
        recovered_false: load(&c.recovered_false),
        recovered_missing: load(&c.recovered_missing),
        published,
        publish_errors: load(&publish_counters.errors),
        publish_dropped: load(&publish_counters.dropped),
        final_offset,
        initial_offset: initial_min,
        initial_offset_spread: initial_max - initial_min,
        expected_per_client: final_offset.saturating_sub(initial_min),
        received: load(&c.received),
        replayed: load(&c.replayed),
        duplicates: load(&c.duplicates),
        lost: load(&c.lost),
        gap_events: load(&c.gap_events),
        lost_unrecovered: load(&c.lost_unrecovered),
        epoch_changes: load(&c.epoch_changes),
        resyncs: load(&c.resyncs),
        clients_complete: complete,
        clients_incomplete: incomplete,
        missing_at_end: missing,
        down_at_end,
        drain_secs: round3(drain_secs),
        bad_frames: load(&c.bad_frames),
        hub_old_pid,
        hub_pid,
        hub_cpu_secs_storm,
        hub_cpu_pct_storm: hub_cpu_secs_storm
            .filter(|_| storm_window > 0.0)
            .map(|cpu| round3(100.0 * cpu / storm_window)),
        hub_cpu_peak_pct,
        hub_cpu_secs_startup: hub_cpu_at_ready.map(round3),
        hub_rss_before_kib,
        hub_rss_after_storm_kib,
        hub_rss_end_kib,
        generator_cpu_secs_storm: match (gen_cpu_start, gen_cpu_end) {
            (Some(a), Some(b)) => Some(round3(b - a)),
            _ => None,
        },
        generator_rss_kib,
        latency_warmup: Latency::of(&ctx.latency[usize::from(WARMUP)].merged()),
        latency_storm: Latency::of(&ctx.latency[usize::from(STORM)].merged()),
        latency_after: Latency::of(&ctx.latency[usize::from(AFTER)].merged()),
    };
    Ok(Some(serde_json::to_string(&result)?))
}
