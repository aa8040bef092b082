//! The one error type of the storage layer.
//!
//! Backends report every failure as a [`StoreError`]; the gRPC layer turns each
//! variant into a status code in exactly one place (`grpc::status`). Variants
//! describe what went wrong from the caller's point of view (can it retry? is the
//! request at fault?), not which backend produced it.

use std::fmt;

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
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(msg) => write!(f, "storage unavailable: {msg}"),
            StoreError::ResourceExhausted(msg) => write!(f, "storage resource exhausted: {msg}"),
            StoreError::Internal(msg) => write!(f, "internal storage error: {msg}"),
        }
    }
}

impl std::error::Error for StoreError {}
