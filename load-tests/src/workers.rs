//! Spreading WebSocket connections over several processes.
//!
//! The sandbox caps every process at 20,000 open files, so large idle and
//! fan-out runs re-execute this binary as worker processes (the same
//! arguments plus hidden `--worker-index i --worker-count K`). Parent and
//! workers talk over pipes with one JSON object per line:
//!
//! - worker → parent (stdout): `{"event":"ready",...}` once its connections
//!   are open (and subscribed), then `{"event":"done",...}` with its partial
//!   result, including its latency histogram as buckets;
//! - parent → worker (stdin): `stop <published>` once publishing ended, so
//!   the worker knows how many messages each subscriber should still get.
//!
//! Worker stderr is inherited so their progress lines show up directly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use crate::cli::PoolArgs;
use crate::net::{SourceAddrs, Target};
use crate::pool::{self, NodeReport, NodeTally, Pool, PoolReport, PoolSpec};
use crate::ws::Connector;

/// Environment variable carrying the access token to workers, so the
/// parent logs in only once and the token does not show up in `ps`.
const TOKEN_ENV: &str = "RELAIS_LOAD_ACCESS_TOKEN";

/// Extra slack on top of scenario-derived waits before a side gives up on
/// the other.
const SLACK: Duration = Duration::from_secs(30);

/// What a fleet of connections should do, derived from scenario arguments.
pub struct FleetPlan {
    /// Connections over all processes.
    pub total: usize,
    /// Channel to subscribe to; `None` for idle connections.
    pub subscribe: Option<String>,
    /// How long a worker waits for the parent's stop line after it is
    /// ready; it stops by itself after that so nothing outlives a lost
    /// parent.
    pub stop_wait: Duration,
    /// Maximum wait for outstanding deliveries after the stop line.
    pub drain: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WorkerEvent {
    Ready {
        established: u64,
        failed: u64,
        /// The same counts per server node.
        #[serde(default)]
        per_node: Vec<NodeTally>,
    },
    Done(PoolReport),
}

/// Connections of process `index` out of `count`: every `count`-th global
/// index, so each process uses all source addresses evenly. `targets` are
/// the server nodes, which the pool spreads its share over round-robin.
fn pool_spec(
    plan: &FleetPlan,
    args: &PoolArgs,
    targets: &[Arc<Target>],
    token: Arc<str>,
    index: usize,
    count: usize,
) -> PoolSpec {
    let count = count.max(1);
    let connectors = targets
        .iter()
        .map(|target| Connector {
            target: Arc::clone(target),
            token: Arc::clone(&token),
            sources: SourceAddrs::new(args.source_addrs, target),
            attempt_timeout: Duration::from_secs(args.connect_timeout_secs.max(1)),
            retries: args.connect_retries,
        })
        .collect();
    PoolSpec {
        connectors,
        indices: (index..plan.total).step_by(count).collect(),
        subscribe: plan.subscribe.clone(),
        concurrency: (args.concurrency / count).max(1),
        open_timeout: Duration::from_secs(args.open_timeout_secs),
        label: if count == 1 {
            "load".to_string()
        } else {
            format!("worker {index}/{count}")
        },
    }
}

/// The connections of one run: in this process or in worker processes.
pub enum Fleet {
    Local(Pool),
    Remote {
        workers: Vec<Worker>,
        established: u64,
        failed: u64,
        /// Per server node, from the ready events (and the shares of
        /// workers that never got ready, as failed).
        per_node: Vec<NodeTally>,
        /// Workers that never reported ready.
        worker_failures: u64,
    },
}

impl Fleet {
    /// Opens all connections, spread over the server nodes `targets`, and
    /// returns once every process reported that its share is established
    /// (or gave up on it).
    pub async fn start(
        plan: &FleetPlan,
        args: &PoolArgs,
        targets: &[Arc<Target>],
        token: &str,
    ) -> Result<Fleet> {
        if targets.is_empty() {
            bail!("no server to connect to");
        }
        if args.workers <= 1 {
            let spec = pool_spec(plan, args, targets, token.into(), 0, 1);
            return Ok(Fleet::Local(Pool::open(spec).await));
        }
        let nodes = targets.len();
        let mut per_node = vec![NodeTally::default(); nodes];
        let count = args.workers;
        let mut spawned = Vec::with_capacity(count);
        for index in 0..count {
            let share = (index..plan.total).step_by(count).len() as u64;
            spawned.push(Worker::spawn(index, count, share, token)?);
        }
        let deadline = Instant::now() + Duration::from_secs(args.open_timeout_secs) + SLACK;
        let (mut established, mut failed, mut worker_failures) = (0, 0, 0);
        let mut workers = Vec::with_capacity(count);
        for mut worker in spawned {
            match worker.next_event(deadline).await {
                Ok(WorkerEvent::Ready {
                    established: e,
                    failed: f,
                    per_node: tallies,
                }) => {
                    established += e;
                    failed += f;
                    for (total, tally) in per_node.iter_mut().zip(&tallies) {
                        total.established += tally.established;
                        total.failed += tally.failed;
                    }
                    worker.established = e;
                    worker.per_node = tallies;
                    workers.push(worker);
                }
                outcome => {
                    match outcome {
                        Ok(other) => {
                            log!(
                                "worker {} sent {other:?} instead of ready",
                                worker.process.index
                            )
                        }
                        Err(e) => log!("worker {} did not get ready: {e:#}", worker.process.index),
                    }
                    failed += worker.share;
                    for (total, share) in per_node
                        .iter_mut()
                        .zip(pool::node_shares(worker.share, nodes))
                    {
                        total.failed += share;
                    }
                    worker_failures += 1;
                }
            }
        }
        Ok(Fleet::Remote {
            workers,
            established,
            failed,
            per_node,
            worker_failures,
        })
    }

    pub fn established(&self) -> u64 {
        match self {
            Fleet::Local(pool) => pool.established(),
            Fleet::Remote { established, .. } => *established,
        }
    }

    pub fn failed(&self) -> u64 {
        match self {
            Fleet::Local(pool) => pool.failed(),
            Fleet::Remote { failed, .. } => *failed,
        }
    }

    /// Tells every process that `published` messages were sent, lets them
    /// drain, closes all connections and merges the results.
    pub async fn finish(self, published: u64, plan: &FleetPlan) -> PoolReport {
        let (mut workers, failed, per_node, worker_failures) = match self {
            Fleet::Local(pool) => return pool.finish(published, plan.drain).await,
            Fleet::Remote {
                workers,
                failed,
                per_node,
                worker_failures,
                ..
            } => (workers, failed, per_node, worker_failures),
        };
        for worker in &mut workers {
            if let Err(e) = worker.send_stop(published).await {
                log!("worker {}: {e:#}", worker.process.index);
            }
        }
        let deadline = Instant::now() + plan.drain + SLACK;
        let mut total = PoolReport {
            failed,
            worker_failures,
            // Failures per node were counted from the ready events.
            per_node: per_node
                .iter()
                .map(|tally| NodeReport {
                    failed: tally.failed,
                    ..NodeReport::default()
                })
                .collect(),
            ..PoolReport::default()
        };
        for worker in &mut workers {
            match worker.next_event(deadline).await {
                Ok(WorkerEvent::Done(mut report)) => {
                    // Failures were already counted from the ready events.
                    report.failed = 0;
                    for node in &mut report.per_node {
                        node.failed = 0;
                    }
                    total.merge(report);
                }
                outcome => {
                    match outcome {
                        Ok(event) => log!(
                            "worker {} sent {event:?} instead of its result",
                            worker.process.index
                        ),
                        Err(e) => log!("worker {} sent no result: {e:#}", worker.process.index),
                    }
                    // Keep its connections in the totals so the missing
                    // deliveries show up as lost rather than vanish.
                    total.established += worker.established;
                    let established = worker
                        .per_node
                        .iter()
                        .map(|tally| NodeReport {
                            established: tally.established,
                            ..NodeReport::default()
                        })
                        .collect();
                    pool::merge_nodes(&mut total.per_node, established);
                    total.worker_failures += 1;
                }
            }
        }
        for worker in workers {
            worker.reap().await;
        }
        total
    }
}

/// A worker process of the idle and fan-out scenarios, seen from the parent.
pub struct Worker {
    process: WorkerProcess,
    share: u64,
    established: u64,
    per_node: Vec<NodeTally>,
}

impl Worker {
    fn spawn(index: usize, count: usize, share: u64, token: &str) -> Result<Worker> {
        Ok(Worker {
            process: WorkerProcess::spawn(index, count, &[(TOKEN_ENV, token)])?,
            share,
            established: 0,
            per_node: Vec::new(),
        })
    }

    async fn next_event(&mut self, deadline: Instant) -> Result<WorkerEvent> {
        self.process.next_event(deadline).await
    }

    async fn send_stop(&mut self, published: u64) -> Result<()> {
        self.process.send_line(&format!("stop {published}")).await
    }

    async fn reap(self) {
        self.process.reap().await
    }
}

/// A child process running this binary with the parent's arguments plus
/// `--worker-index i --worker-count K`: JSON events one per line on its
/// stdout, commands one per line on its stdin, stderr shared with the
/// parent. Killed if dropped, so a parent that bails out leaves none behind.
pub struct WorkerProcess {
    pub index: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl WorkerProcess {
    /// Starts worker `index` of `count` with extra environment variables
    /// (secrets travel there rather than on the command line).
    pub fn spawn(index: usize, count: usize, env: &[(&str, &str)]) -> Result<WorkerProcess> {
        let exe = std::env::current_exe().context("locate own executable")?;
        let mut command = Command::new(exe);
        command
            .args(std::env::args_os().skip(1))
            .arg("--worker-index")
            .arg(index.to_string())
            .arg("--worker-count")
            .arg(count.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            // A parent that bails out must not leave workers behind.
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().context("spawn worker process")?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker stdout not captured"))?;
        Ok(WorkerProcess {
            index,
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON event line; other lines are logged and skipped.
    pub async fn next_event<E: DeserializeOwned>(&mut self, deadline: Instant) -> Result<E> {
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .map_err(|_| anyhow!("timed out"))?
                .context("read worker stdout")?
                .ok_or_else(|| anyhow!("worker exited"))?;
            match serde_json::from_str(&line) {
                Ok(event) => return Ok(event),
                Err(_) => log!("worker {}: {line}", self.index),
            }
        }
    }

    /// Writes one command line to the worker's stdin.
    pub async fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin already closed"))?;
        let line = format!("{line}\n");
        tokio::time::timeout(Duration::from_secs(5), async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        })
        .await
        .map_err(|_| anyhow!("writing to the worker timed out"))?
        .context("write to worker")
    }

    /// Closes stdin, waits briefly for the process to exit, then kills it.
    pub async fn reap(mut self) {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => log!("worker {} exited with {status}", self.index),
            Ok(Err(e)) => log!("worker {}: wait failed: {e}", self.index),
            Err(_) => {
                log!("worker {} did not exit; killing it", self.index);
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Body of a worker process: open its share (spread over the server nodes
/// `urls`), report ready, wait for the parent's stop line, drain, report the
/// partial result.
pub async fn run_worker(plan: &FleetPlan, args: &PoolArgs, urls: &[String]) -> Result<()> {
    let (Some(index), Some(count)) = (args.worker_index, args.worker_count) else {
        bail!("worker mode needs --worker-index and --worker-count");
    };
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} not set"))?;
    let targets = resolve_all(urls).await?;
    let pool = Pool::open(pool_spec(plan, args, &targets, token.into(), index, count)).await;
    emit(&WorkerEvent::Ready {
        established: pool.established(),
        failed: pool.failed(),
        per_node: pool.per_node().to_vec(),
    })?;
    let published = wait_for_stop(plan.stop_wait).await;
    let report = pool.finish(published, plan.drain).await;
    emit(&WorkerEvent::Done(report))
}

/// Resolves every base URL, in order.
pub async fn resolve_all(urls: &[String]) -> Result<Vec<Arc<Target>>> {
    let mut targets = Vec::with_capacity(urls.len());
    for url in urls {
        targets.push(Arc::new(Target::resolve(url).await?));
    }
    Ok(targets)
}

/// Writes one event line to the parent.
pub fn emit(event: &impl Serialize) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(event).context("serialise worker event")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("write to parent")?;
    out.flush().context("flush to parent")
}

/// Waits for `stop <published>` on stdin. End of input (parent gone) or the
/// timeout also stop the worker, with 0 published.
pub async fn wait_for_stop(max_wait: Duration) -> u64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread rather than tokio's stdin: tokio reads stdin on a
    // blocking-pool thread that would delay runtime shutdown after a
    // timeout until the read returns.
    std::thread::spawn(move || {
        let mut line = String::new();
        let published = match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => line
                .trim()
                .strip_prefix("stop")
                .and_then(|n| n.trim().parse::<u64>().ok()),
        };
        let _ = tx.send(published);
    });
    match tokio::time::timeout(max_wait, rx).await {
        Ok(Ok(Some(published))) => published,
        Ok(_) => {
            log!("parent went away; stopping");
            0
        }
        Err(_) => {
            log!("no stop signal within {max_wait:?}; stopping");
            0
        }
    }
}
