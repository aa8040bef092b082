//! The storage layer: the [`Store`] trait that every backend implements, the
//! records it stores, and the backends themselves.
//!
//! The gRPC layer reaches storage only through [`Store`]. Nothing in this module
//! knows about gRPC, tonic or protobuf: keys and values are plain bytes, failures
//! are [`StoreError`]s, and the mapping to wire statuses lives in `grpc::status`.
//!
//! The data model is etcd's: one store-wide revision counter that every write
//! increases, and per key a `create_revision`, a `mod_revision` and a `version`.
//! The tutorial API ignores these counters, but the backends keep them from the
//! start so that revisions, compare-and-set and watch can be added without
//! changing what is stored.

mod disk;
mod error;
mod memory;

#[cfg(test)]
mod conformance;

use std::future::Future;

use bytes::Bytes;

pub use disk::{DB_FILE, DiskStore, OpenError, SyncPolicy};
pub use error::StoreError;
pub use memory::MemoryStore;

/// A point in the store's history. Every write increases it by one; the first
/// write of a fresh store gets revision 1, so 0 means "never written".
pub type Revision = u64;

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
}

impl Record {
    /// The record a put of `value` at `revision` leaves, given the key's
    /// `previous` record: the data model's rules in one place, for every backend.
    pub fn after_put(previous: Option<&Record>, value: Bytes, revision: Revision) -> Record {
        match previous {
            Some(previous) => Record {
                value,
                create_revision: previous.create_revision,
                mod_revision: revision,
                version: previous.version + 1,
            },
            None => Record {
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        }
    }
}

/// A key/value storage backend.
///
/// Implementations must be safe to call from many tasks at once, and every
/// operation is linearizable: once a call returns, every later call on any task
/// sees its effect. Operations are async because some backends do I/O (a disk
/// journal, a remote etcd cluster); the in-memory backend never awaits.
///
/// The trait grows with the API (delete, range scans, compare-and-set, leases,
/// watch, batches): each new operation is added here with its semantics, and
/// every backend runs the one conformance suite (`storage::conformance`).
pub trait Store: Send + Sync + 'static {
    /// The current record of `key`, or `None` if the key does not exist.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Stores `value` under `key`, replacing any previous value, and returns the
    /// revision of this write. The write is visible to every reader once this
    /// returns (and, for durable backends, on stable storage).
    fn put(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Returns once every write acknowledged so far is on stable storage. The
    /// server calls it when it stops; backends that acknowledge only durable
    /// writes, or keep nothing, return at once.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
