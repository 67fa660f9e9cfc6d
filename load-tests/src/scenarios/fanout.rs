//! `fanout`: one publisher, many subscribers on one channel. Measures
//! end-to-end delivery latency (publisher send time → subscriber receipt)
//! and loss.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::paced::{self, PacedSpec};
use super::{is_zero, secs, server_rss};
use crate::cli::FanoutArgs;
use crate::http;
use crate::net::Target;
use crate::pool::NodeReport;
use crate::stats::{Percentiles, new_histogram, round3};
use crate::workers::{self, Fleet, FleetPlan};

#[derive(Serialize)]
struct FanoutResult {
    scenario: &'static str,
    subscribers: usize,
    /// Subscribers that were connected and subscribed when publishing began.
    subscribed: u64,
    failed: u64,
    rate: u32,
    duration_secs: u64,
    /// Bytes of each publication's `data`.
    payload_bytes: usize,
    /// Where latency starts: `scheduled` or `sent` (see `--stamp`).
    stamp: crate::cli::Stamp,
    publish_connections: usize,
    published: u64,
    publish_errors: u64,
    /// Publications skipped because all publisher connections were busy:
    /// the server could not accept publishes at the requested rate.
    publish_dropped: u64,
    /// Achieved publication rate.
    published_per_sec: f64,
    /// `published × subscribed`.
    expected: u64,
    delivered: u64,
    lost: u64,
    /// Deliveries over publishing time plus drain time.
    deliveries_per_sec: f64,
    #[serde(flatten)]
    latency: Percentiles,
    disconnects: u64,
    bad_frames: u64,
    drain_secs: f64,
    /// Worker processes that died or never reported; their connections
    /// count as failed (or their deliveries as lost).
    #[serde(skip_serializing_if = "is_zero")]
    worker_failures: u64,
    connect_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
    workers: usize,
    /// With `--subscribe-urls`: the subscribers of each node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    per_node: Vec<NodeResult>,
}

#[derive(Serialize)]
struct NodeResult {
    url: String,
    /// Subscribers connected and subscribed to this node.
    subscribers: u64,
    failed: u64,
    delivered: u64,
    /// `published × subscribers − delivered`.
    lost: u64,
    #[serde(flatten)]
    latency: Percentiles,
}

impl NodeResult {
    fn new(url: &str, report: &NodeReport, published: u64) -> Self {
        let mut hist = new_histogram();
        report.latency.add_to(&mut hist);
        NodeResult {
            url: url.to_owned(),
            subscribers: report.established,
            failed: report.failed,
            delivered: report.delivered,
            lost: published
                .saturating_mul(report.established)
                .saturating_sub(report.delivered),
            latency: Percentiles::of(&hist),
        }
    }
}

/// Longest a `--exec-*-publish` command may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a `--exec-*-publish` command and waits for it. Its output goes to
/// stderr so the result line stays alone on stdout; a failure is logged,
/// not fatal, so a broken hook does not void the run.
async fn run_hook(what: &str, command: Option<&str>) {
    let Some(command) = command else { return };
    let stderr = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::null(),
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(stderr)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            log!("fanout: cannot run {what} command: {e}");
            return;
        }
    };
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => log!("fanout: {what} command exited with {status}"),
        Ok(Err(e)) => log!("fanout: {what} command: {e}"),
        Err(_) => {
            log!("fanout: {what} command still running after {HOOK_TIMEOUT:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

/// The nodes subscribers connect to: `--subscribe-urls` without blanks, or
/// `--url` alone.
fn subscribe_urls(args: &FanoutArgs) -> Vec<String> {
    let urls: Vec<String> = args
        .subscribe_urls
        .iter()
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        vec![args.server.url.clone()]
    } else {
        urls
    }
}

fn plan(args: &FanoutArgs) -> FleetPlan {
    FleetPlan {
        total: args.subscribers,
        subscribe: Some(args.channel.clone()),
        stop_wait: secs(args.pool.open_timeout_secs + args.duration_secs + 60),
        drain: secs(args.drain_secs),
    }
}

pub async fn run(args: FanoutArgs) -> Result<Option<String>> {
    let plan = plan(&args);
    let urls = subscribe_urls(&args);
    if args.pool.worker_index.is_some() {
        workers::run_worker(&plan, &args.pool, &urls).await?;
        return Ok(None);
    }
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let nodes = workers::resolve_all(&urls)
        .await
        .context("--subscribe-urls")?;
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key = http::create_publish_key(&target, &token).await?;

    let started = Instant::now();
    let fleet = Fleet::start(&plan, &args.pool, &nodes, &token).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    log!(
        "fanout: {} subscribed, {} failed in {connect_secs:.1}s over {} node(s); publishing {}/s for {}s",
        fleet.established(),
        fleet.failed(),
        nodes.len(),
        args.rate,
        args.duration_secs
    );
    run_hook("before-publish", args.exec_before_publish.as_deref()).await;

    let connections = args
        .publish_connections
        .unwrap_or_else(|| paced::default_connections(args.rate));
    let outcome = paced::publish(PacedSpec {
        target: Arc::clone(&target),
        api_key: key.into(),
        channel: args.channel.as_str().into(),
        rate: args.rate,
        duration: secs(args.duration_secs),
        connections,
        payload_bytes: args.payload_bytes,
        stamp: args.stamp,
    })
    .await;
    run_hook("after-publish", args.exec_after_publish.as_deref()).await;
    let rss_kib = server_rss(args.server.server_pid);
    log!(
        "fanout: published {} ({} errors, {} dropped) in {:.1}s; draining",
        outcome.published,
        outcome.errors,
        outcome.dropped,
        outcome.elapsed_secs
    );

    let report = fleet.finish(outcome.published, &plan).await;
    let mut hist = new_histogram();
    report.latency.add_to(&mut hist);
    let expected = outcome.published.saturating_mul(report.established);
    let window = outcome.elapsed_secs + report.drain_secs;
    let per_sec = |n: u64, secs: f64| {
        if secs > 0.0 {
            round3(n as f64 / secs)
        } else {
            0.0
        }
    };
    let per_node = if args.subscribe_urls.is_empty() {
        Vec::new()
    } else {
        urls.iter()
            .zip(&report.per_node)
            .map(|(url, node)| NodeResult::new(url, node, outcome.published))
            .collect()
    };
    let result = FanoutResult {
        scenario: "fanout",
        subscribers: args.subscribers,
        subscribed: report.established,
        failed: report.failed,
        rate: args.rate,
        duration_secs: args.duration_secs,
        payload_bytes: args.payload_bytes,
        stamp: args.stamp,
        publish_connections: connections,
        published: outcome.published,
        publish_errors: outcome.errors,
        publish_dropped: outcome.dropped,
        published_per_sec: per_sec(outcome.published, outcome.elapsed_secs),
        expected,
        delivered: report.delivered,
        lost: expected.saturating_sub(report.delivered),
        deliveries_per_sec: per_sec(report.delivered, window),
        latency: Percentiles::of(&hist),
        disconnects: report.disconnects,
        bad_frames: report.bad_frames,
        drain_secs: round3(report.drain_secs),
        connect_secs: round3(connect_secs),
        rss_kib,
        workers: args.pool.workers.max(1),
        worker_failures: report.worker_failures,
        per_node,
    };
    Ok(Some(serde_json::to_string(&result)?))
}
