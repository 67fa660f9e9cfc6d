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

use crate::stats::{Buckets, ShardedHistogram, new_histogram, unix_nanos};
use crate::ws::{Connector, PubFrame, Ws};

/// How many connection errors a process prints before going quiet; the
/// total is in the result anyway.
const LOGGED_ERRORS: u64 = 5;
/// Histogram shards per process (see [`ShardedHistogram`]).
const HISTOGRAM_SHARDS: usize = 16;

/// What one process should open.
pub struct PoolSpec {
    /// One connector per server node (a single one unless the scenario
    /// spreads subscribers over several nodes). The process's `n`-th
    /// connection goes to node `n mod nodes`, so every process holds an even
    /// share of every node whatever the worker count.
    pub connectors: Vec<Connector>,
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
    /// The same figures per server node, in connector order.
    #[serde(default)]
    pub per_node: Vec<NodeReport>,
}

/// Connections to one server node and what they received.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NodeReport {
    pub established: u64,
    pub failed: u64,
    pub delivered: u64,
    pub latency: Buckets,
}

impl NodeReport {
    fn merge(&mut self, other: NodeReport) {
        self.established += other.established;
        self.failed += other.failed;
        self.delivered += other.delivered;
        self.latency.0.extend(other.latency.0);
    }
}

/// Established and failed connections to one node when opening ended.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct NodeTally {
    pub established: u64,
    pub failed: u64,
}

/// How many of `share` connections (a process's share, spread round-robin
/// by position) go to each of `nodes` nodes.
pub fn node_shares(share: u64, nodes: usize) -> Vec<u64> {
    let nodes = nodes.max(1) as u64;
    (0..nodes)
        .map(|i| (share + nodes - 1 - i) / nodes)
        .collect()
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
        merge_nodes(&mut self.per_node, other.per_node);
    }
}

/// Adds per-node reports index by index.
pub fn merge_nodes(into: &mut Vec<NodeReport>, other: Vec<NodeReport>) {
    if into.len() < other.len() {
        into.resize_with(other.len(), NodeReport::default);
    }
    for (mine, theirs) in into.iter_mut().zip(other) {
        mine.merge(theirs);
    }
}

#[derive(Default)]
struct OpenTally {
    /// Set when the parent stopped waiting; late connections then close
    /// themselves instead of silently inflating the delivery counts.
    closed: bool,
    established: u64,
    failed: u64,
    /// Established connections per node.
    per_node: Vec<u64>,
}

/// Deliveries to the connections of one node.
struct NodeShared {
    delivered: AtomicU64,
    latency: ShardedHistogram,
}

struct Shared {
    tally: Mutex<OpenTally>,
    progress: Notify,
    disconnects: AtomicU64,
    bad_frames: AtomicU64,
    errors_logged: AtomicU64,
    nodes: Vec<NodeShared>,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, OpenTally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn delivered(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.delivered.load(Ordering::Relaxed))
            .sum()
    }

    fn on_text(&self, node: usize, shard: usize, text: &str) {
        match serde_json::from_str::<PubFrame<'_>>(text) {
            Ok(frame) if frame.kind == "pub" => match frame.data {
                Some(data) => {
                    let node = &self.nodes[node];
                    node.delivered.fetch_add(1, Ordering::Relaxed);
                    let micros = unix_nanos().saturating_sub(data.ts) / 1_000;
                    node.latency.record_us(shard, micros);
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
    per_node: Vec<NodeTally>,
}

impl Pool {
    /// Opens all connections of `spec` and returns when each one is either
    /// established or has failed, or when `open_timeout` expires (pending
    /// ones then count as failed).
    pub async fn open(spec: PoolSpec) -> Pool {
        let total = spec.indices.len() as u64;
        let node_count = spec.connectors.len().max(1);
        let shared = Arc::new(Shared {
            tally: Mutex::new(OpenTally {
                per_node: vec![0; node_count],
                ..OpenTally::default()
            }),
            progress: Notify::new(),
            disconnects: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            errors_logged: AtomicU64::new(0),
            nodes: (0..node_count)
                .map(|_| NodeShared {
                    delivered: AtomicU64::new(0),
                    latency: ShardedHistogram::new(HISTOGRAM_SHARDS),
                })
                .collect(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let channel: Option<Arc<str>> = spec.subscribe.map(Into::into);
        let label: Arc<str> = spec.label.into();

        let mut tasks = JoinSet::new();
        for (position, index) in spec.indices.into_iter().enumerate() {
            let node = position % node_count;
            let connector = spec.connectors[node].clone();
            let shared = Arc::clone(&shared);
            let permits = Arc::clone(&permits);
            let channel = channel.clone();
            let label = Arc::clone(&label);
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                let Some(ws) = open_one(
                    &connector,
                    index,
                    node,
                    channel.as_deref(),
                    &permits,
                    &shared,
                    &label,
                )
                .await
                else {
                    return;
                };
                let measure = channel.is_some().then_some(node);
                hold(ws, index, measure, &shared, stop).await;
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
        let (established, failed, per_node) = {
            let mut tally = shared.tally();
            tally.closed = true;
            let per_node = node_shares(total, node_count)
                .into_iter()
                .zip(&tally.per_node)
                .map(|(assigned, &established)| NodeTally {
                    established,
                    failed: assigned.saturating_sub(established),
                })
                .collect();
            (tally.established, total - tally.established, per_node)
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
            per_node,
        }
    }

    pub fn established(&self) -> u64 {
        self.established
    }

    pub fn per_node(&self) -> &[NodeTally] {
        &self.per_node
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Waits until every established subscriber received all `published`
    /// messages (or `drain` passes), then closes all connections.
    pub async fn finish(mut self, published: u64, drain: Duration) -> PoolReport {
        let expected = published.saturating_mul(self.established);
        let drain_start = Instant::now();
        while self.shared.delivered() < expected && drain_start.elapsed() < drain {
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
        let mut all = new_histogram();
        let per_node: Vec<NodeReport> = shared
            .nodes
            .iter()
            .zip(&self.per_node)
            .map(|(node, tally)| {
                let hist = node.latency.merged();
                // Same bounds everywhere, so `add` cannot fail.
                let _ = all.add(&hist);
                NodeReport {
                    established: tally.established,
                    failed: tally.failed,
                    delivered: node.delivered.load(Ordering::Relaxed),
                    latency: Buckets::from_histogram(&hist),
                }
            })
            .collect();
        PoolReport {
            established: self.established,
            failed: self.failed,
            disconnects: shared.disconnects.load(Ordering::Relaxed),
            delivered: per_node.iter().map(|n| n.delivered).sum(),
            bad_frames: shared.bad_frames.load(Ordering::Relaxed),
            drain_secs,
            latency: Buckets::from_histogram(&all),
            worker_failures: 0,
            per_node,
        }
    }
}

/// Opens one connection under a concurrency permit and records the outcome.
/// Returns `None` if it failed or arrived after the parent stopped waiting.
async fn open_one(
    connector: &Connector,
    index: usize,
    node: usize,
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
                tally.per_node[node] += 1;
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
/// tungstenite answer the server's Pings; for subscribers (`measure` names
/// their node) each `pub` frame is timed.
async fn hold(
    mut ws: Ws,
    shard: usize,
    measure: Option<usize>,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) {
    // One stop future for the connection's life: a fresh `changed()` per
    // frame would enter and leave the watch's waiter list every time, a
    // shared lock that all subscriber tasks would take per delivery.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            // Also fires when the sender is gone, which likewise means stop.
            _ = &mut stopped => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(node) = measure {
                        shared.on_text(node, shard, text.as_str());
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
