//! Latency histograms, their exchange between processes, and server memory
//! readings.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms can hold: 10 minutes in microseconds.
/// Larger values are clamped rather than dropped so outliers still show up
/// in `max_ms`.
const MAX_LATENCY_US: u64 = 600_000_000;

/// A histogram of latencies in microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; failure would be a bug.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records one latency, clamping to the histogram's range.
pub fn record_us(hist: &mut Histogram<u64>, micros: u64) {
    hist.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// A small set of histograms indexed by connection, so thousands of
/// subscriber tasks on a multi-threaded runtime rarely contend on one lock,
/// while memory stays bounded (one histogram per connection would cost
/// ~100 KiB each).
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    pub fn record_us(&self, shard: usize, micros: u64) {
        let lock = &self.shards[shard % self.shards.len()];
        // A poisoned lock only means another task panicked mid-record; the
        // counts are still usable.
        let mut hist = lock.lock().unwrap_or_else(PoisonError::into_inner);
        record_us(&mut hist, micros);
    }

    /// Merges all shards into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for lock in &self.shards {
            let hist = lock.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds everywhere, so `add` cannot fail.
            let _ = out.add(&*hist);
        }
        out
    }
}

/// Histogram contents as `[value_us, count]` pairs, the format worker
/// processes use to hand their latencies to the parent. Each pair names one
/// bucket, so re-recording it into a histogram of the same precision is
/// lossless.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        Self(
            hist.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, hist: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            // Clamp so a malformed value cannot make recording fail.
            let _ = hist.record_n(value.clamp(1, MAX_LATENCY_US), count);
        }
    }
}

/// Latency percentiles in milliseconds, rounded to microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Self {
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
        }
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch. Wall-clock (not
/// `Instant`) because the timestamp travels inside the message to other
/// processes, which all share the same system clock on one machine.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Resident set size (`VmRSS`) of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Result<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident set size (`VmHWM`) of a process in KiB, from /proc.
pub fn hwm_kib(pid: u32) -> Result<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// A `kB` line of /proc/PID/status.
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no {field} line in {path}"))
}

/// CPU time (user + system, all threads) a process has used so far, in
/// seconds, from /proc/PID/stat. Assumes the kernel's USER_HZ of 100, which
/// is what Linux reports to user space on every common configuration.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from the closing parenthesis. utime and stime are fields 14
    // and 15, i.e. the 12th and 13th after the name.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected {path}"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unexpected {path}"))
    };
    let ticks = tick()? + tick()?;
    Ok(ticks as f64 / 100.0)
}

/// The value at quantile `q` (nearest rank) of a few samples, e.g. one per
/// trigger; 0 for none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Rounds to 3 decimals so the JSON line stays readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
