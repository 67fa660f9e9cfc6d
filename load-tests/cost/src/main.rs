//! `relais-cost`: the heap bytes each channel, subscription and presence
//! member costs in the hub's own structures, counted exactly.
//!
//! A server's RSS answers "how much in all" but not "for what": it mixes
//! the allocator's pages, the connections and the structures under test,
//! and one client cannot subscribe to a million distinct channels (a user
//! may join three core channels; the domain channels need a record each).
//! This binary drives the hub's real in-process broker and fan-out table
//! (`relais::bus::memory::MemoryBroker`, `relais::gateway::hub::Hub`), the
//! same code a single node runs, through a global allocator that counts the
//! bytes it holds, and prints one JSON line:
//!
//! 1. `--channels` channels, each given `--history` publications of
//!    `--payload-bytes` bytes through the broker's publish path;
//! 2. one subscriber on each (one connection's outbox per 256 of them, the
//!    per-connection limit);
//! 3. that subscriber's user as the presence member of each;
//! 4. `--members` distinct users as presence members of one channel.
//!
//! Each figure is the change in live heap bytes divided by the items added.
//! It also times the idle-channel sweep the hub runs every minute over all
//! those channels, once before the subscriptions (while a second thread
//! publishes and creates channels, to show what the sweep holds up) and
//! once after.
//! What a connection costs by itself is in the `idle` scenario of
//! `relais-load`; the session's own record of a subscription is in its
//! `channels` scenario (RSS per subscription over real sockets).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relais::bus::control::ControlRouter;
use relais::bus::memory::MemoryBroker;
use relais::bus::{Broker, Delivery};
use relais::channels::{ChannelKey, ChannelName, HistoryPolicy};
use relais::gateway::hub::Hub;
use relais::gateway::outbox::Outbox;
use relais::ids::{TenantId, UserId};
use relais::metrics::Metrics;
use serde_json::value::RawValue;

/// Counts the bytes the program holds on the heap.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout as our caller's, per GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Subscriptions per connection in the hub's default configuration
/// (`RELAIS_WS_MAX_SUBSCRIPTIONS`).
const SUBS_PER_CONNECTION: usize = 256;

struct Args {
    channels: usize,
    history: usize,
    payload_bytes: usize,
    members: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        channels: 1_000_000,
        history: 10,
        payload_bytes: 200,
        members: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--channels" => args.channels = n,
            "--history" => args.history = n,
            "--payload-bytes" => args.payload_bytes = n,
            "--members" => args.members = n,
            _ => {
                return Err(format!(
                    "unknown option {flag}; options: --channels N --history N --payload-bytes N --members N"
                ));
            }
        }
    }
    if args.channels == 0 {
        return Err("--channels must be at least 1".into());
    }
    Ok(args)
}

/// Bytes added per item since `before`, with the phase's duration.
fn per_item(before: usize, items: usize) -> f64 {
    let added = live().saturating_sub(before) as f64;
    (added / items.max(1) as f64 * 10.0).round() / 10.0
}

/// Most channels the sweep's probe creates.
const PROBE_CHANNELS: usize = 100_000;

/// One idle sweep, and what publishing saw meanwhile.
struct Sweep {
    secs: f64,
    publishes: usize,
    publish_max_ms: f64,
    create_max_ms: f64,
}

/// Runs one idle sweep ([`MemoryBroker::evict_idle`]) while a second
/// thread publishes to existing channels and, every 64th time, creates one:
/// the node's other work during the minute's sweep. The slowest of each
/// shows what the sweep holds up.
fn sweep_under_load(
    broker: &MemoryBroker,
    keys: &[ChannelKey],
    policy: HistoryPolicy,
    tenant: &TenantId,
) -> Result<Sweep, Box<dyn std::error::Error>> {
    let data = RawValue::from_string(r#"{"probe":true}"#.into())?;
    let done = AtomicBool::new(false);
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            // A runtime of its own: this thread is outside the caller's.
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
                return (Duration::ZERO, Duration::ZERO, 0);
            };
            let (mut publish_max, mut create_max, mut n) = (Duration::ZERO, Duration::ZERO, 0);
            while !done.load(Ordering::Relaxed) {
                let key = &keys[n * 7919 % keys.len()];
                let started = Instant::now();
                let _ = runtime.block_on(broker.publish(key, policy, &data));
                publish_max = publish_max.max(started.elapsed());
                if n % 64 == 0 && n / 64 < PROBE_CHANNELS {
                    let name = ChannelName::parse(&format!("user:probe-{n}"));
                    if let Ok(name) = name {
                        let key = ChannelKey::new(tenant.clone(), name);
                        let started = Instant::now();
                        let _ = runtime.block_on(broker.publish(&key, policy, &data));
                        create_max = create_max.max(started.elapsed());
                    }
                }
                n += 1;
            }
            (publish_max, create_max, n)
        });
        let started = Instant::now();
        broker.evict_idle(|_| Some(policy));
        let secs = secs(started);
        done.store(true, Ordering::Relaxed);
        let (publish_max, create_max, publishes) =
            probe.join().map_err(|_| "the sweep's probe panicked")?;
        Ok(Sweep {
            secs,
            publishes,
            publish_max_ms: ms(publish_max),
            create_max_ms: ms(create_max),
        })
    })
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("relais-cost: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relais-cost: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<String, Box<dyn std::error::Error>> {
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(Arc::clone(&metrics)));
    let broker = MemoryBroker::new(
        Arc::clone(&hub) as Arc<dyn Delivery>,
        Arc::new(ControlRouter::default()),
        // Room for the channels the sweep's probe creates.
        args.channels + 1 + PROBE_CHANNELS,
        Arc::clone(&metrics),
    );
    let policy = HistoryPolicy {
        size: args.history,
        ttl: Duration::from_secs(86_400),
    };
    // One tenant, shared as the gateway shares the connection's tenant.
    let tenant = TenantId::from("tenant-0000000000000000000000000000");
    let pad = "x".repeat(args.payload_bytes.saturating_sub(20));

    // Channel names are built first so their own bytes are not counted:
    // a channel's key is counted once the broker or the hub keeps it.
    let keys: Vec<ChannelKey> = (0..args.channels)
        .map(|i| {
            let name = ChannelName::parse(&format!("user:0193a5c2-7f00-7000-8000-{i:012}"))
                .map(|name| ChannelKey::new(tenant.clone(), name));
            name.map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;

    // 1. History.
    let before = live();
    let started = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        for seq in 0..args.history {
            let data = RawValue::from_string(format!(r#"{{"seq":{seq},"i":{i},"pad":"{pad}"}}"#))?;
            broker.publish(key, policy, &data).await?;
        }
    }
    let channel_with_history = per_item(before, args.channels);
    let history_secs = secs(started);

    // The idle-channel sweep the hub runs every minute, over every channel
    // (none is evicted: each holds history within its time to live), while
    // another thread goes on publishing.
    let sweep = sweep_under_load(&broker, &keys, policy, &tenant)?;

    // 2. One subscriber per channel, 256 per connection outbox.
    let outboxes: Vec<Arc<Outbox>> = (0..args.channels.div_ceil(SUBS_PER_CONNECTION))
        .map(|_| Arc::new(Outbox::new(256 * 1024, Arc::clone(&metrics))))
        .collect();
    let before = live();
    let started = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let conn = (i / SUBS_PER_CONNECTION) as u64 + 1;
        hub.subscribe(key, conn, Arc::clone(&outboxes[i / SUBS_PER_CONNECTION]));
        broker.local_interest(key, true);
    }
    let subscription = per_item(before, args.channels);
    let subscribe_secs = secs(started);
    let started = Instant::now();
    broker.evict_idle(|_| Some(policy));
    let sweep_subscribed_secs = secs(started);

    // 3. The subscriber's user in each channel's presence (one user per
    // connection, as with one user per browser tab group).
    let users: Vec<UserId> = (0..outboxes.len()).map(|_| UserId::generate()).collect();
    let before = live();
    for (i, key) in keys.iter().enumerate() {
        broker
            .presence_join(key, &users[i / SUBS_PER_CONNECTION])
            .await?;
    }
    let presence_on_own_channel = per_item(before, args.channels);

    // 4. Many members on one channel.
    let crowd = ChannelKey::new(tenant.clone(), ChannelName::parse("broadcast")?);
    let members: Vec<UserId> = (0..args.members).map(|_| UserId::generate()).collect();
    let before = live();
    for user in &members {
        broker.presence_join(&crowd, user).await?;
    }
    let presence_member_on_shared_channel = per_item(before, args.members);

    let total = channel_with_history + subscription + presence_on_own_channel;
    let line = serde_json::json!({
        "scenario": "cost",
        "channels": args.channels,
        "history": args.history,
        "payload_bytes": args.payload_bytes,
        "bytes_per_channel_with_history": channel_with_history,
        "bytes_per_subscription": subscription,
        "bytes_per_presence_member_own_channel": presence_on_own_channel,
        "bytes_per_channel_with_one_subscriber": (total * 10.0).round() / 10.0,
        "presence_members_on_one_channel": args.members,
        "bytes_per_presence_member_shared_channel": presence_member_on_shared_channel,
        "history_fill_secs": history_secs,
        "subscribe_secs": subscribe_secs,
        "eviction_sweep_secs": sweep.secs,
        "eviction_sweep_probe_publishes": sweep.publishes,
        "eviction_sweep_publish_max_ms": sweep.publish_max_ms,
        "eviction_sweep_create_max_ms": sweep.create_max_ms,
        "eviction_sweep_subscribed_secs": sweep_subscribed_secs,
        "live_heap_mib": live() / (1024 * 1024),
    });
    drop((keys, outboxes, users, members));
    Ok(line.to_string())
}
