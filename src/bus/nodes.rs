//! Node reports: what each node says of itself, so an operator can see the
//! nodes of a cluster, their connections and their busiest channels.
//!
//! A node builds its [`NodeReport`] (the gateway does, from its hub) and
//! hands it to [`super::Broker::report_node`] every few seconds. The
//! in-process broker keeps the last one; the Redis broker stores it with an
//! expiry, so a node that stops reporting disappears. Reports are bounded:
//! at most [`MAX_TENANTS`] tenants per node and [`MAX_CHANNELS`] channels
//! per tenant.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// Tenants a node reports at most (the busiest by connections).
pub const MAX_TENANTS: usize = 500;
/// Channels a node reports at most per tenant (the busiest by subscribers).
pub const MAX_CHANNELS: usize = 20;
/// Nodes listed at most.
pub const MAX_NODES: usize = 256;
/// Shortest time a report outlives its node's last report.
pub const MIN_REPORT_TTL: Duration = Duration::from_secs(15);

/// How long a report stays visible after it was made: three report
/// intervals, and never less than [`MIN_REPORT_TTL`].
pub fn report_ttl(every: Duration) -> Duration {
    (every * 3).max(MIN_REPORT_TTL)
}

/// One node as it last described itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    #[serde(flatten)]
    pub node: NodeSummary,
    /// Per tenant, what this node serves of it (bounded, see the module doc).
    #[serde(default)]
    pub tenants: HashMap<TenantId, TenantSummary>,
}

/// The tenant-free part of a report: every tenant's administrator may see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: String,
    pub version: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds: when this report was made.
    pub last_seen: i64,
    pub connections: u64,
    pub subscriptions: u64,
    /// Channels with at least one subscriber on this node.
    pub channels: u64,
}

/// One tenant's share of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantSummary {
    pub connections: u64,
    /// Connections by transport.
    pub ws: u64,
    pub sse: u64,
    pub subscriptions: u64,
    /// Channels of the tenant with a subscriber on this node.
    pub channels: u64,
    /// The busiest of them, most subscribers first.
    pub busiest: Vec<ChannelCount>,
}

/// A channel and its subscribers on one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelCount {
    pub name: String,
    pub subscribers: u64,
}

impl NodeReport {
    /// The report as `tenant`'s administrator may see it: only that tenant's
    /// share is kept.
    pub fn share(&self, tenant: &TenantId) -> NodeReport {
        NodeReport {
            node: self.node.clone(),
            tenants: self
                .tenants
                .get(tenant)
                .map(|share| (tenant.clone(), share.clone()))
                .into_iter()
                .collect(),
        }
    }
}
