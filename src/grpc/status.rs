//! The one table that maps storage outcomes to gRPC statuses.
//!
//! Handlers never build a status from a storage error themselves; they call
//! [`from_store_error`], so every service reports the same failure the same way.

use tonic::Status;

use crate::storage::StoreError;

/// The status for a storage failure.
pub(crate) fn from_store_error(error: StoreError) -> Status {
    match error {
        StoreError::Unavailable(msg) => Status::unavailable(msg),
        StoreError::ResourceExhausted(msg) => Status::resource_exhausted(msg),
        StoreError::Internal(msg) => Status::internal(msg),
        error @ StoreError::LeaseNotFound(_) => Status::not_found(error.to_string()),
        error @ StoreError::LeaseExists(_) => Status::already_exists(error.to_string()),
        error @ (StoreError::Compacted { .. } | StoreError::FutureRevision { .. }) => {
            Status::out_of_range(error.to_string())
        }
        StoreError::LimitReached(msg) => Status::resource_exhausted(msg),
        error @ StoreError::WholeReadTooLarge(_) => Status::resource_exhausted(error.to_string()),
        StoreError::Rejected(msg) => Status::invalid_argument(msg),
    }
}

/// `NOT_FOUND` for a key that does not exist, with the tutorial's exact text.
pub(crate) fn key_not_found() -> Status {
    Status::not_found("key not found")
}
