//! The seam between the outbox and the domains that queue emails.
//!
//! An email is rendered and committed long before it is due (a fallback
//! waits for its delay, a retry for its backoff), and by then its reason to
//! exist may be gone, or its recipient may not want it yet. Only the domain
//! that queued it can tell, so the worker asks: each domain registers a
//! [`SendGuard`] for the `kind`s of email it queues, and the worker consults
//! it for every due email of those kinds before sending. An email of a kind
//! nobody registered is sent as it is.
//!
//! This keeps the outbox generic: it owns claiming, sending, retries and
//! dead letters, and knows no domain's rules.

use std::{collections::HashMap, sync::Arc};

use futures_util::future::BoxFuture;

/// A claimed email, as a guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Due<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub user: &'a str,
    pub kind: &'a str,
    /// The id of what caused the email, if its domain recorded one.
    pub cause_id: Option<i64>,
    pub critical: bool,
    /// The outbox clock's time when the email was picked up.
    pub now: i64,
}

/// What to do with a due email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Never send it; the reason goes to its attempt log.
    Cancel(String),
    /// Not yet: put it back in the queue for `until`, without counting an
    /// attempt; the reason goes to its attempt log.
    Defer {
        until: i64,
        reason: String,
    },
}

/// A domain's say over the emails it queued.
pub trait SendGuard: Send + Sync {
    fn check<'a>(&'a self, email: Due<'a>) -> BoxFuture<'a, anyhow::Result<Verdict>>;
}

/// The guards of every kind, handed to the worker when it is built.
#[derive(Clone, Default)]
pub struct Guards {
    by_kind: HashMap<String, Arc<dyn SendGuard>>,
}

impl Guards {
    /// Puts `guard` in charge of the emails of `kind` (replacing any other).
    pub fn register(&mut self, kind: &str, guard: Arc<dyn SendGuard>) -> &mut Self {
        self.by_kind.insert(kind.to_owned(), guard);
        self
    }

    /// What the guard of the email's kind says; `Send` when it has none.
    pub async fn check(&self, email: Due<'_>) -> anyhow::Result<Verdict> {
        match self.by_kind.get(email.kind) {
            Some(guard) => guard.check(email).await,
            None => Ok(Verdict::Send),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct CancelAll;

    impl SendGuard for CancelAll {
        fn check<'a>(&'a self, email: Due<'a>) -> BoxFuture<'a, anyhow::Result<Verdict>> {
            Box::pin(async move { Ok(Verdict::Cancel(format!("no {}", email.kind))) })
        }
    }

    fn due(kind: &str) -> Due<'_> {
        Due {
            id: "e1",
            tenant: "t",
            user: "u",
            kind,
            cause_id: None,
            critical: false,
            now: 0,
        }
    }

    #[tokio::test]
    async fn a_kind_without_a_guard_is_sent() {
        let mut guards = Guards::default();
        guards.register("reminder", Arc::new(CancelAll));
        assert_eq!(
            guards.check(due("reminder")).await.unwrap(),
            Verdict::Cancel("no reminder".into())
        );
        assert_eq!(guards.check(due("receipt")).await.unwrap(), Verdict::Send);
    }
}
