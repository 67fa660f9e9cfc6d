//! # Relais
//!
//! A self-hosted real-time hub: an authenticated WebSocket gateway with
//! ordered, recoverable channels, driven by app backends over REST.
//!
//! # Layout
//!
//! `docs/architecture.md` is the map with the flows; in short, from the
//! bottom up:
//!
//! - [`config`]: typed settings from `RELAIS_*` environment variables, one
//!   file per section.
//! - [`store`]: SQLite or PostgreSQL through one set of queries.
//! - [`ids`], [`error`], [`extension`]: id newtypes and random tokens, REST
//!   errors, and the extension points domains implement (publish hooks,
//!   snapshot sources, RPC handlers) with their [`extension::DomainError`].
//! - [`channels`]: channel names, the namespace registry, history policies.
//! - [`bus`]: the broker interface (offsets, history, presence, typed
//!   control messages to every node) with its in-process and Redis
//!   implementations; it delivers to a [`bus::Delivery`], never to the
//!   gateway directly.
//! - [`auth`]: tenants, users, sessions, tokens, API keys, roles; their routes.
//! - [`gateway`]: connections and fan-out. [`gateway::session`] is the
//!   transport-free core (subscribe, recover, snapshot, order, commands);
//!   [`gateway::ws`] and [`gateway::sse`] are thin transports over it;
//!   [`gateway::rpc`] routes client RPCs to domains.
//! - [`api`]: the publish API (with idempotency) and operations endpoints.
//! - [`metrics`]: Prometheus counters and gauges.
//! - Domain modules, each a [`module::Module`] the application walks:
//!   [`notify`] (notification types, triggers and their durable fan-out,
//!   inboxes with live counters, preferences, digests and notification
//!   emails), [`email`] (a generic durable outbox, its worker over SMTP or
//!   files, per-kind send guards), [`projects`] (projects and members, the
//!   `project:` channels, project events), [`queues`] (moderation queues,
//!   their audit trail and live counts), [`planning`] (stations, slots and
//!   the broadcasters' live planning), [`chat`] (collaboration rooms,
//!   persisted messages, typing, read markers and mentions), [`assistant`]
//!   (LLM assistants streamed to every device, with fallback providers).
//! - [`state`], [`module`], [`app`]: the shared REST state, the module seam,
//!   and building and running the application.
//!
//! Flow of a publication: REST `publish` or a WebSocket `publish` →
//! [`gateway::Gateway::publish_from`] (the namespace's hook, if any) →
//! [`bus::Broker::publish`] assigns the offset and stores it in history →
//! [`bus::Delivery::deliver`] (the hub) pushes the once-encoded frame into
//! each subscriber's bounded [`gateway::outbox::Outbox`] → each connection
//! task hands its batch to [`gateway::session::Session::write_batch`], which
//! drops duplicates, catches gaps and writes with one flush.

pub mod api;
pub mod app;
pub mod assistant;
pub mod auth;
pub mod bootstrap;
pub mod bus;
pub mod channels;
pub mod chat;
pub mod config;
pub mod email;
pub mod error;
pub mod extension;
pub mod gateway;
pub mod ids;
pub mod json_depth;
pub mod metrics;
pub mod module;
pub mod notify;
pub mod planning;
pub mod projects;
pub mod queues;
pub mod state;
pub mod store;
pub mod telemetry;
