//! `fanout`: one publisher, many subscribers on one channel. Measures
//! end-to-end delivery latency (publisher send time → subscriber receipt)
//! and loss.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::paced::{self, PacedSpec};
use super::{is_zero, secs, server_rss};
use crate::cli::FanoutArgs;
use crate::http;
use crate::net::Target;
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
    if args.pool.worker_index.is_some() {
        workers::run_worker(&plan, &args.pool, &args.server.url).await?;
        return Ok(None);
    }
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key = http::create_publish_key(&target, &token).await?;

    let started = Instant::now();
    let fleet = Fleet::start(&plan, &args.pool, Arc::clone(&target), &token).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    log!(
        "fanout: {} subscribed, {} failed in {connect_secs:.1}s; publishing {}/s for {}s",
        fleet.established(),
        fleet.failed(),
        args.rate,
        args.duration_secs
    );

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
    })
    .await;
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
    let result = FanoutResult {
        scenario: "fanout",
        subscribers: args.subscribers,
        subscribed: report.established,
        failed: report.failed,
        rate: args.rate,
        duration_secs: args.duration_secs,
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
    };
    Ok(Some(serde_json::to_string(&result)?))
}
