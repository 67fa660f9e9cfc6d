//! What REST handlers share. Handlers take only the part they need
//! (`FromRef`); a module's own services travel with its routes (as an
//! `Extension` layer or captured state), not here.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    api::idempotency::Idempotency, auth::AuthService, gateway::Gateway, metrics::Metrics,
    notify::Notify, store::Store,
};

/// The core services: the gateway, auth, the store, metrics, idempotency
/// keys, and the notification engine (which other domains call to notify).
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<AuthService>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub idempotency: Arc<Idempotency>,
    pub notify: Arc<Notify>,
}

impl FromRef<AppState> for Arc<Notify> {
    fn from_ref(state: &AppState) -> Self {
        state.notify.clone()
    }
}

impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.clone()
    }
}

impl FromRef<AppState> for Arc<AuthService> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
