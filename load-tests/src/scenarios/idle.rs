//! `idle`: how much server memory an authenticated, otherwise idle
//! WebSocket connection costs.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use super::{is_zero, secs, server_rss, server_rss_required};
use crate::cli::IdleArgs;
use crate::http;
use crate::net::Target;
use crate::stats::round3;
use crate::workers::{self, Fleet, FleetPlan};

#[derive(Serialize)]
struct IdleResult {
    scenario: &'static str,
    connections: usize,
    established: u64,
    failed: u64,
    /// Connections the server dropped while they were held.
    disconnects: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// RSS at the end of the hold, to spot growth over time.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_end_kib: Option<u64>,
    kib_per_connection: f64,
    /// From the first connection attempt until all were open.
    connect_secs: f64,
    hold_secs: u64,
    /// Worker processes that died or never reported; their connections
    /// count as failed (or their deliveries as lost).
    #[serde(skip_serializing_if = "is_zero")]
    worker_failures: u64,
    workers: usize,
}

fn plan(args: &IdleArgs) -> FleetPlan {
    FleetPlan {
        total: args.connections,
        subscribe: None,
        stop_wait: secs(args.pool.open_timeout_secs + args.settle_secs + args.hold_secs + 60),
        drain: secs(0),
    }
}

pub async fn run(args: IdleArgs) -> Result<Option<String>> {
    let plan = plan(&args);
    if args.pool.worker_index.is_some() {
        workers::run_worker(&plan, &args.pool, std::slice::from_ref(&args.server.url)).await?;
        return Ok(None);
    }
    let pid = args
        .server
        .server_pid
        .context("idle needs --server-pid to measure memory")?;
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;

    let rss_before_kib = server_rss_required(pid)?;
    let started = Instant::now();
    let fleet = Fleet::start(&plan, &args.pool, &[target], &token).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    log!(
        "idle: {} established, {} failed in {connect_secs:.1}s; settling {}s",
        fleet.established(),
        fleet.failed(),
        args.settle_secs
    );

    tokio::time::sleep(secs(args.settle_secs)).await;
    let rss_after_kib = server_rss_required(pid)?;
    log!(
        "idle: server RSS {rss_before_kib} -> {rss_after_kib} KiB; holding {}s",
        args.hold_secs
    );
    tokio::time::sleep(secs(args.hold_secs)).await;
    let rss_end_kib = server_rss(Some(pid));

    let report = fleet.finish(0, &plan).await;
    let kib_per_connection = if report.established > 0 {
        round3(rss_after_kib.saturating_sub(rss_before_kib) as f64 / report.established as f64)
    } else {
        0.0
    };
    let result = IdleResult {
        scenario: "idle",
        connections: args.connections,
        established: report.established,
        failed: report.failed,
        disconnects: report.disconnects,
        rss_before_kib,
        rss_after_kib,
        rss_end_kib,
        kib_per_connection,
        connect_secs: round3(connect_secs),
        hold_secs: args.hold_secs,
        workers: args.pool.workers.max(1),
        worker_failures: report.worker_failures,
    };
    Ok(Some(serde_json::to_string(&result)?))
}
