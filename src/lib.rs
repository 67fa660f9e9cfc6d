//! # Relais
//!
//! A self-hosted real-time hub: an authenticated WebSocket gateway with
//! ordered, recoverable channels, driven by app backends over REST.
//!
//! # Layout
//!
//! - [`config`]: typed settings from `RELAIS_*` environment variables.
//! - [`app`]: builds the application and runs it until shutdown.
//! - [`store`]: SQLite or PostgreSQL through one set of queries.
//! - [`auth`]: users, sessions, tokens, API keys, roles; REST routes for them.
//! - [`channels`]: channel names and the namespace policy registry.
//! - [`bus`]: the broker interface (offsets, history, presence, revocation)
//!   and its in-process implementation.
//! - [`gateway`]: WebSocket and SSE connections, fan-out, outbound bounds.
//! - [`api`]: the publish API (with idempotency) and operations endpoints.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`notify`]: notification types, triggers and their durable fan-out,
//!   inboxes with live counters, preferences.
//! - [`email`]: the durable outbox, its worker (SMTP or files), digests.
//! - [`projects`]: projects and members, which drive recipients and the
//!   `project:` channels; project events.
//!
//! Flow of a publication: REST `publish` → [`gateway::Gateway::publish`] →
//! [`bus::Broker::publish`] assigns the offset and stores it in history →
//! [`gateway::hub::Hub::deliver`] pushes the once-encoded frame into each
//! subscriber's bounded [`gateway::outbox::Outbox`] → each connection task
//! writes its queue with one flush.

pub mod api;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod bus;
pub mod channels;
pub mod config;
pub mod email;
pub mod error;
pub mod extension;
pub mod gateway;
pub mod ids;
pub mod metrics;
pub mod module;
pub mod notify;
pub mod projects;
pub mod state;
pub mod store;
pub mod telemetry;
