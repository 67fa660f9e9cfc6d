//! The load scenarios. Each `run` returns the JSON line that `main` prints
//! as the single result line, or `None` in a worker process (which reports
//! to its parent instead).

pub mod assistant;
pub mod chat;
pub mod email;
pub mod fanout;
pub mod idle;
pub mod inbox;
pub mod notify_fanout;
mod paced;
pub mod planning;
pub mod publish;
pub mod queue_counts;

use std::time::Duration;

use anyhow::Result;

use crate::stats;

/// Reads the server's RSS if a PID was given, logging (not failing) when
/// /proc cannot be read so a typo in the PID does not void a long run.
fn server_rss(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    match stats::rss_kib(pid) {
        Ok(kib) => Some(kib),
        Err(e) => {
            log!("cannot read server memory: {e:#}");
            None
        }
    }
}

/// Like [`server_rss`] but required.
fn server_rss_required(pid: u32) -> Result<u64> {
    stats::rss_kib(pid)
}

/// Converts whole seconds from the command line.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// For `skip_serializing_if`: leave zero counters out of the result line.
fn is_zero(n: &u64) -> bool {
    *n == 0
}
