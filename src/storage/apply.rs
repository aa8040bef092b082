//! The semantics of reads and transactions, once, for every backend.
//!
//! A backend exposes its data as a [`KeyspaceRead`] (a consistent view: a
//! read lock, a read transaction) or a [`Keyspace`] (the same, writable: a
//! write lock, a write transaction), and calls [`range`], [`apply`],
//! [`revoke`], [`events`] or [`compact_chunk`]. What a compare means, which
//! revision a write gets, how `version` counts, what a delete returns, which
//! events a watcher sees, which keys count as expired, what a read at a past
//! revision answers and what compaction forgets is decided here and nowhere
//! else, so the backends cannot drift apart (the conformance suite checks
//! that they don't).
//!
//! ## Versions
//!
//! The store is multi-versioned like etcd's, laid out so that the current
//! state stays one lookup away. Each key has a *latest* [`Slot`]: its record,
//! or the tombstone of its deletion. Every write at revision `r` that changes
//! key `k` moves what `k` held before into the *history*, under `(r, k)`;
//! a key's first write replaces nothing, and is kept instead among the keys
//! revision `r` *created*, packed into one entry per revision
//! (`storage::created`). So:
//!
//! - the version of `k` at revision `R` is found by walking back from the
//!   latest slot: while a slot's revision is above `R`, the slot before it is
//!   the history entry under `(that revision, k)`, and a slot with no
//!   entry was the key's first write;
//! - the history and the created keys, merged in revision order, are the
//!   change log: watches replay it;
//! - compaction at `C` drops the history and created keys of every revision
//!   below `C`,
//!   and the tombstones of deletions below `C` (etcd keeps, as this does, the
//!   version each key had at `C`).
//!
//! A key written twice by one transaction keeps only what it held before the
//! transaction: the intermediate version was never visible.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use bytes::Bytes;

use super::created;
use super::lease::Leases;
use super::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, LeaseId, Op, OpResult,
    RangeEnd, RangeQuery, RangeResult, Txn, TxnResult, page_bytes,
};
use super::{Record, Revision, StoreError};

/// Whether a scan hands over the values of the records it visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Values {
    /// Each record comes with its value.
    Decoded,
    /// Each record comes with an empty value: enough to count keys, list
    /// them or check their leases, without copying every value (on disk,
    /// decoding a value is a copy out of the page).
    Skipped,
}

/// One version of a key: what it held from the slot's revision on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A record, written at its `mod_revision`.
    Live(Record),
    /// Nothing: the key was deleted at `revision` (by its lease's expiry if
    /// `expired`). [`Slot::ABSENT`] (revision 0) is "before its first write".
    Gone {
        /// The revision of the deletion.
        revision: Revision,
        /// Whether the lease's expiry deleted it.
        expired: bool,
    },
}

impl Slot {
    /// What a key held before it was first written.
    pub(crate) const ABSENT: Slot = Slot::Gone {
        revision: 0,
        expired: false,
    };

    /// The revision this version starts at.
    pub(crate) fn revision(&self) -> Revision {
        match self {
            Slot::Live(record) => record.mod_revision,
            Slot::Gone { revision, .. } => *revision,
        }
    }

    /// The record, if the key held one.
    pub(crate) fn live(&self) -> Option<&Record> {
        match self {
            Slot::Live(record) => Some(record),
            Slot::Gone { .. } => None,
        }
    }

    fn into_live(self) -> Option<Record> {
        match self {
            Slot::Live(record) => Some(record),
            Slot::Gone { .. } => None,
        }
    }
}

/// What [`KeyspaceRead::changes`] calls with each write of the history: its
/// revision, key and place in its transaction.
pub(crate) type Changes<'a> = dyn FnMut(Revision, &[u8], u32) -> ControlFlow<()> + 'a;

/// A consistent, read-only view of a backend's keys and their history.
pub(crate) trait KeyspaceRead {
    /// The latest slot of `key`: its record (expired or not), or the
    /// tombstone of its deletion if that is not compacted yet.
    fn latest(&self, key: &[u8]) -> Result<Option<Slot>, StoreError> {
        self.latest_as(key, Values::Decoded)
    }

    /// [`latest`](Self::latest), with the record's value empty for
    /// [`Values::Skipped`]: what a write needs of the slot it replaces
    /// (revisions, version, lease), without copying a value it never
    /// returns.
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError>;

    /// What the write of `key` at revision `end` replaced, if that write
    /// happened, replaced a stored slot, and is not compacted (`None` for
    /// the key's first write).
    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError>;

    /// Calls `visit` with the latest slot of every key of `range` in key
    /// order, tombstones included, until it breaks; with
    /// [`Values::Skipped`], every record's value is empty.
    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Calls `visit` with every write kept from revision `from` on, those in
    /// the history and the created keys: its revision, key and place in its
    /// transaction, in revision order (key order within one revision),
    /// until it breaks.
    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError>;

    /// The compacted revision: reads and watches start at it or later.
    fn compacted(&self) -> Result<Revision, StoreError>;

    /// The deadlines of the leases.
    fn leases(&self) -> &Leases;

    /// Whether lease `id` exists and has not expired: what transactions
    /// decide by (a put's lease, the visibility of a key with a lease). A
    /// backend that must replay transactions as they went (the disk
    /// store's log) answers from what the first run saw, not the clock.
    fn lease_live(&self, id: LeaseId) -> bool {
        self.leases().is_live(id)
    }

    /// Whether keys of lease `id` must look deleted (see
    /// [`Leases::is_expired`]), by [`KeyspaceRead::lease_live`].
    fn lease_expired(&self, id: LeaseId) -> bool {
        id != 0 && !self.lease_live(id)
    }

    /// Calls `visit` with every key attached to lease `id` that is in
    /// `range`, in key order, until it breaks (from the backend's index of
    /// a lease's keys, never by scanning every key).
    fn lease_keys_in(
        &self,
        id: LeaseId,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;
}

/// A writable view of a backend's keys, for the length of one transaction.
pub(crate) trait Keyspace: KeyspaceRead {
    /// Makes `slot` the latest of `key`; `previous` is what it replaces
    /// (stored, possibly expired), so the backend can keep its lease index.
    /// With `kept`, the slot replaced (there is one) moves into the history
    /// as [`Kept`] says. (The backend moves what it stores, value included,
    /// whatever the caller decoded of it; one method, so that replacing and
    /// keeping the old slot is one lookup of `key`, not two.)
    fn put(
        &mut self,
        key: &Bytes,
        slot: &Slot,
        previous: Option<&Slot>,
        kept: Option<Kept>,
    ) -> Result<(), StoreError>;

    /// Keeps the keys that revision `end` created, packed
    /// ([`created::pack`](super::created::pack)): the first writes of keys
    /// that had no slot, with their places in the transaction.
    fn keep_created(&mut self, end: Revision, packed: Vec<u8>) -> Result<(), StoreError>;

    /// Drops the history entries and the created keys of revision `end`
    /// (compaction).
    fn forget(&mut self, end: Revision) -> Result<(), StoreError>;

    /// Drops the latest slot of `key`, a compacted tombstone.
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError>;

    /// Records the compacted revision.
    fn set_compacted(&mut self, revision: Revision) -> Result<(), StoreError>;

    /// Whether lease `id` is granted (stored), expired or not.
    fn lease_granted(&self, id: LeaseId) -> Result<bool, StoreError>;

    /// Forgets lease `id` (its keys are already deleted).
    fn remove_lease(&mut self, id: LeaseId) -> Result<(), StoreError>;
}

/// Where a replaced slot goes in the history: it is what the key held
/// before the write at revision `end`, the `seq`th write of its transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kept {
    /// The revision of the write that replaced it.
    pub(crate) end: Revision,
    /// The write's place in its transaction.
    pub(crate) seq: u32,
}

/// A read-only view used where a [`Keyspace`] is expected: for transactions
/// without writes, which never call the writing methods.
pub(crate) struct ReadOnly<V>(pub(crate) V);

impl<V: KeyspaceRead> KeyspaceRead for ReadOnly<V> {
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError> {
        self.0.latest_as(key, values)
    }

    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError> {
        self.0.replaced(key, end)
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.0.scan(range, values, visit)
    }

    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError> {
        self.0.changes(from, visit)
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        self.0.compacted()
    }

    fn leases(&self) -> &Leases {
        self.0.leases()
    }

    fn lease_live(&self, id: LeaseId) -> bool {
        self.0.lease_live(id)
    }

    fn lease_keys_in(
        &self,
        id: LeaseId,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.0.lease_keys_in(id, range, visit)
    }
}

impl<V: KeyspaceRead> Keyspace for ReadOnly<V> {
    fn put(
        &mut self,
        _: &Bytes,
        _: &Slot,
        _: Option<&Slot>,
        _: Option<Kept>,
    ) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn keep_created(&mut self, _: Revision, _: Vec<u8>) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn forget(&mut self, _: Revision) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn remove(&mut self, _: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn set_compacted(&mut self, _: Revision) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn lease_granted(&self, _: LeaseId) -> Result<bool, StoreError> {
        Err(read_only())
    }

    fn remove_lease(&mut self, _: LeaseId) -> Result<(), StoreError> {
        Err(read_only())
    }
}

fn read_only() -> StoreError {
    StoreError::Internal("a read-only transaction tried to write".into())
}

/// Whether a stored record is visible: not attached to an expired lease.
fn live(space: &impl KeyspaceRead, record: &Record) -> bool {
    !space.lease_expired(record.lease)
}

/// The revision a read of `requested` (0: the current one) happens at, in a
/// store at `current`: refused below the compacted revision and above the
/// current one.
pub(crate) fn read_revision(
    space: &impl KeyspaceRead,
    requested: Revision,
    current: Revision,
) -> Result<Revision, StoreError> {
    if requested == 0 || requested == current {
        return Ok(current);
    }
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current });
    }
    let compacted = space.compacted()?;
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(requested)
}

/// The version of `key` at revision `at` (already checked against the
/// compacted revision), walking back from `slot`, its latest.
fn version_at(
    space: &impl KeyspaceRead,
    key: &[u8],
    mut slot: Option<Slot>,
    at: Revision,
) -> Result<Option<Slot>, StoreError> {
    while let Some(found) = &slot {
        let revision = found.revision();
        if revision <= at {
            break;
        }
        slot = space.replaced(key, revision)?;
    }
    Ok(slot)
}

/// The record `key` holds, as a read at `at` in a store at `current` sees
/// it: at the current revision only records whose lease is live.
fn visible(
    space: &impl KeyspaceRead,
    key: &[u8],
    slot: Option<Slot>,
    at: Revision,
    current: Revision,
) -> Result<Option<Record>, StoreError> {
    if at >= current {
        return Ok(slot
            .and_then(Slot::into_live)
            .filter(|record| live(space, record)));
    }
    Ok(version_at(space, key, slot, at)?.and_then(Slot::into_live))
}

/// The live record of `key`, now.
fn get_latest(space: &impl KeyspaceRead, key: &[u8]) -> Result<Option<Record>, StoreError> {
    Ok(space
        .latest(key)?
        .and_then(Slot::into_live)
        .filter(|record| live(space, record)))
}

/// The record of `key` at `revision` (0: now) in a store at `current`.
pub(crate) fn get(
    space: &impl KeyspaceRead,
    key: &[u8],
    revision: Revision,
    current: Revision,
) -> Result<Option<Record>, StoreError> {
    let at = read_revision(space, revision, current)?;
    visible(space, key, space.latest(key)?, at, current)
}

/// Answers a range query from `space`, whose revision is `current`.
pub(crate) fn range(
    space: &impl KeyspaceRead,
    query: &RangeQuery,
    current: Revision,
) -> Result<RangeResult, StoreError> {
    let at = read_revision(space, query.revision, current)?;
    let mut result = RangeResult {
        revision: current,
        ..RangeResult::default()
    };
    if let RangeEnd::Single = query.range.end {
        let key = &query.range.start;
        if let Some(record) = visible(space, key, space.latest(key)?, at, current)? {
            result.count = 1;
            if !query.count_only {
                result.kvs.push(shaped(query, key.clone(), record));
            }
        }
        return Ok(result);
    }
    // Values are copied only for the keys that are answered: a count, a
    // keys-only listing and the keys past a page's limit need none.
    let values = if query.count_only || query.keys_only {
        Values::Skipped
    } else {
        Values::Decoded
    };
    let count_all = query.count_all || query.count_only;
    let mut failed = None;
    let mut rest = None;
    let mut bytes = 0usize;
    space.scan(&query.range, values, &mut |key, slot| {
        let record = match visible(space, key, Some(slot), at, current) {
            Ok(Some(record)) => record,
            Ok(None) => return ControlFlow::Continue(()),
            Err(error) => {
                failed = Some(error);
                return ControlFlow::Break(());
            }
        };
        let value_len = if query.keys_only {
            0
        } else {
            record.value.len()
        };
        let size = page_bytes(key.len(), value_len);
        if let Err(error) = query.check_whole(bytes.saturating_add(size)) {
            failed = Some(error);
            return ControlFlow::Break(());
        }
        let full = !query.count_only
            && ((query.limit > 0 && result.kvs.len() == query.limit)
                || (query.max_bytes > 0
                    && !result.kvs.is_empty()
                    && bytes.saturating_add(size) > query.max_bytes));
        if full {
            // The page is full (its limit, or its bytes: at least one
            // record either way), and this key is past it.
            result.more = true;
            if !count_all {
                return ControlFlow::Break(());
            }
            rest = Some(Bytes::copy_from_slice(key));
            return ControlFlow::Break(());
        }
        result.count += 1;
        bytes = bytes.saturating_add(size);
        if !query.count_only {
            result
                .kvs
                .push(shaped(query, Bytes::copy_from_slice(key), record));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(error) = failed {
        return Err(error);
    }
    if let Some(start) = rest {
        // Counted, as etcd does, only when asked: the rest of the range is
        // a scan without values.
        let rest = query.range.resumed_at(start);
        visible_in(space, &rest, Values::Skipped, at, current, &mut |_, _| {
            result.count += 1;
            ControlFlow::Continue(())
        })?;
    }
    Ok(result)
}

/// Refuses, before `ops` change anything, a transaction one of whose
/// capped whole reads ([`RangeQuery::whole_max_bytes`]) would pass its cap
/// after the writes before it: what its range holds now, plus what the
/// earlier puts of the transaction write into it (an upper bound: what
/// they replace and what earlier deletes remove still count), must fit.
/// A capped read before any write needs no check here: it fails, if it
/// does, before anything changed.
fn check_whole_reads(
    space: &impl KeyspaceRead,
    ops: &[Op],
    current: Revision,
) -> Result<(), StoreError> {
    let mut wrote = false;
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Put { .. } | Op::Delete { .. } => wrote = true,
            Op::Get(query) if wrote && query.is_capped_whole() => {
                let puts = puts_into(query, &ops[..index]);
                query.check_whole(puts)?;
                query.check_whole(puts.saturating_add(held_bytes(space, query, current)?))?;
            }
            Op::Get(_) => {}
        }
    }
    Ok(())
}

/// The bytes that the puts among `earlier` (the operations of a
/// transaction before the read `query`) write into its range, as a read
/// counts them: what a capped whole read may find besides what its range
/// held before the transaction. Only a read of the current state sees
/// them. The etcd backend, which cannot refuse a transaction after etcd
/// applied it, checks its capped reads the same way first.
pub(crate) fn puts_into(query: &RangeQuery, earlier: &[Op]) -> usize {
    if query.revision != 0 {
        return 0;
    }
    earlier
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } if query.range.contains(key) => {
                let value_len = if query.keys_only { 0 } else { value.len() };
                page_bytes(key.len(), value_len)
            }
            _ => 0,
        })
        .fold(0usize, usize::saturating_add)
}

/// The bytes of the records `query`'s range holds at `current` (as
/// [`range`] counts them), scanned holding none, and counted no further
/// than just past `query.whole_max_bytes`.
fn held_bytes(
    space: &impl KeyspaceRead,
    query: &RangeQuery,
    current: Revision,
) -> Result<usize, StoreError> {
    let at = read_revision(space, query.revision, current)?;
    let values = if query.keys_only {
        Values::Skipped
    } else {
        Values::Decoded
    };
    let mut bytes = 0usize;
    visible_in(
        space,
        &query.range,
        values,
        at,
        current,
        &mut |key, record| {
            bytes = bytes.saturating_add(page_bytes(key.len(), record.value.len()));
            if query.check_whole(bytes).is_err() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok(bytes)
}

/// Calls `visit` with every key of `range` that holds a record for a read
/// at `at` in a store at `current`, and the record, until it breaks.
fn visible_in(
    space: &impl KeyspaceRead,
    range: &KeyRange,
    values: Values,
    at: Revision,
    current: Revision,
    visit: &mut dyn FnMut(&[u8], Record) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let mut failed = None;
    space.scan(
        range,
        values,
        &mut |key, slot| match visible(space, key, Some(slot), at, current) {
            Ok(Some(record)) => visit(key, record),
            Ok(None) => ControlFlow::Continue(()),
            Err(error) => {
                failed = Some(error);
                ControlFlow::Break(())
            }
        },
    )?;
    failed.map_or(Ok(()), Err)
}

fn shaped(query: &RangeQuery, key: Bytes, mut record: Record) -> KeyValue {
    if query.keys_only {
        record.value = Bytes::new();
    }
    KeyValue { key, record }
}

/// What a transaction did: its answer, and the events it caused.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The answer to the caller.
    pub(crate) result: TxnResult,
    /// One event per key written, in order.
    pub(crate) events: Vec<Event>,
}

/// Makes `slot` the latest of `key` at `revision`, keeping what it replaces
/// (`stored`) in the history, unless the same transaction wrote that; a
/// first write (nothing stored) joins `created` instead.
fn write(
    space: &mut impl Keyspace,
    key: &Bytes,
    slot: &Slot,
    stored: Option<&Slot>,
    revision: Revision,
    seq: usize,
    created: &mut Vec<(Bytes, u32)>,
) -> Result<(), StoreError> {
    let seq = u32::try_from(seq).unwrap_or(u32::MAX);
    let kept = match stored {
        None => {
            created.push((key.clone(), seq));
            None
        }
        Some(replaced) if replaced.revision() != revision => Some(Kept { end: revision, seq }),
        Some(_) => None,
    };
    space.put(key, slot, stored, kept)
}

/// Keeps the keys `created` at `revision`, if any.
fn keep_created(
    space: &mut impl Keyspace,
    revision: Revision,
    mut created: Vec<(Bytes, u32)>,
) -> Result<(), StoreError> {
    if created.is_empty() {
        return Ok(());
    }
    space.keep_created(revision, created::pack(&mut created))
}

/// Applies `txn` to `space`, whose revision is `current`. The caller makes
/// the changes visible atomically (commits, releases its lock) and publishes
/// the events; on error it discards the changes.
pub(crate) fn apply(
    space: &mut impl Keyspace,
    txn: &Txn,
    current: Revision,
) -> Result<Applied, StoreError> {
    let mut succeeded = true;
    for compare in &txn.compares {
        if !holds(space, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    // Check leases and read revisions before changing anything, so a
    // transaction that fails has no effect (backends apply many
    // transactions in one commit).
    for op in ops {
        match op {
            Op::Put { lease, .. }
                if *lease != 0 && !(space.lease_granted(*lease)? && space.lease_live(*lease)) =>
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
            Op::Get(query) => {
                read_revision(space, query.revision, current)?;
            }
            _ => {}
        }
    }
    check_whole_reads(space, ops, current)?;
    let revision = if writes(space, ops)? {
        current + 1
    } else {
        current
    };
    let mut events = Vec::new();
    let mut created = Vec::new();
    // The bytes its Ranges answered so far: they share one byte bound.
    let mut spent = 0usize;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            // Reads in a transaction see its earlier writes.
            Op::Get(query) => {
                let result = range(space, &query.after_spent(spent), revision)?;
                spent = spent.saturating_add(result.page_bytes());
                OpResult::Get(result)
            }
            Op::Put {
                key,
                value,
                lease,
                prev,
            } => {
                // The value replaced is only ever returned (`prev`): the
                // record after the put takes its revisions and version.
                let values = if *prev {
                    Values::Decoded
                } else {
                    Values::Skipped
                };
                let stored = space.latest_as(key, values)?;
                let previous = stored
                    .as_ref()
                    .and_then(Slot::live)
                    .filter(|record| live(space, record))
                    .cloned();
                if stored.as_ref().and_then(Slot::live).is_some() && previous.is_none() {
                    // Replacing a key whose lease ran out: it expired first.
                    events.push(deletion(EventKind::Expire, key.clone(), revision));
                }
                let record = Record::after_put(previous.as_ref(), value.clone(), revision, *lease);
                let slot = Slot::Live(record.clone());
                write(
                    space,
                    key,
                    &slot,
                    stored.as_ref(),
                    revision,
                    events.len(),
                    &mut created,
                )?;
                events.push(Event {
                    kind: EventKind::Put,
                    key: key.clone(),
                    record,
                });
                OpResult::Put {
                    prev: previous.filter(|_| *prev).map(|record| KeyValue {
                        key: key.clone(),
                        record,
                    }),
                }
            }
            Op::Delete { range, prev } => {
                let values = if *prev {
                    Values::Decoded
                } else {
                    Values::Skipped
                };
                let doomed = stored_in(space, range, values)?;
                let mut deleted = 0;
                let mut kept = Vec::new();
                for (key, record) in doomed {
                    let expired = !live(space, &record);
                    let tombstone = Slot::Gone { revision, expired };
                    let stored = Slot::Live(record.clone());
                    write(
                        space,
                        &key,
                        &tombstone,
                        Some(&stored),
                        revision,
                        events.len(),
                        &mut created,
                    )?;
                    if expired {
                        // Already gone for readers: it expired, and this is
                        // where watchers learn it.
                        events.push(deletion(EventKind::Expire, key, revision));
                        continue;
                    }
                    deleted += 1;
                    events.push(deletion(EventKind::Delete, key.clone(), revision));
                    if *prev {
                        kept.push(KeyValue { key, record });
                    }
                }
                OpResult::Delete {
                    deleted,
                    prev: kept,
                }
            }
        };
        results.push(result);
    }
    keep_created(space, revision, created)?;
    Ok(Applied {
        result: TxnResult {
            succeeded,
            revision,
            results,
        },
        events,
    })
}

/// The keys of live lease `id` in `range`, in key order: at most `limit`,
/// and whether more follow. [`StoreError::LeaseNotFound`] if the lease
/// expired or never was.
pub(crate) fn lease_keys(
    space: &impl KeyspaceRead,
    id: LeaseId,
    range: &KeyRange,
    limit: usize,
) -> Result<(Vec<Bytes>, bool), StoreError> {
    if !space.leases().is_live(id) {
        return Err(StoreError::LeaseNotFound(id));
    }
    let mut keys = Vec::new();
    let mut more = false;
    space.lease_keys_in(id, range, &mut |key| {
        if keys.len() == limit {
            more = true;
            return ControlFlow::Break(());
        }
        keys.push(Bytes::copy_from_slice(key));
        ControlFlow::Continue(())
    })?;
    Ok((keys, more))
}

/// Every key attached to lease `id`, expired or not, from the backend's index.
fn all_lease_keys(space: &impl KeyspaceRead, id: LeaseId) -> Result<Vec<Bytes>, StoreError> {
    let mut keys = Vec::new();
    space.lease_keys_in(id, &KeyRange::prefix(Bytes::new()), &mut |key| {
        keys.push(Bytes::copy_from_slice(key));
        ControlFlow::Continue(())
    })?;
    Ok(keys)
}

/// Revokes lease `id` in `space` (revision `current`): deletes its keys,
/// reported as `kind` (`Expire` when it ran out, `Delete` when revoked), and
/// forgets it. Returns how many keys went, and the events.
pub(crate) fn revoke(
    space: &mut impl Keyspace,
    id: LeaseId,
    kind: EventKind,
    current: Revision,
) -> Result<(u64, Revision, Vec<Event>), StoreError> {
    if !space.lease_granted(id)? {
        return Err(StoreError::LeaseNotFound(id));
    }
    let mut events = Vec::new();
    let mut created = Vec::new();
    let revision = current + 1;
    for key in all_lease_keys(space, id)? {
        let stored = space.latest(&key)?;
        if stored
            .as_ref()
            .and_then(Slot::live)
            .is_some_and(|record| record.lease == id)
        {
            let tombstone = Slot::Gone {
                revision,
                expired: kind == EventKind::Expire,
            };
            write(
                space,
                &key,
                &tombstone,
                stored.as_ref(),
                revision,
                events.len(),
                &mut created,
            )?;
            events.push(deletion(kind, key, revision));
        }
    }
    keep_created(space, revision, created)?;
    space.remove_lease(id)?;
    let revision = if events.is_empty() { current } else { revision };
    Ok((events.len() as u64, revision, events))
}

fn deletion(kind: EventKind, key: Bytes, revision: Revision) -> Event {
    Event {
        kind,
        key,
        record: Record {
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        },
    }
}

/// Whether `ops` change anything in `space`: a put does, a delete only if its
/// range holds a stored key (live or expired: deleting an expired key is
/// when watchers learn of its expiry). Only a write takes a revision, as in
/// etcd: deleting nothing must not leave watchers a revision without events.
/// A delete is judged on the keys stored before the transaction: one that
/// follows a put in the same transaction is in a write already.
fn writes(space: &impl KeyspaceRead, ops: &[Op]) -> Result<bool, StoreError> {
    for op in ops {
        match op {
            Op::Get(_) => {}
            Op::Put { .. } => return Ok(true),
            Op::Delete { range, .. } => {
                let mut found = false;
                space.scan(range, Values::Skipped, &mut |_, slot| {
                    found = slot.live().is_some();
                    if found {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
                if found {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Every stored (live or expired) key and record of `range`.
fn stored_in(
    space: &impl KeyspaceRead,
    range: &KeyRange,
    values: Values,
) -> Result<Vec<(Bytes, Record)>, StoreError> {
    // A scan, for one key too: it honours `values` (a point read would copy
    // the value that a delete without `prev` never returns).
    let mut found = Vec::new();
    space.scan(range, values, &mut |key, slot| {
        if let Slot::Live(record) = slot {
            found.push((Bytes::copy_from_slice(key), record));
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Whether `compare` holds in `space`: for a range, for every live key of
/// it; a range without live keys compares as a missing key.
fn holds(space: &impl KeyspaceRead, compare: &Compare) -> Result<bool, StoreError> {
    if compare.range_end == RangeEnd::Single {
        let record = get_latest(space, &compare.key)?;
        return Ok(compares(compare, record.as_ref()));
    }
    let values = if matches!(compare.target, CompareTarget::Value(_)) {
        Values::Decoded
    } else {
        Values::Skipped
    };
    let mut any = false;
    let mut all = true;
    space.scan(&compare.range(), values, &mut |_, slot| {
        let Some(record) = slot.into_live().filter(|record| live(space, record)) else {
            return ControlFlow::Continue(());
        };
        any = true;
        if compares(compare, Some(&record)) {
            ControlFlow::Continue(())
        } else {
            all = false;
            ControlFlow::Break(())
        }
    })?;
    Ok(if any { all } else { compares(compare, None) })
}

/// Whether `compare` holds for `record` (`None`: the key does not exist).
fn compares(compare: &Compare, record: Option<&Record>) -> bool {
    let ordering = match (&compare.target, record) {
        (CompareTarget::Value(expected), Some(record)) => {
            record.value.as_ref().cmp(expected.as_ref())
        }
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::ModRevision(expected), _) => {
            record.map_or(0, |r| r.mod_revision).cmp(expected)
        }
        (CompareTarget::CreateRevision(expected), _) => {
            record.map_or(0, |r| r.create_revision).cmp(expected)
        }
        (CompareTarget::Version(expected), _) => record.map_or(0, |r| r.version).cmp(expected),
        (CompareTarget::Lease(expected), _) => record.map_or(0, |r| r.lease).cmp(expected),
    };
    match compare.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Less => ordering.is_lt(),
        CompareOp::Greater => ordering.is_gt(),
    }
}

/// Checks a compaction at `revision` in a store at `current` and records
/// it; the history below it is then dropped by [`compact_chunk`].
pub(crate) fn compact(
    space: &mut impl Keyspace,
    revision: Revision,
    current: Revision,
) -> Result<(), StoreError> {
    let compacted = space.compacted()?;
    if revision <= compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted,
        });
    }
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    space.set_compacted(revision)
}

/// The revision to compact at after a write, when at most `keep` revisions
/// of history are kept (0: no limit): once the history holds twice `keep`
/// revisions, back to `keep`, so a compaction happens once per `keep`
/// writes, not at every write.
pub(crate) fn retention_target(
    current: Revision,
    compacted: Revision,
    keep: u64,
) -> Option<Revision> {
    let oldest = compacted.max(1);
    (keep > 0 && current >= oldest.saturating_add(keep.saturating_mul(2))).then(|| current - keep)
}

/// Drops at most `max` history entries below the compacted revision, and
/// the tombstones of the keys deleted below it; returns whether that was
/// the last of them (etcd deletes in batches of 1,000 too, so that a large
/// compaction never holds the writer long).
pub(crate) fn compact_chunk(space: &mut impl Keyspace, max: usize) -> Result<bool, StoreError> {
    let below = space.compacted()?;
    // Whole revisions (a revision's created keys are one entry), about
    // `max` writes of them.
    let mut revisions: Vec<Revision> = Vec::new();
    let mut writes = 0usize;
    // The keys whose latest slot is a tombstone below it: only those are
    // copied (most writes compacted are of keys still live).
    let mut deleted: Vec<Bytes> = Vec::new();
    let mut done = true;
    let mut failed = None;
    let view = &*space;
    view.changes(0, &mut |revision, key, _| {
        if revision >= below {
            return ControlFlow::Break(());
        }
        if revisions.last() != Some(&revision) {
            if writes >= max {
                done = false;
                return ControlFlow::Break(());
            }
            revisions.push(revision);
        }
        writes += 1;
        match view.latest_as(key, Values::Skipped) {
            Ok(Some(Slot::Gone { revision, .. }))
                if revision < below && deleted.last().is_none_or(|last| last != key) =>
            {
                deleted.push(Bytes::copy_from_slice(key));
            }
            Ok(_) => {}
            Err(error) => {
                failed = Some(error);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(error) = failed {
        return Err(error);
    }
    for revision in revisions {
        space.forget(revision)?;
    }
    for key in deleted {
        space.remove(&key)?;
    }
    Ok(done)
}

/// The events of `range` from revision `from` to `to` (inclusive), in
/// order, read from the history: at least every event of the revisions
/// returned, and roughly at most `max` writes. Returns them with the
/// revision to go on from (`to + 1` once everything is read).
pub(crate) fn events(
    space: &impl KeyspaceRead,
    range: &KeyRange,
    from: Revision,
    to: Revision,
    max: usize,
) -> Result<(Vec<Event>, Revision), StoreError> {
    let compacted = space.compacted()?;
    if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted,
        });
    }
    // The writes of whole revisions, about `max` of them.
    let mut next = to + 1;
    let mut seen = 0usize;
    let mut last = None;
    let mut wanted: Vec<(Revision, u32, Bytes)> = Vec::new();
    space.changes(from, &mut |revision, key, seq| {
        if revision > to {
            return ControlFlow::Break(());
        }
        if seen >= max && last != Some(revision) {
            next = revision;
            return ControlFlow::Break(());
        }
        seen += 1;
        last = Some(revision);
        if range.contains(key) {
            wanted.push((revision, seq, Bytes::copy_from_slice(key)));
        }
        ControlFlow::Continue(())
    })?;
    // The slot each write left, found per key by one walk back from its
    // latest slot.
    let mut per_key: BTreeMap<Bytes, Vec<Revision>> = BTreeMap::new();
    for (revision, _, key) in &wanted {
        per_key.entry(key.clone()).or_default().push(*revision);
    }
    let mut written: BTreeMap<(Revision, Bytes), Slot> = BTreeMap::new();
    for (key, revisions) in per_key {
        let oldest = revisions.iter().copied().min().unwrap_or(from);
        let mut slot = space.latest(&key)?;
        while let Some(found) = slot {
            let revision = found.revision();
            if revision < oldest {
                break;
            }
            let before = space.replaced(&key, revision)?;
            if revisions.contains(&revision) {
                written.insert((revision, key.clone()), found);
            }
            slot = before;
        }
    }
    wanted.sort_by_key(|(revision, seq, _)| (*revision, *seq));
    let mut events = Vec::with_capacity(wanted.len());
    for (revision, _, key) in wanted {
        // A slot not found was compacted under the walk: the read starts over.
        let slot = written
            .remove(&(revision, key.clone()))
            .ok_or(StoreError::Compacted {
                requested: from,
                compacted: revision,
            })?;
        events.push(match slot {
            Slot::Live(record) => Event {
                kind: EventKind::Put,
                key,
                record,
            },
            Slot::Gone { expired, .. } => deletion(
                if expired {
                    EventKind::Expire
                } else {
                    EventKind::Delete
                },
                key,
                revision,
            ),
        });
    }
    Ok((events, next))
}
