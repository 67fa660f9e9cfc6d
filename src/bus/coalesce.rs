//! Reads of one channel's stream made at the same time share one trip to
//! the store.
//!
//! After a node restarts, every client it held reconnects within seconds
//! and asks to recover the same channel from nearly the same offset. Read
//! one by one, that is thousands of identical history reads whose replies
//! (each up to the whole history window) pile up faster than the node can
//! take them, and everything else on the connection times out behind them.
//! Here the callers of one key form batches: one read serves a whole batch,
//! from the smallest offset any member wants to the largest end any member
//! needs, and each member keeps its own slice.
//!
//! A member may only share a read that *starts after it asked*: the gateway
//! joins a subscriber to the live stream before reading its channel's
//! position, so a publication made after the read is delivered live, and
//! one made before it is in the read. A read already under way may predate
//! a newcomer's join, so newcomers wait for it to end and form the next
//! batch. At most one read per key is in flight.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use parking_lot::Mutex;

/// What a batch's members want: offsets from `from` (inclusive) to `to`
/// (exclusive); `from == None` when no member needs publications, only the
/// position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub from: Option<u64>,
    pub to: u64,
}

impl Wanted {
    fn merge(&mut self, other: Wanted) {
        self.from = match (self.from, other.from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.to = self.to.max(other.to);
    }
}

struct Batch<T> {
    wanted: Mutex<Wanted>,
    result: Mutex<Option<T>>,
}

struct Slot<T> {
    /// The batch newcomers join: its read has not started.
    open: Arc<Batch<T>>,
    /// Held while a batch's read runs, and by each member in turn while it
    /// takes the result; FIFO, so batches run in the order they formed.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// Batches of reads per key.
pub struct Coalescer<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Default for Coalescer<K, T> {
    fn default() -> Self {
        Coalescer {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// Joins the next read of `key` with what this caller wants, and
    /// answers that read's result. `read` runs only if this caller is the
    /// first of its batch to get its turn, with everything the batch wants.
    pub async fn read<F, Fut>(&self, key: &K, wanted: Wanted, read: F) -> T
    where
        F: FnOnce(Wanted) -> Fut,
        Fut: Future<Output = T>,
    {
        let (batch, gate) = {
            let mut slots = self.slots.lock();
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                open: Arc::new(Batch {
                    wanted: Mutex::new(Wanted { from: None, to: 0 }),
                    result: Mutex::new(None),
                }),
                gate: Arc::new(tokio::sync::Mutex::new(())),
            });
            slot.open.wanted.lock().merge(wanted);
            (slot.open.clone(), slot.gate.clone())
        };
        let _turn = gate.lock().await;
        if let Some(result) = batch.result.lock().clone() {
            return result;
        }
        // First of the batch to get the turn (or the next one, if the first
        // gave up waiting): close the batch to newcomers, then read.
        let wanted = {
            let mut slots = self.slots.lock();
            if let Some(slot) = slots.get_mut(key)
                && Arc::ptr_eq(&slot.open, &batch)
            {
                slot.open = Arc::new(Batch {
                    wanted: Mutex::new(Wanted { from: None, to: 0 }),
                    result: Mutex::new(None),
                });
            }
            *batch.wanted.lock()
        };
        let result = read(wanted).await;
        *batch.result.lock() = Some(result.clone());
        // Forget the key once nobody waits for its next batch.
        let mut slots = self.slots.lock();
        if slots
            .get(key)
            .is_some_and(|slot| Arc::strong_count(&slot.open) == 1)
        {
            slots.remove(key);
        }
        result
    }

    /// Keys with a batch forming or reading (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::{sync::oneshot, task::JoinHandle};

    use super::*;

    type Reads = Arc<Coalescer<&'static str, Wanted>>;

    fn want(from: u64, to: u64) -> Wanted {
        Wanted {
            from: Some(from),
            to,
        }
    }

    /// Lets every spawned task run until it waits (the test runtime has one
    /// thread, so this orders the callers without timing).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// A caller whose read counts itself in `reads` and answers what its
    /// batch wanted.
    fn caller(coalescer: &Reads, reads: &Arc<AtomicUsize>, wanted: Wanted) -> JoinHandle<Wanted> {
        let (coalescer, reads) = (coalescer.clone(), reads.clone());
        tokio::spawn(async move {
            coalescer
                .read(&"ch", wanted, |w| async move {
                    reads.fetch_add(1, Ordering::SeqCst);
                    w
                })
                .await
        })
    }

    /// A first caller whose read is under way until `release` is sent.
    async fn read_under_way(coalescer: &Reads) -> (JoinHandle<Wanted>, oneshot::Sender<()>) {
        let (release, released) = oneshot::channel::<()>();
        let coalescer = coalescer.clone();
        let first = tokio::spawn(async move {
            coalescer
                .read(&"ch", want(10, 20), |w| async move {
                    let _ = released.await;
                    w
                })
                .await
        });
        settle().await;
        (first, release)
    }

    #[tokio::test]
    async fn callers_waiting_behind_a_read_share_the_next_one() {
        let coalescer = Reads::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let (first, release) = read_under_way(&coalescer).await;
        // Three arrive while it reads: they must not share it (it started
        // before they asked), but share one read after it.
        let later: Vec<_> = [(5, 8), (12, 30), (7, 9)]
            .into_iter()
            .map(|(from, to)| caller(&coalescer, &reads, want(from, to)))
            .collect();
        settle().await;
        assert_eq!(reads.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), want(10, 20));
        for handle in later {
            // One read for the three, covering what each wants.
            assert_eq!(handle.await.unwrap(), want(5, 30));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(coalescer.len(), 0, "an idle key is forgotten");
    }

    #[tokio::test]
    async fn different_keys_read_separately() {
        let coalescer = Coalescer::<&str, Wanted>::default();
        let a = coalescer.read(&"a", want(1, 2), |w| async move { w });
        let b = coalescer.read(&"b", want(3, 4), |w| async move { w });
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a, b), (want(1, 2), want(3, 4)));
    }

    #[tokio::test]
    async fn a_position_only_caller_adds_no_offsets() {
        let coalescer = Reads::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let (first, release) = read_under_way(&coalescer).await;
        let position_only = caller(&coalescer, &reads, Wanted { from: None, to: 0 });
        let recovering = caller(&coalescer, &reads, want(40, 50));
        settle().await;
        release.send(()).unwrap();
        first.await.unwrap();
        assert_eq!(position_only.await.unwrap(), want(40, 50));
        assert_eq!(recovering.await.unwrap(), want(40, 50));
    }

    #[tokio::test]
    async fn a_member_that_gives_up_does_not_strand_its_batch() {
        let coalescer = Reads::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let (first, release) = read_under_way(&coalescer).await;
        // The next batch's first member gives up before its turn...
        let quitter = caller(&coalescer, &reads, want(3, 4));
        let stayer = caller(&coalescer, &reads, want(5, 6));
        settle().await;
        quitter.abort();
        release.send(()).unwrap();
        first.await.unwrap();
        // ...and the member left still gets a read with what the batch wanted.
        assert_eq!(stayer.await.unwrap(), want(3, 6));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
