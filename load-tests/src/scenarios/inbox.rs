//! `inbox`: latency and throughput of the inbox REST API over a large,
//! pre-seeded notifications table.
//!
//! Each endpoint is measured on its own for `--duration-secs`: `--connections`
//! keep-alive connections each send the next request as soon as the previous
//! one is answered (closed loop: the server at its saturation throughput),
//! or, with `--rate`, each on a fixed schedule that adds up to that many
//! requests per second (open loop: latency at a chosen load, counted from
//! each request's scheduled time so a slow answer also counts against the
//! requests it delayed). Every request is for a user picked at random among
//! the seeded ones, with that user's own access token (minted here). The users
//! of `--heavy-users-file` (e.g. one user with a very large inbox) are
//! measured the same way afterwards and reported separately.
//!
//! Before measuring, every user's first page is fetched once: it checks that
//! the seeding worked (full pages), provides the cursors of the `page2`
//! endpoint, and warms the database's caches.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{secs, server_rss};
use crate::cli::InboxArgs;
use crate::http::{self, HttpConn};
use crate::mint::{self, Minter, SeededUser};
use crate::net::Target;
use crate::stats::{Percentiles, new_histogram, record_us, round3};

const LOGGED_ERRORS: u64 = 5;
/// Page size of every list request.
const LIMIT: usize = 20;

/// One measured request kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `GET /api/v1/inbox?limit=20`: unread and read, newest first.
    List,
    Unread,
    /// A category picked at random per request.
    Category,
    Priority,
    /// The second page, with the cursor the first page returned.
    Page2,
    Counts,
}

impl Endpoint {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "list" => Endpoint::List,
            "unread" => Endpoint::Unread,
            "category" => Endpoint::Category,
            "priority" => Endpoint::Priority,
            "page2" => Endpoint::Page2,
            "counts" => Endpoint::Counts,
            other => bail!(
                "unknown endpoint {other:?} (known: list, unread, category, priority, page2, counts)"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::List => "list",
            Endpoint::Unread => "unread",
            Endpoint::Category => "category",
            Endpoint::Priority => "priority",
            Endpoint::Page2 => "page2",
            Endpoint::Counts => "counts",
        }
    }

    /// The request path; `{category}` and `{cursor}` stand for the values
    /// picked per request.
    fn template(self) -> String {
        match self {
            Endpoint::List => format!("/api/v1/inbox?limit={LIMIT}"),
            Endpoint::Unread => format!("/api/v1/inbox?status=unread&limit={LIMIT}"),
            Endpoint::Category => format!("/api/v1/inbox?category={{category}}&limit={LIMIT}"),
            Endpoint::Priority => format!("/api/v1/inbox?priority=high,critical&limit={LIMIT}"),
            Endpoint::Page2 => format!("/api/v1/inbox?limit={LIMIT}&cursor={{cursor}}"),
            Endpoint::Counts => "/api/v1/inbox/counts".to_owned(),
        }
    }
}

#[derive(Serialize)]
struct InboxResult {
    scenario: &'static str,
    connections: usize,
    /// Requests per second offered (open loop); absent: closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<u32>,
    duration_secs: u64,
    users: usize,
    /// Users whose first page (warm-up) was not full; should be 0.
    short_first_pages: usize,
    endpoints: Vec<PhaseResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heavy: Option<HeavyResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kib: Option<u64>,
}

#[derive(Serialize)]
struct HeavyResult {
    users: usize,
    duration_secs: u64,
    short_first_pages: usize,
    endpoints: Vec<PhaseResult>,
}

#[derive(Serialize)]
struct PhaseResult {
    endpoint: &'static str,
    path: String,
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    #[serde(flatten)]
    latency: Percentiles,
    /// Mean response body size.
    avg_bytes: u64,
}

/// A user as the load loop needs it.
struct Client {
    token: String,
    /// `next_cursor` of the user's first page.
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<IgnoredAny>,
    next_cursor: Option<String>,
}

/// What one connection achieved in one phase.
struct ConnOutcome {
    requests: u64,
    errors: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

/// SplitMix64: a tiny, good-enough generator for picking users.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    }
}

pub async fn run(args: InboxArgs) -> Result<Option<String>> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let endpoints = args
        .endpoints
        .iter()
        .map(|e| Endpoint::parse(e.trim()))
        .collect::<Result<Vec<_>>>()?;
    if args.categories.is_empty() {
        bail!("--categories must name at least one category");
    }
    let secret = mint::secret_from_env(&args.seed.jwt_secret_env)?;
    let target = Arc::new(Target::resolve(&args.server.url).await?);
    let admin_token = http::login(&target, &args.server.email, &args.server.password)
        .await
        .context("login")?;
    let tenant = mint::verify(&secret, &admin_token)?.tid;
    let minter = Minter::new(&secret, &tenant, args.seed.token_ttl_secs);
    let categories: Arc<[String]> = args.categories.clone().into();

    let users = mint::read_users(&args.seed.users_file)?;
    let (clients, short) = prepare(&target, &minter, &users, args.connections).await?;
    log!(
        "inbox: {} users ready ({short} short first pages); {} endpoints × {}s with {} connections",
        clients.len(),
        endpoints.len(),
        args.duration_secs,
        args.connections
    );
    let mut results = Vec::new();
    for &endpoint in &endpoints {
        results.push(
            phase(
                &target,
                &clients,
                &categories,
                endpoint,
                secs(args.duration_secs),
                args.connections,
                args.rate,
            )
            .await?,
        );
    }

    let heavy = match &args.heavy_users_file {
        None => None,
        Some(path) => {
            let users = mint::read_users(path)?;
            let (clients, short) = prepare(&target, &minter, &users, args.connections).await?;
            let duration = args.heavy_duration_secs.unwrap_or(args.duration_secs);
            log!(
                "inbox: {} heavy users ready ({short} short first pages)",
                clients.len()
            );
            let mut endpoints_out = Vec::new();
            for &endpoint in &endpoints {
                endpoints_out.push(
                    phase(
                        &target,
                        &clients,
                        &categories,
                        endpoint,
                        secs(duration),
                        args.connections,
                        args.rate,
                    )
                    .await?,
                );
            }
            Some(HeavyResult {
                users: clients.len(),
                duration_secs: duration,
                short_first_pages: short,
                endpoints: endpoints_out,
            })
        }
    };

    let result = InboxResult {
        scenario: "inbox",
        connections: args.connections,
        rate: args.rate,
        duration_secs: args.duration_secs,
        users: clients.len(),
        short_first_pages: short,
        endpoints: results,
        heavy,
        rss_kib: server_rss(args.server.server_pid),
    };
    Ok(Some(serde_json::to_string(&result)?))
}

/// Mints every user's token and fetches its first page (in parallel over
/// `connections` connections); returns the clients and how many first
/// pages were not full.
async fn prepare(
    target: &Arc<Target>,
    minter: &Minter,
    users: &[SeededUser],
    connections: usize,
) -> Result<(Arc<[Client]>, usize)> {
    let tokens = users
        .iter()
        .map(|u| minter.token(&u.id, &u.session))
        .collect::<Result<Vec<_>>>()?;
    let tokens: Arc<[String]> = tokens.into();
    let mut tasks = JoinSet::new();
    let workers = connections.min(users.len()).max(1);
    for w in 0..workers {
        let target = Arc::clone(target);
        let tokens = Arc::clone(&tokens);
        tasks.spawn(async move {
            let mut conn = HttpConn::connect(&target).await?;
            let mut out = Vec::new();
            for i in (w..tokens.len()).step_by(workers) {
                let path = Endpoint::List.template();
                let (status, body) = conn.get(&path, Some(&tokens[i])).await?;
                if !status.is_success() {
                    bail!(
                        "first page of user #{i}: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let page: Page = serde_json::from_slice(&body).context("unexpected inbox page")?;
                out.push((i, page.items.len() == LIMIT, page.next_cursor));
            }
            anyhow::Ok(out)
        });
    }
    let mut cursors = vec![None; tokens.len()];
    let mut short = 0;
    while let Some(joined) = tasks.join_next().await {
        for (i, full, cursor) in joined.context("warm-up task")?? {
            if !full {
                short += 1;
            }
            cursors[i] = cursor;
        }
    }
    let clients = tokens
        .iter()
        .zip(cursors)
        .map(|(token, cursor)| Client {
            token: token.clone(),
            cursor,
        })
        .collect::<Vec<_>>();
    Ok((clients.into(), short))
}

/// Measures one endpoint for `duration`.
async fn phase(
    target: &Arc<Target>,
    clients: &Arc<[Client]>,
    categories: &Arc<[String]>,
    endpoint: Endpoint,
    duration: Duration,
    connections: usize,
    rate: Option<u32>,
) -> Result<PhaseResult> {
    if rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    // With a rate, connection `c` sends every `interval`, offset by
    // `c / connections` of it so the requests interleave evenly.
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / f64::from(r)));
    // Page 2 only for users that have one.
    let eligible: Arc<[usize]> = (0..clients.len())
        .filter(|&i| endpoint != Endpoint::Page2 || clients[i].cursor.is_some())
        .collect::<Vec<_>>()
        .into();
    if eligible.is_empty() {
        bail!("no user has a second page");
    }
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(HttpConn::connect(target).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for (c, conn) in conns.into_iter().enumerate() {
        let target = Arc::clone(target);
        let clients = Arc::clone(clients);
        let categories = Arc::clone(categories);
        let eligible = Arc::clone(&eligible);
        let seed = crate::stats::unix_nanos() ^ (c as u64).wrapping_mul(0xA076_1D64_78BD_642F);
        let schedule = interval.map(|every| Schedule {
            next: started + every.mul_f64(c as f64 / connections as f64),
            every,
        });
        tasks.spawn(async move {
            request_loop(
                conn,
                &target,
                &clients,
                &eligible,
                &categories,
                endpoint,
                seed,
                deadline,
                schedule,
            )
            .await
        });
    }
    let mut latency = new_histogram();
    let (mut requests, mut errors, mut bytes) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("request task")?;
        requests += outcome.requests;
        errors += outcome.errors;
        bytes += outcome.bytes;
        // Same bounds everywhere, so `add` cannot fail.
        let _ = latency.add(&outcome.latency);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let result = PhaseResult {
        endpoint: endpoint.name(),
        path: endpoint.template(),
        requests,
        errors,
        requests_per_sec: round3(requests as f64 / elapsed),
        latency: Percentiles::of(&latency),
        avg_bytes: bytes.checked_div(requests).unwrap_or(0),
    };
    log!(
        "inbox {}: {} requests ({} errors), {:.0}/s, p50 {} ms, p99 {} ms, max {} ms",
        result.endpoint,
        result.requests,
        result.errors,
        result.requests_per_sec,
        result.latency.p50_ms,
        result.latency.p99_ms,
        result.latency.max_ms
    );
    Ok(result)
}

/// When an open-loop connection sends its next request.
struct Schedule {
    next: Instant,
    every: Duration,
}

/// Sends requests on one connection until `deadline`: back-to-back, or at
/// the times of `schedule`.
#[allow(clippy::too_many_arguments)]
async fn request_loop(
    conn: HttpConn,
    target: &Target,
    clients: &[Client],
    eligible: &[usize],
    categories: &[String],
    endpoint: Endpoint,
    seed: u64,
    deadline: Instant,
    mut schedule: Option<Schedule>,
) -> ConnOutcome {
    let mut out = ConnOutcome {
        requests: 0,
        errors: 0,
        bytes: 0,
        latency: new_histogram(),
    };
    let mut rng = Rng(seed);
    let mut conn = Some(conn);
    let template = endpoint.template();
    while Instant::now() < deadline {
        if conn.as_ref().is_none_or(HttpConn::is_closed) {
            match HttpConn::connect(target).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    note_error(&mut out.errors, || format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let client = &clients[eligible[rng.below(eligible.len())]];
        let path = match endpoint {
            Endpoint::Category => {
                template.replace("{category}", &categories[rng.below(categories.len())])
            }
            Endpoint::Page2 => template.replace("{cursor}", client.cursor.as_deref().unwrap_or("")),
            _ => template.clone(),
        };
        // Open loop: wait for the scheduled time, and count latency from it
        // even when this connection is late (the previous answer was slow).
        let sent = match schedule.as_mut() {
            Some(s) => {
                let at = s.next;
                s.next += s.every;
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
                at
            }
            None => Instant::now(),
        };
        match c.get(&path, Some(&client.token)).await {
            Ok((status, body)) if status.is_success() => {
                record_us(&mut out.latency, sent.elapsed().as_micros() as u64);
                out.requests += 1;
                out.bytes += body.len() as u64;
            }
            Ok((status, body)) => note_error(&mut out.errors, || {
                format!("{path}: {status} {}", String::from_utf8_lossy(&body))
            }),
            Err(e) => {
                note_error(&mut out.errors, || format!("{e:#}"));
                conn = None;
            }
        }
    }
    out
}

fn note_error(errors: &mut u64, what: impl FnOnce() -> String) {
    if *errors < LOGGED_ERRORS {
        log!("inbox: {}", what());
    }
    *errors += 1;
}
