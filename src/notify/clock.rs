//! The clock of the notification engine. It is the system clock plus an
//! offset that only tests move, so digests at a user's local hour, quiet
//! hours and fallback delays can be tested without waiting for them.
//! Leases (who is working on what) always use real time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use crate::ids::now_millis;

#[derive(Clone, Default, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Milliseconds since the Unix epoch, as this engine sees them.
    pub fn now_millis(&self) -> i64 {
        now_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward (tests).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    /// Sets the clock to an instant (tests); time keeps flowing from there.
    pub fn set_millis(&self, at: i64) {
        self.offset_ms.store(at - now_millis(), Ordering::Relaxed);
    }
}
