//! This node's report for the operator view: its totals and each tenant's
//! share (connections by transport, subscriptions, busiest channels), built
//! from the hub and handed to the bus every few seconds
//! ([`crate::bus::Broker::report_node`]), which shares it with every node.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::{
    bus::nodes::{MAX_CHANNELS, MAX_TENANTS, NodeReport, NodeSummary, report_ttl},
    ids::TenantId,
};

impl Gateway {
    /// This node as it is now: every tenant's share, or with `only` that
    /// tenant's alone.
    pub fn node_report(&self, only: Option<&TenantId>) -> NodeReport {
        let (connections, subscriptions, channels) = self.hub.totals();
        NodeReport {
            node: NodeSummary {
                id: self.broker.node_id().to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: self.started_at,
                last_seen: crate::ids::now_millis(),
                connections,
                subscriptions,
                channels,
            },
            tenants: self.hub.shares(only, MAX_TENANTS, MAX_CHANNELS),
        }
    }
}

/// Reports this node at once, then every `every`, until `stop` fires.
pub async fn run_reports(gateway: Arc<Gateway>, every: Duration, stop: CancellationToken) {
    let ttl = report_ttl(every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let report = gateway.node_report(None);
        if let Err(e) = gateway.broker.report_node(report, ttl).await {
            tracing::warn!(error = %e, "reporting this node failed");
        }
    }
}
