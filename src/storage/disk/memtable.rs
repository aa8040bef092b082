//! The writes committed since the last checkpoint, held in memory over the
//! database's snapshot at that checkpoint.
//!
//! Why: a redb commit per batch cost the committer most of its CPU (a
//! copy-on-write leaf per random key, page checksums, redb's allocator and
//! its freed-page lists: `PERFORMANCE.md`, "the memtable"), while under
//! `--sync always` it is the write-ahead log that makes a write durable. So
//! a batch is applied to the [`Memtable`], and the database receives the
//! memtable's writes at the next checkpoint, all in one durable commit
//! ([`Memtable::flush_into`]): a leaf is copied once per checkpoint, not
//! once per batch. LSM trees' memtables, and etcd's backend committing its
//! batched transaction every 100 ms, rest on the same idea.
//!
//! Reads see layers, newest first: the batch the committer is applying (a
//! [`Tables`] of its own, merged into the memtable only once the whole
//! batch applied, so that a failed batch leaves no trace), the memtable,
//! then the database snapshot under it ([`Base`]). A key keeps every version
//! written since the checkpoint, so that a reader at revision `R` sees what
//! `R` held while the committer adds newer versions. A checkpoint flushes
//! the memtable and starts a new one over a new snapshot; the readers of
//! the old pair keep it until they finish. Compaction stays in the
//! database: it only drops history below the compacted revision, which a
//! flush put there.
//!
//! Every method that reads the memtable holds its lock for the memtable's
//! part only (a point lookup, or a chunk of a scan), never while it reads
//! the database, so that a long read never holds the committer back.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, ControlFlow};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::Bytes;

use super::keyspace::{Base, Liveness, WriteView};
use crate::storage::apply::{Changes, Kept, Keyspace, KeyspaceRead, Slot, Values};
use crate::storage::created::{self, Change};
use crate::storage::lease::Leases;
use crate::storage::ops::{KeyRange, LeaseId};
use crate::storage::{Record, Revision, StoreError};

/// Entries of the memtable a scan or a replay takes per hold of its lock.
const CHUNK: usize = 256;

/// The memtable: [`Tables`] behind a lock that readers share with the
/// committer (its only writer).
#[derive(Default)]
pub(super) struct Memtable {
    tables: RwLock<Tables>,
}

impl Memtable {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `read` with the tables, under the lock.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Tables) -> T) -> T {
        read(&self.read())
    }

    /// Adds a batch that applied whole (see [`BatchView::into_staged`]).
    pub(super) fn absorb(&self, staged: Tables) {
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tables.absorb(staged);
    }

    /// Bytes of keys and values written into it: a checkpoint follows
    /// past a bound (`committer`), so that it cannot grow without one.
    pub(super) fn bytes(&self) -> u64 {
        self.read().bytes
    }

    /// Calls it makes in the database at a checkpoint (its writes).
    pub(super) fn writes(&self) -> usize {
        self.read().effects.len()
    }

    /// Keys it created (that the database holds no slot for).
    pub(super) fn created_keys(&self) -> u64 {
        self.read().created_keys
    }

    /// Writes everything it holds into the database's write transaction,
    /// in the order it happened. Returns whether the compacted revision
    /// moved.
    pub(super) fn flush_into(&self, view: &mut WriteView<'_>) -> Result<bool, StoreError> {
        let tables = self.read();
        let mut compacted = false;
        for effect in &tables.effects {
            match effect {
                Effect::Put {
                    key,
                    slot,
                    old_lease,
                    kept,
                } => view.put_leased(key, slot, *old_lease, *kept)?,
                Effect::Created { end, packed } => view.keep_created(*end, packed.to_vec())?,
                Effect::Grant { id, ttl } => {
                    view.grant(*id, *ttl)?;
                }
                Effect::RemoveLease(id) => view.remove_lease(*id)?,
                Effect::Compacted(revision) => {
                    view.set_compacted(*revision)?;
                    compacted = true;
                }
            }
        }
        Ok(compacted)
    }
}

/// A write to make in the database at the next checkpoint: the
/// [`Keyspace`] calls the committer made, as it made them.
enum Effect {
    Put {
        key: Bytes,
        slot: Slot,
        old_lease: LeaseId,
        kept: Option<Kept>,
    },
    Created {
        end: Revision,
        packed: Bytes,
    },
    Grant {
        id: LeaseId,
        ttl: Duration,
    },
    RemoveLease(LeaseId),
    Compacted(Revision),
}

/// The writes of one layer, and the indexes that read them.
#[derive(Default)]
pub(super) struct Tables {
    /// Every key written: its versions, oldest first.
    keys: BTreeMap<Bytes, Vec<Slot>>,
    /// What each write at `(revision, key)` replaced, with its place in its
    /// transaction: the slot, or `None` when it was the key's latest slot in
    /// the layers below (resolved there when read).
    history: BTreeMap<(Revision, Bytes), (u32, Option<Slot>)>,
    /// The keys each revision created, packed (`storage::created`).
    created: BTreeMap<Revision, Bytes>,
    created_keys: u64,
    /// Leases granted (`Some`) or removed (`None`), each change with the
    /// revision it was made at, oldest first (a reader at an earlier
    /// revision must not see it: a backup lists a snapshot's leases).
    leases: BTreeMap<LeaseId, Vec<(Revision, Option<Duration>)>>,
    /// Rows of the lease → key index added (`true`) or removed (`false`),
    /// the same way.
    lease_keys: BTreeMap<(LeaseId, Bytes), Vec<(Revision, bool)>>,
    effects: Vec<Effect>,
    bytes: u64,
}

impl Tables {
    fn absorb(&mut self, staged: Tables) {
        // Before the keys: a "below" marker resolves to this layer's latest.
        for (place, (seq, kept)) in staged.history {
            let kept = kept.or_else(|| {
                self.keys
                    .get(&place.1)
                    .and_then(|versions| versions.last().cloned())
            });
            self.history.insert(place, (seq, kept));
        }
        for (key, versions) in staged.keys {
            self.keys.entry(key).or_default().extend(versions);
        }
        self.created.extend(staged.created);
        self.created_keys += staged.created_keys;
        for (id, changes) in staged.leases {
            self.leases.entry(id).or_default().extend(changes);
        }
        for (row, changes) in staged.lease_keys {
            self.lease_keys.entry(row).or_default().extend(changes);
        }
        self.effects.extend(staged.effects);
        self.bytes += staged.bytes;
    }

    /// The version of `key` at revision `at`, if this layer holds it.
    fn latest(&self, key: &[u8], at: Revision) -> Option<&Slot> {
        self.keys
            .get(key)?
            .iter()
            .rev()
            .find(|slot| slot.revision() <= at)
    }

    /// The changes of this layer from revision `from` to `at`, whole
    /// revisions, about `max` of them; and the revision to go on from if
    /// there are more.
    fn changes(&self, from: Revision, at: Revision, max: usize) -> (Vec<Change>, Option<Revision>) {
        let mut out = Vec::new();
        let mut next = None;
        let replacing = self
            .history
            .range((from, Bytes::new())..)
            .map(|((revision, key), (seq, _))| Ok((*revision, key.clone(), *seq)));
        let creating = self
            .created
            .range(from..)
            .flat_map(|(revision, packed)| created::unpack(*revision, packed.clone()));
        // Reading memory cannot fail: the merge's errors are the database's.
        let _ = created::merge(replacing, creating, &mut |revision, key, seq| {
            if revision > at {
                return ControlFlow::Break(());
            }
            if out.len() >= max && out.last().is_some_and(|last: &Change| last.0 != revision) {
                next = Some(revision);
                return ControlFlow::Break(());
            }
            out.push((revision, Bytes::copy_from_slice(key), seq));
            ControlFlow::Continue(())
        });
        (out, next)
    }
}

/// The last of `changes` (oldest first) made at revision `at` or before.
fn change_at<T: Copy>(changes: &[(Revision, T)], at: Revision) -> Option<T> {
    changes
        .iter()
        .rev()
        .find(|(revision, _)| *revision <= at)
        .map(|(_, change)| *change)
}

/// The version `slot`, with its value dropped for [`Values::Skipped`].
fn shown(slot: &Slot, values: Values) -> Slot {
    match (slot, values) {
        (Slot::Live(record), Values::Skipped) => Slot::Live(Record {
            value: Bytes::new(),
            ..record.clone()
        }),
        _ => slot.clone(),
    }
}

/// The first `max` keys of `range` after `after` that the layers (newest
/// first) hold a version of at `at`, with that version.
fn overlay_chunk(
    layers: &[&Tables],
    range: &KeyRange,
    after: Option<&Bytes>,
    values: Values,
    at: Revision,
    max: usize,
) -> Vec<(Bytes, Slot)> {
    let Some((start, end)) = range.bounds() else {
        return Vec::new();
    };
    let start = match after {
        Some(key) => Bound::Excluded(key.as_ref()),
        None => start,
    };
    let mut merged: BTreeMap<&Bytes, &Slot> = BTreeMap::new();
    // Oldest layer first, so that a newer layer's version replaces it.
    for layer in layers.iter().rev() {
        let found = layer
            .keys
            .range::<[u8], _>((start, end))
            .filter_map(|(key, _)| Some((key, layer.latest(key, at)?)))
            .take(max);
        merged.extend(found);
    }
    merged
        .into_iter()
        .take(max)
        .map(|(key, slot)| (key.clone(), shown(slot, values)))
        .collect()
}

/// The layers over a [`Base`] as a reader sees them: the part in memory
/// read under its lock (`with_layers`), the base without it.
pub(super) trait Layered {
    /// Calls `read` with the memtable layers, newest first.
    fn with_layers<T>(&self, read: impl FnOnce(&[&Tables]) -> T) -> T;
    fn base(&self) -> &Base;
    /// The revision read at.
    fn at(&self) -> Revision;
}

pub(super) fn latest<L: Layered>(
    layers: &L,
    key: &[u8],
    values: Values,
) -> Result<Option<Slot>, StoreError> {
    let at = layers.at();
    let found = layers.with_layers(|tables| {
        tables
            .iter()
            .find_map(|layer| layer.latest(key, at))
            .map(|slot| shown(slot, values))
    });
    match found {
        Some(slot) => Ok(Some(slot)),
        None => layers.base().latest_as(key, values),
    }
}

pub(super) fn replaced<L: Layered>(
    layers: &L,
    key: &[u8],
    end: Revision,
) -> Result<Option<Slot>, StoreError> {
    /// Where the version replaced is.
    enum Found {
        Here(Slot),
        /// The key's latest in the layers below layer `.0`, or the base.
        Below(Option<Slot>),
        NotHere,
    }
    let place = (end, Bytes::copy_from_slice(key));
    let found = layers.with_layers(|tables| {
        for (i, layer) in tables.iter().enumerate() {
            if let Some((_, kept)) = layer.history.get(&place) {
                return match kept {
                    Some(slot) => Found::Here(slot.clone()),
                    None => Found::Below(
                        tables[i + 1..]
                            .iter()
                            .find_map(|lower| lower.keys.get(key)?.last().cloned()),
                    ),
                };
            }
        }
        Found::NotHere
    });
    let base = layers.base();
    match found {
        Found::Here(slot) | Found::Below(Some(slot)) => Ok(Some(slot)),
        Found::Below(None) => base.latest_as(key, Values::Decoded),
        // Above the base, a write with no history entry was a first write.
        Found::NotHere if end > base.revision().unwrap_or(0) => Ok(None),
        Found::NotHere => base.replaced(key, end),
    }
}

pub(super) fn scan<L: Layered>(
    layers: &L,
    range: &KeyRange,
    values: Values,
    visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let at = layers.at();
    let mut pending: VecDeque<(Bytes, Slot)> = VecDeque::new();
    let mut last: Option<Bytes> = None;
    let mut exhausted = false;
    // The next key the layers hold, refilled a chunk at a time.
    let mut peek = |pending: &mut VecDeque<(Bytes, Slot)>| {
        if pending.is_empty() && !exhausted {
            let chunk = layers.with_layers(|tables| {
                overlay_chunk(tables, range, last.as_ref(), values, at, CHUNK)
            });
            exhausted = chunk.len() < CHUNK;
            last = chunk.last().map(|(key, _)| key.clone());
            pending.extend(chunk);
        }
        pending.front().map(|(key, _)| key.clone())
    };
    let mut stopped = false;
    layers.base().scan(range, values, &mut |key, slot| {
        while let Some(next) = peek(&mut pending) {
            if next.as_ref() > key {
                break;
            }
            let (next, newer) = pending.pop_front().expect("peeked");
            let same = next.as_ref() == key;
            if visit(&next, newer).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            if same {
                return ControlFlow::Continue(());
            }
        }
        if visit(key, slot).is_break() {
            stopped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    while !stopped && peek(&mut pending).is_some() {
        let (key, slot) = pending.pop_front().expect("peeked");
        stopped = visit(&key, slot).is_break();
    }
    Ok(())
}

pub(super) fn changes<L: Layered>(
    layers: &L,
    from: Revision,
    visit: &mut Changes<'_>,
) -> Result<(), StoreError> {
    let mut stopped = false;
    layers.base().changes(from, &mut |revision, key, seq| {
        let flow = visit(revision, key, seq);
        stopped = flow.is_break();
        flow
    })?;
    let at = layers.at();
    let count = layers.with_layers(|tables| tables.len());
    // Oldest layer first: each holds later revisions than the one below.
    for depth in (0..count).rev() {
        let mut from = from;
        while !stopped {
            let (chunk, next) = layers.with_layers(|tables| tables[depth].changes(from, at, CHUNK));
            for (revision, key, seq) in chunk {
                if visit(revision, &key, seq).is_break() {
                    stopped = true;
                    break;
                }
            }
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    Ok(())
}

pub(super) fn lease_keys_in<L: Layered>(
    layers: &L,
    id: LeaseId,
    range: &KeyRange,
    visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let Some((start, end)) = range.bounds() else {
        return Ok(());
    };
    // The rows changed since the base, oldest layer first (newer win).
    let at = layers.at();
    let changed: BTreeMap<Bytes, bool> = layers.with_layers(|tables| {
        let mut changed = BTreeMap::new();
        for layer in tables.iter().rev() {
            let from = (id, Bytes::copy_from_slice(start_key(start)));
            for ((row_id, key), changes) in layer.lease_keys.range(from..) {
                if *row_id != id || !before_end(key, end) {
                    break;
                }
                if let Some(added) = change_at(changes, at).filter(|_| after_start(key, start)) {
                    changed.insert(key.clone(), added);
                }
            }
        }
        changed
    });
    let mut pending = changed.into_iter().peekable();
    let mut stopped = false;
    layers.base().lease_keys_in(id, range, &mut |key| {
        while let Some((next, added)) = pending.next_if(|(next, _)| next.as_ref() <= key) {
            let same = next.as_ref() == key;
            if added && visit(&next).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            if same {
                return ControlFlow::Continue(());
            }
        }
        if visit(key).is_break() {
            stopped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    for (key, added) in pending {
        if stopped {
            break;
        }
        if added {
            stopped = visit(&key).is_break();
        }
    }
    Ok(())
}

fn start_key(start: Bound<&[u8]>) -> &[u8] {
    match start {
        Bound::Included(key) | Bound::Excluded(key) => key,
        Bound::Unbounded => &[],
    }
}

fn after_start(key: &[u8], start: Bound<&[u8]>) -> bool {
    match start {
        Bound::Included(start) => key >= start,
        Bound::Excluded(start) => key > start,
        Bound::Unbounded => true,
    }
}

fn before_end(key: &[u8], end: Bound<&[u8]>) -> bool {
    match end {
        Bound::Included(end) => key <= end,
        Bound::Excluded(end) => key < end,
        Bound::Unbounded => true,
    }
}

pub(super) fn lease_granted<L: Layered>(layers: &L, id: LeaseId) -> Result<bool, StoreError> {
    let at = layers.at();
    let found = layers.with_layers(|tables| {
        tables.iter().find_map(|layer| {
            let changes = layer.leases.get(&id)?;
            change_at(changes, at).map(|ttl| ttl.is_some())
        })
    });
    match found {
        Some(granted) => Ok(granted),
        None => layers.base().lease_granted(id),
    }
}

/// Every granted lease and its TTL.
pub(super) fn granted_leases<L: Layered>(
    layers: &L,
) -> Result<Vec<(LeaseId, Duration)>, StoreError> {
    let mut granted: BTreeMap<LeaseId, Duration> =
        layers.base().granted_leases()?.into_iter().collect();
    let at = layers.at();
    layers.with_layers(|tables| {
        for layer in tables.iter().rev() {
            for (id, changes) in &layer.leases {
                match change_at(changes, at) {
                    Some(Some(ttl)) => granted.insert(*id, ttl),
                    Some(None) => granted.remove(id),
                    None => None,
                };
            }
        }
    });
    Ok(granted.into_iter().collect())
}

/// The committer's view while it applies a batch: the batch's own writes
/// (staged), over the memtable, over the base; the revision read at is the
/// latest.
pub(super) struct BatchView<'a> {
    staged: Tables,
    shared: RwLockReadGuard<'a, Tables>,
    base: &'a Base,
    leases: &'a Leases,
    liveness: Liveness,
    compacted: Revision,
    /// The revision the batch is at: what its lease changes are made at.
    revision: Revision,
}

impl<'a> BatchView<'a> {
    /// A view over `memtable` and `base`, whose compacted revision is
    /// `compacted`. Writes are staged until [`BatchView::into_staged`].
    pub(super) fn open(
        memtable: &'a Memtable,
        base: &'a Base,
        leases: &'a Leases,
        compacted: Revision,
    ) -> BatchView<'a> {
        BatchView {
            staged: Tables::default(),
            shared: memtable.read(),
            base,
            leases,
            liveness: Liveness::Clock(Default::default()),
            compacted,
            revision: 0,
        }
    }

    /// The store's revision before the next mutation.
    pub(super) fn at_revision(&mut self, current: Revision) {
        self.revision = current;
    }

    /// Replays a transaction: leases are live unless in `expired`.
    pub(super) fn replaying(mut self, expired: &[LeaseId]) -> Self {
        self.liveness = Liveness::Replayed(expired.iter().copied().collect());
        self
    }

    /// The leases this batch found expired (for its log record).
    pub(super) fn expired(&self) -> Vec<LeaseId> {
        self.liveness.expired()
    }

    /// What the batch wrote, for [`Memtable::absorb`] (the view must be
    /// gone first: it holds the memtable's lock for reading).
    pub(super) fn into_staged(self) -> Tables {
        self.staged
    }

    /// Stores a new lease; `false` if the id is taken.
    pub(super) fn grant(&mut self, id: LeaseId, ttl: Duration) -> Result<bool, StoreError> {
        if lease_granted(self, id)? {
            return Ok(false);
        }
        let change = (self.revision, Some(ttl));
        self.staged.leases.entry(id).or_default().push(change);
        self.staged.effects.push(Effect::Grant { id, ttl });
        Ok(true)
    }
}

impl Layered for BatchView<'_> {
    fn with_layers<T>(&self, read: impl FnOnce(&[&Tables]) -> T) -> T {
        read(&[&self.staged, &self.shared])
    }

    fn base(&self) -> &Base {
        self.base
    }

    fn at(&self) -> Revision {
        Revision::MAX
    }
}

impl KeyspaceRead for BatchView<'_> {
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError> {
        latest(self, key, values)
    }

    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError> {
        replaced(self, key, end)
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        scan(self, range, values, visit)
    }

    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError> {
        changes(self, from, visit)
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        Ok(self.compacted)
    }

    fn leases(&self) -> &Leases {
        self.leases
    }

    fn lease_live(&self, id: LeaseId) -> bool {
        self.liveness.is_live(id, self.leases)
    }

    fn lease_keys_in(
        &self,
        id: LeaseId,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        lease_keys_in(self, id, range, visit)
    }
}

impl Keyspace for BatchView<'_> {
    fn put(
        &mut self,
        key: &Bytes,
        slot: &Slot,
        previous: Option<&Slot>,
        kept: Option<Kept>,
    ) -> Result<(), StoreError> {
        let old_lease = previous.and_then(Slot::live).map_or(0, |p| p.lease);
        let new_lease = slot.live().map_or(0, |r| r.lease);
        self.revision = self.revision.max(slot.revision());
        let mut row = |lease, added| {
            let changes = self.staged.lease_keys.entry((lease, key.clone()));
            changes.or_default().push((slot.revision(), added));
        };
        if old_lease != 0 && old_lease != new_lease {
            row(old_lease, false);
        }
        if new_lease != 0 && old_lease != new_lease {
            row(new_lease, true);
        }
        if let Some(Kept { end, seq }) = kept {
            // The full version replaced (the caller's may lack its value).
            let replaced = self
                .staged
                .keys
                .get(key)
                .and_then(|versions| versions.last().cloned());
            self.staged
                .history
                .insert((end, key.clone()), (seq, replaced));
        } else if previous.is_none() {
            self.staged.created_keys += 1;
        }
        let written = slot.live().map_or(0, |record| record.value.len()) + key.len();
        self.staged.bytes += written as u64;
        self.staged
            .keys
            .entry(key.clone())
            .or_default()
            .push(slot.clone());
        self.staged.effects.push(Effect::Put {
            key: key.clone(),
            slot: slot.clone(),
            old_lease,
            kept,
        });
        Ok(())
    }

    fn keep_created(&mut self, end: Revision, packed: Vec<u8>) -> Result<(), StoreError> {
        let packed = Bytes::from(packed);
        self.staged.created.insert(end, packed.clone());
        self.staged.effects.push(Effect::Created { end, packed });
        Ok(())
    }

    fn forget(&mut self, _end: Revision) -> Result<(), StoreError> {
        Err(StoreError::Internal(
            "compaction drops history in the database, not in a batch".into(),
        ))
    }

    fn remove(&mut self, _key: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Internal(
            "compaction drops tombstones in the database, not in a batch".into(),
        ))
    }

    fn set_compacted(&mut self, revision: Revision) -> Result<(), StoreError> {
        self.compacted = revision;
        self.staged.effects.push(Effect::Compacted(revision));
        Ok(())
    }

    fn lease_granted(&self, id: LeaseId) -> Result<bool, StoreError> {
        lease_granted(self, id)
    }

    fn remove_lease(&mut self, id: LeaseId) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        lease_keys_in(self, id, &KeyRange::prefix(Bytes::new()), &mut |key| {
            rows.push(Bytes::copy_from_slice(key));
            ControlFlow::Continue(())
        })?;
        for key in rows {
            let changes = self.staged.lease_keys.entry((id, key)).or_default();
            changes.push((self.revision, false));
        }
        let changes = self.staged.leases.entry(id).or_default();
        changes.push((self.revision, None));
        self.staged.effects.push(Effect::RemoveLease(id));
        Ok(())
    }
}
