//! Saving streaming answers' progress in batches.
//!
//! A streaming answer's row holds its text so far, so that a device joining
//! mid-answer gets it in the snapshot. Saving each answer on its own every
//! quarter second was one write and one commit per answer: 2,000 a second
//! for 500 streams, a quarter of a core on SQLite and, through the CPU it
//! took, most of the latency the hub added to tokens (p99 2.6 ms with it,
//! 0.5-0.8 ms without; `load-tests/`, assistant scenario). Runs now hand
//! their progress here every half second, and one task writes every answer
//! that moved in one transaction per [`BATCH_EVERY`] (p99 0.8-0.9 ms).
//!
//! Each answer keeps one entry, its latest progress, so what waits is
//! bounded by the answers streaming. A late or lost save is harmless: the
//! write only moves a streaming row forward (`store::save_progress`), and
//! the final answer is stored by the run itself.

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::store;
use crate::store::Store;

/// How often the waiting progress is written. With a run handing over its
/// text every half second, a frame is in the store within about 600 ms
/// plus the write: about 60 frames at the default 10 ms frame interval,
/// within the 128 a conversation's channel keeps for the snapshot to
/// complete the saved text with.
pub const BATCH_EVERY: Duration = Duration::from_millis(100);

/// The latest progress of each answer, waiting to be written.
#[derive(Default)]
pub struct ProgressSaver {
    waiting: Mutex<HashMap<String, Progress>>,
}

struct Progress {
    content: String,
    seq: i64,
}

impl ProgressSaver {
    /// Hands over answer `id`'s text so far; replaces what it handed over
    /// before, if that is not written yet.
    pub fn offer(&self, id: &str, content: String, seq: i64) {
        let mut waiting = self.waiting.lock();
        match waiting.get_mut(id) {
            Some(progress) if progress.seq >= seq => {}
            Some(progress) => *progress = Progress { content, seq },
            None => {
                waiting.insert(id.to_owned(), Progress { content, seq });
            }
        }
    }

    /// Writes everything waiting, in one transaction. A failed write is
    /// logged and dropped: the next offer of each answer carries its whole
    /// text again.
    pub async fn flush(&self, store: &Store) {
        let batch = std::mem::take(&mut *self.waiting.lock());
        if batch.is_empty() {
            return;
        }
        let written = async {
            let mut tx = store.pool.begin().await?;
            for (id, progress) in &batch {
                store::save_progress(&mut *tx, id, &progress.content, progress.seq).await?;
            }
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::warn!(error = %e, answers = batch.len(), "assistant progress not stored");
        }
    }

    /// Writes what is waiting every [`BATCH_EVERY`] until `stop`, then once
    /// more.
    pub async fn run(&self, store: Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(BATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.flush(&store).await,
            }
        }
        self.flush(&store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_waits_with_its_latest_progress_only() {
        let saver = ProgressSaver::default();
        saver.offer("a", "Bon".into(), 1);
        saver.offer("a", "Bonjour".into(), 3);
        // An older offer arriving late does not move it back.
        saver.offer("a", "Bonj".into(), 2);
        saver.offer("b", "Hi".into(), 1);
        let waiting = saver.waiting.lock();
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            (waiting["a"].content.as_str(), waiting["a"].seq),
            ("Bonjour", 3)
        );
    }
}
