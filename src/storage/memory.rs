//! The in-memory backend (`--backend memory`): fast, shared by many tasks, and
//! gone when the process exits.
//!
//! Layout, chosen for many concurrent clients:
//! - Records live in a lock-free ordered map (`crossbeam_skiplist::SkipMap`), so
//!   readers never take a lock and keys stay sorted for range scans.
//! - A write is a read-modify-write of one key (its `version` and
//!   `create_revision` derive from the previous record), so writers to the *same*
//!   key must not interleave. They are serialized by one of [`WRITE_SHARDS`]
//!   small mutexes chosen by the key's hash; writers to different keys almost
//!   never share a mutex, and readers never touch them.
//! - The store-wide revision is an atomic counter, taken while the key's shard
//!   lock is held, so a key's `mod_revision` only ever increases.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use super::{Record, Revision, Store, StoreError};

/// Number of writer mutexes. A power of two well above the core count keeps the
/// chance that two concurrent writers of different keys collide small.
const WRITE_SHARDS: usize = 64;

/// The in-memory [`Store`].
pub struct MemoryStore {
    records: SkipMap<Bytes, Record>,
    write_locks: Box<[Mutex<()>]>,
    hasher: std::hash::RandomState,
    /// The last revision handed out; the next write gets `revision + 1`.
    revision: AtomicU64,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        MemoryStore {
            records: SkipMap::new(),
            write_locks: (0..WRITE_SHARDS).map(|_| Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
            revision: AtomicU64::new(0),
        }
    }

    fn write_lock(&self, key: &[u8]) -> &Mutex<()> {
        let shard = self.hasher.hash_one(key) as usize % WRITE_SHARDS;
        &self.write_locks[shard]
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self.records.get(key).map(|entry| entry.value().clone()))
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<Revision, StoreError> {
        // A poisoned lock only means another writer panicked between lock and
        // unlock; the guarded data is `()`, so there is nothing to repair.
        let _guard = self
            .write_lock(&key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let revision = self.revision.fetch_add(1, Ordering::SeqCst) + 1;
        let previous = self.records.get(&key);
        let record = Record::after_put(
            previous.as_ref().map(|entry| entry.value()),
            value,
            revision,
        );
        self.records.insert(key, record);
        Ok(revision)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    crate::storage::conformance::conformance_suite!(super::MemoryStore::new());
}
