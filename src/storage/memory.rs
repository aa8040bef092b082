//! The in-memory backend (`--backend memory`): fast, and gone when the process
//! exits.
//!
//! All data sits in one ordered set of [`Entry`]s (a key and its record in
//! one allocation) behind a reader-writer lock. Readers share
//! the lock; a write (a whole transaction) holds it exclusively for the
//! microseconds its map operations take, which is what makes transactions
//! atomic to readers without version chains. Measured against the lock-free
//! skip list with per-key writer locks this replaced, at 64 clients on 2
//! cores: no difference in Set or Get throughput (the gRPC work around each
//! request costs about a hundred times the map operation; see
//! `docs/STORAGE.md`).
//!
//! Events are published while the write lock is held, so they leave in
//! revision order.
//!
//! Versions (see `storage::apply`): the set holds each key's latest slot (a
//! record or a tombstone); `history` maps `(revision, key)` to what the write
//! at that revision replaced. A replaced entry moves there whole (its
//! allocation is shared, not copied) and stays until compacted. A key's
//! first write replaces nothing: `created` holds the keys each revision
//! created, packed (`storage::created`), a few bytes each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;

use super::apply::{self, Changes, Kept, Keyspace, KeyspaceRead, ReadOnly, Slot, Values};
use super::created;
use super::lease::{LeaseInfo, Leases, random_lease_id};
use super::ops::Event;
use super::ops::KeyValue;
use super::ops::{
    EventKind, KeyRange, LeaseId, Op, RangeEnd, RangeQuery, RangeResult, Txn, TxnResult,
};
use super::watch::{EventStream, History, WatchHub, WatchId, WatchLimits, Watches};
use super::{
    FIRST_REVISION, Record, Revision, Snapshot, SnapshotChunker, Store, StoreError, StoreStats,
};

/// History entries dropped per hold of the write lock while compacting.
const COMPACT_CHUNK: usize = 1000;

/// History entries an automatic compaction drops after each write, at
/// least (see [`MemoryStore::retain`]).
const TRIM_PER_WRITE: usize = 64;

/// The in-memory [`Store`].
pub struct MemoryStore {
    shared: Arc<Shared>,
    hub: WatchHub,
    /// Revisions of history kept (see [`WatchLimits::history`]).
    keep: u64,
}

/// What the store and its watches' history reads share.
struct Shared {
    state: RwLock<State>,
    leases: Leases,
}

/// A key and its slot in one allocation, so that a million small keys do
/// not cost three allocations and a few handles each: `[key length][key]
/// [0][create_revision][mod_revision][version][lease][value]` for a record,
/// `[key length][key][1 or 2 (expired)][revision]` for a tombstone, the
/// numbers as LEB128 varints (a small revision takes a byte or three, not
/// eight).
/// Ordered, compared and looked up by the key alone. Shared (`Arc`), so a
/// snapshot copies pointers, not data.
#[derive(Clone)]
struct Entry(Arc<[u8]>);

/// The numbers an entry starts with or carries after its key, LEB128
/// encoded on the stack (a key length alone, or a tag and four numbers: at
/// most 41 bytes).
struct Header {
    bytes: [u8; 48],
    len: usize,
}

impl Header {
    fn new() -> Header {
        Header {
            bytes: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.push(n as u8);
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Entries up to this size are assembled on the stack and copied once
/// into their shared allocation; larger ones go through a `Vec` (two
/// allocations and a second copy, small beside the value's size).
const ASSEMBLED_ON_STACK: usize = 256;

/// The varint at `*at`, moving `*at` past it. Entries are only ever written
/// by [`Entry::new`], so they are well formed.
fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return n;
        }
        shift += 7;
    }
}

const LIVE: u8 = 0;
const DELETED: u8 = 1;
const EXPIRED: u8 = 2;

impl Entry {
    fn new(key: &[u8], slot: &Slot) -> Entry {
        let mut length = Header::new();
        length.varint(key.len() as u64);
        let mut numbers = Header::new();
        let value: &[u8] = match slot {
            Slot::Live(record) => {
                numbers.push(LIVE);
                numbers.varint(record.create_revision);
                numbers.varint(record.mod_revision);
                numbers.varint(record.version);
                // Lease ids are positive; the cast keeps any i64 anyway.
                numbers.varint(record.lease as u64);
                &record.value
            }
            Slot::Gone { revision, expired } => {
                numbers.push(if *expired { EXPIRED } else { DELETED });
                numbers.varint(*revision);
                &[]
            }
        };
        let parts = [length.as_slice(), key, numbers.as_slice(), value];
        let size: usize = parts.iter().map(|part| part.len()).sum();
        if size <= ASSEMBLED_ON_STACK {
            // One allocation, the `Arc`'s: a Set's entry is one of the few
            // allocations the memory store makes per write.
            let mut bytes = [0u8; ASSEMBLED_ON_STACK];
            let mut at = 0;
            for part in parts {
                bytes[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            return Entry(Arc::from(&bytes[..size]));
        }
        let mut bytes = Vec::with_capacity(size);
        for part in parts {
            bytes.extend_from_slice(part);
        }
        Entry(bytes.into())
    }

    /// Where the key starts, and its length.
    fn key_span(&self) -> (usize, usize) {
        let mut at = 0;
        let len = get_varint(&self.0, &mut at) as usize;
        (at, len)
    }

    fn key(&self) -> &[u8] {
        let (at, len) = self.key_span();
        &self.0[at..at + len]
    }

    fn slot(&self, values: Values) -> Slot {
        let (start, len) = self.key_span();
        let mut at = start + len + 1;
        match self.0[start + len] {
            LIVE => {
                let create_revision = get_varint(&self.0, &mut at);
                let mod_revision = get_varint(&self.0, &mut at);
                let version = get_varint(&self.0, &mut at);
                let lease = get_varint(&self.0, &mut at) as i64;
                let value = match values {
                    Values::Decoded => Bytes::copy_from_slice(&self.0[at..]),
                    Values::Skipped => Bytes::new(),
                };
                Slot::Live(Record {
                    create_revision,
                    mod_revision,
                    version,
                    lease,
                    value,
                })
            }
            tag => Slot::Gone {
                revision: get_varint(&self.0, &mut at),
                expired: tag == EXPIRED,
            },
        }
    }
}

impl std::borrow::Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

struct State {
    /// Every key's latest slot.
    records: BTreeSet<Entry>,
    /// What the write of a key at a revision replaced, with the write's
    /// place in its transaction.
    history: BTreeMap<(Revision, Bytes), (u32, Entry)>,
    /// The keys each revision created, packed.
    created: BTreeMap<Revision, Bytes>,
    /// The compacted revision.
    compacted: Revision,
    /// Granted leases and their TTLs.
    granted: HashMap<LeaseId, Duration>,
    /// The keys attached to each lease.
    lease_keys: HashMap<LeaseId, BTreeSet<Bytes>>,
    /// The last revision written.
    revision: Revision,
}

impl State {
    /// Whether history below the compacted revision is still to drop (a
    /// compaction under way): its oldest write or created keys are below it.
    fn trimming(&self) -> bool {
        let below = |revision: Revision| revision < self.compacted;
        self.history
            .first_key_value()
            .is_some_and(|((revision, _), _)| below(*revision))
            || self
                .created
                .first_key_value()
                .is_some_and(|(revision, _)| below(*revision))
    }
}

impl Shared {
    // A panic while the lock is held can only come from a bug in the map
    // code; the state is still a valid map, so keep serving.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn view<'a>(&'a self, state: &'a State) -> View<'a, &'a State> {
        View {
            state,
            leases: &self.leases,
        }
    }
}

impl History for Shared {
    fn events(
        &self,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        let state = self.read();
        apply::events(&self.view(&state), range, from, to, max)
    }
}

impl MemoryStore {
    /// An empty store at revision 1, with default watch limits.
    pub fn new() -> Self {
        Self::with_watch_limits(WatchLimits::default())
    }

    /// An empty store at revision 1.
    pub fn with_watch_limits(limits: WatchLimits) -> Self {
        let state = State {
            records: BTreeSet::new(),
            history: BTreeMap::new(),
            created: BTreeMap::new(),
            compacted: 0,
            granted: HashMap::new(),
            lease_keys: HashMap::new(),
            revision: FIRST_REVISION,
        };
        MemoryStore {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                leases: Leases::default(),
            }),
            hub: WatchHub::new(FIRST_REVISION, 0, limits),
            keep: limits.history as u64,
        }
    }

    /// After a write that added `written` history entries: compacts
    /// `state` once its history has grown past what is kept, a little at a
    /// time (the caller holds the write lock).
    ///
    /// The compacted revision moves at once (reads and watches below it
    /// fail from then on, as after `Compact`); the entries below it go
    /// over the following writes, each dropping at least four times what
    /// it added, so that the history stays bounded (twice `keep` at most)
    /// and no write holds the lock for the whole compaction. Dropped at
    /// once, the 100,000 entries of the default `--watch-history` held the
    /// lock for about 0.1 s, a stall of every reader and writer.
    fn retain(&self, state: &mut State, written: usize) -> Result<(), StoreError> {
        let target = apply::retention_target(state.revision, state.compacted, self.keep);
        if target.is_none() && !state.trimming() {
            return Ok(());
        }
        let current = state.revision;
        let mut view = View {
            state: &mut *state,
            leases: &self.shared.leases,
        };
        if let Some(target) = target {
            apply::compact(&mut view, target, current)?;
            self.hub.compacted_to(target);
        }
        let budget = TRIM_PER_WRITE.max(written.saturating_mul(4));
        apply::compact_chunk(&mut view, budget)?;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.write()
    }

    fn view<'a>(&'a self, state: &'a State) -> View<'a, &'a State> {
        self.shared.view(state)
    }

    fn leases(&self) -> &Leases {
        &self.shared.leases
    }

    fn revoke(&self, id: LeaseId, kind: EventKind) -> Result<(u64, Revision), StoreError> {
        let mut state = self.write();
        let current = state.revision;
        let mut view = View {
            state: &mut *state,
            leases: &self.shared.leases,
        };
        let (deleted, revision, events) = apply::revoke(&mut view, id, kind, current)?;
        state.revision = revision;
        self.leases().remove(id);
        self.hub.publish(revision, events);
        self.retain(&mut state, deleted as usize)?;
        Ok((deleted, revision))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The state seen through a lock guard, with the lease deadlines.
struct View<'a, S> {
    state: S,
    leases: &'a Leases,
}

impl<S: std::ops::Deref<Target = State>> KeyspaceRead for View<'_, S> {
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError> {
        Ok(self.state.records.get(key).map(|entry| entry.slot(values)))
    }

    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError> {
        Ok(self
            .state
            .history
            .get(&(end, Bytes::copy_from_slice(key)))
            .map(|(_, entry)| entry.slot(Values::Decoded)))
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let end: Bound<&[u8]> = match &range.end {
            RangeEnd::Single => Bound::Included(&range.start),
            RangeEnd::Before(end) => Bound::Excluded(end),
            RangeEnd::Unbounded => Bound::Unbounded,
        };
        if let Bound::Excluded(end) = end
            && end <= range.start.as_ref()
        {
            return Ok(());
        }
        let start: Bound<&[u8]> = Bound::Included(&range.start);
        for entry in self.state.records.range::<[u8], _>((start, end)) {
            if visit(entry.key(), entry.slot(values)).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError> {
        let replacing = self
            .state
            .history
            .range((from, Bytes::new())..)
            .map(|((revision, key), (seq, _))| Ok((*revision, key.clone(), *seq)));
        let creating = self
            .state
            .created
            .range(from..)
            .flat_map(|(revision, packed)| created::unpack(*revision, packed.clone()));
        created::merge(replacing, creating, visit)
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        Ok(self.state.compacted)
    }

    fn leases(&self) -> &Leases {
        self.leases
    }

    fn lease_keys_in(
        &self,
        id: LeaseId,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let (Some(keys), Some(bounds)) = (self.state.lease_keys.get(&id), range.bounds()) else {
            return Ok(());
        };
        for key in keys.range::<[u8], _>(bounds) {
            if visit(key).is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl Keyspace for View<'_, &mut State> {
    fn put(
        &mut self,
        key: &Bytes,
        slot: &Slot,
        previous: Option<&Slot>,
        kept: Option<Kept>,
    ) -> Result<(), StoreError> {
        let old_lease = previous.and_then(Slot::live).map_or(0, |p| p.lease);
        let new_lease = slot.live().map_or(0, |r| r.lease);
        if old_lease != 0
            && old_lease != new_lease
            && let Some(keys) = self.state.lease_keys.get_mut(&old_lease)
        {
            keys.remove(key);
        }
        if new_lease != 0 && old_lease != new_lease {
            self.state
                .lease_keys
                .entry(new_lease)
                .or_default()
                .insert(key.clone());
        }
        let replaced = self.state.records.replace(Entry::new(key, slot));
        if let Some(Kept { end, seq }) = kept {
            // The entry itself moves (shared, not copied).
            let entry = replaced.ok_or_else(|| {
                StoreError::Internal("history kept for a key with no slot".into())
            })?;
            self.state
                .history
                .insert((end, Bytes::copy_from_slice(key)), (seq, entry));
        }
        Ok(())
    }

    fn keep_created(&mut self, end: Revision, packed: Vec<u8>) -> Result<(), StoreError> {
        self.state.created.insert(end, Bytes::from(packed));
        Ok(())
    }

    fn forget(&mut self, end: Revision) -> Result<(), StoreError> {
        // One write at a time, without collecting them first: compaction
        // forgets every revision of the history, mostly of one write each,
        // oldest first, so the writes are usually the first entries.
        let history = &mut self.state.history;
        while history
            .first_key_value()
            .is_some_and(|((revision, _), _)| *revision == end)
        {
            history.pop_first();
        }
        while let Some(write) = history
            .range((end, Bytes::new())..)
            .next()
            .and_then(|((revision, key), _)| (*revision == end).then(|| (end, key.clone())))
        {
            history.remove(&write);
        }
        self.state.created.remove(&end);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.state.records.remove(key);
        Ok(())
    }

    fn set_compacted(&mut self, revision: Revision) -> Result<(), StoreError> {
        self.state.compacted = revision;
        Ok(())
    }

    fn lease_granted(&self, id: LeaseId) -> Result<bool, StoreError> {
        Ok(self.state.granted.contains_key(&id))
    }

    fn remove_lease(&mut self, id: LeaseId) -> Result<(), StoreError> {
        self.state.granted.remove(&id);
        self.state.lease_keys.remove(&id);
        Ok(())
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<Record>, StoreError> {
        let state = self.read();
        apply::get(&self.view(&state), key, revision, state.revision)
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<Revision, StoreError> {
        let put = Op::Put {
            key,
            value,
            lease: 0,
            prev: false,
        };
        Ok(self.txn(Txn::of(vec![put])).await?.revision)
    }

    async fn range(&self, query: RangeQuery) -> Result<RangeResult, StoreError> {
        let state = self.read();
        apply::range(&self.view(&state), &query, state.revision)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        if !txn.writes() {
            // Reads only: the shared lock is enough.
            let state = self.read();
            let applied = apply::apply(&mut ReadOnly(self.view(&state)), &txn, state.revision)?;
            return Ok(applied.result);
        }
        let mut state = self.write();
        let current = state.revision;
        let mut view = View {
            state: &mut *state,
            leases: &self.shared.leases,
        };
        let applied = apply::apply(&mut view, &txn, current)?;
        state.revision = applied.result.revision;
        let written = applied.events.len();
        self.hub.publish(applied.result.revision, applied.events);
        self.retain(&mut state, written)?;
        Ok(applied.result)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        let mut state = self.write();
        let id = loop {
            let id = random_lease_id();
            if !state.granted.contains_key(&id) {
                break id;
            }
        };
        state.granted.insert(id, ttl);
        Ok(self.leases().insert(id, ttl))
    }

    async fn lease_grant_as(&self, id: LeaseId, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        let mut state = self.write();
        if state.granted.contains_key(&id) {
            return Err(StoreError::LeaseExists(id));
        }
        state.granted.insert(id, ttl);
        Ok(self.leases().insert(id, ttl))
    }

    async fn lease_ids(&self) -> Result<Vec<LeaseId>, StoreError> {
        Ok(self.leases().live_ids())
    }

    async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<Vec<LeaseInfo>, StoreError> {
        Ok(self.leases().page(after, limit))
    }

    async fn lease_keys(
        &self,
        id: LeaseId,
        range: KeyRange,
        limit: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        let state = self.read();
        apply::lease_keys(&self.view(&state), id, &range, limit)
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.leases()
            .keep_alive(id)
            .ok_or(StoreError::LeaseNotFound(id))
    }

    async fn lease_info(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.leases().info(id).ok_or(StoreError::LeaseNotFound(id))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(u64, Revision), StoreError> {
        self.revoke(id, EventKind::Delete)
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        self.leases()
            .expire_with(|id| std::future::ready(self.revoke(id, EventKind::Expire)))
            .await
    }

    async fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        let history: Arc<dyn History> = Arc::clone(&self.shared) as _;
        self.hub.watch(range, from, history)
    }

    async fn watch_into(
        &self,
        watches: &mut Watches,
        id: WatchId,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<(), StoreError> {
        let history: Arc<dyn History> = Arc::clone(&self.shared) as _;
        self.hub.add(watches, id, range, from, history)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        let current = {
            let mut state = self.write();
            let current = state.revision;
            let mut view = View {
                state: &mut *state,
                leases: &self.shared.leases,
            };
            apply::compact(&mut view, revision, current)?;
            current
        };
        self.hub.compacted_to(revision);
        // The history goes a chunk per hold of the lock, so that writers
        // wait for one chunk at most.
        loop {
            let done = {
                let mut state = self.write();
                let mut view = View {
                    state: &mut *state,
                    leases: &self.shared.leases,
                };
                apply::compact_chunk(&mut view, COMPACT_CHUNK)?
            };
            if done {
                return Ok(current);
            }
            tokio::task::yield_now().await;
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // A copy taken under the read lock is the snapshot: entries are
        // shared, so it copies pointers, not data.
        let (revision, leases, entries) = {
            let state = self.read();
            let leases = state.granted.iter().map(|(id, ttl)| (*id, *ttl)).collect();
            let entries: Vec<Entry> = state
                .records
                .iter()
                .filter(|entry| entry.slot(Values::Skipped).live().is_some())
                .cloned()
                .collect();
            (state.revision, leases, entries)
        };
        let (sender, chunks) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut chunker = SnapshotChunker::default();
            for entry in &entries {
                let Some(record) = entry.slot(Values::Decoded).live().cloned() else {
                    continue;
                };
                let kv = KeyValue {
                    key: Bytes::copy_from_slice(entry.key()),
                    record,
                };
                if let Some(full) = chunker.push(kv)
                    && sender.send(Ok(full)).await.is_err()
                {
                    return;
                }
            }
            let rest = chunker.rest();
            if !rest.is_empty() {
                let _ = sender.send(Ok(rest)).await;
            }
        });
        Ok(Snapshot {
            revision,
            leases,
            chunks,
        })
    }

    fn stats(&self) -> StoreStats {
        let state = self.read();
        StoreStats {
            keys: state.records.len() as u64,
            revision: state.revision,
            compacted: state.compacted,
            written_bytes: self.hub.written_bytes(),
            ..StoreStats::default()
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    crate::storage::conformance::conformance_suite!(super::MemoryStore::new());
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    #[test]
    fn entries_round_trip_small_and_extreme_numbers() {
        for (key, record) in [
            (&b""[..], Record::after_put(None, Bytes::new(), 1, 0)),
            (
                &b"k\xff"[..],
                Record {
                    // Larger than what is assembled on the stack.
                    value: Bytes::from(vec![7u8; ASSEMBLED_ON_STACK + 1]),
                    create_revision: 3,
                    mod_revision: 1 << 40,
                    version: 2,
                    lease: 5,
                },
            ),
            (
                &b"k\xff"[..],
                Record {
                    value: Bytes::from_static(b"value"),
                    create_revision: u64::MAX,
                    mod_revision: 1 << 35,
                    version: 127,
                    lease: i64::MAX,
                },
            ),
        ] {
            let slot = Slot::Live(record);
            let entry = Entry::new(key, &slot);
            assert_eq!(entry.key(), key);
            assert_eq!(entry.slot(Values::Decoded), slot);
        }
        for slot in [
            Slot::ABSENT,
            Slot::Gone {
                revision: u64::MAX,
                expired: true,
            },
        ] {
            let entry = Entry::new(b"k", &slot);
            assert_eq!(entry.key(), b"k");
            assert_eq!(entry.slot(Values::Decoded), slot);
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    fn history_len(store: &MemoryStore) -> usize {
        store.shared.read().history.len()
    }

    #[tokio::test]
    async fn automatic_compaction_drops_the_history_a_little_after_each_write() {
        let keep = 1000;
        let store = MemoryStore::with_watch_limits(WatchLimits {
            history: keep,
            ..WatchLimits::default()
        });
        // Two writes per revision of history: every key is written twice.
        let key = |i: usize| Bytes::from(format!("k{}", i % 100));
        let mut revision = 0;
        let mut i = 0;
        // Up to the write that starts the compaction (the history then
        // holds twice `keep` revisions).
        while store.shared.read().compacted == 0 {
            revision = store.put(key(i), Bytes::from_static(b"v")).await.unwrap();
            i += 1;
        }
        let compacted = store.shared.read().compacted;
        assert_eq!(compacted, revision - keep as u64);
        // The reads below it fail at once ...
        assert!(matches!(
            store.get(b"k1", compacted - 1).await,
            Err(StoreError::Compacted { .. })
        ));
        // ... but that write dropped one chunk, not the whole of it.
        assert!(store.shared.read().trimming());
        assert!(
            history_len(&store) > 2 * keep - 2 * TRIM_PER_WRITE,
            "{} entries left",
            history_len(&store)
        );
        // The following writes drop the rest, and the history never grows
        // past what it held then.
        let peak = history_len(&store);
        let mut writes = 0;
        while store.shared.read().trimming() {
            store.put(key(i), Bytes::from_static(b"v")).await.unwrap();
            i += 1;
            writes += 1;
            assert!(history_len(&store) <= peak);
        }
        assert!(writes <= keep / (TRIM_PER_WRITE - 1) + 1, "{writes} writes");
        let all_kept = {
            let state = store.shared.read();
            state
                .history
                .keys()
                .all(|(revision, _)| *revision >= state.compacted)
        };
        assert!(all_kept, "history left below the compacted revision");
        // What was kept still reads.
        let at = store.get(b"k1", compacted + 1).await.unwrap();
        assert!(at.is_some());
    }
}
