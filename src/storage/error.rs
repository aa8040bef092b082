//! The one error type of the storage layer.
//!
//! Backends report every failure as a [`StoreError`]; the gRPC layer turns each
//! variant into a status code in exactly one place (`grpc::status`). Variants
//! describe what went wrong from the caller's point of view (can it retry? is the
//! request at fault?), not which backend produced it.

use std::fmt;

use super::Revision;
use super::ops::LeaseId;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot serve right now (a remote cluster is unreachable, the
    /// store is shutting down). Retrying later may succeed.
    Unavailable(String),
    /// A resource ran out (disk full, quota reached). Nothing already stored was
    /// lost; the operation had no effect.
    ResourceExhausted(String),
    /// A bug or a broken invariant inside the backend, or data on disk that does
    /// not read back as written.
    Internal(String),
    /// The lease does not exist (never granted, revoked, or expired).
    LeaseNotFound(LeaseId),
    /// A lease with the id the caller chose exists already.
    LeaseExists(LeaseId),
    /// A read or watch asked for a revision older than the store keeps.
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compacted revision: the oldest a read or watch can ask for
        /// (0 when the backend does not say, as etcd's errors don't).
        compacted: Revision,
    },
    /// A read asked for a revision the store has not reached yet.
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's revision.
        current: Revision,
    },
    /// The backend refused the request as malformed (etcd refuses a
    /// transaction that writes one key twice, say); the message says why.
    Rejected(String),
    /// A configured limit was reached (watchers, say); the message names it.
    LimitReached(String),
    /// A read that takes its whole range before answering
    /// ([`RangeQuery::whole_max_bytes`](super::ops::RangeQuery::whole_max_bytes))
    /// found more than this many bytes of records in it; a transaction
    /// holding it had no effect.
    WholeReadTooLarge(usize),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(msg) => write!(f, "storage unavailable: {msg}"),
            StoreError::ResourceExhausted(msg) => write!(f, "storage resource exhausted: {msg}"),
            StoreError::Internal(msg) => write!(f, "internal storage error: {msg}"),
            StoreError::LeaseNotFound(id) => write!(f, "lease {id} not found (expired or revoked)"),
            StoreError::LeaseExists(id) => write!(f, "lease {id} already exists"),
            StoreError::Compacted {
                requested,
                compacted: 0,
            } => write!(
                f,
                "required revision {requested} has been compacted; read the current state \
                 (and watch from that read's revision + 1)"
            ),
            StoreError::Compacted {
                requested,
                compacted,
            } => write!(
                f,
                "required revision {requested} has been compacted: the compacted revision is \
                 {compacted}, read at it or later (or read the current state and watch from \
                 that read's revision + 1)"
            ),
            StoreError::FutureRevision { requested, current } => write!(
                f,
                "required revision {requested} is a future revision: the store is at revision \
                 {current}"
            ),
            StoreError::Rejected(msg) | StoreError::LimitReached(msg) => f.write_str(msg),
            StoreError::WholeReadTooLarge(bound) => write!(
                f,
                "the range is read whole before it is answered, and it holds more than \
                 {bound} bytes: narrow the range"
            ),
        }
    }
}

impl std::error::Error for StoreError {}
