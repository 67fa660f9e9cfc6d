//! The seam every domain module plugs into.
//!
//! A domain (notifications, projects, and later queues, planning, chat,
//! the assistant) is a folder that exposes one [`Module`]. The application
//! builds the core (store, bus, auth, gateway), then walks its list of
//! module factories: each gets the core through a [`Context`], declares its
//! channel namespaces, RPC handlers and control handlers in
//! [`Module::extend`], and hands over its routes and background workers.
//! Nothing else in the application changes when a module is added: see the
//! checklist in `docs/architecture.md`.

use std::sync::Arc;

use axum::Router;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::AuthService,
    bus::ControlRouter,
    config::Config,
    extension::RpcHandler,
    gateway::{Extensions, Gateway},
    metrics::Metrics,
    state::AppState,
    store::Store,
};

/// The core a module is built from.
pub struct Context<'a> {
    pub config: &'a Config,
    pub store: Store,
    /// To publish the module's own events on its channels.
    pub gateway: Arc<Gateway>,
    pub auth: Arc<AuthService>,
    pub metrics: Arc<Metrics>,
    /// To register handlers of the module's control messages.
    pub control: Arc<ControlRouter>,
    /// The core services handlers share (notifications included), for
    /// modules that call them directly (e.g. to notify a user).
    pub state: &'a AppState,
}

/// A background task of a module; it must return soon after `stop` fires.
pub type Worker = BoxFuture<'static, ()>;

/// Builds a module from the core. Factories, not instances, are listed, so
/// that every module is built the same way, after the core exists.
pub type ModuleFactory = Arc<dyn Fn(&Context<'_>) -> anyhow::Result<Arc<dyn Module>> + Send + Sync>;

/// What a domain module contributes to the application.
pub trait Module: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Declares the module's channel namespaces (with their publish hooks
    /// and snapshot sources) and RPC handlers.
    fn extend(&self, _extensions: &mut Extensions) {}

    /// The module's REST routes.
    fn router(&self) -> Router<AppState> {
        Router::new()
    }

    /// The module's background workers, started with the server and
    /// stopped with it.
    fn workers(&self, _stop: &CancellationToken) -> Vec<Worker> {
        Vec::new()
    }
}

impl Extensions {
    /// Registers an RPC handler for `prefix.*` methods.
    pub fn rpc(&mut self, prefix: &'static str, handler: Arc<dyn RpcHandler>) {
        self.rpc.register(prefix, handler);
    }

    /// Registers the observer of a namespace's presence (first connection
    /// of a user in, last one out). One per namespace.
    pub fn observe_presence(
        &mut self,
        namespace: &'static str,
        observer: Arc<dyn crate::extension::PresenceObserver>,
    ) {
        let previous = self.presence.insert(namespace, observer);
        assert!(previous.is_none(), "presence observer registered twice");
    }
}
