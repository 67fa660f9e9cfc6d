//! `notify-fanout`: notification triggers to every seeded user of the
//! tenant, each user connected on its own WebSocket and subscribed to its
//! personal channel `user:<id>`.
//!
//! The triggers go out one after another through `POST /api/v1/notifications`
//! (recipients `all`, the admin as actor so only the seeded users are
//! reached). Each carries `{"bench":{"trigger":k,"ts":<unix ns at send>}}` in
//! its payload, which the hub copies into every `notification.created` event,
//! so each recipient times its event from the moment the trigger request was
//! sent. Per trigger this gives the time to the last recipient (the figure
//! the target is about) and the spread across recipients; across the run it
//! checks that every recipient got exactly one event per trigger and that
//! the unread count in the events moves by one each time.
//!
//! Connections live in worker processes (at least one, more with
//! `--workers`), each holding every K-th user: they print `ready` once
//! subscribed, `complete` each time all their users got a trigger, and
//! their tallies on `stop`. The parent sends the next trigger once every
//! worker reported the previous one complete (or its timeout passed).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{is_zero, secs, server_rss};
use crate::cli::NotifyFanoutArgs;
use crate::http::{self, HttpConn};
use crate::mint::{self, Minter};
use crate::net::{SourceAddrs, Target};
use crate::stats::{
    self, Buckets, Percentiles, new_histogram, quantile, record_us, round3, unix_nanos,
};
use crate::workers::{self, WorkerProcess};
use crate::ws::{Connector, Ws};

/// Environment variable carrying the tenant id to the workers.
const TENANT_ENV: &str = "RELAIS_LOAD_TENANT_ID";
/// Connection errors a worker prints before going quiet.
const LOGGED_ERRORS: u64 = 5;
/// Extra slack on top of scenario-derived waits.
const SLACK: Duration = Duration::from_secs(30);

/// Worker → parent events, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Ready {
        established: u64,
        failed: u64,
    },
    /// Every connection of the worker received trigger `trigger`.
    Complete {
        trigger: usize,
    },
    Done(Box<WorkerReport>),
}

/// What one worker's connections received.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerReport {
    established: u64,
    failed: u64,
    /// Connections the server closed (or that broke) during the run.
    disconnects: u64,
    /// Text frames that were not JSON, or `pub` frames without data.
    bad_frames: u64,
    /// Events on the personal channels other than this run's
    /// `notification.created` (none are expected).
    other_events: u64,
    /// Copies beyond the first of one trigger's event on one connection.
    duplicates: u64,
    /// (connection, trigger) pairs with no event.
    missing: u64,
    /// Events whose `counts.unread` did not grow by exactly one per trigger.
    counts_mismatch: u64,
    triggers: Vec<TriggerTally>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TriggerTally {
    /// Connections that received the trigger's event.
    received: u64,
    /// Latency of each connection's first copy, in µs.
    latency: Buckets,
}

impl WorkerReport {
    fn merge(&mut self, other: WorkerReport) {
        self.established += other.established;
        self.failed += other.failed;
        self.disconnects += other.disconnects;
        self.bad_frames += other.bad_frames;
        self.other_events += other.other_events;
        self.duplicates += other.duplicates;
        self.missing += other.missing;
        self.counts_mismatch += other.counts_mismatch;
        if self.triggers.len() < other.triggers.len() {
            self.triggers
                .resize_with(other.triggers.len(), TriggerTally::default);
        }
        for (mine, theirs) in self.triggers.iter_mut().zip(other.triggers) {
            mine.received += theirs.received;
            mine.latency.0.extend(theirs.latency.0);
        }
    }
}

// ---------------------------------------------------------------- worker side

/// The parts of a `pub` frame on `user:<id>` that matter here; serde skips
/// the rest (the notification's texts, the other counters).
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<LiveEvent<'a>>,
}

#[derive(Deserialize)]
struct LiveEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    notification: Option<NotificationPart>,
    counts: Option<CountsPart>,
}

#[derive(Deserialize)]
struct NotificationPart {
    data: Option<PayloadPart>,
}

#[derive(Deserialize)]
struct PayloadPart {
    bench: Option<Marker>,
}

/// What the parent put in each trigger's payload.
#[derive(Deserialize)]
struct Marker {
    trigger: usize,
    ts: u64,
}

#[derive(Deserialize)]
struct CountsPart {
    unread: i64,
}

struct TriggerState {
    received: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

/// Shared by a worker's connection tasks.
struct Tally {
    triggers: usize,
    /// Set once every connection is open, before `ready` is printed, so
    /// before any trigger is sent.
    established: AtomicU64,
    /// Events received per connection and trigger, at `conn * triggers + k`.
    copies: Vec<AtomicU32>,
    per_trigger: Vec<TriggerState>,
    disconnects: AtomicU64,
    bad_frames: AtomicU64,
    other_events: AtomicU64,
    counts_mismatch: AtomicU64,
    errors_logged: AtomicU64,
}

impl Tally {
    fn new(connections: usize, triggers: usize) -> Self {
        Self {
            triggers,
            established: AtomicU64::new(0),
            copies: (0..connections * triggers)
                .map(|_| AtomicU32::new(0))
                .collect(),
            per_trigger: (0..triggers)
                .map(|_| TriggerState {
                    received: AtomicU64::new(0),
                    latency: Mutex::new(new_histogram()),
                })
                .collect(),
            disconnects: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            counts_mismatch: AtomicU64::new(0),
            errors_logged: AtomicU64::new(0),
        }
    }

    /// Handles one text frame of connection `conn`. `first` is the
    /// connection's first (trigger, unread count), the base of the counts
    /// check.
    fn on_text(&self, conn: usize, text: &str, first: &mut Option<(usize, i64)>) {
        let now = unix_nanos();
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
            self.bad_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if frame.kind != "pub" {
            return;
        }
        let Some(event) = frame.data else {
            self.bad_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let marker = (event.kind == "notification.created")
            .then_some(event.notification)
            .flatten()
            .and_then(|n| n.data)
            .and_then(|d| d.bench)
            .filter(|m| m.trigger < self.triggers);
        let Some(marker) = marker else {
            self.other_events.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let k = marker.trigger;
        if self.copies[conn * self.triggers + k].fetch_add(1, Ordering::Relaxed) > 0 {
            // A duplicate: counted from `copies` at the end, not timed.
            return;
        }
        if let Some(counts) = event.counts {
            match *first {
                None => *first = Some((k, counts.unread)),
                Some((k0, unread0)) => {
                    if counts.unread != unread0 + (k as i64 - k0 as i64) {
                        self.counts_mismatch.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let state = &self.per_trigger[k];
        {
            let mut hist = state.latency.lock().unwrap_or_else(PoisonError::into_inner);
            record_us(&mut hist, now.saturating_sub(marker.ts) / 1_000);
        }
        let received = state.received.fetch_add(1, Ordering::Relaxed) + 1;
        if received == self.established.load(Ordering::Relaxed)
            && let Err(e) = workers::emit(&Event::Complete { trigger: k })
        {
            log!("cannot report trigger {k} complete: {e:#}");
        }
    }

    fn report(&self, established: u64, failed: u64, open: &[bool]) -> WorkerReport {
        let (mut duplicates, mut missing) = (0, 0);
        for (conn, &is_open) in open.iter().enumerate() {
            if !is_open {
                continue;
            }
            for k in 0..self.triggers {
                match self.copies[conn * self.triggers + k].load(Ordering::Relaxed) {
                    0 => missing += 1,
                    n => duplicates += u64::from(n - 1),
                }
            }
        }
        WorkerReport {
            established,
            failed,
            disconnects: self.disconnects.load(Ordering::Relaxed),
            bad_frames: self.bad_frames.load(Ordering::Relaxed),
            other_events: self.other_events.load(Ordering::Relaxed),
            duplicates,
            missing,
            counts_mismatch: self.counts_mismatch.load(Ordering::Relaxed),
            triggers: self
                .per_trigger
                .iter()
                .map(|t| TriggerTally {
                    received: t.received.load(Ordering::Relaxed),
                    latency: Buckets::from_histogram(
                        &t.latency.lock().unwrap_or_else(PoisonError::into_inner),
                    ),
                })
                .collect(),
        }
    }
}

/// Body of a worker process: open a connection per user of its share, each
/// subscribed to the user's channel, and tally events until `stop`.
async fn run_worker(args: &NotifyFanoutArgs, index: usize, count: usize) -> Result<()> {
    let secret = mint::secret_from_env(&args.seed.jwt_secret_env)?;
    let tenant = std::env::var(TENANT_ENV).with_context(|| format!("{TENANT_ENV} not set"))?;
    let users = mint::read_users(&args.seed.users_file)?;
    let minter = Arc::new(Minter::new(&secret, &tenant, args.seed.token_ttl_secs));
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let connector = Connector {
        sources: SourceAddrs::new(args.pool.source_addrs, &target),
        target,
        token: "".into(),
        attempt_timeout: secs(args.pool.connect_timeout_secs.max(1)),
        retries: args.pool.connect_retries,
    };
    let share: Vec<usize> = (index..users.len()).step_by(count.max(1)).collect();
    let label = format!("notify worker {index}/{count}");
    let tally = Arc::new(Tally::new(share.len(), args.triggers));
    let permits = Arc::new(Semaphore::new((args.pool.concurrency / count).max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<(usize, bool)>();
    let started = Instant::now();
    let deadline = started + secs(args.pool.open_timeout_secs);

    let mut tasks = JoinSet::new();
    for (position, &global) in share.iter().enumerate() {
        let user = users[global].clone();
        let connector = connector.clone();
        let minter = Arc::clone(&minter);
        let tally = Arc::clone(&tally);
        let permits = Arc::clone(&permits);
        let opened_tx = opened_tx.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            let channel = format!("user:{}", user.id);
            let attempt = tokio::time::timeout_at(deadline, async {
                // The semaphore is never closed.
                let _permit = permits.acquire().await;
                let token = minter.token(&user.id, &user.session)?;
                connector.open_as(global, &token, Some(&channel)).await
            })
            .await
            .unwrap_or_else(|_| Err(anyhow!("not open before --open-timeout-secs")));
            let ws = match attempt {
                Ok(ws) => ws,
                Err(e) => {
                    if tally.errors_logged.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
                        log!("connection of user {} failed: {e:#}", user.id);
                    }
                    let _ = opened_tx.send((position, false));
                    return;
                }
            };
            let _ = opened_tx.send((position, true));
            hold(ws, position, &tally, stop).await;
        });
    }
    drop(opened_tx);

    // Every attempt ends by the deadline, so this loop does too.
    let mut open = vec![false; share.len()];
    let (mut established, mut failed) = (0u64, 0u64);
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    progress.tick().await;
    while established + failed < share.len() as u64 {
        tokio::select! {
            result = opened_rx.recv() => match result {
                Some((position, true)) => {
                    open[position] = true;
                    established += 1;
                }
                Some((_, false)) => failed += 1,
                None => break,
            },
            _ = progress.tick() => log!(
                "[{label}] opening: {established}/{} subscribed, {failed} failed ({:.1}s)",
                share.len(),
                started.elapsed().as_secs_f64()
            ),
        }
    }
    log!(
        "[{label}] {established}/{} subscribed in {:.1}s ({failed} failed)",
        share.len(),
        started.elapsed().as_secs_f64()
    );
    tally.established.store(established, Ordering::Relaxed);
    workers::emit(&Event::Ready {
        established,
        failed,
    })?;

    let stop_wait = secs(
        args.pool.open_timeout_secs
            + args.triggers as u64 * (args.trigger_timeout_secs + args.pause_ms / 1000 + 40)
            + 60,
    );
    workers::wait_for_stop(stop_wait).await;
    let _ = stop_tx.send(true);
    let joined = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        log!("[{label}] connections did not close in time; aborting them");
        tasks.abort_all();
    }
    let report = tally.report(established, failed, &open);
    workers::emit(&Event::Done(Box::new(report)))
}

/// Reads one connection until `stop` flips, tallying its events.
async fn hold(mut ws: Ws, conn: usize, tally: &Tally, mut stop: watch::Receiver<bool>) {
    let mut first = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => tally.on_text(conn, text.as_str(), &mut first),
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    tally.disconnects.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

// ---------------------------------------------------------------- parent side

#[derive(Serialize)]
struct NotifyFanoutResult {
    scenario: &'static str,
    #[serde(rename = "type")]
    type_key: String,
    users: usize,
    /// Users connected and subscribed when the first trigger was sent.
    subscribed: u64,
    failed: u64,
    triggers: usize,
    /// Per trigger, the latency of its last recipient; these are its
    /// quantiles over the triggers (nearest rank).
    time_to_last: TimeToLast,
    /// Every recipient's latency, all triggers together.
    delivery: Percentiles,
    /// Every subscribed user got exactly one event per trigger.
    exactly_once: bool,
    expected: u64,
    received: u64,
    missing: u64,
    duplicates: u64,
    /// Events whose unread count did not grow by exactly one per trigger.
    counts_mismatch: u64,
    other_events: u64,
    disconnects: u64,
    bad_frames: u64,
    /// Triggers not completed (on every worker) within the timeout.
    #[serde(skip_serializing_if = "is_zero")]
    incomplete_triggers: u64,
    /// Workers that died or never reported.
    #[serde(skip_serializing_if = "is_zero")]
    worker_failures: u64,
    per_trigger: Vec<TriggerResult>,
    #[serde(flatten)]
    memory: Memory,
    /// Server CPU time (user + system) from the first trigger to the end of
    /// the last one's deliveries, pauses included.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_secs: Option<f64>,
    connect_secs: f64,
    workers: usize,
}

#[derive(Serialize, Default)]
struct TimeToLast {
    p50_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct TriggerResult {
    trigger: usize,
    /// Recipients the hub resolved the trigger to.
    recipients: i64,
    received: u64,
    /// Time until the hub answered 202.
    post_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Latency of the last recipient.
    last_ms: f64,
    /// The hub's own `completed_at − created_at` of the trigger: every page
    /// committed (the last page's events may still be on their way).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_done_ms: Option<i64>,
}

/// Server memory (KiB), from /proc.
#[derive(Serialize, Default)]
struct Memory {
    /// Before any connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_idle_kib: Option<u64>,
    /// With every user connected and subscribed, before the first trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_connected_kib: Option<u64>,
    /// Highest sample while the triggers ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_peak_kib: Option<u64>,
    /// After the last trigger's deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_end_kib: Option<u64>,
    /// The process's high-water mark (VmHWM) at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    hwm_kib: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    rss_samples: u64,
}

/// The trigger view fields read back.
#[derive(Deserialize)]
struct TriggerView {
    id: String,
    status: String,
    recipients: i64,
    #[serde(default)]
    created: i64,
    created_at: i64,
    completed_at: Option<i64>,
}

/// A worker seen from the parent.
struct Handle {
    process: WorkerProcess,
    established: u64,
    ready: bool,
}

/// Samples the server's RSS every `every` until dropped.
struct Sampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut peak, mut samples) = (0, 0);
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = ticker.tick() => {
                        if let Ok(kib) = stats::rss_kib(pid) {
                            peak = peak.max(kib);
                            samples += 1;
                        }
                    }
                }
            }
            (peak, samples)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or((0, 0))
    }
}

fn default_payload(type_key: &str) -> Value {
    match type_key {
        "system.maintenance" => json!({"maintenance": {
            "starts_at": "2026-12-01 22:00 UTC", "ends_at": "2026-12-01 23:00 UTC"}}),
        _ => json!({"announcement": {
            "title": "Benchmark",
            "body": "One of a series of announcements sent to every user by the notification benchmark."}}),
    }
}

/// The trigger payload (`--payload` or the default for the type).
pub(super) fn base_payload(type_key: &str, payload: Option<&str>) -> Result<Value> {
    let value = match payload {
        Some(text) => serde_json::from_str(text).context("--payload is not JSON")?,
        None => default_payload(type_key),
    };
    if !value.is_object() {
        bail!("--payload must be a JSON object");
    }
    Ok(value)
}

/// Body of `POST /api/v1/notifications` to every user but `actor`.
pub(super) fn trigger_body(type_key: &str, payload: &Value, actor: &str) -> Bytes {
    let body = json!({
        "type": type_key,
        "payload": payload,
        "recipients": {"all": true},
        "actor": actor,
    });
    Bytes::from(body.to_string())
}

/// Sends a trigger; returns the hub's view of it (202 expected).
pub(super) async fn post_trigger(
    conn: &mut HttpConn,
    key: &str,
    body: Bytes,
) -> Result<(String, i64)> {
    let (status, bytes) = conn
        .post_json("/api/v1/notifications", Some(key), body)
        .await?;
    if status.as_u16() != 202 {
        bail!(
            "trigger refused: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let view: TriggerView =
        serde_json::from_slice(&bytes).context("unexpected trigger response")?;
    Ok((view.id, view.recipients))
}

/// Polls the trigger until the hub reports it `done` (or `failed`), at most
/// `wait`; returns `completed_at − created_at` and the inbox rows created.
pub(super) async fn trigger_done(
    conn: &mut HttpConn,
    key: &str,
    id: &str,
    wait: Duration,
) -> Result<(i64, i64)> {
    let deadline = Instant::now() + wait;
    let path = format!("/api/v1/notifications/{id}");
    loop {
        let (status, bytes) = conn.get(&path, Some(key)).await?;
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        let view: TriggerView =
            serde_json::from_slice(&bytes).context("unexpected trigger view")?;
        match (view.status.as_str(), view.completed_at) {
            ("done", Some(completed)) => return Ok((completed - view.created_at, view.created)),
            ("failed", _) => bail!(
                "trigger {} failed: {}",
                view.id,
                String::from_utf8_lossy(&bytes)
            ),
            _ if Instant::now() >= deadline => {
                bail!("trigger {} still {} after {wait:?}", view.id, view.status)
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub async fn run(args: NotifyFanoutArgs) -> Result<Option<String>> {
    if let (Some(index), Some(count)) = (args.pool.worker_index, args.pool.worker_count) {
        run_worker(&args, index, count).await?;
        return Ok(None);
    }
    if args.triggers == 0 {
        bail!("--triggers must be at least 1");
    }
    let secret = mint::secret_from_env(&args.seed.jwt_secret_env)?;
    let users = mint::read_users(&args.seed.users_file)?;
    let payload = base_payload(&args.type_key, args.payload.as_deref())?;
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin_token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let admin = mint::verify(&secret, &admin_token)?;
    let key = http::create_api_key(&target, &admin_token, "notify-bench", "notify").await?;
    let pid = args.server.server_pid;
    let mut memory = Memory {
        rss_idle_kib: server_rss(pid),
        ..Memory::default()
    };

    // Connect every user.
    let count = args.pool.workers.max(1);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        handles.push(Handle {
            process: WorkerProcess::spawn(index, count, &[(TENANT_ENV, admin.tid.as_str())])?,
            established: 0,
            ready: false,
        });
    }
    let ready_deadline = Instant::now() + secs(args.pool.open_timeout_secs) + SLACK;
    let (mut subscribed, mut failed, mut worker_failures) = (0u64, 0u64, 0u64);
    for (index, handle) in handles.iter_mut().enumerate() {
        let share = (index..users.len()).step_by(count).len() as u64;
        match handle.process.next_event::<Event>(ready_deadline).await {
            Ok(Event::Ready {
                established,
                failed: f,
            }) => {
                handle.established = established;
                handle.ready = true;
                subscribed += established;
                failed += f;
            }
            outcome => {
                log!("notify worker {index} did not get ready: {outcome:?}");
                failed += share;
                worker_failures += 1;
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    memory.rss_connected_kib = server_rss(pid);
    log!(
        "notify-fanout: {subscribed} subscribed, {failed} failed in {connect_secs:.1}s; sending {} triggers of {}",
        args.triggers,
        args.type_key
    );

    // The triggers, one after another.
    let sampler =
        pid.map(|pid| Sampler::start(pid, Duration::from_millis(args.rss_sample_ms.max(1))));
    let cpu_before = pid.and_then(|pid| stats::cpu_secs(pid).ok());
    let mut conn = HttpConn::connect(&target).await?;
    let mut posted = Vec::with_capacity(args.triggers);
    let mut incomplete_triggers = 0;
    for k in 0..args.triggers {
        let mut payload = payload.clone();
        let sent = Instant::now();
        payload["bench"] = json!({"trigger": k, "ts": unix_nanos()});
        let (id, recipients) = post_trigger(
            &mut conn,
            &key,
            trigger_body(&args.type_key, &payload, &admin.sub),
        )
        .await
        .with_context(|| format!("trigger {k}"))?;
        let post_ms = sent.elapsed().as_secs_f64() * 1000.0;
        if recipients != users.len() as i64 {
            log!(
                "trigger {k}: the hub resolved {recipients} recipients, the users file lists {}",
                users.len()
            );
        }

        let deadline = sent + secs(args.trigger_timeout_secs);
        let mut complete = true;
        for handle in handles.iter_mut().filter(|h| h.ready && h.established > 0) {
            if !wait_complete(&mut handle.process, k, deadline).await {
                complete = false;
            }
        }
        if !complete {
            incomplete_triggers += 1;
        }
        let waited = sent.elapsed().as_secs_f64();
        let server = match trigger_done(&mut conn, &key, &id, Duration::from_secs(30)).await {
            Ok(done) => Some(done),
            Err(e) => {
                log!("trigger {k}: {e:#}");
                None
            }
        };
        log!(
            "trigger {k}: {recipients} recipients, all delivered within {:.0} ms{}",
            waited * 1000.0,
            if complete { "" } else { " (INCOMPLETE)" }
        );
        posted.push(Posted {
            recipients,
            post_ms,
            server_done_ms: server.map(|(ms, _)| ms),
        });
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let server_cpu_secs = match (pid, cpu_before) {
        (Some(pid), Some(before)) => stats::cpu_secs(pid)
            .ok()
            .map(|after| round3(after - before)),
        _ => None,
    };
    if let Some(sampler) = sampler {
        let (peak, samples) = sampler.finish().await;
        memory.rss_peak_kib = Some(peak);
        memory.rss_samples = samples;
    }
    memory.rss_end_kib = server_rss(pid);
    memory.hwm_kib = pid.and_then(|pid| stats::hwm_kib(pid).ok());

    // Collect the tallies.
    let mut total = WorkerReport {
        failed,
        ..WorkerReport::default()
    };
    let done_deadline = Instant::now() + SLACK;
    for handle in &mut handles {
        if !handle.ready {
            continue;
        }
        if let Err(e) = handle
            .process
            .send_line(&format!("stop {}", args.triggers))
            .await
        {
            log!("notify worker {}: {e:#}", handle.process.index);
        }
    }
    for handle in &mut handles {
        if !handle.ready {
            continue;
        }
        let outcome = loop {
            match handle.process.next_event::<Event>(done_deadline).await {
                Ok(Event::Done(report)) => break Ok(*report),
                // A late `complete`, after its trigger timed out.
                Ok(Event::Complete { .. }) => continue,
                Ok(other) => break Err(anyhow!("sent {other:?} instead of its tally")),
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(mut report) => {
                // Failures were counted from the ready events.
                report.failed = 0;
                total.merge(report);
            }
            Err(e) => {
                log!("notify worker {}: {e:#}", handle.process.index);
                // Its users count as missing everything.
                total.established += handle.established;
                total.missing += handle.established * args.triggers as u64;
                worker_failures += 1;
            }
        }
    }
    for handle in handles {
        handle.process.reap().await;
    }

    Ok(Some(serde_json::to_string(&summarise(
        &args,
        users.len(),
        subscribed,
        total,
        &posted,
        memory,
        Counters {
            incomplete_triggers,
            worker_failures,
            server_cpu_secs,
            connect_secs,
        },
    ))?))
}

/// Waits for worker's `complete` of trigger `k`; false on timeout or error.
async fn wait_complete(process: &mut WorkerProcess, k: usize, deadline: Instant) -> bool {
    loop {
        match process.next_event::<Event>(deadline).await {
            Ok(Event::Complete { trigger }) if trigger == k => return true,
            // An earlier trigger completing late.
            Ok(Event::Complete { trigger }) if trigger < k => continue,
            Ok(other) => {
                log!(
                    "notify worker {}: unexpected {other:?} while waiting for trigger {k}",
                    process.index
                );
                return false;
            }
            Err(e) => {
                log!(
                    "notify worker {}: trigger {k} not complete: {e:#}",
                    process.index
                );
                return false;
            }
        }
    }
}

/// A trigger as the parent saw it.
struct Posted {
    /// Recipients the hub resolved it to.
    recipients: i64,
    post_ms: f64,
    /// The hub's `completed_at − created_at`, once it reported `done`.
    server_done_ms: Option<i64>,
}

struct Counters {
    incomplete_triggers: u64,
    worker_failures: u64,
    server_cpu_secs: Option<f64>,
    connect_secs: f64,
}

fn summarise(
    args: &NotifyFanoutArgs,
    users: usize,
    subscribed: u64,
    total: WorkerReport,
    posted: &[Posted],
    memory: Memory,
    counters: Counters,
) -> NotifyFanoutResult {
    let mut all = new_histogram();
    let mut per_trigger = Vec::with_capacity(posted.len());
    let mut lasts = Vec::with_capacity(posted.len());
    for (k, (trigger, tally)) in posted.iter().zip(&total.triggers).enumerate() {
        let mut hist = new_histogram();
        tally.latency.add_to(&mut hist);
        let _ = all.add(&hist);
        let p = Percentiles::of(&hist);
        lasts.push(p.max_ms);
        per_trigger.push(TriggerResult {
            trigger: k,
            recipients: trigger.recipients,
            received: tally.received,
            post_ms: round3(trigger.post_ms),
            p50_ms: p.p50_ms,
            p99_ms: p.p99_ms,
            last_ms: p.max_ms,
            server_done_ms: trigger.server_done_ms,
        });
    }
    lasts.sort_by(f64::total_cmp);
    let received: u64 = total.triggers.iter().map(|t| t.received).sum();
    let expected = total.established * args.triggers as u64;
    NotifyFanoutResult {
        scenario: "notify-fanout",
        type_key: args.type_key.clone(),
        users,
        subscribed,
        failed: total.failed,
        triggers: args.triggers,
        time_to_last: TimeToLast {
            p50_ms: quantile(&lasts, 0.50),
            p99_ms: quantile(&lasts, 0.99),
            min_ms: lasts.first().copied().unwrap_or(0.0),
            max_ms: lasts.last().copied().unwrap_or(0.0),
        },
        delivery: Percentiles::of(&all),
        exactly_once: total.missing == 0
            && total.duplicates == 0
            && received == expected
            && posted.len() == args.triggers,
        expected,
        received,
        missing: total.missing,
        duplicates: total.duplicates,
        counts_mismatch: total.counts_mismatch,
        other_events: total.other_events,
        disconnects: total.disconnects,
        bad_frames: total.bad_frames,
        incomplete_triggers: counters.incomplete_triggers,
        worker_failures: counters.worker_failures,
        per_trigger,
        memory,
        server_cpu_secs: counters.server_cpu_secs,
        connect_secs: round3(counters.connect_secs),
        workers: args.pool.workers.max(1),
    }
}
