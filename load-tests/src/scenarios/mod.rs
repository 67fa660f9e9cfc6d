//! The load scenarios. Each `run` returns the JSON line that `main` prints
//! as the single result line, or `None` in a worker process (which reports
//! to its parent instead).

pub mod assistant;
pub mod channels;
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
pub mod storm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::http::{self, HttpConn};
use crate::net::Target;
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

/// POSTs `body` and answers the created record; any status but 2xx fails.
async fn created(conn: &mut HttpConn, path: &str, token: &str, body: Value) -> Result<Value> {
    let (status, bytes) = conn
        .post_json(path, Some(token), Bytes::from(body.to_string()))
        .await?;
    if !status.is_success() {
        bail!("POST {path}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// `count` users with `role`, created through the admin API and signed in,
/// 8 at a time (each sign-in hashes a password): their ids and access
/// tokens, in order. Emails are `<prefix>-<run>-<i>@example.com`.
async fn create_users(
    target: &Arc<Target>,
    admin: &str,
    prefix: &str,
    role: &str,
    count: usize,
) -> Result<Vec<(String, String)>> {
    let run_id = stats::unix_nanos();
    let mut users = vec![(String::new(), String::new()); count];
    let mut joins = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..8 {
        let (target, next) = (Arc::clone(target), Arc::clone(&next));
        let (admin, prefix, role) = (admin.to_owned(), prefix.to_owned(), role.to_owned());
        joins.spawn(async move {
            let mut conn = HttpConn::connect(&target).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count as u64 {
                    return anyhow::Ok(out);
                }
                let email = format!("{prefix}-{run_id}-{i}@example.com");
                let password = "bench-user-password-0123";
                let user = created(
                    &mut conn,
                    "/api/v1/admin/users",
                    &admin,
                    json!({"email": email, "password": password, "roles": [role]}),
                )
                .await?;
                let id = user["id"].as_str().unwrap_or_default().to_owned();
                out.push((
                    i as usize,
                    id,
                    http::login(&target, &email, password).await?,
                ));
            }
        });
    }
    while let Some(joined) = joins.join_next().await {
        for (i, id, token) in joined.context("user setup")?? {
            users[i] = (id, token);
        }
    }
    Ok(users)
}
