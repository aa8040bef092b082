//! The semantics of reads and transactions, once, for every backend.
//!
//! A backend exposes its data as a [`KeyspaceRead`] (a consistent view: a
//! read lock, a read transaction) or a [`Keyspace`] (the same, writable: a
//! write lock, a write transaction), and calls [`range`], [`apply`] or
//! [`revoke`]. What a compare means, which revision a write gets, how
//! `version` counts, what a delete returns, which events a watcher sees and
//! which keys count as expired is decided here and nowhere else, so the
//! backends cannot drift apart (the conformance suite checks that they don't).

use std::ops::ControlFlow;

use bytes::Bytes;

use super::lease::Leases;
use super::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, LeaseId, Op, OpResult,
    RangeEnd, RangeQuery, RangeResult, Txn, TxnResult,
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

/// A consistent, read-only view of a backend's keys.
pub(crate) trait KeyspaceRead {
    /// The stored record of `key`, expired or not.
    fn get_raw(&self, key: &[u8]) -> Result<Option<Record>, StoreError>;

    /// Calls `visit` with every stored key of `range` in key order, until it
    /// breaks; with [`Values::Skipped`], every record's value is empty.
    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// The deadlines of the leases.
    fn leases(&self) -> &Leases;
}

/// A writable view of a backend's keys, for the length of one transaction.
pub(crate) trait Keyspace: KeyspaceRead {
    /// Stores `record` under `key`; `previous` is what it replaces (stored,
    /// possibly expired), so the backend can keep its lease index.
    fn put(
        &mut self,
        key: &Bytes,
        record: &Record,
        previous: Option<&Record>,
    ) -> Result<(), StoreError>;

    /// Removes `key`, which holds `previous`.
    fn delete(&mut self, key: &[u8], previous: &Record) -> Result<(), StoreError>;

    /// Whether lease `id` is granted (stored), expired or not.
    fn lease_granted(&self, id: LeaseId) -> Result<bool, StoreError>;

    /// The keys attached to lease `id`.
    fn lease_keys(&self, id: LeaseId) -> Result<Vec<Bytes>, StoreError>;

    /// Forgets lease `id` (its keys are already deleted).
    fn remove_lease(&mut self, id: LeaseId) -> Result<(), StoreError>;
}

/// A read-only view used where a [`Keyspace`] is expected: for transactions
/// without writes, which never call the writing methods.
pub(crate) struct ReadOnly<V>(pub(crate) V);

impl<V: KeyspaceRead> KeyspaceRead for ReadOnly<V> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.0.get_raw(key)
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.0.scan(range, values, visit)
    }

    fn leases(&self) -> &Leases {
        self.0.leases()
    }
}

impl<V: KeyspaceRead> Keyspace for ReadOnly<V> {
    fn put(&mut self, _: &Bytes, _: &Record, _: Option<&Record>) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn delete(&mut self, _: &[u8], _: &Record) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn lease_granted(&self, _: LeaseId) -> Result<bool, StoreError> {
        Err(read_only())
    }

    fn lease_keys(&self, _: LeaseId) -> Result<Vec<Bytes>, StoreError> {
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
    !space.leases().is_expired(record.lease)
}

/// The live record of `key`.
pub(crate) fn get(space: &impl KeyspaceRead, key: &[u8]) -> Result<Option<Record>, StoreError> {
    Ok(space.get_raw(key)?.filter(|record| live(space, record)))
}

/// Answers a range query from `space`.
pub(crate) fn range(
    space: &impl KeyspaceRead,
    query: &RangeQuery,
    revision: Revision,
) -> Result<RangeResult, StoreError> {
    let mut result = RangeResult {
        revision,
        ..RangeResult::default()
    };
    if let RangeEnd::Single = query.range.end {
        if let Some(record) = get(space, &query.range.start)? {
            result.count = 1;
            if !query.count_only {
                result
                    .kvs
                    .push(shaped(query, query.range.start.clone(), record));
            }
        }
        return Ok(result);
    }
    // Values are copied only for the keys that are answered: a count, a
    // keys-only listing and the keys past a page's limit (counted, as etcd
    // does, so that `count` is the whole range's) need none.
    let values = if query.count_only || query.keys_only {
        Values::Skipped
    } else {
        Values::Decoded
    };
    let mut rest = None;
    space.scan(&query.range, values, &mut |key, record| {
        if !live(space, &record) {
            return ControlFlow::Continue(());
        }
        if !query.count_only && query.limit > 0 && result.kvs.len() == query.limit {
            // The page is full, and this key is past it.
            rest = Some(KeyRange {
                start: Bytes::copy_from_slice(key),
                end: query.range.end.clone(),
            });
            return ControlFlow::Break(());
        }
        result.count += 1;
        if !query.count_only {
            result
                .kvs
                .push(shaped(query, Bytes::copy_from_slice(key), record));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(rest) = rest {
        result.more = true;
        space.scan(&rest, Values::Skipped, &mut |_, record| {
            if live(space, &record) {
                result.count += 1;
            }
            ControlFlow::Continue(())
        })?;
    }
    Ok(result)
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
    // Check leases before changing anything, so a transaction that fails
    // has no effect (backends apply many transactions in one commit).
    for op in ops {
        if let Op::Put { lease, .. } = op
            && *lease != 0
            && !(space.lease_granted(*lease)? && space.leases().is_live(*lease))
        {
            return Err(StoreError::LeaseNotFound(*lease));
        }
    }
    let revision = if writes(space, ops)? {
        current + 1
    } else {
        current
    };
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            Op::Get(query) => OpResult::Get(range(space, query, revision)?),
            Op::Put {
                key,
                value,
                lease,
                prev,
            } => {
                let stored = space.get_raw(key)?;
                let previous = stored.clone().filter(|record| live(space, record));
                if stored.is_some() && previous.is_none() {
                    // Replacing a key whose lease ran out: it expired first.
                    events.push(deletion(EventKind::Expire, key.clone(), revision));
                }
                let record = Record::after_put(previous.as_ref(), value.clone(), revision, *lease);
                space.put(key, &record, stored.as_ref())?;
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
                    space.delete(&key, &record)?;
                    if !live(space, &record) {
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
    Ok(Applied {
        result: TxnResult {
            succeeded,
            revision,
            results,
        },
        events,
    })
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
    let revision = current + 1;
    for key in space.lease_keys(id)? {
        if let Some(record) = space.get_raw(&key)?.filter(|record| record.lease == id) {
            space.delete(&key, &record)?;
            events.push(deletion(kind, key, revision));
        }
    }
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
                space.scan(range, Values::Skipped, &mut |_, _| {
                    found = true;
                    ControlFlow::Break(())
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
    space.scan(range, values, &mut |key, record| {
        found.push((Bytes::copy_from_slice(key), record));
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Whether `compare` holds in `space`: for a range, for every live key of
/// it; a range without live keys compares as a missing key.
fn holds(space: &impl KeyspaceRead, compare: &Compare) -> Result<bool, StoreError> {
    if compare.range_end == RangeEnd::Single {
        let record = get(space, &compare.key)?;
        return Ok(compares(compare, record.as_ref()));
    }
    let values = if matches!(compare.target, CompareTarget::Value(_)) {
        Values::Decoded
    } else {
        Values::Skipped
    };
    let mut any = false;
    let mut all = true;
    space.scan(&compare.range(), values, &mut |_, record| {
        if !live(space, &record) {
            return ControlFlow::Continue(());
        }
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
