//! Operations endpoints: liveness, readiness, metrics, the OpenAPI
//! document, and the operator's view of the cluster for tenant
//! administrators: its nodes, their connections and the channels in use.
//!
//! The cluster view reads each node's last report from the bus (see
//! [`crate::bus::nodes`]) and this node's state live. A tenant's
//! administrator sees every node's id, version, uptime and totals, but of
//! connections, subscriptions and channels only its own tenant's.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    app::AppState,
    auth::extract::TenantAdmin,
    bus::{BusError, nodes::NodeReport},
    error::{ApiError, ApiResult, query},
    gateway::Gateway,
    ids::TenantId,
};

/// The OpenAPI 3.1 description of the REST API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/admin/nodes", get(nodes))
        .route("/api/v1/admin/connections", get(connections))
        .route("/api/v1/admin/channels", get(channels))
}

/// The process is up and serving HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready for traffic: store reachable, bus healthy, not shutting down.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.ping().await;
    let bus = state.gateway.broker.healthy();
    let draining = state.gateway.shutdown.is_cancelled();
    let ready = store && bus && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "store": store, "bus": bus, "draining": draining })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Channels listed by default, and at most.
const DEFAULT_CHANNELS: usize = 100;
const MAX_LISTED_CHANNELS: usize = 500;
/// Longest channel-name prefix accepted as a filter.
const MAX_PREFIX: usize = 200;

fn bus_unavailable(e: BusError) -> ApiError {
    ApiError::Unavailable("bus_unavailable", e.to_string())
}

/// Every live node, each with only `tenant`'s share; this node's from its
/// live state (its stored report may be a few seconds old), oldest first.
async fn tenant_nodes(gw: &Gateway, tenant: &TenantId) -> ApiResult<Vec<NodeReport>> {
    let mut reports = gw.broker.nodes(tenant).await.map_err(bus_unavailable)?;
    let here = gw.node_report(Some(tenant));
    reports.retain(|r| r.node.id != here.node.id);
    reports.push(here);
    reports.sort_by(|a, b| (a.node.started_at, &a.node.id).cmp(&(b.node.started_at, &b.node.id)));
    Ok(reports)
}

#[derive(Serialize)]
struct NodeView {
    id: String,
    version: String,
    started_at: i64,
    last_seen: i64,
    /// The node that answered this request.
    local: bool,
    connections: u64,
    subscriptions: u64,
    channels: u64,
    tenant: TenantShareView,
}

#[derive(Serialize)]
struct TenantShareView {
    connections: u64,
    subscriptions: u64,
    channels: u64,
}

async fn nodes(
    State(gw): State<Arc<Gateway>>,
    TenantAdmin(admin): TenantAdmin,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = admin.tenant();
    let here = gw.broker.node_id().to_owned();
    let nodes: Vec<NodeView> = tenant_nodes(&gw, tenant)
        .await?
        .into_iter()
        .map(|mut r| {
            let share = r.tenants.remove(tenant).unwrap_or_default();
            NodeView {
                local: r.node.id == here,
                id: r.node.id,
                version: r.node.version,
                started_at: r.node.started_at,
                last_seen: r.node.last_seen,
                connections: r.node.connections,
                subscriptions: r.node.subscriptions,
                channels: r.node.channels,
                tenant: TenantShareView {
                    connections: share.connections,
                    subscriptions: share.subscriptions,
                    channels: share.channels,
                },
            }
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

#[derive(Serialize, Default)]
struct ConnectionCounts {
    connections: u64,
    ws: u64,
    sse: u64,
    subscriptions: u64,
}

#[derive(Serialize)]
struct NodeConnections {
    id: String,
    #[serde(flatten)]
    counts: ConnectionCounts,
}

async fn connections(
    State(gw): State<Arc<Gateway>>,
    TenantAdmin(admin): TenantAdmin,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = admin.tenant();
    let mut total = ConnectionCounts::default();
    let nodes: Vec<NodeConnections> = tenant_nodes(&gw, tenant)
        .await?
        .into_iter()
        .map(|mut r| {
            let share = r.tenants.remove(tenant).unwrap_or_default();
            total.connections += share.connections;
            total.ws += share.ws;
            total.sse += share.sse;
            total.subscriptions += share.subscriptions;
            NodeConnections {
                id: r.node.id,
                counts: ConnectionCounts {
                    connections: share.connections,
                    ws: share.ws,
                    sse: share.sse,
                    subscriptions: share.subscriptions,
                },
            }
        })
        .collect();
    Ok(Json(json!({ "total": total, "nodes": nodes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsQuery {
    prefix: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct ChannelView {
    name: String,
    subscribers: u64,
    /// The nodes with subscribers of the channel.
    nodes: Vec<String>,
}

/// The tenant's channels with subscribers, merged across nodes: this
/// node's live, every other node's busiest (as it last reported them).
async fn channels(
    State(gw): State<Arc<Gateway>>,
    TenantAdmin(admin): TenantAdmin,
    q: Result<Query<ChannelsQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let q = query(q)?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > MAX_PREFIX {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("prefix is longer than {MAX_PREFIX} bytes"),
        ));
    }
    let limit = match q.limit {
        None => DEFAULT_CHANNELS,
        Some(n) if (1..=MAX_LISTED_CHANNELS as u32).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LISTED_CHANNELS}"),
            ));
        }
    };
    let tenant = admin.tenant();
    let here = gw.broker.node_id().to_owned();
    let mut merged: HashMap<String, ChannelView> = HashMap::new();
    let mut add = |node: &str, name: String, subscribers: u64| {
        let view = merged.entry(name.clone()).or_insert_with(|| ChannelView {
            name,
            subscribers: 0,
            nodes: Vec::new(),
        });
        view.subscribers += subscribers;
        view.nodes.push(node.to_owned());
    };
    for channel in gw.hub.tenant_channels(tenant, &prefix, MAX_LISTED_CHANNELS) {
        add(&here, channel.name, channel.subscribers);
    }
    for mut report in gw.broker.nodes(tenant).await.map_err(bus_unavailable)? {
        if report.node.id == here {
            continue;
        }
        let Some(share) = report.tenants.remove(tenant) else {
            continue;
        };
        for channel in share.busiest {
            if channel.name.starts_with(&prefix) {
                add(&report.node.id, channel.name, channel.subscribers);
            }
        }
    }
    let mut list: Vec<ChannelView> = merged.into_values().collect();
    for view in &mut list {
        view.nodes.sort();
    }
    list.sort_by(|a, b| {
        b.subscribers
            .cmp(&a.subscribers)
            .then_with(|| a.name.cmp(&b.name))
    });
    let truncated = list.len() > limit;
    list.truncate(limit);
    Ok(Json(json!({ "channels": list, "truncated": truncated })))
}
