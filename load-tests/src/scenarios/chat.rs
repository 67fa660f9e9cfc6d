//! `chat`: rooms of members talking over the WebSocket. `--rooms` group
//! rooms of `--members` each are made of `--users` users (created and
//! signed in through the API): room `r` holds the `--members` users from
//! `r × members mod users` on, so with fewer users than memberships each
//! user is in several rooms. Every user opens one WebSocket subscribed to
//! all of its rooms and sends messages into them in turn, `--rate`
//! messages per second over all users, each carrying its send time (unix
//! nanos) in its text. Messages go through the chat publish hook (checked,
//! stored, then published), so the figures include the store write.
//!
//! Reported: the latency from send to delivery on every other member of
//! the room, lost and duplicate deliveries, the publisher's wait for its
//! `published` reply (the hook's store write plus the bus), and the
//! server's CPU time per message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::created;
use super::server_rss;
use crate::cli::ChatArgs;
use crate::http::{self, HttpConn};
use crate::net::{SourceAddrs, Target};
use crate::stats::{self, Percentiles, ShardedHistogram, round3, unix_nanos};
use crate::ws::Connector;

#[derive(Serialize)]
struct ChatResult {
    scenario: &'static str,
    rooms: usize,
    members: usize,
    users: usize,
    nodes: usize,
    rate: u32,
    duration_secs: u64,
    /// Messages the hook stored and published (`published` replies).
    messages: u64,
    /// Messages refused (`error` replies).
    errors: u64,
    /// Messages per second actually sent.
    sent_per_sec: f64,
    expected_deliveries: u64,
    deliveries: u64,
    lost: u64,
    duplicates: u64,
    /// From the send to the delivery on another member.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// From the send to the sender's `published` reply: membership check,
    /// hook (limits, store write), bus.
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    /// Server CPU time (all threads) over the sending window, per message.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_ms_per_message: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
    code: Option<String>,
    data: Option<MessageData>,
}

#[derive(Deserialize)]
struct MessageData {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    author: Option<String>,
    text: Option<String>,
}

pub async fn run(args: ChatArgs) -> Result<Option<String>> {
    if args.rooms == 0 || args.members < 2 || args.users < args.members || args.rate == 0 {
        bail!("--rooms ≥ 1, --members ≥ 2, --users ≥ --members and --rate ≥ 1");
    }
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;

    // Users, created and signed in a few at a time.
    log!("chat: creating {} users", args.users);
    let users = super::create_users(&target, &admin, "chat", "member", args.users).await?;

    // Rooms: the first member creates each with the others.
    log!("chat: creating {} rooms of {}", args.rooms, args.members);
    let mut setup = HttpConn::connect(&target).await?;
    let mut rooms_of: Vec<Vec<String>> = vec![Vec::new(); args.users];
    for r in 0..args.rooms {
        let members: Vec<usize> = (0..args.members)
            .map(|j| (r * args.members + j) % args.users)
            .collect();
        let others: Vec<&str> = members[1..].iter().map(|&m| users[m].0.as_str()).collect();
        let room = created(
            &mut setup,
            "/api/v1/chat/rooms",
            &users[members[0]].1,
            json!({"kind": "group", "name": format!("Bench room {r}"), "members": others}),
        )
        .await?;
        let id = room["id"].as_str().unwrap_or_default().to_owned();
        for &m in &members {
            rooms_of[m].push(id.clone());
        }
    }

    // One connection per user, subscribed to all of its rooms.
    let mut connectors = Vec::new();
    let node_urls = if args.node_urls.is_empty() {
        vec![args.server.url.clone()]
    } else {
        args.node_urls.clone()
    };
    for url in &node_urls {
        let target = Arc::new(Target::resolve(url).await?);
        connectors.push(Connector {
            token: Arc::from(admin.as_str()),
            sources: SourceAddrs::new(8, &target),
            target,
            attempt_timeout: Duration::from_secs(10),
            retries: 3,
        });
    }
    let mut sockets = Vec::with_capacity(args.users);
    for (i, (_, token)) in users.iter().enumerate() {
        let connector = &connectors[i % connectors.len()];
        let mut ws = connector.open_as(i, token, None).await?;
        for (n, room) in rooms_of[i].iter().enumerate() {
            let id = 10 + n as u64;
            ws.send(Message::text(
                json!({"id": id, "type": "subscribe", "channel": format!("chat:{room}")})
                    .to_string(),
            ))
            .await?;
        }
        let mut pending = rooms_of[i].len();
        while pending > 0 {
            let Some(msg) = ws.next().await else {
                bail!("closed while subscribing");
            };
            if let Message::Text(text) = msg? {
                let frame: Frame = serde_json::from_str(text.as_str())?;
                match frame.kind.as_str() {
                    "subscribed" => pending -= 1,
                    "error" => bail!("subscribe refused: {:?}", frame.code),
                    _ => {}
                }
            }
        }
        sockets.push(ws);
    }
    log!(
        "chat: {} users connected, {} messages/s for {}s",
        args.users,
        args.rate,
        args.duration_secs
    );

    let latency = Arc::new(ShardedHistogram::new(16));
    let ack = Arc::new(ShardedHistogram::new(16));
    let deliveries = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu_before = args
        .server
        .server_pid
        .and_then(|pid| stats::cpu_secs(pid).ok());
    let duration = Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let period = Duration::from_secs_f64(args.users as f64 / f64::from(args.rate));
    let stop = tokio::sync::watch::channel(false);
    let stop_tx = stop.0;
    let mut readers = tokio::task::JoinSet::new();
    let mut senders = tokio::task::JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let me = users[i].0.clone();
        let in_flight: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        {
            let (latency, ack, deliveries, duplicates, acked, errors, mut stop) = (
                Arc::clone(&latency),
                Arc::clone(&ack),
                Arc::clone(&deliveries),
                Arc::clone(&duplicates),
                Arc::clone(&acked),
                Arc::clone(&errors),
                stop_tx.subscribe(),
            );
            let in_flight = Arc::clone(&in_flight);
            readers.spawn(async move {
                let mut seen: HashSet<String> = HashSet::new();
                loop {
                    let msg = tokio::select! {
                        m = stream.next() => m,
                        _ = stop.wait_for(|v| *v) => break,
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
                    match frame.kind.as_str() {
                        "published" | "error" => {
                            let begun = frame
                                .id
                                .and_then(|id| in_flight.lock().unwrap().remove(&id));
                            if frame.kind == "error" {
                                let n = errors.fetch_add(1, Ordering::Relaxed);
                                if n < 3 {
                                    log!("chat: refused: {text}");
                                }
                            } else {
                                acked.fetch_add(1, Ordering::Relaxed);
                                if let Some(begun) = begun {
                                    ack.record_us(i % 16, begun.elapsed().as_micros() as u64);
                                }
                            }
                        }
                        "pub" => {
                            let Some(data) = frame.data else { continue };
                            if data.kind.as_deref() != Some("message")
                                || data.author.as_deref() == Some(me.as_str())
                            {
                                continue;
                            }
                            if !seen.insert(data.id.unwrap_or_default()) {
                                duplicates.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            deliveries.fetch_add(1, Ordering::Relaxed);
                            if let Some(ts) = data
                                .text
                                .as_deref()
                                .and_then(|t| t.strip_prefix("t="))
                                .and_then(|t| t.parse::<u64>().ok())
                            {
                                latency.record_us(i % 16, now.saturating_sub(ts) / 1000);
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        let rooms = rooms_of[i].clone();
        let sent = Arc::clone(&sent);
        let offset = period.mul_f64(i as f64 / args.users as f64);
        senders.spawn(async move {
            let end = started + duration;
            let mut due = started + offset;
            let mut n: u64 = 0;
            while due < end {
                tokio::time::sleep_until(due).await;
                due += period;
                let room = &rooms[n as usize % rooms.len()];
                let id = 1000 + n;
                n += 1;
                in_flight.lock().unwrap().insert(id, Instant::now());
                let frame = json!({
                    "id": id,
                    "type": "publish",
                    "channel": format!("chat:{room}"),
                    "data": {"type": "message", "text": format!("t={}", unix_nanos())},
                });
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        });
    }
    let mut sinks = Vec::new();
    while let Some(joined) = senders.join_next().await {
        sinks.push(joined.context("sender task")?);
    }
    let sent_secs = started.elapsed().as_secs_f64();
    // Wait for the last replies and deliveries.
    let drain_until = Instant::now() + Duration::from_secs(args.drain_secs);
    let others = (args.members - 1) as u64;
    while Instant::now() < drain_until {
        let answered = acked.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed);
        if answered >= sent.load(Ordering::Relaxed)
            && deliveries.load(Ordering::Relaxed) >= acked.load(Ordering::Relaxed) * others
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_after = args
        .server
        .server_pid
        .and_then(|pid| stats::cpu_secs(pid).ok());
    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}
    drop(sinks);

    let messages = acked.load(Ordering::Relaxed);
    let expected = messages * others;
    let delivered = deliveries.load(Ordering::Relaxed);
    let p = Percentiles::of(&latency.merged());
    let a = Percentiles::of(&ack.merged());
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if messages > 0 => Some(round3((a - b) * 1000.0 / messages as f64)),
        _ => None,
    };
    log!(
        "chat: {messages} messages, {delivered}/{expected} deliveries, p99 {:.2} ms",
        p.p99_ms
    );
    let result = ChatResult {
        scenario: "chat",
        rooms: args.rooms,
        members: args.members,
        users: args.users,
        nodes: node_urls.len(),
        rate: args.rate,
        duration_secs: args.duration_secs,
        messages,
        errors: errors.load(Ordering::Relaxed),
        sent_per_sec: round3(sent.load(Ordering::Relaxed) as f64 / sent_secs),
        expected_deliveries: expected,
        deliveries: delivered,
        lost: expected.saturating_sub(delivered),
        duplicates: duplicates.load(Ordering::Relaxed),
        p50_ms: round3(p.p50_ms),
        p90_ms: round3(p.p90_ms),
        p99_ms: round3(p.p99_ms),
        max_ms: round3(p.max_ms),
        ack_p50_ms: round3(a.p50_ms),
        ack_p99_ms: round3(a.p99_ms),
        server_cpu_ms_per_message: cpu,
        rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&result)?))
}
