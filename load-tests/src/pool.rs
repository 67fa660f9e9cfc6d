//! The WebSocket connections held by one process: opened with bounded
//! concurrency, kept reading (so Pings get answered and publications get
//! timed) until told to stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Buckets, ShardedHistogram, unix_nanos};
use crate::ws::{Connector, PubFrame, Ws};

/// How many connection errors a process prints before going quiet; the
/// total is in the result anyway.
const LOGGED_ERRORS: u64 = 5;
/// Histogram shards per process (see [`ShardedHistogram`]).
const HISTOGRAM_SHARDS: usize = 16;

/// What one process should open.
pub struct PoolSpec {
    pub connector: Connector,
    /// Global connection indices owned by this process (they pick the
    /// source address, so all processes together spread evenly).
    pub indices: Vec<usize>,
    /// Channel to subscribe to; `None` for idle connections.
    pub subscribe: Option<String>,
    /// Connection attempts in flight at once, so the server's accept queue
    /// is not overrun.
    pub concurrency: usize,
    /// Give up on connections not established within this time.
    pub open_timeout: Duration,
    /// Label for progress lines on stderr.
    pub label: String,
}

/// Outcome of one process's connections; also the partial result a worker
/// process sends to the parent.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PoolReport {
    pub established: u64,
    pub failed: u64,
    /// Connections the server closed (or that broke) before we stopped.
    pub disconnects: u64,
    /// `pub` frames with a parseable `{seq, ts}` payload.
    pub delivered: u64,
    /// Text frames that could not be parsed as expected.
    pub bad_frames: u64,
    /// Time spent waiting for outstanding publications after publishing ended.
    pub drain_secs: f64,
    /// Delivery latencies in microseconds.
    pub latency: Buckets,
    /// Worker processes that failed (set by the parent only).
    #[serde(default)]
    pub worker_failures: u64,
}

impl PoolReport {
    /// Adds another process's report to this one.
    pub fn merge(&mut self, other: PoolReport) {
        self.established += other.established;
        self.failed += other.failed;
        self.disconnects += other.disconnects;
        self.delivered += other.delivered;
        self.bad_frames += other.bad_frames;
        self.drain_secs = self.drain_secs.max(other.drain_secs);
        self.worker_failures += other.worker_failures;
        self.latency.0.extend(other.latency.0);
    }
}

#[derive(Default)]
struct OpenTally {
    /// Set when the parent stopped waiting; late connections then close
    /// themselves instead of silently inflating the delivery counts.
    closed: bool,
    established: u64,
    failed: u64,
}

struct Shared {
    tally: Mutex<OpenTally>,
    progress: Notify,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    bad_frames: AtomicU64,
    errors_logged: AtomicU64,
    latency: ShardedHistogram,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, OpenTally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_text(&self, shard: usize, text: &str) {
        match serde_json::from_str::<PubFrame<'_>>(text) {
            Ok(frame) if frame.kind == "pub" => match frame.data {
                Some(data) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    let micros = unix_nanos().saturating_sub(data.ts) / 1_000;
                    self.latency.record_us(shard, micros);
                }
                None => {
                    self.bad_frames.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(_) => {}
            Err(_) => {
                self.bad_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Connections held by this process.
pub struct Pool {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    established: u64,
    failed: u64,
}

impl Pool {
    /// Opens all connections of `spec` and returns when each one is either
    /// established or has failed, or when `open_timeout` expires (pending
    /// ones then count as failed).
    pub async fn open(spec: PoolSpec) -> Pool {
        let total = spec.indices.len() as u64;
        let shared = Arc::new(Shared {
            tally: Mutex::new(OpenTally::default()),
            progress: Notify::new(),
            delivered: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            errors_logged: AtomicU64::new(0),
            latency: ShardedHistogram::new(HISTOGRAM_SHARDS),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let channel: Option<Arc<str>> = spec.subscribe.map(Into::into);
        let label: Arc<str> = spec.label.into();

        let mut tasks = JoinSet::new();
        for index in spec.indices {
            let connector = spec.connector.clone();
            let shared = Arc::clone(&shared);
            let permits = Arc::clone(&permits);
            let channel = channel.clone();
            let label = Arc::clone(&label);
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                let Some(ws) = open_one(
                    &connector,
                    index,
                    channel.as_deref(),
                    &permits,
                    &shared,
                    &label,
                )
                .await
                else {
                    return;
                };
                hold(ws, index, channel.is_some(), &shared, stop).await;
            });
        }

        let deadline = Instant::now() + spec.open_timeout;
        let started = Instant::now();
        loop {
            let (established, failed) = {
                let tally = shared.tally();
                (tally.established, tally.failed)
            };
            if established + failed >= total {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                log!(
                    "[{label}] open timeout: {established}/{total} established, giving up on the rest"
                );
                break;
            }
            if now - started >= Duration::from_secs(1) {
                log!(
                    "[{label}] opening: {established}/{total} established, {failed} failed ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
            }
            let wait = Duration::from_secs(2).min(deadline - now);
            let _ = tokio::time::timeout(wait, async {
                // Wake on each finished attempt and return once all are
                // done; the timeout paces progress lines to one per ~2 s.
                loop {
                    shared.progress.notified().await;
                    let tally = shared.tally();
                    if tally.established + tally.failed >= total {
                        break;
                    }
                }
            })
            .await;
        }
        let (established, failed) = {
            let mut tally = shared.tally();
            tally.closed = true;
            (tally.established, total - tally.established)
        };
        log!(
            "[{label}] opened {established}/{total} in {:.1}s ({failed} failed)",
            started.elapsed().as_secs_f64()
        );
        Pool {
            shared,
            stop: stop_tx,
            tasks,
            established,
            failed,
        }
    }

    pub fn established(&self) -> u64 {
        self.established
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Waits until every established subscriber received all `published`
    /// messages (or `drain` passes), then closes all connections.
    pub async fn finish(mut self, published: u64, drain: Duration) -> PoolReport {
        let expected = published.saturating_mul(self.established);
        let drain_start = Instant::now();
        while self.shared.delivered.load(Ordering::Relaxed) < expected
            && drain_start.elapsed() < drain
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain_secs = drain_start.elapsed().as_secs_f64();

        let _ = self.stop.send(true);
        let joined = tokio::time::timeout(Duration::from_secs(15), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            log!("connections did not close in time; aborting them");
            self.tasks.abort_all();
        }

        let shared = &self.shared;
        PoolReport {
            established: self.established,
            failed: self.failed,
            disconnects: shared.disconnects.load(Ordering::Relaxed),
            delivered: shared.delivered.load(Ordering::Relaxed),
            bad_frames: shared.bad_frames.load(Ordering::Relaxed),
            drain_secs,
            latency: Buckets::from_histogram(&shared.latency.merged()),
            worker_failures: 0,
        }
    }
}

/// Opens one connection under a concurrency permit and records the outcome.
/// Returns `None` if it failed or arrived after the parent stopped waiting.
async fn open_one(
    connector: &Connector,
    index: usize,
    channel: Option<&str>,
    permits: &Semaphore,
    shared: &Shared,
    label: &str,
) -> Option<Ws> {
    // The semaphore is never closed, so acquire only fails in theory.
    let permit = permits.acquire().await.ok()?;
    let result = connector.open(index, channel).await;
    drop(permit);

    let kept = {
        let mut tally = shared.tally();
        match (&result, tally.closed) {
            (_, true) => false,
            (Ok(_), false) => {
                tally.established += 1;
                true
            }
            (Err(_), false) => {
                tally.failed += 1;
                false
            }
        }
    };
    shared.progress.notify_one();
    match result {
        Ok(ws) if kept => Some(ws),
        Ok(_) => None,
        Err(e) => {
            if shared.errors_logged.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
                log!("[{label}] connection {index} failed: {e:#}");
            }
            None
        }
    }
}

/// Keeps reading one connection until `stop` flips. Reading is what lets
/// tungstenite answer the server's Pings; for subscribers each `pub` frame
/// is timed.
async fn hold(
    mut ws: Ws,
    shard: usize,
    measure: bool,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            // Also fires when the sender is gone, which likewise means stop.
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if measure {
                        shared.on_text(shard, text.as_str());
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}
