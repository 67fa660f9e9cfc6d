//! `assistant`: the latency Relais adds to each token of streamed assistant
//! answers. The generator runs a fake OpenAI-compatible provider
//! ([`crate::provider`]) on a loopback port, streaming `--tokens` tokens per
//! answer at `--tokens-per-sec`, each stamped with its send time.
//!
//! 1. **Baseline** (skipped with `--no-baseline`): the generator itself
//!    reads `--streams` answers of the provider over loopback, with the same
//!    pacing and start spread, recording send → receive per token: the
//!    provider-to-client leg without the hub.
//! 2. **Hub**: as the tenant admin, a provider pointing at the fake, an
//!    assistant, and one conversation per stream (opened by the admin, or by
//!    `--users` users created and signed in through the API). Each stream
//!    has one WebSocket subscribed to `assistant:<conversation>` before its
//!    question is sent over REST; the starts are spread over `--ramp-ms`.
//!    Every token is parsed out of the `assistant.delta` frames (the hub
//!    coalesces several tokens into one frame) and its latency recorded from
//!    the provider's send to the subscriber's receive. Each stream must end
//!    with `assistant.done` status `complete`, whose content is the deltas'
//!    text and holds every token once, in order.
//!
//! `hub_added_*` is the hub percentile minus the baseline percentile: an
//! approximation (the difference of two percentiles is not the percentile
//! of the differences). The hub's CPU time and memory are read from /proc
//! with `--server-pid`.
//!
//! The hub allows 2 answers streaming at once per user and 50 per tenant by
//! default: start it with `RELAIS_ASSISTANT_MAX_STREAMS_PER_USER` and
//! `RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT` at least `--streams`
//! (`run-bench.sh` passes its environment on to the hub). Tokens closer than
//! `RELAIS_ASSISTANT_FRAME_MS` (10 ms by default) are coalesced into one
//! frame, which holds them back by up to that interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::created;
use crate::cli::AssistantArgs;
use crate::http::{self, HttpConn};
use crate::net::{SourceAddrs, Target};
use crate::provider::{self, FakeProvider, Pacing, TokenParser};
use crate::stats::{self, ShardedHistogram, new_histogram, record_us, round3, unix_nanos};
use crate::ws::Connector;

/// Latency distribution in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Dist {
    tokens: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Dist {
    fn of(hist: &hdrhistogram::Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Self {
            tokens: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        }
    }
}

#[derive(Serialize)]
struct AssistantResult {
    scenario: &'static str,
    streams: usize,
    tokens: u64,
    tokens_per_sec: u32,
    ramp_ms: u64,
    users: usize,
    /// `RELAIS_ASSISTANT_FRAME_MS` as this process sees it (the hub's when
    /// started by run-bench.sh); the hub's default is 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_ms_env: Option<String>,
    /// Questions the hub accepted (202).
    started: u64,
    start_errors: u64,
    /// Streams that ended with `assistant.done` status `complete`, every
    /// token once and in order, and content equal to the deltas.
    streams_ok: u64,
    streams_not_complete: u64,
    streams_without_done: u64,
    content_mismatches: u64,
    tokens_expected: u64,
    tokens_received: u64,
    tokens_lost: u64,
    tokens_duplicate: u64,
    tokens_out_of_order: u64,
    /// Delta seq numbers skipped or repeated.
    frame_seq_errors: u64,
    frames: u64,
    tokens_per_frame: f64,
    /// REST send: from the request to the 202.
    send_p50_ms: f64,
    send_p99_ms: f64,
    /// Provider send → subscriber receive, through the hub.
    hub: Dist,
    /// Provider send → generator receive, no hub (absent with --no-baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Dist>,
    /// hub percentile − baseline percentile (an approximation).
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_added_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_added_p99_ms: Option<f64>,
    /// Provider sends more than 5 ms behind schedule, and the worst lag:
    /// high values mean the generator (or the reader) could not keep up.
    provider_late_sends: u64,
    provider_max_lag_ms: f64,
    /// Upstream streams the hub closed before their end.
    provider_cut_streams: u64,
    hub_phase_secs: f64,
    /// Hub CPU time over the hub phase, in % of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_ms_per_stream: Option<f64>,
    /// Hub RSS with every subscriber connected, before the first question.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_before_kib: Option<u64>,
    /// Highest RSS sampled during the hub phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_peak_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_after_kib: Option<u64>,
    /// Peak − before, and that per stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_delta_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_per_stream_kib: Option<f64>,
    /// This generator's CPU over the hub phase (fake provider and
    /// subscribers), in % of one core: near the core count means the
    /// figures measure the generator, not the hub.
    generator_cpu_percent: f64,
}

/// The schedule shared by both phases.
#[derive(Clone, Copy)]
struct Schedule {
    t0: Instant,
    step: Duration,
    deadline: Instant,
}

impl Schedule {
    fn new(args: &AssistantArgs) -> Self {
        let t0 = Instant::now() + Duration::from_millis(200);
        let ramp = Duration::from_millis(args.ramp_ms);
        let answer = Duration::from_secs_f64(args.tokens as f64 / f64::from(args.tokens_per_sec));
        Self {
            t0,
            step: ramp / args.streams.max(1) as u32,
            deadline: t0 + ramp + answer + Duration::from_secs(args.drain_secs),
        }
    }

    fn start_of(&self, i: usize) -> Instant {
        self.t0 + self.step * i as u32
    }
}

pub async fn run(args: AssistantArgs) -> Result<Option<String>> {
    if args.streams == 0 || args.tokens == 0 || args.tokens_per_sec == 0 {
        bail!("--streams, --tokens and --tokens-per-sec must be at least 1");
    }
    let pacing = Pacing {
        tokens: args.tokens,
        tokens_per_sec: args.tokens_per_sec,
    };
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;

    let baseline = if args.no_baseline {
        None
    } else {
        log!(
            "assistant: baseline, {} streams read straight from the provider",
            args.streams
        );
        Some(baseline(&args, pacing).await?)
    };

    // Provider and assistant.
    let fake = FakeProvider::start(pacing).await?;
    let run_id = unix_nanos();
    let mut setup = HttpConn::connect(&target).await?;
    let created_provider = created(
        &mut setup,
        "/api/v1/assistant/providers",
        &admin,
        json!({"name": format!("bench-{run_id}"), "base_url": fake.base_url()}),
    )
    .await?;
    let provider_id = created_provider["id"].as_str().unwrap_or_default();
    let assistant = created(
        &mut setup,
        "/api/v1/assistant/assistants",
        &admin,
        json!({"name": format!("Bench {run_id}"), "instructions": "Answer.",
               "model": "bench", "providers": [provider_id]}),
    )
    .await?;
    let assistant_id = assistant["id"].as_str().unwrap_or_default().to_owned();

    // Users: the admin, or users created and signed in a few at a time.
    let user_tokens = if args.users == 0 {
        vec![admin.clone()]
    } else {
        log!("assistant: creating {} users", args.users);
        super::create_users(&target, &admin, "assistant", "member", args.users)
            .await?
            .into_iter()
            .map(|(_, token)| token)
            .collect()
    };

    // Conversations, a few at a time.
    log!("assistant: opening {} conversations", args.streams);
    let mut channels = vec![(String::new(), String::new()); args.streams];
    let mut joins = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..8 {
        let target = Arc::clone(&target);
        let next = Arc::clone(&next);
        let user_tokens = user_tokens.clone();
        let assistant_id = assistant_id.clone();
        let total = args.streams as u64;
        joins.spawn(async move {
            let mut conn = HttpConn::connect(&target).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(out);
                }
                let token = &user_tokens[i as usize % user_tokens.len()];
                let c = created(
                    &mut conn,
                    "/api/v1/assistant/conversations",
                    token,
                    json!({"assistant": assistant_id}),
                )
                .await?;
                let id = c["conversation"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let channel = c["channel"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("assistant:{id}"));
                out.push((i as usize, id, channel));
            }
        });
    }
    while let Some(joined) = joins.join_next().await {
        for (i, id, channel) in joined.context("conversation setup")?? {
            channels[i] = (id, channel);
        }
    }

    // Subscribers, and one REST connection per stream for its question.
    log!("assistant: subscribing {} WebSockets", args.streams);
    let connector = Connector {
        target: Arc::clone(&target),
        token: Arc::from(admin.as_str()),
        sources: SourceAddrs::new(8, &target),
        attempt_timeout: Duration::from_secs(10),
        retries: 3,
    };
    let mut streams = Vec::with_capacity(args.streams);
    for (i, (conversation, channel)) in channels.into_iter().enumerate() {
        let token = user_tokens[i % user_tokens.len()].clone();
        let ws = connector.open_as(i, &token, Some(&channel)).await?;
        let conn = HttpConn::connect(&target).await?;
        streams.push((conversation, token, ws, conn));
    }

    // Hub phase.
    let pid = args.server.server_pid;
    let rss_before = super::server_rss(pid);
    let cpu_before = pid.and_then(|p| stats::cpu_secs(p).ok());
    let self_cpu_before = stats::cpu_secs(std::process::id()).unwrap_or(0.0);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = pid.map(|p| {
        let sampling = Arc::clone(&sampling);
        let every = Duration::from_millis(args.rss_sample_ms.max(10));
        tokio::spawn(async move {
            let mut peak = 0u64;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(kib) = stats::rss_kib(p) {
                    peak = peak.max(kib);
                }
                tokio::time::sleep(every).await;
            }
            peak
        })
    });
    log!(
        "assistant: {} streams of {} tokens at {}/s through the hub",
        args.streams,
        args.tokens,
        args.tokens_per_sec
    );
    let schedule = Schedule::new(&args);
    let begun = Instant::now();
    let latency = Arc::new(ShardedHistogram::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (conversation, token, ws, conn)) in streams.into_iter().enumerate() {
        let latency = Arc::clone(&latency);
        let tokens = args.tokens;
        tasks.spawn(hub_stream(
            i,
            conversation,
            token,
            ws,
            conn,
            schedule,
            tokens,
            latency,
        ));
    }
    let mut totals = Totals::default();
    let mut send = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("stream task")?;
        if let Some(us) = outcome.send_us {
            record_us(&mut send, us);
        }
        totals.add(&outcome, args.tokens);
    }
    let hub_secs = begun.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(|p| stats::cpu_secs(p).ok());
    let self_cpu = stats::cpu_secs(std::process::id()).unwrap_or(0.0) - self_cpu_before;
    sampling.store(false, Ordering::Relaxed);
    let rss_peak = match sampler {
        Some(task) => task.await.ok().filter(|&k| k > 0),
        None => None,
    };
    let rss_after = super::server_rss(pid);
    let server_cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);

    let hub = Dist::of(&latency.merged());
    let added = |h: f64, b: f64| round3(h - b);
    let send = stats::Percentiles::of(&send);
    let rss_delta = rss_before.zip(rss_peak).map(|(b, p)| p.saturating_sub(b));
    log!(
        "assistant: {}/{} streams ok, {} tokens, hub p99 {:.3} ms{}",
        totals.streams_ok,
        args.streams,
        totals.tokens_received,
        hub.p99_ms,
        baseline
            .map(|b| format!(", baseline p99 {:.3} ms", b.p99_ms))
            .unwrap_or_default()
    );
    let result = AssistantResult {
        scenario: "assistant",
        streams: args.streams,
        tokens: args.tokens,
        tokens_per_sec: args.tokens_per_sec,
        ramp_ms: args.ramp_ms,
        users: args.users,
        frame_ms_env: std::env::var("RELAIS_ASSISTANT_FRAME_MS").ok(),
        started: totals.started,
        start_errors: totals.start_errors,
        streams_ok: totals.streams_ok,
        streams_not_complete: totals.not_complete,
        streams_without_done: totals.without_done,
        content_mismatches: totals.content_mismatches,
        tokens_expected: args.tokens * args.streams as u64,
        tokens_received: totals.tokens_received,
        tokens_lost: totals.lost,
        tokens_duplicate: totals.duplicates,
        tokens_out_of_order: totals.out_of_order,
        frame_seq_errors: totals.seq_errors,
        frames: totals.frames,
        tokens_per_frame: if totals.frames == 0 {
            0.0
        } else {
            round3(totals.tokens_received as f64 / totals.frames as f64)
        },
        send_p50_ms: send.p50_ms,
        send_p99_ms: send.p99_ms,
        hub,
        baseline,
        hub_added_p50_ms: baseline.map(|b| added(hub.p50_ms, b.p50_ms)),
        hub_added_p99_ms: baseline.map(|b| added(hub.p99_ms, b.p99_ms)),
        provider_late_sends: fake.stats.late_sends.load(Ordering::Relaxed),
        provider_max_lag_ms: round3(fake.stats.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0),
        provider_cut_streams: fake.stats.cut.load(Ordering::Relaxed),
        hub_phase_secs: round3(hub_secs),
        server_cpu_percent: server_cpu.map(|c| round3(c / hub_secs * 100.0)),
        server_cpu_ms_per_stream: server_cpu.map(|c| round3(c * 1000.0 / args.streams as f64)),
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak,
        rss_after_kib: rss_after,
        rss_delta_kib: rss_delta,
        rss_per_stream_kib: rss_delta.map(|d| round3(d as f64 / args.streams as f64)),
        generator_cpu_percent: round3(self_cpu / hub_secs * 100.0),
    };
    Ok(Some(serde_json::to_string(&result)?))
}

/// What one stream saw.
#[derive(Default)]
struct StreamOutcome {
    started: bool,
    send_us: Option<u64>,
    /// `assistant.done` status, if it came.
    done: Option<String>,
    content_ok: bool,
    frames: u64,
    seq_errors: u64,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
}

#[derive(Default)]
struct Totals {
    started: u64,
    start_errors: u64,
    streams_ok: u64,
    not_complete: u64,
    without_done: u64,
    content_mismatches: u64,
    tokens_received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    seq_errors: u64,
    frames: u64,
}

impl Totals {
    fn add(&mut self, o: &StreamOutcome, tokens: u64) {
        if o.started {
            self.started += 1;
        } else {
            self.start_errors += 1;
        }
        match o.done.as_deref() {
            None => self.without_done += 1,
            Some("complete") => {}
            Some(_) => self.not_complete += 1,
        }
        if o.done.is_some() && !o.content_ok {
            self.content_mismatches += 1;
        }
        let lost = tokens.saturating_sub(o.received);
        if o.done.as_deref() == Some("complete")
            && o.content_ok
            && lost == 0
            && o.duplicates == 0
            && o.out_of_order == 0
            && o.seq_errors == 0
        {
            self.streams_ok += 1;
        }
        self.tokens_received += o.received;
        self.lost += lost;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.seq_errors += o.seq_errors;
        self.frames += o.frames;
    }
}

/// Per-stream bookkeeping of the tokens seen, by index.
struct Seen {
    stream: u64,
    got: Vec<bool>,
    last: Option<u64>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Seen {
    fn new(stream: usize, tokens: u64) -> Self {
        Self {
            stream: stream as u64,
            got: vec![false; tokens as usize],
            last: None,
            received: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// Counts a token; true when it is new (and its latency should count).
    fn take(&mut self, t: provider::Token) -> bool {
        if t.stream != self.stream {
            self.out_of_order += 1;
            return false;
        }
        match self.got.get_mut(t.n as usize) {
            Some(seen) if !*seen => *seen = true,
            Some(_) => {
                self.duplicates += 1;
                return false;
            }
            None => {
                self.out_of_order += 1;
                return false;
            }
        }
        if self.last.is_some_and(|l| t.n <= l) {
            self.out_of_order += 1;
        }
        self.last = Some(t.n);
        self.received += 1;
        true
    }
}

#[allow(clippy::too_many_arguments)]
async fn hub_stream(
    i: usize,
    conversation: String,
    token: String,
    mut ws: crate::ws::Ws,
    mut conn: HttpConn,
    schedule: Schedule,
    tokens: u64,
    latency: Arc<ShardedHistogram>,
) -> StreamOutcome {
    let mut out = StreamOutcome::default();
    tokio::time::sleep_until(schedule.start_of(i)).await;
    let sent = Instant::now();
    let path = format!("/api/v1/assistant/conversations/{conversation}/messages");
    let body = json!({"text": provider::question(i)}).to_string();
    match conn.post_json(&path, Some(&token), Bytes::from(body)).await {
        Ok((status, _)) if status.is_success() => {
            out.started = true;
            out.send_us = Some(sent.elapsed().as_micros() as u64);
        }
        Ok((status, bytes)) => {
            log!(
                "assistant: stream {i}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            return out;
        }
        Err(e) => {
            log!("assistant: stream {i}: {e:#}");
            return out;
        }
    }
    drop(conn);

    let mut parser = TokenParser::default();
    let mut seen = Seen::new(i, tokens);
    let mut text = String::new();
    let mut next_seq = 1u64;
    loop {
        let msg = match tokio::time::timeout_at(schedule.deadline, ws.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => {
                log!("assistant: stream {i}: WebSocket: {e}");
                break;
            }
            Ok(None) => {
                log!("assistant: stream {i}: WebSocket closed");
                break;
            }
            Err(_) => {
                log!("assistant: stream {i}: no assistant.done before the deadline");
                break;
            }
        };
        let now = provider::now_micros();
        let Message::Text(raw) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(raw.as_str()) else {
            continue;
        };
        if frame["type"] != "pub" {
            continue;
        }
        let data = &frame["data"];
        match data["type"].as_str() {
            Some("assistant.delta") => {
                out.frames += 1;
                let seq = data["seq"].as_u64().unwrap_or(0);
                if seq != next_seq {
                    out.seq_errors += 1;
                }
                next_seq = seq + 1;
                let piece = data["text"].as_str().unwrap_or_default();
                text.push_str(piece);
                parser.feed(piece, |t| {
                    if seen.take(t) {
                        latency.record_us(i, now.saturating_sub(t.sent_us));
                    }
                });
            }
            Some("assistant.done") => {
                out.done = Some(data["status"].as_str().unwrap_or("?").to_owned());
                let content = data["content"].as_str().unwrap_or_default();
                let mut all = Vec::new();
                let mut check = TokenParser::default();
                check.feed(content, |t| all.push(t.n));
                out.content_ok = content == text
                    && check.malformed == 0
                    && check.rest().is_empty()
                    && all.iter().copied().eq(0..tokens);
                if out.done.as_deref() != Some("complete") {
                    log!(
                        "assistant: stream {i}: ended {} ({})",
                        out.done.as_deref().unwrap_or("?"),
                        data["error"].as_str().unwrap_or("-")
                    );
                }
                break;
            }
            _ => {}
        }
    }
    out.received = seen.received;
    out.duplicates = seen.duplicates;
    out.out_of_order = seen.out_of_order;
    let _ = ws.close(None).await;
    out
}

/// The baseline: the generator reads `--streams` answers from its own
/// fake provider (a fresh one), same pacing and start spread.
async fn baseline(args: &AssistantArgs, pacing: Pacing) -> Result<Dist> {
    let fake = FakeProvider::start(pacing).await?;
    let schedule = Schedule::new(args);
    let latency = Arc::new(ShardedHistogram::new(16));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let latency = Arc::clone(&latency);
        let received = Arc::clone(&received);
        let failed = Arc::clone(&failed);
        let addr = fake.addr;
        let tokens = args.tokens;
        tasks.spawn(async move {
            let outcome = tokio::time::timeout_at(
                schedule.deadline,
                read_direct(addr, i, schedule.start_of(i), tokens, &latency),
            )
            .await;
            match outcome {
                Ok(Ok(n)) if n == tokens => {
                    received.fetch_add(n, Ordering::Relaxed);
                }
                Ok(Ok(n)) => {
                    received.fetch_add(n, Ordering::Relaxed);
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        log!("assistant: baseline stream {i}: {e:#}");
                    }
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        log!("assistant: baseline: {failed} streams incomplete");
    }
    let dist = Dist::of(&latency.merged());
    log!(
        "assistant: baseline {} tokens, p50 {:.3} ms, p99 {:.3} ms, late sends {}",
        received.load(Ordering::Relaxed),
        dist.p50_ms,
        dist.p99_ms,
        fake.stats.late_sends.load(Ordering::Relaxed)
    );
    Ok(dist)
}

/// One answer read straight from the provider; returns the tokens read.
async fn read_direct(
    addr: std::net::SocketAddr,
    i: usize,
    start: Instant,
    tokens: u64,
    latency: &ShardedHistogram,
) -> Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::sleep_until(start).await;
    let body = json!({
        "model": "bench",
        "messages": [{"role": "system", "content": "Answer."},
                     {"role": "user", "content": provider::question(i)}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("provider answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut parser = TokenParser::default();
    let mut seen = Seen::new(i, tokens);
    while let Some(frame) = body.frame().await {
        let now = provider::now_micros();
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let Some(payload) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let payload = &payload[..payload.len() - 2];
            if payload == b"[DONE]" {
                return Ok(seen.received);
            }
            let Ok(chunk) = serde_json::from_slice::<Value>(payload) else {
                continue;
            };
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
                parser.feed(text, |t| {
                    if seen.take(t) {
                        latency.record_us(i, now.saturating_sub(t.sent_us));
                    }
                });
            }
        }
    }
    Ok(seen.received)
}
