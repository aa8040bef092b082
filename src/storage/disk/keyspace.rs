//! The database's tables seen as a [`KeyspaceRead`] (a redb read
//! transaction) or a [`Keyspace`] (a redb write transaction), so that
//! `storage::apply` can read and change them.
//!
//! `records` holds each key's latest slot (a record or a tombstone), so that
//! a read of the current state is one lookup, as before versions; `history`
//! maps the revision of a write (8 big-endian bytes) and its key to what the
//! write replaced (see `storage::apply`): in revision order, so a batch of
//! writes appends to the same few pages, compaction deletes from the front,
//! and a watch replays it in order. `created` maps a revision to the keys it
//! created, packed (`storage::created`): first writes replace nothing, so
//! they cost a key each, not an entry each. Two tables hold leases: `leases` (id →
//! TTL in milliseconds) and `lease_keys` (the id's 8 big-endian bytes
//! followed by a key → nothing), the index that finds a lease's keys when it
//! is revoked without scanning every record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::record_format::{self, META_COMPACTED, META_LOG_SEQ, META_REVISION};
use super::{META, RECORDS, storage_error};
use crate::storage::apply::{Changes, Kept, Keyspace, KeyspaceRead, Slot, Values};
use crate::storage::created;
use crate::storage::lease::Leases;
use crate::storage::ops::{KeyRange, LeaseId, RangeEnd, prefix_end};
use crate::storage::{Record, Revision, StoreError};

/// Lease id → TTL in milliseconds.
pub(super) const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
/// Lease id (8 bytes, big-endian) + key → nothing.
pub(super) const LEASE_KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("lease_keys");
/// Revision (8 bytes, big-endian) + key → what the write replaced.
pub(super) const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
/// Revision → the keys it created, packed.
pub(super) const CREATED: TableDefinition<u64, &[u8]> = TableDefinition::new("created");

type Bytes2Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Creates every table of a new database (redb creates tables on first open
/// in a write transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let _: Table<'_, &[u8], &[u8]> = txn.open_table(RECORDS).map_err(storage_error)?;
    txn.open_table(LEASES).map_err(storage_error)?;
    txn.open_table(LEASE_KEYS).map_err(storage_error)?;
    txn.open_table(HISTORY).map_err(storage_error)?;
    txn.open_table(CREATED).map_err(storage_error)?;
    Ok(())
}

/// Whether a table of the current layout is missing (a database written by
/// an earlier version): then [`create_tables`] must run.
pub(super) fn tables_missing(txn: &ReadTransaction) -> bool {
    txn.open_table(RECORDS).is_err()
        || txn.open_table(LEASES).is_err()
        || txn.open_table(LEASE_KEYS).is_err()
        || txn.open_table(HISTORY).is_err()
        || txn.open_table(CREATED).is_err()
}

fn lease_key(id: LeaseId, key: &[u8]) -> Vec<u8> {
    let mut composite = Vec::with_capacity(8 + key.len());
    composite.extend_from_slice(&id.to_be_bytes());
    composite.extend_from_slice(key);
    composite
}

fn get_slot(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    values: Values,
) -> Result<Option<Slot>, StoreError> {
    match table.get(key).map_err(storage_error)? {
        Some(stored) => Ok(Some(record_format::decode_slot(
            key,
            stored.value(),
            values,
        )?)),
        None => Ok(None),
    }
}

fn get_replaced(
    history: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    end: Revision,
) -> Result<Option<Slot>, StoreError> {
    match history
        .get(record_format::history_key(end, key).as_slice())
        .map_err(storage_error)?
    {
        Some(stored) => Ok(Some(record_format::decode_history(key, stored.value())?)),
        None => Ok(None),
    }
}

fn scan_slots(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    range: &KeyRange,
    values: Values,
    visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let start = Bound::Included(range.start.as_ref());
    let end = match &range.end {
        RangeEnd::Single => Bound::Included(range.start.as_ref()),
        RangeEnd::Before(end) if end.as_ref() <= range.start.as_ref() => return Ok(()),
        RangeEnd::Before(end) => Bound::Excluded(end.as_ref()),
        RangeEnd::Unbounded => Bound::Unbounded,
    };
    for entry in table.range::<&[u8]>((start, end)).map_err(storage_error)? {
        let (key, value) = entry.map_err(storage_error)?;
        let slot = record_format::decode_slot(key.value(), value.value(), values)?;
        if visit(key.value(), slot).is_break() {
            break;
        }
    }
    Ok(())
}

/// [`KeyspaceRead::lease_keys_in`] over a `lease_keys` table.
fn scan_lease_keys(
    table: &impl ReadableTable<&'static [u8], ()>,
    id: LeaseId,
    range: &KeyRange,
    visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let Some((_, end)) = range.bounds() else {
        return Ok(());
    };
    let start = lease_key(id, &range.start);
    let end = match end {
        Bound::Included(key) => Bound::Included(lease_key(id, key)),
        Bound::Excluded(key) => Bound::Excluded(lease_key(id, key)),
        // The end of this lease's rows: the next id's first.
        Bound::Unbounded => match prefix_end(&id.to_be_bytes()) {
            Some(next) => Bound::Excluded(next.to_vec()),
            None => Bound::Unbounded,
        },
    };
    let bounds = (
        Bound::Included(start.as_slice()),
        end.as_ref().map(Vec::as_slice),
    );
    for entry in table.range::<&[u8]>(bounds).map_err(storage_error)? {
        let (composite, _) = entry.map_err(storage_error)?;
        if visit(&composite.value()[8..]).is_break() {
            break;
        }
    }
    Ok(())
}

fn scan_changes(
    history: &impl ReadableTable<&'static [u8], &'static [u8]>,
    created: &impl ReadableTable<u64, &'static [u8]>,
    from: Revision,
    visit: &mut Changes<'_>,
) -> Result<(), StoreError> {
    let start = from.to_be_bytes();
    let replacing = history
        .range::<&[u8]>(start.as_slice()..)
        .map_err(storage_error)?
        .map(|entry| {
            let (composite, value) = entry.map_err(storage_error)?;
            let (revision, key) = record_format::split_history_key(composite.value())?;
            let seq = record_format::history_seq(value.value());
            Ok((revision, Bytes::copy_from_slice(key), seq))
        });
    let creating = created
        .range(from..)
        .map_err(storage_error)?
        .flat_map(|entry| {
            let unpacked = entry.map_err(storage_error).map(|(revision, packed)| {
                created::unpack(revision.value(), Bytes::copy_from_slice(packed.value()))
            });
            let (unpacked, failed) = match unpacked {
                Ok(unpacked) => (Some(unpacked), None),
                Err(error) => (None, Some(Err(error))),
            };
            unpacked.into_iter().flatten().chain(failed)
        });
    created::merge(replacing, creating, visit)
}

fn read_revision(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<Revision>, StoreError> {
    match meta.get(name).map_err(storage_error)? {
        Some(stored) => Ok(Some(record_format::decode_revision(stored.value())?)),
        None => Ok(None),
    }
}

/// A consistent snapshot: one redb read transaction, its revision, and
/// its tables as they are opened.
///
/// `records` and `meta` are opened with the snapshot; `history` and
/// `created` when first read (a read at a past revision, a watch's
/// replay): opening a table is a lookup in redb's table tree, about 0.4 µs
/// each, and point reads at the latest revision, the commonest request,
/// need neither. The reads that start between two commits share one
/// (`DbHandle::snapshot`), so that a point read pays for none of this.
pub(super) struct Snapshot {
    records: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    history: OnceLock<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    created: OnceLock<redb::ReadOnlyTable<u64, &'static [u8]>>,
    meta: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    revision: Option<Revision>,
    txn: ReadTransaction,
    /// The database the transaction reads, held so that a reopen or the
    /// close waits for this snapshot as for any reader (dropped last).
    _db: Option<Arc<Database>>,
}

impl Snapshot {
    /// The snapshot of `txn`, a read transaction of `db` (when given, held
    /// as long as the snapshot).
    pub(super) fn open(
        txn: ReadTransaction,
        db: Option<Arc<Database>>,
    ) -> Result<Snapshot, StoreError> {
        let meta = txn.open_table(META).map_err(storage_error)?;
        Ok(Snapshot {
            records: txn.open_table(RECORDS).map_err(storage_error)?,
            history: OnceLock::new(),
            created: OnceLock::new(),
            revision: read_revision(&meta, META_REVISION)?,
            meta,
            txn,
            _db: db,
        })
    }
}

impl Snapshot {
    /// The keys in the snapshot, tombstones included.
    pub(super) fn slots(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        self.records.len().map_err(storage_error)
    }
}

/// The last log record applied (see `wal`) in the database `txn` reads.
pub(super) fn log_seq(txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(storage_error)?;
    Ok(read_revision(&meta, META_LOG_SEQ)?.unwrap_or(0))
}

/// The table in `cell`, opened from `txn` the first time.
fn opened<'c, K: redb::Key + 'static, V: redb::Value + 'static>(
    cell: &'c OnceLock<redb::ReadOnlyTable<K, V>>,
    txn: &ReadTransaction,
    definition: TableDefinition<K, V>,
) -> Result<&'c redb::ReadOnlyTable<K, V>, StoreError> {
    if let Some(table) = cell.get() {
        return Ok(table);
    }
    let table = txn.open_table(definition).map_err(storage_error)?;
    Ok(cell.get_or_init(|| table))
}

/// A [`Snapshot`] seen as a [`KeyspaceRead`], with the store's leases.
pub(super) struct ReadView<'a> {
    snapshot: Arc<Snapshot>,
    leases: &'a Leases,
}

impl<'a> ReadView<'a> {
    /// A view of a snapshot of its own, over `txn`.
    pub(super) fn new(
        txn: ReadTransaction,
        leases: &'a Leases,
    ) -> Result<ReadView<'a>, StoreError> {
        Ok(ReadView::of(Arc::new(Snapshot::open(txn, None)?), leases))
    }

    /// A view of `snapshot`, which other reads may share.
    pub(super) fn of(snapshot: Arc<Snapshot>, leases: &'a Leases) -> ReadView<'a> {
        ReadView { snapshot, leases }
    }

    /// The store's revision in this snapshot.
    pub(super) fn revision(&self) -> Result<Revision, StoreError> {
        self.snapshot
            .revision
            .ok_or_else(|| StoreError::Internal("the database has no revision".into()))
    }

    /// Every granted lease and its TTL.
    pub(super) fn granted_leases(&self) -> Result<Vec<(LeaseId, Duration)>, StoreError> {
        let leases = self
            .snapshot
            .txn
            .open_table(LEASES)
            .map_err(storage_error)?;
        let mut granted = Vec::new();
        for entry in leases.iter().map_err(storage_error)? {
            let (id, ttl) = entry.map_err(storage_error)?;
            granted.push((id.value(), Duration::from_millis(ttl.value())));
        }
        Ok(granted)
    }
}

impl KeyspaceRead for ReadView<'_> {
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError> {
        get_slot(&self.snapshot.records, key, values)
    }

    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError> {
        get_replaced(
            opened(&self.snapshot.history, &self.snapshot.txn, HISTORY)?,
            key,
            end,
        )
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        scan_slots(&self.snapshot.records, range, values, visit)
    }

    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError> {
        scan_changes(
            opened(&self.snapshot.history, &self.snapshot.txn, HISTORY)?,
            opened(&self.snapshot.created, &self.snapshot.txn, CREATED)?,
            from,
            visit,
        )
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        Ok(read_revision(&self.snapshot.meta, META_COMPACTED)?.unwrap_or(0))
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
        // Opened here, not with the view: point reads never need it.
        let table = self
            .snapshot
            .txn
            .open_table(LEASE_KEYS)
            .map_err(storage_error)?;
        scan_lease_keys(&table, id, range, visit)
    }
}

/// How a write transaction tells whether a lease is live (see
/// `KeyspaceRead::lease_live`): a lease's liveness depends on the clock, and
/// a transaction replayed from the log must decide as it did at first.
pub(super) enum Liveness {
    /// By the leases' deadlines; the first answer for each lease holds for
    /// the rest of the transaction, and the leases found expired are kept
    /// for the log ([`WriteView::expired`]).
    Clock(RefCell<BTreeMap<LeaseId, bool>>),
    /// As the log says: the leases in the set were expired, all others live.
    Replayed(BTreeSet<LeaseId>),
}

/// The tables of one write transaction.
pub(super) struct WriteView<'txn> {
    liveness: Liveness,
    records: Table<'txn, &'static [u8], &'static [u8]>,
    history: Table<'txn, &'static [u8], &'static [u8]>,
    created: Table<'txn, u64, &'static [u8]>,
    leases_table: Table<'txn, i64, u64>,
    lease_keys: Table<'txn, &'static [u8], ()>,
    meta: Table<'txn, &'static str, &'static [u8]>,
    leases: &'txn Leases,
}

impl<'txn> WriteView<'txn> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        leases: &'txn Leases,
    ) -> Result<Self, StoreError> {
        let records: Table<'txn, &'static [u8], &'static [u8]> = txn
            .open_table(RECORDS as Bytes2Bytes)
            .map_err(storage_error)?;
        Ok(WriteView {
            liveness: Liveness::Clock(RefCell::default()),
            records,
            history: txn.open_table(HISTORY).map_err(storage_error)?,
            created: txn.open_table(CREATED).map_err(storage_error)?,
            leases_table: txn.open_table(LEASES).map_err(storage_error)?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(storage_error)?,
            meta: txn.open_table(META).map_err(storage_error)?,
            leases,
        })
    }

    /// Replays a transaction: leases are live unless in `expired`.
    pub(super) fn replaying(mut self, expired: &[LeaseId]) -> Self {
        self.liveness = Liveness::Replayed(expired.iter().copied().collect());
        self
    }

    /// The leases this transaction found expired (for its log record).
    pub(super) fn expired(&self) -> Vec<LeaseId> {
        match &self.liveness {
            Liveness::Clock(seen) => seen
                .borrow()
                .iter()
                .filter(|(_, live)| !**live)
                .map(|(id, _)| *id)
                .collect(),
            Liveness::Replayed(expired) => expired.iter().copied().collect(),
        }
    }

    /// Records the last log record applied (once per commit with a record).
    pub(super) fn set_log_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        self.meta
            .insert(META_LOG_SEQ, seq.to_le_bytes().as_slice())
            .map_err(storage_error)?;
        Ok(())
    }

    /// Records the store's revision (once per commit).
    pub(super) fn set_revision(&mut self, revision: Revision) -> Result<(), StoreError> {
        self.meta
            .insert(META_REVISION, revision.to_le_bytes().as_slice())
            .map_err(storage_error)?;
        Ok(())
    }

    /// Stores a new lease; `false` if the id is taken.
    pub(super) fn grant(&mut self, id: LeaseId, ttl: Duration) -> Result<bool, StoreError> {
        if self.leases_table.get(id).map_err(storage_error)?.is_some() {
            return Ok(false);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.leases_table
            .insert(id, ttl_ms)
            .map_err(storage_error)?;
        Ok(true)
    }

    /// Stores `record` under `key` as its latest slot, without history (a
    /// restore, which starts a store's history).
    pub(super) fn restore(&mut self, key: &Bytes, record: &Record) -> Result<(), StoreError> {
        self.put(key, &Slot::Live(record.clone()), None, None)
    }
}

impl KeyspaceRead for WriteView<'_> {
    fn latest_as(&self, key: &[u8], values: Values) -> Result<Option<Slot>, StoreError> {
        get_slot(&self.records, key, values)
    }

    fn replaced(&self, key: &[u8], end: Revision) -> Result<Option<Slot>, StoreError> {
        get_replaced(&self.history, key, end)
    }

    fn scan(
        &self,
        range: &KeyRange,
        values: Values,
        visit: &mut dyn FnMut(&[u8], Slot) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        scan_slots(&self.records, range, values, visit)
    }

    fn changes(&self, from: Revision, visit: &mut Changes<'_>) -> Result<(), StoreError> {
        scan_changes(&self.history, &self.created, from, visit)
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        Ok(read_revision(&self.meta, META_COMPACTED)?.unwrap_or(0))
    }

    fn leases(&self) -> &Leases {
        self.leases
    }

    fn lease_live(&self, id: LeaseId) -> bool {
        match &self.liveness {
            Liveness::Clock(seen) => *seen
                .borrow_mut()
                .entry(id)
                .or_insert_with(|| self.leases.is_live(id)),
            Liveness::Replayed(expired) => !expired.contains(&id),
        }
    }

    fn lease_keys_in(
        &self,
        id: LeaseId,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        scan_lease_keys(&self.lease_keys, id, range, visit)
    }
}

impl Keyspace for WriteView<'_> {
    fn put(
        &mut self,
        key: &Bytes,
        slot: &Slot,
        previous: Option<&Slot>,
        kept: Option<Kept>,
    ) -> Result<(), StoreError> {
        let old_lease = previous.and_then(Slot::live).map_or(0, |p| p.lease);
        let new_lease = slot.live().map_or(0, |r| r.lease);
        if old_lease != 0 && old_lease != new_lease {
            self.lease_keys
                .remove(lease_key(old_lease, key).as_slice())
                .map_err(storage_error)?;
        }
        // An overwrite under the same lease finds its row already there.
        if new_lease != 0 && old_lease != new_lease {
            self.lease_keys
                .insert(lease_key(new_lease, key).as_slice(), ())
                .map_err(storage_error)?;
        }
        let replaced = self
            .records
            .insert(key.as_ref(), record_format::encode_slot(slot).as_slice())
            .map_err(storage_error)?;
        if let Some(Kept { end, seq }) = kept {
            // The stored bytes move as they are: no decoding, one copy, and
            // no second lookup (the insert hands back what it replaced).
            let replaced = replaced.as_ref().map(|stored| stored.value());
            let mut entry = self
                .history
                .insert_reserve(
                    record_format::history_key(end, key).as_slice(),
                    record_format::history_entry_len(replaced),
                )
                .map_err(storage_error)?;
            record_format::write_history_entry(entry.as_mut(), seq, replaced);
        }
        Ok(())
    }

    fn keep_created(&mut self, end: Revision, packed: Vec<u8>) -> Result<(), StoreError> {
        self.created
            .insert(end, packed.as_slice())
            .map_err(storage_error)?;
        Ok(())
    }

    fn forget(&mut self, end: Revision) -> Result<(), StoreError> {
        let from = end.to_be_bytes();
        let to = end.saturating_add(1).to_be_bytes();
        self.history
            .retain_in::<&[u8], _>(from.as_slice()..to.as_slice(), |_, _| false)
            .map_err(storage_error)?;
        self.created.remove(end).map_err(storage_error)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.records.remove(key).map_err(storage_error)?;
        Ok(())
    }

    fn set_compacted(&mut self, revision: Revision) -> Result<(), StoreError> {
        self.meta
            .insert(META_COMPACTED, revision.to_le_bytes().as_slice())
            .map_err(storage_error)?;
        Ok(())
    }

    fn lease_granted(&self, id: LeaseId) -> Result<bool, StoreError> {
        Ok(self.leases_table.get(id).map_err(storage_error)?.is_some())
    }

    fn remove_lease(&mut self, id: LeaseId) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        let every_key = KeyRange::prefix(Bytes::new());
        scan_lease_keys(&self.lease_keys, id, &every_key, &mut |key| {
            rows.push(lease_key(id, key));
            ControlFlow::Continue(())
        })?;
        for row in rows {
            self.lease_keys
                .remove(row.as_slice())
                .map_err(storage_error)?;
        }
        self.leases_table.remove(id).map_err(storage_error)?;
        Ok(())
    }
}
