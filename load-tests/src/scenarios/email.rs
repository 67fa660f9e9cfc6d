//! `email`: how fast one critical trigger turns into emails accepted by an
//! SMTP server.
//!
//! Sends one trigger of a critical type (emailed at once, not after the
//! fallback delay) to every user but the admin, then watches the SMTP
//! sink's folder (`tests/smtp/sink.py --maildir`) until the expected number
//! of messages arrived. Timing comes from the sink itself: each message's
//! `<n>.json` records `received_at` (Unix ms), so the folder is only polled
//! coarsely (every 250 ms) to know when to stop and the figures do not
//! depend on the polling. After the last expected message it keeps
//! watching `--settle-secs` for extra (duplicate) ones, and counts distinct
//! recipients.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::notify_fanout::{base_payload, post_trigger, trigger_body, trigger_done};
use super::{secs, server_rss};
use crate::cli::EmailArgs;
use crate::http::{self, HttpConn};
use crate::mint;
use crate::net::Target;
use crate::stats::{self, quantile, round3};

const POLL: Duration = Duration::from_millis(250);

#[derive(Serialize)]
struct EmailResult {
    scenario: &'static str,
    #[serde(rename = "type")]
    type_key: String,
    recipients: i64,
    expected: u64,
    received: u64,
    /// Messages beyond the expected count (duplicates or strays).
    extra: u64,
    /// Distinct `RCPT TO` addresses among the messages received.
    distinct_recipients: usize,
    /// From the trigger request to the last expected message.
    secs: f64,
    emails_per_sec: f64,
    /// Rate between the 10th and the 90th percentile of arrival times, so
    /// without the start (fan-out of the first page) and the tail.
    steady_emails_per_sec: f64,
    /// From the trigger request to the first message.
    first_email_ms: f64,
    /// The hub's `completed_at − created_at` of the trigger: inbox rows and
    /// outbox emails committed for every recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    fanout_done_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sink_cpu_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
}

/// The part of the sink's `<n>.json` used here.
#[derive(Deserialize)]
struct Envelope {
    rcpt_tos: Vec<String>,
    received_at: i64,
}

/// Numbers of the `<n>.eml` files in `dir`.
fn message_numbers(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".eml"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    Ok(out)
}

fn unix_millis() -> i64 {
    (stats::unix_nanos() / 1_000_000) as i64
}

pub async fn run(args: EmailArgs) -> Result<Option<String>> {
    let payload = base_payload(&args.type_key, args.payload.as_deref())?;
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin_token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let admin = mint::unverified_claims(&admin_token)?;
    let key = http::create_api_key(&target, &admin_token, "email-bench", "notify").await?;
    let dir = args.maildir.clone();
    let baseline = message_numbers(&dir)?.into_iter().max().unwrap_or(0);
    let new_count = |dir: &PathBuf| -> Result<u64> {
        Ok(message_numbers(dir)?
            .into_iter()
            .filter(|&n| n > baseline)
            .count() as u64)
    };
    let cpu = |pid: Option<u32>| pid.and_then(|pid| stats::cpu_secs(pid).ok());
    let (server_cpu0, sink_cpu0) = (cpu(args.server.server_pid), cpu(args.sink_pid));

    let mut conn = HttpConn::connect(&target).await?;
    let started_ms = unix_millis();
    let started = Instant::now();
    let (id, recipients) = post_trigger(
        &mut conn,
        &key,
        trigger_body(&args.type_key, &payload, &admin.sub),
    )
    .await?;
    let expected = args.expect.unwrap_or(recipients.max(0) as u64);
    if expected == 0 {
        bail!("the trigger reaches no recipient");
    }
    log!("email: trigger {id} to {recipients} recipients; waiting for {expected} messages");

    let deadline = started + secs(args.timeout_secs);
    let mut last_log = Instant::now();
    loop {
        let received = new_count(&dir)?;
        if received >= expected {
            break;
        }
        if Instant::now() >= deadline {
            log!(
                "email: only {received}/{expected} messages after {}s",
                args.timeout_secs
            );
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            log!(
                "email: {received}/{expected} messages after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    let fanout_done_ms = match trigger_done(&mut conn, &key, &id, Duration::from_secs(30)).await {
        Ok((ms, _)) => Some(ms),
        Err(e) => {
            log!("email: {e:#}");
            None
        }
    };
    let cpu_delta = |before: Option<f64>, pid: Option<u32>| match (before, cpu(pid)) {
        (Some(before), Some(after)) => Some(round3(after - before)),
        _ => None,
    };
    let server_cpu_secs = cpu_delta(server_cpu0, args.server.server_pid);
    let sink_cpu_secs = cpu_delta(sink_cpu0, args.sink_pid);
    tokio::time::sleep(secs(args.settle_secs)).await;

    // Read every new message's envelope for arrival times and recipients.
    let mut arrivals = Vec::new();
    let mut rcpts = HashSet::new();
    for n in message_numbers(&dir)?.into_iter().filter(|&n| n > baseline) {
        let path = dir.join(format!("{n}.json"));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let envelope: Envelope = serde_json::from_str(&text)
            .with_context(|| format!("unexpected envelope in {}", path.display()))?;
        arrivals.push((envelope.received_at - started_ms) as f64);
        rcpts.extend(envelope.rcpt_tos);
    }
    arrivals.sort_by(f64::total_cmp);
    let received = arrivals.len() as u64;
    // The expected-th arrival is "the last one"; later ones are extra.
    let last_ms = arrivals
        .get(expected.min(received).saturating_sub(1) as usize)
        .copied()
        .unwrap_or(0.0);
    let in_time = &arrivals[..expected.min(received) as usize];
    let (p10, p90) = (quantile(in_time, 0.10), quantile(in_time, 0.90));
    let steady = if p90 > p10 {
        round3(0.8 * in_time.len() as f64 / ((p90 - p10) / 1000.0))
    } else {
        0.0
    };
    let result = EmailResult {
        scenario: "email",
        type_key: args.type_key.clone(),
        recipients,
        expected,
        received,
        extra: received.saturating_sub(expected),
        distinct_recipients: rcpts.len(),
        secs: round3(last_ms / 1000.0),
        emails_per_sec: if last_ms > 0.0 {
            round3(in_time.len() as f64 / (last_ms / 1000.0))
        } else {
            0.0
        },
        steady_emails_per_sec: steady,
        first_email_ms: arrivals.first().copied().unwrap_or(0.0),
        fanout_done_ms,
        server_cpu_secs,
        sink_cpu_secs,
        rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&result)?))
}
