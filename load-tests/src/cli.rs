//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generator for the Relais WebSocket hub. Every scenario prints exactly
/// one JSON result line on stdout; progress goes to stderr.
#[derive(Debug, Parser)]
#[command(name = "relais-load", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Memory cost of idle authenticated WebSocket connections.
    Idle(IdleArgs),
    /// Delivery latency and loss when one channel fans out to many subscribers.
    Fanout(FanoutArgs),
    /// Throughput and latency of the REST publish endpoints.
    Publish(PublishArgs),
    /// Notification triggers to every seeded user, each on its own WebSocket
    /// subscribed to `user:<id>`: time to the last recipient, exactly-once.
    NotifyFanout(NotifyFanoutArgs),
    /// Latency and throughput of the inbox REST API for seeded users.
    Inbox(InboxArgs),
    /// Emails per second from one critical trigger to an SMTP sink.
    Email(EmailArgs),
    /// Moderation consoles on the `queues` channel while items change state
    /// over REST: updates delivered, coalescing, time to the count on screen.
    QueueCounts(QueueCountsArgs),
    /// Broadcasters' consoles on `planning:<station>` while planners change
    /// slots over REST: latency from the write to each delivery, none lost.
    Planning(PlanningArgs),
    /// Chat rooms whose members send messages over the WebSocket: latency
    /// from send to delivery on the other members, store write cost.
    Chat(ChatArgs),
    /// Streamed assistant answers from a fake provider in this process: the
    /// latency Relais adds per token, loss, hub CPU and memory per stream.
    /// Raise the hub's RELAIS_ASSISTANT_MAX_STREAMS_PER_USER and
    /// RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT (2 and 50 by default) to at
    /// least --streams.
    Assistant(AssistantArgs),
    /// How memory and publish latency grow with the channels the hub holds
    /// (1 to 1,000,000 with history), and memory per subscription.
    Channels(ChannelsArgs),
    /// Reconnection storm: clients on node A reconnect with `recover` after
    /// A restarts while publishing goes on through node B; time until all
    /// are back, hub CPU, and no publication lost or duplicated.
    Storm(crate::scenarios::storm::StormArgs),
    /// Prints an access token for one seeded user (for curl and debugging).
    Mint(MintArgs),
}

impl Command {
    pub fn scenario(&self) -> &'static str {
        match self {
            Command::Idle(_) => "idle",
            Command::Fanout(_) => "fanout",
            Command::Publish(_) => "publish",
            Command::NotifyFanout(_) => "notify-fanout",
            Command::Inbox(_) => "inbox",
            Command::Email(_) => "email",
            Command::QueueCounts(_) => "queue-counts",
            Command::Planning(_) => "planning",
            Command::Chat(_) => "chat",
            Command::Assistant(_) => "assistant",
            Command::Channels(_) => "channels",
            Command::Storm(_) => "storm",
            Command::Mint(_) => "mint",
        }
    }

    /// True when this process is a worker spawned by a parent run.
    pub fn is_worker(&self) -> bool {
        match self {
            Command::Idle(a) => a.pool.worker_index.is_some(),
            Command::Fanout(a) => a.pool.worker_index.is_some(),
            Command::NotifyFanout(a) => a.pool.worker_index.is_some(),
            Command::Publish(_)
            | Command::Inbox(_)
            | Command::Email(_)
            | Command::QueueCounts(_)
            | Command::Planning(_)
            | Command::Chat(_)
            | Command::Assistant(_)
            | Command::Channels(_)
            | Command::Storm(_)
            | Command::Mint(_) => false,
        }
    }
}

/// Where the server is and how to log in.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the server's HTTP listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Email of a tenant admin in the `default` tenant.
    #[arg(long)]
    pub email: String,
    /// Password of that admin.
    #[arg(long)]
    pub password: String,
    /// PID of the server process, to read its resident memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// How WebSocket connections are opened and spread.
#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// Processes to spread the connections over (1 = this process). The
    /// sandbox caps each process at 20,000 open files, so use 2 or more when
    /// one process would need close to that many sockets.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Loopback source addresses to spread sockets over (127.0.0.2 onwards);
    /// 0 lets the kernel pick.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Connection attempts in flight at once (over all workers).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Extra attempts for a connection that failed to open.
    #[arg(long, default_value_t = 3)]
    pub connect_retries: u32,
    /// Timeout for one attempt (TCP connect, upgrade, auth, subscribe).
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Give up on connections not open after this long.
    #[arg(long, default_value_t = 180)]
    pub open_timeout_secs: u64,
    /// Internal: index of this worker process.
    #[arg(long, hide = true, requires = "worker_count")]
    pub worker_index: Option<usize>,
    /// Internal: number of worker processes.
    #[arg(long, hide = true, requires = "worker_index")]
    pub worker_count: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Number of WebSocket connections to open.
    #[arg(long)]
    pub connections: usize,
    /// How long to hold the connections after measuring.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Pause between "all established" and the memory reading, so the
    /// server's allocator and buffers settle.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Number of subscribed WebSocket connections.
    #[arg(long)]
    pub subscribers: usize,
    /// Publications per second.
    #[arg(long)]
    pub rate: u32,
    /// How long to publish.
    #[arg(long)]
    pub duration_secs: u64,
    /// Channel all subscribers join and the publisher targets.
    #[arg(long, default_value = "broadcast")]
    pub channel: String,
    /// Keep-alive HTTP connections the publisher spreads its requests over
    /// (default: one per 100 msg/s, at least 4, at most 64).
    #[arg(long)]
    pub publish_connections: Option<usize>,
    /// Maximum wait for in-flight deliveries after the last publication.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
    /// Base URLs the subscribers connect to, round-robin (comma-separated,
    /// e.g. the nodes of a cluster); the result then also reports latency
    /// per node. Login, API-key creation and publishing still use --url.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub subscribe_urls: Vec<String>,
    /// Shell command (`sh -c`) run once every subscriber is connected, just
    /// before the first publication; publishing waits for it to exit.
    #[arg(long, value_name = "CMD")]
    pub exec_before_publish: Option<String>,
    /// Shell command (`sh -c`) run right after the last publication was
    /// answered, before draining.
    #[arg(long, value_name = "CMD")]
    pub exec_after_publish: Option<String>,
    /// Size of each publication's `data` in bytes (padded with a `pad`
    /// field), as an application's message would be.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Where a publication's latency starts: `scheduled`, the instant it
    /// was due (what a user sees: waiting for a free publisher connection
    /// counts), or `sent`, right before its request goes out (what the
    /// server is responsible for).
    #[arg(long, value_enum, default_value_t = Stamp::Scheduled)]
    pub stamp: Stamp,
}

/// Where latency is counted from; see [`FanoutArgs::stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stamp {
    Scheduled,
    Sent,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent keep-alive HTTP/1.1 connections, each sending back-to-back.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to publish.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Publications per request; above 1 uses the batch endpoint.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Channel to publish to.
    #[arg(long, default_value = "broadcast")]
    pub channel: String,
}

#[derive(Debug, Clone, Args)]
pub struct ChannelsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Channel counts to measure at, filled in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000,10000,100000,1000000"
    )]
    pub steps: Vec<u64>,
    /// Publications kept per filled channel; the server's history size on
    /// `--namespace` must be the same (RELAIS_CHANNEL_HISTORY).
    #[arg(long, default_value_t = 10)]
    pub history: usize,
    /// Namespace of the filled channels (`<namespace>:scale-<i>`).
    #[arg(long, default_value = "user")]
    pub namespace: String,
    /// Bytes of each publication's `data` (about).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Publications per batch request while filling (at most the server's
    /// RELAIS_MAX_BATCH).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Keep-alive connections filling in parallel.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Timed publications per kind at each step.
    #[arg(long, default_value_t = 500)]
    pub probes: usize,
    /// Seconds between the end of a fill and reading the server's memory.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Connections that subscribe to three channels each at the end (0:
    /// skip the subscription measurement).
    #[arg(long, default_value_t = 5000)]
    pub subscribers: usize,
    /// Loopback source addresses to spread sockets over.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
}

/// Users seeded with SQL and how to mint their access tokens.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// File listing the seeded users, one `USER_ID SESSION_ID` per line.
    #[arg(long)]
    pub users_file: PathBuf,
    /// Environment variable holding the hub's RELAIS_JWT_SECRET.
    #[arg(long, default_value = "RELAIS_JWT_SECRET")]
    pub jwt_secret_env: String,
    /// Lifetime of the minted access tokens.
    #[arg(long, default_value_t = 7200)]
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct NotifyFanoutArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Triggers to send, one after another, each to every user.
    #[arg(long, default_value_t = 10)]
    pub triggers: usize,
    /// Notification type of the triggers (in-app, so no email is queued).
    #[arg(long = "type", default_value = "system.announcement")]
    pub type_key: String,
    /// Trigger payload (a JSON object filling the type's variables); the
    /// default fits `system.announcement`. A `bench` member is added.
    #[arg(long)]
    pub payload: Option<String>,
    /// Longest wait for every recipient's event of one trigger.
    #[arg(long, default_value_t = 60)]
    pub trigger_timeout_secs: u64,
    /// Pause between the last delivery of a trigger and the next trigger.
    #[arg(long, default_value_t = 1000)]
    pub pause_ms: u64,
    /// Interval of the server memory samples taken while triggers run.
    #[arg(long, default_value_t = 50)]
    pub rss_sample_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct InboxArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Users measured separately (e.g. one with a very large inbox), same
    /// format as --users-file.
    #[arg(long)]
    pub heavy_users_file: Option<PathBuf>,
    /// Concurrent keep-alive HTTP/1.1 connections, each sending back-to-back
    /// (or, with --rate, on its own schedule).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Requests per second offered in all, spread evenly over the
    /// connections, whatever the answers' speed (open loop); latency then
    /// counts from each request's scheduled time. Default: closed loop,
    /// every connection sending as fast as it is answered.
    #[arg(long)]
    pub rate: Option<u32>,
    /// How long each endpoint is measured.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// How long each endpoint is measured for the heavy users (default:
    /// --duration-secs).
    #[arg(long)]
    pub heavy_duration_secs: Option<u64>,
    /// Endpoints to measure, in order: list, unread, category, priority,
    /// page2, counts.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "list,unread,category,priority,page2,counts"
    )]
    pub endpoints: Vec<String>,
    /// Categories the `category` endpoint picks from at random.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "campaigns,diffusion,moderation,projects,tasks,documents,chat,system"
    )]
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct EmailArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Folder where the SMTP sink stores each message as `<n>.eml` (and
    /// `<n>.json` with its envelope), as `tests/smtp/sink.py --maildir` does.
    #[arg(long)]
    pub maildir: PathBuf,
    /// Notification type of the trigger: critical types are emailed at once.
    #[arg(long = "type", default_value = "system.maintenance")]
    pub type_key: String,
    /// Trigger payload; the default fits `system.maintenance`.
    #[arg(long)]
    pub payload: Option<String>,
    /// Emails to wait for (default: the trigger's recipient count).
    #[arg(long)]
    pub expect: Option<u64>,
    /// Longest wait for all emails.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// After the last expected email, how long to keep watching for extra
    /// (duplicate) ones.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// PID of the SMTP sink, to report its CPU time.
    #[arg(long)]
    pub sink_pid: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct QueueCountsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// WebSocket connections subscribed to `queues` (as the admin).
    #[arg(long, default_value_t = 1000)]
    pub consoles: usize,
    /// Queues the transitions are spread over.
    #[arg(long, default_value_t = 10)]
    pub queues: usize,
    /// Transitions per second, over all queues.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// How long transitions are sent.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Keep-alive HTTP connections sending them.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The hub's `RELAIS_QUEUE_COUNTS_WINDOW_MS` (reported, and used to size
    /// the waits).
    #[arg(long, default_value_t = 250)]
    pub window_ms: u64,
    /// Extra wait after the last transition for the last updates.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    /// Tenant id (UUID) the user belongs to.
    #[arg(long)]
    pub tenant: String,
    /// User id.
    #[arg(long)]
    pub user: String,
    /// Session id (an unrevoked `sessions` row of that user).
    #[arg(long)]
    pub session: String,
    /// Environment variable holding the hub's RELAIS_JWT_SECRET.
    #[arg(long, default_value = "RELAIS_JWT_SECRET")]
    pub jwt_secret_env: String,
    /// Lifetime of the token.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// `planning`: stations, consoles and the rate of slot changes.
#[derive(Debug, Clone, Args)]
pub struct PlanningArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Stations, each with its own planner.
    #[arg(long, default_value_t = 20)]
    pub stations: usize,
    /// Broadcaster users, one WebSocket each, spread over the stations.
    #[arg(long, default_value_t = 200)]
    pub broadcasters: usize,
    /// Slot changes per second, over all stations.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long to change slots.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Maximum wait for in-flight deliveries after the last change.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
}

/// `chat`: rooms, members, users and the message rate.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Group rooms.
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Users the memberships are spread over (each in rooms × members /
    /// users rooms), one WebSocket each.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Messages per second, over all users.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// How long to send.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Maximum wait for in-flight replies and deliveries after the last send.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
    /// Nodes the users' WebSockets connect to, in turn (user i to node
    /// i mod n); `--url` when empty. REST setup always uses `--url`.
    #[arg(long, value_delimiter = ',')]
    pub node_urls: Vec<String>,
}

/// `assistant`: concurrent streamed answers and their pacing.
///
/// The hub must allow --streams answers streaming at once: start it with
/// RELAIS_ASSISTANT_MAX_STREAMS_PER_USER (default 2; all streams belong to
/// the admin unless --users is set) and RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT
/// (default 50) at least that high. run-bench.sh passes its environment on
/// to the hub. The hub coalesces tokens closer than RELAIS_ASSISTANT_FRAME_MS
/// (default 10) into one frame.
#[derive(Debug, Clone, Args)]
pub struct AssistantArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Answers streaming at once, each with its own conversation and
    /// subscriber.
    #[arg(long, default_value_t = 500)]
    pub streams: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 500)]
    pub tokens: u64,
    /// Tokens per second of each answer, paced by the fake provider on
    /// absolute deadlines.
    #[arg(long, default_value_t = 50)]
    pub tokens_per_sec: u32,
    /// The streams' starts are spread evenly over this time.
    #[arg(long, default_value_t = 1000)]
    pub ramp_ms: u64,
    /// Users the conversations are spread over (created and signed in
    /// through the API); 0 opens them all as the admin.
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Skip the baseline phase (the generator reading the provider
    /// directly), and with it the hub_added figures.
    #[arg(long)]
    pub no_baseline: bool,
    /// Wait for the last `assistant.done` this long after the last answer
    /// should have ended.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Interval of the hub memory samples taken while answers stream.
    #[arg(long, default_value_t = 100)]
    pub rss_sample_ms: u64,
}
