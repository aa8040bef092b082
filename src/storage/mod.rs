//! The storage layer: the [`Store`] trait that every backend implements, the
//! records it stores, and the backends themselves.
//!
//! The gRPC layer reaches storage only through [`Store`]. Nothing in this module
//! knows about gRPC, tonic or protobuf: keys and values are plain bytes, failures
//! are [`StoreError`]s, and the mapping to wire statuses lives in `grpc::status`.
//!
//! The data model is etcd's: one store-wide revision counter that every write
//! (every transaction that changes something) increases by one, and per key a
//! `create_revision`, a `mod_revision`, a `version` and an optional lease.
//!
//! - [`ops`]: ranges, queries, compares, transactions, events: the vocabulary.
//! - `apply`: what reads and transactions mean, once for every backend.
//! - `lease`: lease deadlines and lazy expiry.
//! - `maintenance`: the store's background work (lease expiry, automatic
//!   compaction), which the server runs.
//! - `watch`: the event history and the watch streams.
//! - `memory`, `disk`, `etcd`: the backends; `conformance`: the suite they
//!   all pass.

mod apply;
mod created;
mod disk;
mod error;
mod etcd;
#[cfg(test)]
pub(crate) use etcd::convert as etcd_convert;
mod lease;
mod maintenance;
mod memory;
pub mod ops;
mod watch;

#[cfg(test)]
mod conformance;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use disk::{ACK_FILE, DB_FILE, DiskStore, LOG_FILE, OpenError, SyncPolicy, answer_here};
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore};
pub use lease::{LeaseInfo, MAX_TTL};
pub use maintenance::{AutoCompaction, DEFAULT_HISTORY_MAX_BYTES, run as maintain};
pub use memory::MemoryStore;
pub use watch::{
    Delivery, EventStream, Indices, Item as WatchItem, Patience, WatchId, WatchLimits, Watches,
};

use ops::{KeyRange, LeaseId, RangeQuery, RangeResult, Txn, TxnResult};

/// A point in the store's history. Every write increases it by one. As in
/// etcd, an empty store is at revision 1 and its first write gets revision 2,
/// so that all three APIs share etcd's numbering; 0 means "never written" in
/// a record, and "the current revision" in a read.
pub type Revision = u64;

/// The revision of a store that was never written.
pub const FIRST_REVISION: Revision = 1;

/// What a key currently holds, with the counters of etcd's data model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The value last written.
    pub value: Bytes,
    /// Revision of the write that created the key (its first put since it last
    /// did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of puts since the key was created: 1 after the first.
    pub version: u64,
    /// The lease the key is attached to; 0 for none.
    pub lease: LeaseId,
}

impl Record {
    /// The record a put of `value` at `revision` leaves, given the key's
    /// `previous` record: the data model's rules in one place, for every backend.
    pub fn after_put(
        previous: Option<&Record>,
        value: Bytes,
        revision: Revision,
        lease: LeaseId,
    ) -> Record {
        match previous {
            Some(previous) => Record {
                value,
                create_revision: previous.create_revision,
                mod_revision: revision,
                version: previous.version + 1,
                lease,
            },
            None => Record {
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease,
            },
        }
    }
}

/// Keys per chunk of a [`Snapshot`], at most.
pub const SNAPSHOT_CHUNK: usize = 1000;

/// Bytes of keys and values per chunk of a [`Snapshot`], at most (a chunk
/// stops at the key that reaches it; one key alone may pass it). Without
/// it, a chunk of 1,000 values of 1 MiB was one gigabyte in memory, held
/// and encoded as one message, and a stalled snapshot queued several.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Cuts a snapshot's keys, in order, into chunks of at most
/// [`SNAPSHOT_CHUNK`] keys and about [`SNAPSHOT_CHUNK_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct SnapshotChunker {
    chunk: Vec<ops::KeyValue>,
    bytes: usize,
}

impl SnapshotChunker {
    /// Adds `kv`; returns the chunk it completes, if it does.
    pub(crate) fn push(&mut self, kv: ops::KeyValue) -> Option<Vec<ops::KeyValue>> {
        self.bytes += kv.key.len() + kv.record.value.len();
        self.chunk.push(kv);
        (self.chunk.len() >= SNAPSHOT_CHUNK || self.bytes >= SNAPSHOT_CHUNK_BYTES).then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.chunk)
        })
    }

    /// The last, partial chunk (possibly empty).
    pub(crate) fn rest(self) -> Vec<ops::KeyValue> {
        self.chunk
    }
}

/// A consistent copy of a store (see [`Store::snapshot`]).
#[derive(Debug)]
pub struct Snapshot {
    /// The revision the copy is at.
    pub revision: Revision,
    /// Every granted lease and its TTL (for the etcd backend, every lease
    /// one of the copied keys is attached to: etcd's leases are the whole
    /// cluster's).
    pub leases: Vec<(LeaseId, Duration)>,
    /// The keys, in order, [`SNAPSHOT_CHUNK`] at a time.
    pub chunks: tokio::sync::mpsc::Receiver<Result<Vec<ops::KeyValue>, StoreError>>,
}

/// What a store reports about itself, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys stored (expired ones not yet deleted included).
    pub keys: u64,
    /// Bytes the store takes on disk (0 in memory).
    pub disk_bytes: u64,
    /// Commits since the store opened (disk backend).
    pub commits: u64,
    /// Time spent in commits, fsync included, in nanoseconds.
    pub commit_nanos: u64,
    /// The store's revision.
    pub revision: Revision,
    /// Commits by time taken: `commit_latency[i]` counts those within
    /// [`COMMIT_LATENCY_BOUNDS`]`[i]` (and above the bound before); the
    /// last, those above every bound.
    pub commit_latency: [u64; COMMIT_LATENCY_BOUNDS.len() + 1],
    /// The compacted revision: reads and watches start at it or later.
    pub compacted: Revision,
    /// Bytes of keys and values written since the store opened (0 on the
    /// etcd backend): what the history grew by, at most.
    pub written_bytes: u64,
}

/// Upper bounds of the commit latency buckets of [`StoreStats`], in seconds.
pub const COMMIT_LATENCY_BOUNDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A key/value storage backend.
///
/// Implementations must be safe to call from many tasks at once, and every
/// operation is linearizable: once a call returns, every later call on any task
/// sees its effect. A transaction is atomic: no reader sees part of it.
/// Operations are async because some backends do I/O (a disk, a remote etcd
/// cluster).
///
/// Semantics shared by the local backends live in `storage::apply`; every
/// backend runs the one conformance suite (`storage::conformance`).
pub trait Store: Send + Sync + 'static {
    /// The record of `key` at `revision` (0: the current one), or `None` if
    /// the key did not exist then. Fails as [`RangeQuery::revision`] says
    /// for a revision compacted or not reached yet.
    fn get(
        &self,
        key: &[u8],
        revision: Revision,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Stores `value` under `key` (no lease), replacing any previous value,
    /// and returns the revision of this write. The write is visible to every
    /// reader once this returns (and, for durable backends, on stable storage).
    fn put(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Reads a range of keys, at the query's revision.
    fn range(
        &self,
        query: RangeQuery,
    ) -> impl Future<Output = Result<RangeResult, StoreError>> + Send;

    /// Runs a transaction: compares, then one branch of operations,
    /// atomically. A failed compare is an answer (`succeeded: false`), not an
    /// error; an error means nothing happened.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnResult, StoreError>> + Send;

    /// Grants a lease that expires `ttl` from now unless kept alive.
    fn lease_grant(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseInfo, StoreError>> + Send;

    /// Grants a lease with the id `id` the caller chose (etcd's clients
    /// may); [`StoreError::LeaseExists`] if a lease has it already.
    fn lease_grant_as(
        &self,
        id: LeaseId,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseInfo, StoreError>> + Send;

    /// The ids of every live lease (for the etcd backend, the cluster's).
    fn lease_ids(&self) -> impl Future<Output = Result<Vec<LeaseId>, StoreError>> + Send;

    /// The live leases with ids above `after` (from the lowest without
    /// one), in id order: at most `limit`.
    fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LeaseInfo>, StoreError>> + Send;

    /// The keys attached to live lease `id` that are in `range`, in key
    /// order: at most `limit`, and whether more follow.
    /// [`StoreError::LeaseNotFound`] if the lease expired or never was.
    fn lease_keys(
        &self,
        id: LeaseId,
        range: KeyRange,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Bytes>, bool), StoreError>> + Send;

    /// Whether live lease `id` holds keys that this store does not serve,
    /// which no range of [`Store::lease_keys`] lists: on the etcd backend,
    /// keys of the cluster outside `--etcd-prefix` (other users' of the
    /// cluster). The local backends serve every key they hold.
    /// [`StoreError::LeaseNotFound`] if the lease expired or never was (on
    /// the backends that look).
    fn lease_holds_foreign_keys(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = id;
        std::future::ready(Ok(false))
    }

    /// Restarts a live lease's TTL.
    fn lease_keep_alive(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<LeaseInfo, StoreError>> + Send;

    /// The state of a live lease.
    fn lease_info(&self, id: LeaseId)
    -> impl Future<Output = Result<LeaseInfo, StoreError>> + Send;

    /// Revokes a lease and deletes its keys; returns how many were deleted
    /// and the store's revision after.
    fn lease_revoke(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<(u64, Revision), StoreError>> + Send;

    /// Deletes the keys of every lease whose time ran out (they are already
    /// invisible to readers) and tells watchers. The server calls it
    /// periodically; backends whose leases expire by themselves return 0.
    fn expire_leases(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Forgets the history before `revision`: reads and watches at a
    /// revision below it fail with [`StoreError::Compacted`] from the moment
    /// this returns (the space is reclaimed afterwards, in the background).
    /// Returns the store's revision. Compacting at or below the compacted
    /// revision is [`StoreError::Compacted`]; above the current revision,
    /// [`StoreError::FutureRevision`].
    fn compact(
        &self,
        revision: Revision,
    ) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Streams the changes to `range` from revision `from` on (`None`: from
    /// the next write). The history comes from the store itself: a watch may
    /// start at any revision not compacted.
    fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> impl Future<Output = Result<EventStream, StoreError>> + Send;

    /// Adds to `watches` (the set of one consumer, `Watches::default()` at
    /// first) a watch of `range` from `from`, named `id`: what `watch`
    /// streams, delivered through the set. Local backends follow all the
    /// watches of a set together (one subscription, one task: the
    /// consumer's); by default each is a `watch` stream the set polls.
    fn watch_into(
        &self,
        watches: &mut Watches,
        id: WatchId,
        range: KeyRange,
        from: Option<Revision>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let events = self.watch(range, from).await?;
            watches.insert_stream(id, events);
            Ok(())
        }
    }

    /// Counts for the metrics page; cheap, never blocks on I/O for long.
    fn stats(&self) -> StoreStats;

    /// A consistent copy of every key and lease at one revision, delivered
    /// in chunks while writes go on (they are not paused).
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Returns once every write acknowledged so far is on stable storage. The
    /// server calls it when it stops; backends that acknowledge only durable
    /// writes, or keep nothing, return at once.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store can serve requests now, as a channel that changes
    /// when that does; the server reports it through the health service. A
    /// remote backend is unavailable while its cluster is unreachable; local
    /// backends always are available.
    fn availability(&self) -> tokio::sync::watch::Receiver<bool> {
        tokio::sync::watch::channel(true).1
    }
}
