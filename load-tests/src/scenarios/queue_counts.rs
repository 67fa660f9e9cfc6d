//! `queue-counts`: moderation consoles watching live pending counts while
//! moderators change items.
//!
//! `--consoles` WebSocket connections (the admin, who may watch) subscribe
//! to the tenant's `queues` channel. The run first puts enough pending items
//! in `--queues` queues, then takes them for review
//! (`pending → in_review`) over REST at `--rate` per second, open loop: each
//! transition has a scheduled send time, and its latency counts from that
//! time, so a slow hub shows up as latency rather than as a slower
//! generator.
//!
//! Only that one transition is used, so a queue's `in_review` count says
//! exactly how many of its transitions an update covers: the update that
//! first shows `in_review = base + k` puts the k-th transition (in the order
//! their responses came back) "on screen" for that console. The latency of
//! a transition on a console is the arrival of that update minus the
//! transition's scheduled time; it includes the coalescing window by
//! design. The run also reports updates per console (the coalescing ratio
//! is transitions per update) and whether every console ended on the final
//! counts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::server_rss;
use crate::cli::QueueCountsArgs;
use crate::http::{self, HttpConn};
use crate::net::{SourceAddrs, Target};
use crate::stats::{Percentiles, new_histogram, record_us, unix_nanos};
use crate::ws::Connector;

/// The part of a `queue.counts` publication the consoles read; serde skips
/// the rest without building it.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    data: Option<Update>,
}

#[derive(Deserialize)]
struct Update {
    queues: std::collections::HashMap<String, QueueCounts>,
}

#[derive(Deserialize)]
struct QueueCounts {
    in_review: i64,
}

/// One count update as a console saw it.
struct Seen {
    queue: usize,
    in_review: i64,
    arrived_ns: u64,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    consoles: usize,
    consoles_open: usize,
    queues: usize,
    /// The hub's coalescing window, as the script set it (for the record).
    window_ms: u64,
    rate: u32,
    duration_secs: u64,
    transitions_sent: usize,
    transitions_applied: usize,
    transition_errors: usize,
    /// Applied transitions per second over the sending period.
    achieved_rate: f64,
    /// Count publications received, over all consoles.
    deliveries: u64,
    /// Publications per console.
    updates_per_console: f64,
    /// Queue counts per publication (several queues move in one window).
    queues_per_update: f64,
    /// Transitions per publication a console received.
    coalescing_ratio: f64,
    /// From a transition's scheduled send to the first update on a console
    /// that includes it, over every (transition, console) pair.
    on_screen: Percentiles,
    /// The REST transition itself (scheduled send to response).
    rest: Percentiles,
    /// (transition, console) pairs never shown.
    never_shown: u64,
    /// Consoles whose last update was not the final counts.
    stale_consoles: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_kib: Option<u64>,
}

fn status_error(what: &str, status: hyper::StatusCode, body: &Bytes) -> anyhow::Error {
    anyhow::anyhow!("{what}: {status} {}", String::from_utf8_lossy(body))
}

pub async fn run(args: QueueCountsArgs) -> Result<Option<String>> {
    if args.queues == 0 || args.rate == 0 || args.consoles == 0 {
        bail!("--queues, --rate and --consoles must be positive");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let key: Arc<str> = http::create_api_key(&target, &token, "queue-bench", "queues")
        .await?
        .into();
    let total = args.rate as usize * args.duration_secs as usize;
    let per_queue = total.div_ceil(args.queues);
    let run_id = unix_nanos();

    // Pending items, created concurrently over keep-alive connections.
    log!(
        "creating {} pending items in {} queues",
        per_queue * args.queues,
        args.queues
    );
    let conns = args.connections.max(1);
    let jobs: Vec<(usize, usize)> = (0..args.queues)
        .flat_map(|q| (0..per_queue).map(move |i| (q, i)))
        .collect();
    let chunks: Vec<Vec<(usize, usize)>> = (0..conns)
        .map(|c| jobs.iter().skip(c).step_by(conns).copied().collect())
        .collect();
    let mut ids = vec![vec![String::new(); per_queue]; args.queues];
    let created = futures_util::future::try_join_all(chunks.into_iter().map(|chunk| {
        let (target, key) = (target.clone(), key.clone());
        async move {
            let mut conn = HttpConn::connect(&target).await?;
            let mut out = Vec::with_capacity(chunk.len());
            for (q, i) in chunk {
                let body = json!({"external_ref": format!("{run_id}-{q}-{i}"), "title": format!("Item {i}")});
                let (status, bytes) = conn
                    .post_json(&format!("/api/v1/queues/q{q}/items"), Some(&key), Bytes::from(body.to_string()))
                    .await?;
                if !status.is_success() {
                    return Err(status_error("creating an item", status, &bytes));
                }
                let item: Value = serde_json::from_slice(&bytes)?;
                out.push((q, i, item["id"].as_str().unwrap_or_default().to_owned()));
            }
            anyhow::Ok(out)
        }
    }))
    .await?;
    for (q, i, id) in created.into_iter().flatten() {
        ids[q][i] = id;
    }

    let mut conn = HttpConn::connect(&target).await?;
    let (status, bytes) = conn.get("/api/v1/queues", Some(&key)).await?;
    if !status.is_success() {
        return Err(status_error("reading counts", status, &bytes));
    }
    let counts: Value = serde_json::from_slice(&bytes)?;
    let base: Vec<i64> = (0..args.queues)
        .map(|q| {
            counts["queues"][format!("q{q}")]["in_review"]
                .as_i64()
                .unwrap_or(0)
        })
        .collect();

    // The consoles.
    log!("opening {} consoles", args.consoles);
    let connector = Connector {
        target: target.clone(),
        token: token.clone().into(),
        sources: SourceAddrs::new(8, &target),
        attempt_timeout: Duration::from_secs(10),
        retries: 3,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let queues = args.queues;
    let mut consoles = Vec::with_capacity(args.consoles);
    let opened: Vec<_> = stream::iter(0..args.consoles)
        .map(|i| {
            let connector = connector.clone();
            async move { connector.open(i, Some("queues")).await }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    for ws in opened {
        let Ok(mut ws) = ws else { continue };
        let mut stop = stop_rx.clone();
        consoles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut frames = 0u64;
            loop {
                tokio::select! {
                    _ = stop.changed() => return (frames, seen),
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(text))) => {
                            let arrived_ns = unix_nanos();
                            let Ok(Frame { kind: "pub", data: Some(update) }) = serde_json::from_str::<Frame>(&text) else { continue };
                            frames += 1;
                            for (name, counts) in update.queues {
                                let Some(queue) = name.strip_prefix('q').and_then(|q| q.parse::<usize>().ok()) else { continue };
                                if queue < queues {
                                    seen.push(Seen { queue, in_review: counts.in_review, arrived_ns });
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return (frames, seen),
                    }
                }
            }
        }));
    }
    let consoles_open = consoles.len();
    // Let the subscriptions' snapshots and any creation updates pass.
    tokio::time::sleep(Duration::from_millis(args.window_ms * 2 + 500)).await;

    // The transitions, open loop: transition j is due at start + j / rate.
    log!("sending {total} transitions at {}/s", args.rate);
    let start = Instant::now();
    let start_ns = unix_nanos();
    let ids = Arc::new(ids);
    let senders = (0..conns).map(|c| {
        let (target, key, ids) = (target.clone(), key.clone(), ids.clone());
        let (rate, queues) = (args.rate as u64, args.queues);
        tokio::spawn(async move {
            let mut conn = HttpConn::connect(&target).await?;
            // (queue, scheduled ns, response ns, applied)
            let mut done = Vec::new();
            for j in (c..total).step_by(conns) {
                let offset = Duration::from_nanos(j as u64 * 1_000_000_000 / rate);
                tokio::time::sleep_until(start + offset).await;
                let scheduled = start_ns + offset.as_nanos() as u64;
                let (q, i) = (j % queues, j / queues);
                let path = format!("/api/v1/queues/q{q}/items/{}/transition", ids[q][i]);
                let body = Bytes::from_static(br#"{"to":"in_review"}"#);
                if conn.is_closed() {
                    conn = HttpConn::connect(&target).await?;
                }
                let applied = matches!(conn.post_json(&path, Some(&key), body).await, Ok((s, _)) if s.is_success());
                done.push((q, scheduled, unix_nanos(), applied));
            }
            anyhow::Ok(done)
        })
    });
    let mut sent = Vec::with_capacity(total);
    for sender in futures_util::future::join_all(senders).await {
        sent.extend(sender??);
    }
    let sending = start.elapsed();
    tokio::time::sleep(Duration::from_millis(args.window_ms * 3 + args.settle_ms)).await;
    let _ = stop_tx.send(true);
    let mut seen_by_console = Vec::with_capacity(consoles_open);
    for console in consoles {
        seen_by_console.push(console.await.unwrap_or_default());
    }

    // Per queue, the scheduled times of applied transitions in response order.
    let mut per_queue: Vec<Vec<(u64, u64)>> = vec![Vec::new(); args.queues];
    let mut rest = new_histogram();
    let mut errors = 0;
    for (q, scheduled, responded, applied) in &sent {
        if *applied {
            per_queue[*q].push((*responded, *scheduled));
            record_us(&mut rest, responded.saturating_sub(*scheduled) / 1000);
        } else {
            errors += 1;
        }
    }
    for list in &mut per_queue {
        list.sort_unstable();
    }
    let applied: usize = per_queue.iter().map(Vec::len).sum();

    let mut on_screen = new_histogram();
    let mut deliveries = 0u64;
    let mut entries = 0u64;
    let mut never_shown = 0u64;
    let mut stale = 0;
    for (frames, seen) in &seen_by_console {
        deliveries += frames;
        entries += seen.len() as u64;
        // How many of each queue's transitions this console has been shown.
        let mut shown = vec![0usize; args.queues];
        for s in seen {
            let covered = (s.in_review - base[s.queue]).max(0) as usize;
            let list = &per_queue[s.queue];
            let upto = covered.min(list.len());
            for &(_, scheduled) in &list[shown[s.queue].min(upto)..upto] {
                record_us(
                    &mut on_screen,
                    s.arrived_ns.saturating_sub(scheduled) / 1000,
                );
            }
            shown[s.queue] = shown[s.queue].max(upto);
        }
        let mut fresh = true;
        for q in 0..args.queues {
            never_shown += (per_queue[q].len() - shown[q]) as u64;
            fresh &= shown[q] == per_queue[q].len();
        }
        if !fresh {
            stale += 1;
        }
    }
    let updates_per_console = deliveries as f64 / consoles_open.max(1) as f64;
    let report = Report {
        scenario: "queue-counts",
        consoles: args.consoles,
        consoles_open,
        queues: args.queues,
        window_ms: args.window_ms,
        rate: args.rate,
        duration_secs: args.duration_secs,
        transitions_sent: sent.len(),
        transitions_applied: applied,
        transition_errors: errors,
        achieved_rate: applied as f64 / sending.as_secs_f64().max(1e-9),
        deliveries,
        updates_per_console,
        queues_per_update: entries as f64 / deliveries.max(1) as f64,
        coalescing_ratio: applied as f64 / updates_per_console.max(1e-9),
        on_screen: Percentiles::of(&on_screen),
        rest: Percentiles::of(&rest),
        never_shown,
        stale_consoles: stale,
        server_rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&report)?))
}
