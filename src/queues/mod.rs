//! Moderation queues: what awaits a decision (campaigns, spots, requests),
//! who decides, and the live pending counts that admin consoles watch.
//!
//! App backends put items in named queues (`campaigns`, `spots`…) with the
//! app's own reference, so a retried submission lands once. Moderators move
//! items through a small state machine ([`Status::can_become`]); every
//! change is a compare-and-set on the item's status, recorded in an audit
//! trail and in per-queue counters in the same transaction, so the counts
//! are exact however many moderators act at once. The submitter hears of
//! the decision through the notification module.
//!
//! Consoles subscribe to the tenant's `queues` channel: the counts come as
//! a snapshot on subscribe, then as coalesced updates ([`counts::CountsFeed`]):
//! at most one per queue per window, and a last one after activity stops.

pub mod counts;
pub mod routes;
pub mod store;

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Permission,
    channels::{Access, HistoryPolicy, KeyRule, Namespace},
    error::ApiError,
    module::{Context, Module, Worker},
};

/// The queues module: the `queues` namespace, its counts feed, the routes.
pub fn module(ctx: &Context<'_>) -> anyhow::Result<Arc<dyn Module>> {
    let feed = counts::CountsFeed::new(ctx.store.clone(), ctx.config.queue_counts_window);
    let service = Arc::new(Queues {
        store: ctx.store.clone(),
        notify: ctx.state.notify.clone(),
        feed: feed.clone(),
    });
    Ok(Arc::new(QueuesModule {
        service,
        feed,
        gateway: Arc::downgrade(&ctx.gateway),
    }))
}

/// What the routes share: the store, notifications for submitters, and the
/// counts feed told of every change.
pub struct Queues {
    pub store: crate::store::Store,
    pub notify: Arc<crate::notify::Notify>,
    pub feed: Arc<counts::CountsFeed>,
}

struct QueuesModule {
    service: Arc<Queues>,
    feed: Arc<counts::CountsFeed>,
    /// The feed's worker publishes through it; weak, as the gateway holds
    /// this module's namespace.
    gateway: std::sync::Weak<crate::gateway::Gateway>,
}

impl Module for QueuesModule {
    fn name(&self) -> &'static str {
        "queues"
    }
    fn extend(&self, extensions: &mut crate::gateway::Extensions) {
        extensions
            .channels
            .register(namespace(self.service.store.clone()));
    }
    fn router(&self) -> axum::Router<crate::state::AppState> {
        routes::router().layer(axum::Extension(self.service.clone()))
    }
    fn workers(&self, stop: &CancellationToken) -> Vec<Worker> {
        vec![Box::pin(
            self.feed.clone().run(self.gateway.clone(), stop.clone()),
        )]
    }
}

/// The channel consoles watch counts on.
pub const CHANNEL: &str = "queues";

/// `queues`: one per tenant, for moderators and admins. Counts are absolute,
/// so a short history suffices: a console that cannot recover gets a fresh
/// snapshot instead.
fn namespace(store: crate::store::Store) -> Namespace {
    let moderators = Access::Permission(Permission::ModerateQueues);
    Namespace {
        name: CHANNEL,
        key: KeyRule::Forbidden,
        subscribe: moderators.clone(),
        publish: Access::Nobody,
        presence: moderators,
        join_leave: false,
        history: HistoryPolicy {
            size: 64,
            ttl: Duration::from_secs(300),
        },
        hook: None,
        snapshot: Some(Arc::new(counts::Snapshot(store))),
    }
}

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InReview,
    Approved,
    Rejected,
    Withdrawn,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::InReview,
        Status::Approved,
        Status::Rejected,
        Status::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InReview => "in_review",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A decision or a withdrawal is final: a new submission is a new item.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Approved | Status::Rejected | Status::Withdrawn
        )
    }

    /// The transitions the state machine allows: an open item (pending or
    /// in review) may be taken for review, released, decided or withdrawn;
    /// a final one never changes.
    pub fn can_become(self, to: Status) -> bool {
        match self {
            Status::Pending => to != Status::Pending,
            Status::InReview => to != Status::InReview,
            _ => false,
        }
    }
}

/// A queue item as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: String,
    pub queue: String,
    pub external_ref: String,
    pub title: String,
    pub submitter: Option<String>,
    pub payload: Box<RawValue>,
    pub status: Status,
    pub assignee: Option<String>,
    pub reason: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One line of an item's audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub version: i64,
    pub from: Option<Status>,
    pub to: Status,
    /// `user:<id>` or `key:<id>`.
    pub actor: String,
    pub assignee: Option<String>,
    pub reason: Option<String>,
    pub at: i64,
}

/// A change asked of an item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub to: Status,
    /// Required when rejecting; kept with the decision and sent to the
    /// submitter.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who reviews it (`in_review`); the acting user when absent.
    #[serde(default)]
    pub assignee: Option<String>,
}

/// Longest reason kept.
pub const MAX_REASON: usize = 2000;
/// Longest title kept.
pub const MAX_TITLE: usize = 300;
/// Largest payload kept, in bytes of JSON.
pub const MAX_PAYLOAD: usize = 16 * 1024;

impl Transition {
    /// The rules that need no stored state: a rejection has a reason, and
    /// reasons and assignees are only where they mean something.
    pub fn check(&self) -> Result<(), QueueError> {
        let reason = self.reason.as_deref().map(str::trim).unwrap_or("");
        if self.to == Status::Rejected && reason.is_empty() {
            return Err(QueueError::ReasonRequired);
        }
        if reason.chars().count() > MAX_REASON {
            return Err(QueueError::Invalid(format!(
                "reason: at most {MAX_REASON} characters"
            )));
        }
        if self.assignee.is_some() && self.to != Status::InReview {
            return Err(QueueError::Invalid(
                "assignee: only when the item goes to in_review".into(),
            ));
        }
        Ok(())
    }
}

/// A queue name: the shape of a notification type key (`campaigns`, `spots`).
pub fn check_queue(name: &str) -> Result<(), QueueError> {
    crate::notify::types::validate_key(name).map_err(|e| QueueError::Invalid(format!("queue: {e}")))
}

/// Why a queues operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue item not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("a rejection needs a reason")]
    ReasonRequired,
    #[error("an item that is {from} cannot become {to}", from = .from.as_str(), to = .to.as_str())]
    InvalidTransition { from: Status, to: Status },
    #[error("an item with this external_ref exists with other content (id {0})")]
    Exists(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl QueueError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::NotFound => "not_found",
            QueueError::Invalid(_) => "invalid_item",
            QueueError::ReasonRequired => "reason_required",
            QueueError::InvalidTransition { .. } => "invalid_transition",
            QueueError::Exists(_) => "item_exists",
            QueueError::Forbidden(_) => "forbidden",
            QueueError::Store(_) => "internal",
        }
    }

    /// The error as a JSON object for per-item reports (bulk transitions).
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code(), "message": self.to_string()})
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let code = e.code();
        match e {
            QueueError::NotFound => ApiError::NotFound("queue item"),
            QueueError::Invalid(_) | QueueError::ReasonRequired => {
                ApiError::invalid(code, e.to_string())
            }
            QueueError::InvalidTransition { .. } | QueueError::Exists(_) => {
                ApiError::conflict(code, e.to_string())
            }
            QueueError::Forbidden(message) => ApiError::forbidden(message),
            QueueError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_items_move_freely_and_final_ones_never() {
        for from in Status::ALL {
            for to in Status::ALL {
                let open = matches!(from, Status::Pending | Status::InReview);
                assert_eq!(
                    from.can_become(to),
                    open && from != to,
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_rejection_needs_a_reason_and_only_a_review_takes_an_assignee() {
        let t = |to, reason: Option<&str>, assignee: Option<&str>| Transition {
            to,
            reason: reason.map(Into::into),
            assignee: assignee.map(Into::into),
        };
        assert!(matches!(
            t(Status::Rejected, None, None).check(),
            Err(QueueError::ReasonRequired)
        ));
        assert!(matches!(
            t(Status::Rejected, Some("  "), None).check(),
            Err(QueueError::ReasonRequired)
        ));
        assert!(t(Status::Rejected, Some("blurry"), None).check().is_ok());
        assert!(t(Status::Approved, None, None).check().is_ok());
        assert!(t(Status::InReview, None, Some("u1")).check().is_ok());
        assert!(matches!(
            t(Status::Approved, None, Some("u1")).check(),
            Err(QueueError::Invalid(_))
        ));
        let long = "x".repeat(MAX_REASON + 1);
        assert!(matches!(
            t(Status::Rejected, Some(&long), None).check(),
            Err(QueueError::Invalid(_))
        ));
    }

    #[test]
    fn each_queue_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                QueueError::NotFound,
                404,
                "not_found",
                "queue item not found",
            ),
            (
                QueueError::Invalid("title: 1-300 characters".into()),
                422,
                "invalid_item",
                "title: 1-300 characters",
            ),
            (
                QueueError::ReasonRequired,
                422,
                "reason_required",
                "a rejection needs a reason",
            ),
            (
                QueueError::InvalidTransition {
                    from: Status::Withdrawn,
                    to: Status::Approved,
                },
                409,
                "invalid_transition",
                "an item that is withdrawn cannot become approved",
            ),
            (
                QueueError::Exists("q1".into()),
                409,
                "item_exists",
                "an item with this external_ref exists with other content (id q1)",
            ),
            (
                QueueError::Forbidden("moderators only"),
                403,
                "forbidden",
                "moderators only",
            ),
            (
                QueueError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }
}
