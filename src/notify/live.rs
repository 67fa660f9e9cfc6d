//! Live events on a user's personal channel (`user:<id>`), published after
//! the transaction that caused them commits. The inbox API stays the source
//! of truth: a client that misses events recovers them from the channel's
//! history, or refetches the inbox when recovery fails.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{counts::Counts, inbox::Item};
use crate::gateway::Gateway;

/// `{"type":"notification.created", ...}`: a new inbox item and the counters after it.
#[derive(Serialize)]
pub struct Created<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub notification: &'a Item,
    pub counts: &'a Counts,
}

/// `{"type":"notification.updated", ...}`: items changed state (on any tab or device).
#[derive(Serialize)]
pub struct Updated<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `read`, `unread`, `archive`, `unarchive` or `seen`.
    pub action: &'a str,
    /// The items that changed; absent when a whole inbox (or category) changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<&'a [i64]>,
    /// The category of a "mark all" action, when limited to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'a str>,
    pub counts: &'a Counts,
}

/// Publishes `event` on `user:<user>`. Failures are logged, not returned:
/// the change is committed and clients converge through recovery.
pub async fn publish(
    gateway: &Gateway,
    tenant: &crate::ids::TenantId,
    user: &str,
    event: &impl Serialize,
) {
    let Ok(json) = serde_json::to_string(event) else {
        return;
    };
    let Ok(raw) = RawValue::from_string(json) else {
        return;
    };
    let result = match gateway.resolve(tenant, &format!("user:{user}")) {
        Ok((key, ns)) => gateway.publish(&key, ns, &raw).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, user, "live notification event not published");
    }
}
