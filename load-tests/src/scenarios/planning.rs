//! `planning`: broadcasters' consoles following their stations live while
//! planners change slots over REST. `--broadcasters` users (role
//! `broadcaster`) each open one WebSocket subscribed to
//! `planning:<station>` of one of `--stations` stations (round-robin);
//! planners make `--rate` slot changes per second in total (a new slot,
//! then an edit of it with its version, in turn), spread over the stations.
//! Each change carries its send time (unix nanos) in the slot's `notes`,
//! taken just before the REST request starts, so the latency reported is
//! from the REST write to the delivery on each console. Every console must
//! get every change of its station exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use hyper::StatusCode;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::created;
use super::server_rss;
use crate::cli::PlanningArgs;
use crate::http::{self, HttpConn};
use crate::net::{SourceAddrs, Target};
use crate::stats::{Percentiles, ShardedHistogram, new_histogram, record_us, round3, unix_nanos};
use crate::ws::Connector;

#[derive(Serialize)]
struct PlanningResult {
    scenario: &'static str,
    stations: usize,
    broadcasters: usize,
    rate: u32,
    duration_secs: u64,
    /// Slot changes the REST API accepted.
    changes: u64,
    /// Changes refused or failed.
    errors: u64,
    /// REST write latency.
    write_p50_ms: f64,
    write_p99_ms: f64,
    /// Deliveries expected: each accepted change times the consoles of
    /// its station.
    expected_deliveries: u64,
    deliveries: u64,
    lost: u64,
    duplicates: u64,
    /// From the start of the REST write to the delivery on a console.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    data: Option<Change>,
}

#[derive(Deserialize)]
struct Change {
    slot: Option<SlotView>,
}

#[derive(Deserialize)]
struct SlotView {
    id: String,
    version: i64,
    notes: Option<String>,
}

/// What one station's planner did.
struct PlannerOutcome {
    changes: u64,
    errors: u64,
    latency: hdrhistogram::Histogram<u64>,
}

pub async fn run(args: PlanningArgs) -> Result<Option<String>> {
    if args.stations == 0 || args.broadcasters == 0 || args.rate == 0 {
        bail!("--stations, --broadcasters and --rate must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key: Arc<str> = http::create_api_key(&target, &admin, "planning-load", "planning")
        .await?
        .into();

    // Stations.
    let mut setup = HttpConn::connect(&target).await?;
    let mut stations = Vec::with_capacity(args.stations);
    for n in 0..args.stations {
        let st = created(
            &mut setup,
            "/api/v1/stations",
            &key,
            json!({"name": format!("Bench station {n}"), "time_zone": "Europe/Paris"}),
        )
        .await?;
        stations.push(st["id"].as_str().unwrap_or_default().to_owned());
    }

    // Broadcasters: one user each, created and signed in a few at a time.
    log!("planning: creating {} broadcasters", args.broadcasters);
    let tokens: Vec<String> =
        super::create_users(&target, &admin, "bench", "broadcaster", args.broadcasters)
            .await?
            .into_iter()
            .map(|(_, token)| token)
            .collect();

    // Consoles, each subscribed to its station.
    let connector = Connector {
        target: Arc::clone(&target),
        token: Arc::from(admin.as_str()),
        sources: SourceAddrs::new(8, &target),
        attempt_timeout: Duration::from_secs(10),
        retries: 3,
    };
    let mut sockets = Vec::with_capacity(args.broadcasters);
    for (i, token) in tokens.iter().enumerate() {
        let channel = format!("planning:{}", stations[i % args.stations]);
        sockets.push(connector.open_as(i, token, Some(&channel)).await?);
    }
    log!(
        "planning: {} consoles on {} stations, {} changes/s for {}s",
        args.broadcasters,
        args.stations,
        args.rate,
        args.duration_secs
    );

    let latency = Arc::new(ShardedHistogram::new(16));
    let deliveries = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let stop = stop::Stop::new();
    let mut consoles = tokio::task::JoinSet::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let latency = Arc::clone(&latency);
        let deliveries = Arc::clone(&deliveries);
        let duplicates = Arc::clone(&duplicates);
        let stop = stop.clone();
        consoles.spawn(async move {
            let mut seen: HashSet<(String, i64)> = HashSet::new();
            loop {
                let msg = tokio::select! {
                    m = ws.next() => m,
                    _ = stop.wait() => break,
                };
                let Some(Ok(Message::Text(text))) = msg else {
                    match msg {
                        Some(Ok(_)) => continue,
                        _ => break,
                    }
                };
                let now = unix_nanos();
                let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                    continue;
                };
                if frame.kind != "pub" {
                    continue;
                }
                let Some(slot) = frame.data.and_then(|d| d.slot) else {
                    continue;
                };
                if !seen.insert((slot.id, slot.version)) {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                deliveries.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = slot.notes.and_then(|n| n.parse::<u64>().ok()) {
                    latency.record_us(i % 16, now.saturating_sub(sent) / 1000);
                }
            }
        });
    }

    // Planners: one per station, each at its share of the rate, on a
    // schedule of its own (staggered), never waiting for deliveries.
    let duration = Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let per_station = f64::from(args.rate) / args.stations as f64;
    let period = Duration::from_secs_f64(1.0 / per_station);
    let mut planners = tokio::task::JoinSet::new();
    for (n, station) in stations.iter().enumerate() {
        let target = Arc::clone(&target);
        let key = Arc::clone(&key);
        let station = station.clone();
        let offset = period.mul_f64(n as f64 / args.stations as f64);
        planners.spawn(async move {
            let outcome = plan(
                &target,
                &key,
                &station,
                started + offset,
                period,
                started + duration,
            )
            .await;
            (n, outcome)
        });
    }
    let mut write = new_histogram();
    let (mut changes, mut errors) = (0u64, 0u64);
    // Deliveries: each station's changes reach each of its consoles.
    let mut expected = 0u64;
    while let Some(joined) = planners.join_next().await {
        let (n, outcome) = joined.context("planner task")?;
        let outcome = outcome?;
        changes += outcome.changes;
        errors += outcome.errors;
        let consoles = (0..args.broadcasters)
            .filter(|i| i % args.stations == n)
            .count() as u64;
        expected += outcome.changes * consoles;
        let _ = write.add(&outcome.latency);
    }
    let drain_until = Instant::now() + Duration::from_secs(args.drain_secs);
    while deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.fire();
    while consoles.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = deliveries.load(Ordering::Relaxed);
    let p = Percentiles::of(&latency.merged());
    let w = Percentiles::of(&write);
    log!(
        "planning: {changes} changes in {elapsed:.1}s, {delivered}/{expected} deliveries, p99 {:.2} ms",
        p.p99_ms
    );
    let result = PlanningResult {
        scenario: "planning",
        stations: args.stations,
        broadcasters: args.broadcasters,
        rate: args.rate,
        duration_secs: args.duration_secs,
        changes,
        errors,
        write_p50_ms: w.p50_ms,
        write_p99_ms: w.p99_ms,
        expected_deliveries: expected,
        deliveries: delivered,
        lost: expected.saturating_sub(delivered),
        duplicates: duplicates.load(Ordering::Relaxed),
        p50_ms: round3(p.p50_ms),
        p90_ms: round3(p.p90_ms),
        p99_ms: round3(p.p99_ms),
        max_ms: round3(p.max_ms),
        rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&result)?))
}

/// One station's planner: a new slot, then an edit of it (with its version),
/// in turn, every `period` from `first` until `end`.
async fn plan(
    target: &Target,
    key: &str,
    station: &str,
    first: Instant,
    period: Duration,
    end: Instant,
) -> Result<PlannerOutcome> {
    let mut conn = HttpConn::connect(target).await?;
    let mut latency = new_histogram();
    let (mut changes, mut errors) = (0u64, 0u64);
    // Slots a minute apart from a day far from today, so the consoles'
    // snapshots stay small and nothing overlaps.
    let base_ms: i64 = 1_894_233_600_000;
    let mut last: Option<(String, i64)> = None;
    let mut n: i64 = 0;
    let mut due = first;
    while due < end {
        tokio::time::sleep_until(due).await;
        due += period;
        if conn.is_closed() {
            conn = HttpConn::connect(target).await?;
        }
        let sent = unix_nanos();
        let begun = Instant::now();
        let outcome = match last.take() {
            None => {
                let starts = jiff_free_rfc3339(base_ms + n * 60_000);
                n += 1;
                let body = json!({"starts_at": starts, "duration": 30, "notes": sent.to_string()});
                conn.post_json(
                    &format!("/api/v1/stations/{station}/slots"),
                    Some(key),
                    Bytes::from(body.to_string()),
                )
                .await
            }
            Some((id, version)) => {
                let body = json!({"version": version, "notes": sent.to_string()});
                conn.patch_json(
                    &format!("/api/v1/slots/{id}"),
                    Some(key),
                    Bytes::from(body.to_string()),
                )
                .await
            }
        };
        record_us(&mut latency, begun.elapsed().as_micros() as u64);
        match outcome {
            Ok((status, bytes)) if status == StatusCode::CREATED => {
                changes += 1;
                let slot: Value = serde_json::from_slice(&bytes)?;
                last = Some((
                    slot["id"].as_str().unwrap_or_default().to_owned(),
                    slot["version"].as_i64().unwrap_or(1),
                ));
            }
            Ok((status, _)) if status == StatusCode::OK => changes += 1,
            Ok((status, bytes)) => {
                errors += 1;
                if errors <= 3 {
                    log!("planning: {status} {}", String::from_utf8_lossy(&bytes));
                }
            }
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    log!("planning: {e:#}");
                }
            }
        }
    }
    Ok(PlannerOutcome {
        changes,
        errors,
        latency,
    })
}

/// RFC 3339 (UTC, whole seconds) of a millisecond timestamp, without a
/// date library: days from the civil date algorithm.
fn jiff_free_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A one-shot stop signal shared by the console tasks.
mod stop {
    use std::sync::Arc;

    #[derive(Clone)]
    pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

    impl Stop {
        pub fn new() -> Self {
            Stop(Arc::new(tokio::sync::watch::channel(false).0))
        }
        pub fn fire(&self) {
            let _ = self.0.send(true);
        }
        pub async fn wait(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_a_known_instant() {
        assert_eq!(
            super::jiff_free_rfc3339(1_894_233_600_000 + 61_000),
            "2030-01-10T00:01:01Z"
        );
        assert_eq!(super::jiff_free_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
