//! `publish`: raw throughput of the REST publish path. Each connection
//! sends its next request as soon as the previous answer arrives, so the
//! result is the server's capacity at that concurrency, with per-request
//! latency.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::server_rss;
use crate::cli::PublishArgs;
use crate::http::{self, HttpConn};
use crate::net::Target;
use crate::stats::{Percentiles, new_histogram, record_us, round3, unix_nanos};

const LOGGED_ERRORS: u64 = 5;

#[derive(Serialize)]
struct PublishResult {
    scenario: &'static str,
    connections: usize,
    batch: usize,
    duration_secs: u64,
    /// Successful requests.
    requests: u64,
    /// Publications in successful requests.
    publications: u64,
    errors: u64,
    requests_per_sec: f64,
    publications_per_sec: f64,
    /// Request latency.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
}

/// What one connection achieved.
struct ConnOutcome {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

pub async fn run(args: PublishArgs) -> Result<Option<String>> {
    if args.connections == 0 || args.batch == 0 {
        bail!("--connections and --batch must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key: Arc<str> = http::create_publish_key(&target, &token).await?.into();
    let channel: Arc<str> = args.channel.as_str().into();
    let duration = Duration::from_secs(args.duration_secs);

    // Connect everything first so connection setup is not part of the run.
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            HttpConn::connect(&target)
                .await
                .context("connect publisher")?,
        );
    }
    log!(
        "publish: {} connections, batch {}, {}s",
        args.connections,
        args.batch,
        args.duration_secs
    );

    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let target = Arc::clone(&target);
        let key = Arc::clone(&key);
        let channel = Arc::clone(&channel);
        let batch = args.batch;
        tasks.spawn(async move {
            publish_loop(i, conn, &target, &key, &channel, batch, deadline).await
        });
    }

    let mut latency = new_histogram();
    let (mut requests, mut errors) = (0, 0);
    let backstop = duration + http::REQUEST_TIMEOUT + Duration::from_secs(5);
    let joined = tokio::time::timeout(backstop, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(outcome) => {
                    requests += outcome.requests;
                    errors += outcome.errors;
                    // Same bounds everywhere, so `add` cannot fail.
                    let _ = latency.add(&outcome.latency);
                }
                Err(e) => log!("publisher task failed: {e}"),
            }
        }
    })
    .await;
    if joined.is_err() {
        log!("publishers did not finish in time; aborting them");
        tasks.abort_all();
    }
    let elapsed = started.elapsed().as_secs_f64();

    let publications = requests * args.batch as u64;
    let p = Percentiles::of(&latency);
    let result = PublishResult {
        scenario: "publish",
        connections: args.connections,
        batch: args.batch,
        duration_secs: args.duration_secs,
        requests,
        publications,
        errors,
        requests_per_sec: round3(requests as f64 / elapsed),
        publications_per_sec: round3(publications as f64 / elapsed),
        p50_ms: p.p50_ms,
        p90_ms: p.p90_ms,
        p99_ms: p.p99_ms,
        max_ms: p.max_ms,
        rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&result)?))
}

/// Sends requests back-to-back on one connection until `deadline`,
/// reconnecting (after a short pause) if the connection breaks.
async fn publish_loop(
    index: usize,
    conn: HttpConn,
    target: &Target,
    key: &str,
    channel: &str,
    batch: usize,
    deadline: Instant,
) -> ConnOutcome {
    let mut out = ConnOutcome {
        requests: 0,
        errors: 0,
        latency: new_histogram(),
    };
    let mut conn = Some(conn);
    let path = if batch > 1 {
        "/api/v1/publish/batch"
    } else {
        "/api/v1/publish"
    };
    let mut seq = 0u64;
    let log_error = |errors: &mut u64, what: String| {
        if *errors < LOGGED_ERRORS {
            log!("publisher {index}: {what}");
        }
        *errors += 1;
    };
    while Instant::now() < deadline {
        if conn.as_ref().is_none_or(HttpConn::is_closed) {
            match HttpConn::connect(target).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    log_error(&mut out.errors, format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };

        let ts = unix_nanos();
        let body = if batch > 1 {
            let items: Vec<String> = (0..batch)
                .map(|k| format!(r#"{{"seq":{},"ts":{ts}}}"#, seq + k as u64))
                .collect();
            http::publish_batch_body(channel, items.iter().map(String::as_str))
        } else {
            http::publish_body(channel, &format!(r#"{{"seq":{seq},"ts":{ts}}}"#))
        };
        seq += batch as u64;

        let sent = Instant::now();
        match c.post_json(path, Some(key), body).await {
            Ok((status, _)) if status.is_success() => {
                out.requests += 1;
                record_us(&mut out.latency, sent.elapsed().as_micros() as u64);
            }
            Ok((status, body)) => log_error(
                &mut out.errors,
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ),
            Err(e) => {
                log_error(&mut out.errors, format!("{e:#}"));
                conn = None;
            }
        }
    }
    out
}
