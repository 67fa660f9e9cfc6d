//! Verified API keys kept in memory, so the publish path does not ask the
//! store for every request. Entries expire after [`KEY_CACHE_TTL`]; a
//! revocation removes the key at once on every node (it travels over the bus
//! as a [`crate::bus::Revocation::ApiKey`]).

use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::KeyHolder;
use crate::ids::ApiKeyId;

/// How long a verified key is trusted from memory.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Bound of the cache; it is cleared when full.
const KEY_CACHE_MAX: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    /// Key hash → holder and when it was verified.
    entries: DashMap<String, (KeyHolder, Instant)>,
}

impl KeyCache {
    pub fn get(&self, hash: &str) -> Option<KeyHolder> {
        let entry = self.entries.get(hash)?;
        (entry.1.elapsed() < KEY_CACHE_TTL).then(|| entry.0.clone())
    }

    pub fn insert(&self, hash: String, holder: KeyHolder) {
        if self.entries.len() >= KEY_CACHE_MAX {
            self.entries.clear();
        }
        self.entries.insert(hash, (holder, Instant::now()));
    }

    /// Drops a revoked key.
    pub fn forget(&self, key: &ApiKeyId) {
        self.entries.retain(|_, (holder, _)| holder.key != *key);
    }
}
