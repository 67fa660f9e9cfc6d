//! Open-loop publisher for the fan-out scenario: offers a fixed rate of
//! publications regardless of how fast the server answers, so an
//! overloaded server shows up as latency and drops instead of silently
//! slowing the generator down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cli::Stamp;
use crate::http::{self, HttpConn};
use crate::net::Target;
use crate::stats::unix_nanos;

/// tokio timers have millisecond resolution, so the pacer never ticks more
/// often than this and sends several publications per tick above it.
const MAX_TICKS_PER_SEC: u32 = 1000;
const LOGGED_ERRORS: u64 = 5;

/// What to publish.
pub struct PacedSpec {
    pub target: Arc<Target>,
    pub api_key: Arc<str>,
    pub channel: Arc<str>,
    pub rate: u32,
    pub duration: Duration,
    /// Keep-alive connections that send the publications.
    pub connections: usize,
    /// Bytes of each publication's `data`.
    pub payload_bytes: usize,
    /// Where latency starts.
    pub stamp: Stamp,
}

pub struct PacedOutcome {
    /// Publications the server accepted.
    pub published: u64,
    /// Failed publish requests (HTTP error status or transport error).
    pub errors: u64,
    /// Publications not sent because every connection was still busy, i.e.
    /// the server answered too slowly for the requested rate.
    pub dropped: u64,
    pub elapsed_secs: f64,
}

#[derive(Default)]
struct Counters {
    seq: AtomicU64,
    published: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn error(&self, what: impl FnOnce() -> String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
            log!("publish error: {}", what());
        }
    }
}

/// Default number of publisher connections: enough that each carries about
/// 100 requests/s (10 ms per request before the queue backs up).
pub fn default_connections(rate: u32) -> usize {
    (rate.div_ceil(100) as usize).clamp(4, 64)
}

/// Publishes `rate` messages/s for `duration`. Publication `k` is due at
/// `k / rate` after the start; a pacer wakes on a tokio interval and hands
/// every publication due by then, with the instant it was due, to a queue
/// served by `connections` sender tasks. A late wake-up (the timer's
/// millisecond resolution, a busy CPU) sends what came due meanwhile at
/// once rather than skipping it, so the rate offered is the rate asked.
/// With [`Stamp::Scheduled`] the publication's `ts` is its due instant, so
/// a late pacer or a wait for a free connection counts as latency, as it
/// would for an application publishing on a schedule; with [`Stamp::Sent`]
/// a sender stamps `ts` right before its request. The queue holds one
/// second of publications; past that they are dropped and counted.
pub async fn publish(spec: PacedSpec) -> PacedOutcome {
    let counters = Arc::new(Counters::default());
    let connections = spec.connections.max(1);
    let backlog = connections.max(spec.rate as usize);
    let (jobs_tx, jobs_rx) = mpsc::channel::<u64>(backlog);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let jobs = Arc::clone(&jobs_rx);
        let counters = Arc::clone(&counters);
        let target = Arc::clone(&spec.target);
        let key = Arc::clone(&spec.api_key);
        let channel = Arc::clone(&spec.channel);
        let (stamp, payload_bytes) = (spec.stamp, spec.payload_bytes);
        senders.spawn(async move {
            let mut conn: Option<HttpConn> = None;
            loop {
                // Hold the lock only while waiting for a job, never across
                // a request, so idle senders take turns.
                let job = jobs.lock().await.recv().await;
                let Some(due) = job else { break };
                let ts = match stamp {
                    Stamp::Scheduled => due,
                    Stamp::Sent => unix_nanos(),
                };
                send_one(
                    &target,
                    &key,
                    &channel,
                    &counters,
                    &mut conn,
                    ts,
                    payload_bytes,
                )
                .await;
            }
        });
    }

    let rate = spec.rate.max(1);
    let ticks_per_sec = rate.min(MAX_TICKS_PER_SEC);
    let period = Duration::from_secs(1) / ticks_per_sec;
    let start = Instant::now() + Duration::from_millis(50);
    // The same instant on the clock subscribers compare `ts` with.
    let start_unix = unix_nanos() + 50_000_000;
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let total = (spec.duration.as_secs_f64() * f64::from(rate)).round() as u64;
    let mut scheduled = 0u64;
    let mut dropped = 0u64;
    while scheduled < total {
        // No deadline check: by the end of the run every publication is
        // due, and a late last tick still sends the last ones.
        let now = ticker.tick().await;
        let due = due_by((now - start).as_nanos(), rate).min(total);
        while scheduled < due {
            let ts = start_unix + due_offset_nanos(scheduled, rate);
            if jobs_tx.try_send(ts).is_err() {
                dropped += 1;
            }
            scheduled += 1;
        }
    }
    drop(jobs_tx);

    // Every request has its own timeout; this is only a backstop.
    let backstop = http::REQUEST_TIMEOUT * 2;
    if tokio::time::timeout(backstop, async {
        while senders.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        log!("publishers did not finish in time; aborting them");
        senders.abort_all();
    }
    PacedOutcome {
        published: counters.published.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        dropped,
        elapsed_secs: start.elapsed().as_secs_f64(),
    }
}

/// How many publications are due `elapsed_nanos` after the start: the
/// first is due at once, publication `k` at `k / rate` seconds.
fn due_by(elapsed_nanos: u128, rate: u32) -> u64 {
    (elapsed_nanos * u128::from(rate) / 1_000_000_000) as u64 + 1
}

/// When publication `k` is due, in nanoseconds after the start.
fn due_offset_nanos(k: u64, rate: u32) -> u64 {
    (u128::from(k) * 1_000_000_000 / u128::from(rate)) as u64
}

/// The `data` of publication `seq` stamped `ts`: `{"seq","ts","pad"}`,
/// padded to `bytes` (when that is more than the two numbers take).
fn payload(seq: u64, ts: u64, bytes: usize) -> String {
    let mut data = format!(r#"{{"seq":{seq},"ts":{ts}"#);
    let pad = bytes.saturating_sub(data.len() + r#","pad":""}"#.len());
    if pad > 0 {
        data.push_str(r#","pad":""#);
        data.extend(std::iter::repeat_n('x', pad));
        data.push('"');
    }
    data.push('}');
    data
}

/// Sends one publication (see [`payload`]), (re)connecting if needed.
async fn send_one(
    target: &Target,
    key: &str,
    channel: &str,
    counters: &Counters,
    conn: &mut Option<HttpConn>,
    ts: u64,
    payload_bytes: usize,
) {
    if conn.as_ref().is_none_or(HttpConn::is_closed) {
        match HttpConn::connect(target).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                counters.error(|| format!("connect: {e:#}"));
                return;
            }
        }
    }
    let Some(c) = conn.as_mut() else { return };
    let seq = counters.seq.fetch_add(1, Ordering::Relaxed);
    let data = payload(seq, ts, payload_bytes);
    match c
        .post_json(
            "/api/v1/publish",
            Some(key),
            http::publish_body(channel, &data),
        )
        .await
    {
        Ok((status, _)) if status.is_success() => {
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok((status, body)) => {
            counters.error(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Err(e) => {
            counters.error(|| format!("{e:#}"));
            *conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{due_by, due_offset_nanos, payload};

    #[test]
    fn a_late_wake_up_finds_every_publication_due_meanwhile() {
        // At 1,000/s: one due at the start, one more each millisecond.
        assert_eq!(due_by(0, 1000), 1);
        assert_eq!(due_by(999_999, 1000), 1);
        assert_eq!(due_by(1_000_000, 1000), 2);
        // A pacer that wakes 7.5 ms late owes 7 more, not 1.
        assert_eq!(due_by(8_500_000, 1000) - due_by(1_000_000, 1000), 7);
        // Rates that do not divide a second stay exact over a whole run.
        assert_eq!(due_by(10_000_000_000 - 1, 3), 30);
        assert_eq!(due_offset_nanos(2, 3), 666_666_666);
        assert_eq!(due_offset_nanos(1000, 1000), 1_000_000_000);
    }

    #[test]
    fn payloads_are_padded_to_the_size_asked() {
        let p = payload(7, 1_733_000_000_000_000_000, 200);
        assert_eq!(p.len(), 200);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ts"], 1_733_000_000_000_000_000u64);
        let small = payload(7, 1, 10);
        assert_eq!(small, r#"{"seq":7,"ts":1}"#);
    }
}
