//! Open-loop publisher for the fan-out scenario: offers a fixed rate of
//! publications regardless of how fast the server answers, so an
//! overloaded server shows up as latency and drops instead of silently
//! slowing the generator down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

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

/// Publishes `rate` messages/s for `duration`. A pacer ticks on a tokio
/// interval and hands one job per publication to a queue served by
/// `connections` sender tasks; each sender stamps `ts` right before its
/// request so time spent queued is not counted as delivery latency. Ticks
/// the pacer misses (e.g. CPU starvation) are skipped, not burst.
pub async fn publish(spec: PacedSpec) -> PacedOutcome {
    let counters = Arc::new(Counters::default());
    let connections = spec.connections.max(1);
    let (jobs_tx, jobs_rx) = mpsc::channel::<()>(connections);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let jobs = Arc::clone(&jobs_rx);
        let counters = Arc::clone(&counters);
        let target = Arc::clone(&spec.target);
        let key = Arc::clone(&spec.api_key);
        let channel = Arc::clone(&spec.channel);
        senders.spawn(async move {
            let mut conn: Option<HttpConn> = None;
            loop {
                // Hold the lock only while waiting for a job, never across
                // a request, so idle senders take turns.
                let job = jobs.lock().await.recv().await;
                if job.is_none() {
                    break;
                }
                send_one(&target, &key, &channel, &counters, &mut conn).await;
            }
        });
    }

    let rate = spec.rate.max(1);
    let ticks_per_sec = rate.min(MAX_TICKS_PER_SEC);
    let period = Duration::from_secs(1) / ticks_per_sec;
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + spec.duration;
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut dropped = 0u64;
    loop {
        let now = ticker.tick().await;
        if now >= deadline {
            break;
        }
        // Tick k covers publications floor(k·r/t) .. floor((k+1)·r/t), so
        // rates above the tick rate are spread evenly over the ticks.
        let k = ((now - start).as_secs_f64() / period.as_secs_f64()).round() as u64;
        let per_tick = (k + 1) * u64::from(rate) / u64::from(ticks_per_sec)
            - k * u64::from(rate) / u64::from(ticks_per_sec);
        for _ in 0..per_tick {
            if jobs_tx.try_send(()).is_err() {
                dropped += 1;
            }
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

/// Sends one publication `{"seq":n,"ts":nanos}`, (re)connecting if needed.
async fn send_one(
    target: &Target,
    key: &str,
    channel: &str,
    counters: &Counters,
    conn: &mut Option<HttpConn>,
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
    let data = format!(r#"{{"seq":{seq},"ts":{}}}"#, unix_nanos());
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
