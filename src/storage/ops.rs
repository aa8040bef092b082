//! The requests and answers of the full key/value API, as the storage layer
//! sees them: key ranges, range queries, compares, and transactions.
//!
//! Every write is a [`Txn`]: a plain put is a transaction with one operation
//! and no compares, compare-and-set one with a compare, a batch of puts one
//! with many operations. Backends therefore implement one write path, and its
//! semantics live in one place (`storage::apply`).

use std::ops::Bound;

use bytes::Bytes;

use super::{Record, Revision};

/// Keys from `start` to `end`: one key, a half-open interval, or everything
/// from `start` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key.
    pub start: Bytes,
    /// Where the range stops.
    pub end: RangeEnd,
}

/// A [`KeyRange`] as the bounds of an ordered map's `range`.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The end of a [`KeyRange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    /// Only the key `start` itself.
    Single,
    /// Every key `k` with `start <= k < end`.
    Before(Bytes),
    /// Every key from `start` on.
    Unbounded,
}

impl KeyRange {
    /// Just `key`.
    pub fn key(key: impl Into<Bytes>) -> KeyRange {
        KeyRange {
            start: key.into(),
            end: RangeEnd::Single,
        }
    }

    /// Every key that starts with `prefix` (everything for an empty prefix).
    pub fn prefix(prefix: impl Into<Bytes>) -> KeyRange {
        let start: Bytes = prefix.into();
        let end = match prefix_end(&start) {
            Some(end) => RangeEnd::Before(end),
            None => RangeEnd::Unbounded,
        };
        KeyRange { start, end }
    }

    /// Keys from `start` (inclusive) to `end` (exclusive).
    pub fn between(start: impl Into<Bytes>, end: impl Into<Bytes>) -> KeyRange {
        KeyRange {
            start: start.into(),
            end: RangeEnd::Before(end.into()),
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_ref(),
            RangeEnd::Before(end) => self.start.as_ref() <= key && key < end.as_ref(),
            RangeEnd::Unbounded => self.start.as_ref() <= key,
        }
    }

    /// The range as the bounds of an ordered map's `range`, or `None` if it
    /// holds no key (its end at or before its start).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'_>> {
        let end = match &self.end {
            RangeEnd::Single => Bound::Included(self.start.as_ref()),
            RangeEnd::Before(end) if end.as_ref() <= self.start.as_ref() => return None,
            RangeEnd::Before(end) => Bound::Excluded(end.as_ref()),
            RangeEnd::Unbounded => Bound::Unbounded,
        };
        Some((Bound::Included(self.start.as_ref()), end))
    }

    /// The same range, starting at `start` instead (for the next page).
    pub fn resumed_at(&self, start: Bytes) -> KeyRange {
        KeyRange {
            start,
            end: self.end.clone(),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` if there is none (an empty prefix, or one of only `0xff` bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(Bytes::from(end));
        }
    }
    None
}

/// A read of a range of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeQuery {
    /// Which keys.
    pub range: KeyRange,
    /// At most this many records in the answer; 0 means no limit.
    pub limit: usize,
    /// Leave values out (records carry an empty value).
    pub keys_only: bool,
    /// Only count: the answer has no records.
    pub count_only: bool,
    /// Also count the keys past the page's `limit` (etcd's `count` always
    /// does): without it, a page that stops at its limit counts only the keys
    /// it returns, and the scan stops there.
    pub count_all: bool,
    /// The revision to read at, as etcd's `RangeOptions{Rev}`: 0 for the
    /// current one. Below the compacted revision the read fails with
    /// [`StoreError::Compacted`](super::StoreError::Compacted), above the
    /// current one with
    /// [`StoreError::FutureRevision`](super::StoreError::FutureRevision).
    pub revision: Revision,
    /// At most about this many bytes of records in the answer
    /// (`--max-range-page-bytes`; see [`KeyValue::page_bytes`]); 0 means no
    /// bound. A page that stops at it says `more`, and holds at least one
    /// record, however large.
    pub max_bytes: usize,
    /// For a read that must take its whole range before it can answer
    /// (etcd's sorted or filtered Range, which `etcd_api` sorts and
    /// filters): the most bytes of records (as [`KeyValue::page_bytes`]
    /// counts them) it may read; a range holding more is refused with
    /// [`StoreError::WholeReadTooLarge`](super::StoreError::WholeReadTooLarge),
    /// and a transaction reading it has no effect. 0 means no cap.
    pub whole_max_bytes: usize,
}

impl RangeQuery {
    /// Every record of `range`, at the current revision.
    pub fn all(range: KeyRange) -> RangeQuery {
        RangeQuery {
            range,
            limit: 0,
            keys_only: false,
            count_only: false,
            count_all: true,
            revision: 0,
            max_bytes: 0,
            whole_max_bytes: 0,
        }
    }

    /// Whether this is a whole read capped by
    /// [`whole_max_bytes`](RangeQuery::whole_max_bytes) (a count holds no
    /// records, and is not capped).
    pub fn is_capped_whole(&self) -> bool {
        self.whole_max_bytes > 0 && !self.count_only
    }

    /// Refuses a capped whole read that reached `bytes`, past its cap.
    pub fn check_whole(&self, bytes: usize) -> Result<(), super::StoreError> {
        if self.is_capped_whole() && bytes > self.whole_max_bytes {
            return Err(super::StoreError::WholeReadTooLarge(self.whole_max_bytes));
        }
        Ok(())
    }

    /// The same query at `revision` (0: the current one).
    pub fn at(mut self, revision: Revision) -> RangeQuery {
        self.revision = revision;
        self
    }

    /// The same query after earlier Ranges of its transaction answered
    /// `spent` bytes: the transaction's Ranges share one byte bound
    /// (`--max-range-page-bytes`), each answering at least one record.
    pub fn after_spent(&self, spent: usize) -> RangeQuery {
        let mut query = self.clone();
        if query.max_bytes > 0 {
            query.max_bytes = query.max_bytes.saturating_sub(spent).max(1);
        }
        query
    }
}

impl RangeResult {
    /// The bytes its records count for against a byte bound.
    pub fn page_bytes(&self) -> usize {
        self.kvs.iter().map(KeyValue::page_bytes).sum()
    }
}

/// A key and its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// What it holds.
    pub record: Record,
}

/// What a record costs in an answer besides its key and value: its four
/// numbers and their framing, at most (every front end's encoding of a
/// record fits in it).
pub const RECORD_OVERHEAD_BYTES: usize = 64;

/// The bytes a record of a `key_len`-byte key and a `value_len`-byte value
/// counts for against a page's byte bound.
pub fn page_bytes(key_len: usize, value_len: usize) -> usize {
    key_len
        .saturating_add(value_len)
        .saturating_add(RECORD_OVERHEAD_BYTES)
}

impl KeyValue {
    /// The bytes this record counts for against a page's byte bound.
    pub fn page_bytes(&self) -> usize {
        page_bytes(self.key.len(), self.record.value.len())
    }
}

/// The answer to a [`RangeQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The records, sorted by key, at most `limit` of them.
    pub kvs: Vec<KeyValue>,
    /// Whether the range holds more keys than were returned.
    pub more: bool,
    /// How many keys the whole range holds (with `count_all` or
    /// `count_only`; otherwise how many this page returned).
    pub count: u64,
    /// The revision the answer reflects: the one asked for, or the store's
    /// current one.
    pub revision: Revision,
}

impl RangeResult {
    /// The answer cut after the records that fit in `max_bytes` (0: no
    /// bound), at least one kept, saying `more` if any were cut. For a
    /// backend or a front end that gets its records whole (etcd's answer, a
    /// sorted page); `storage::apply` stops its scan at the bound instead.
    /// `count_all` says whether `count` is the whole range's, which a cut
    /// leaves alone; otherwise it is the page's.
    pub fn bounded(mut self, max_bytes: usize, count_all: bool) -> RangeResult {
        if max_bytes == 0 {
            return self;
        }
        let mut bytes = 0usize;
        let fits = self
            .kvs
            .iter()
            .position(|kv| {
                bytes = bytes.saturating_add(kv.page_bytes());
                bytes > max_bytes
            })
            .map_or(self.kvs.len(), |over| over.max(1));
        if fits < self.kvs.len() {
            self.kvs.truncate(fits);
            self.more = true;
            if !count_all {
                self.count = fits as u64;
            }
        }
        self
    }
}

/// A condition on one key, or on every key of a range, checked at the
/// start of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key (the first key, for a range).
    pub key: Bytes,
    /// [`RangeEnd::Single`] for the key alone; otherwise the compare holds
    /// if it holds for every key of the range, and a range without keys
    /// compares as a missing key (etcd's rule).
    pub range_end: RangeEnd,
    /// What of it to compare.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
}

impl Compare {
    /// A compare on `key` alone.
    pub fn key(key: Bytes, target: CompareTarget, op: CompareOp) -> Compare {
        Compare {
            key,
            range_end: RangeEnd::Single,
            target,
            op,
        }
    }

    /// The keys the compare looks at.
    pub fn range(&self) -> KeyRange {
        KeyRange {
            start: self.key.clone(),
            end: self.range_end.clone(),
        }
    }
}

/// The part of a key's state a [`Compare`] looks at, with the value to
/// compare it against. A missing key has revisions and version 0, and no
/// value: every value compare on it is false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value.
    Value(Bytes),
    /// The revision of the last write (0: the key does not exist).
    ModRevision(Revision),
    /// The revision that created the key (0: the key does not exist).
    CreateRevision(Revision),
    /// The number of puts since creation (0: the key does not exist).
    Version(u64),
    /// The lease the key is attached to (0: none, or the key does not
    /// exist), as etcd's `LEASE` compare target.
    Lease(LeaseId),
}

/// How a [`Compare`] compares: `actual <op> expected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Less than.
    Less,
    /// Greater than.
    Greater,
}

/// One operation of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a range.
    Get(RangeQuery),
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// The lease the key is attached to (0: none); the key is deleted
        /// when the lease expires or is revoked.
        lease: LeaseId,
        /// Return the record the put replaced.
        prev: bool,
    },
    /// Delete every key of a range.
    Delete {
        /// Which keys.
        range: KeyRange,
        /// Return the records deleted.
        prev: bool,
    },
}

impl Op {
    /// Whether the operation may change data (a delete changes nothing if
    /// its range holds no key: then it is no write, see `storage::apply`).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Get(_))
    }
}

/// The answer to one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// What the range held.
    Get(RangeResult),
    /// A put happened.
    Put {
        /// The key and the record it replaced, if asked for and if there
        /// was one.
        prev: Option<KeyValue>,
    },
    /// A delete happened.
    Delete {
        /// How many keys it deleted.
        deleted: u64,
        /// The records deleted, if asked for.
        prev: Vec<KeyValue>,
    },
}

/// Compares, then the operations of the branch they choose, applied
/// atomically: no reader sees part of a transaction, and the compares see
/// the state the operations apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `success` to run; otherwise `failure` runs.
    pub compares: Vec<Compare>,
    /// The operations if every compare holds (or there are none).
    pub success: Vec<Op>,
    /// The operations if a compare fails.
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction of `ops` that always runs.
    pub fn of(ops: Vec<Op>) -> Txn {
        Txn {
            compares: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }

    /// Whether either branch may change data.
    pub fn writes(&self) -> bool {
        self.success.iter().chain(&self.failure).any(Op::writes)
    }
}

/// The answer to a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (and `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction: the revision of its
    /// writes, if it wrote anything.
    pub revision: Revision,
    /// One answer per operation of the branch that ran.
    pub results: Vec<OpResult>,
}

/// A lease's id; 0 means "no lease".
pub type LeaseId = i64;

/// What happened to a key, as a watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was put.
    Put,
    /// The key was deleted by a request.
    Delete,
    /// The key was deleted because its lease expired.
    Expire,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key.
    pub key: Bytes,
    /// For a put, the new record; for a delete or expiry, an empty value,
    /// version 0, and `mod_revision` the revision of the deletion.
    pub record: Record,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.record.mod_revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"a"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"a\xff"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn ranges_contain_what_they_say() {
        let prefix = KeyRange::prefix(Bytes::from_static(b"user/"));
        assert!(prefix.contains(b"user/"));
        assert!(prefix.contains(b"user/\xff\xff"));
        assert!(!prefix.contains(b"user0"));
        assert!(!prefix.contains(b"use"));
        let everything = KeyRange::prefix(Bytes::new());
        assert!(everything.contains(b"") && everything.contains(b"\xff\xff\xff"));
        assert!(KeyRange::key(Bytes::from_static(b"k")).contains(b"k"));
        assert!(!KeyRange::key(Bytes::from_static(b"k")).contains(b"k2"));
        let between = KeyRange::between(Bytes::from_static(b"b"), Bytes::from_static(b"d"));
        assert!(between.contains(b"b") && between.contains(b"cz") && !between.contains(b"d"));
    }
}
