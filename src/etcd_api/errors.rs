//! etcd's error statuses, word for word, and the one mapping from a
//! [`StoreError`] to them.
//!
//! etcd's clients turn a status into a typed error by its exact message
//! (clientv3's `rpctypes`, python-etcd3's exception table), so these strings
//! are the contract: they are copied from etcd 3.4's
//! `etcdserver/api/v3rpc/rpctypes/error.go`. Anything kvserver refuses that
//! etcd would not refuse says so in words of its own, prefixed `kvserver:`.

use tonic::{Code, Status};

use crate::storage::StoreError;

fn etcd(code: Code, message: &'static str) -> Status {
    Status::new(code, message)
}

/// What a watch stream ends with when the server stops (clientv3 then
/// watches again, on another endpoint if it has one).
pub(crate) fn server_stopped() -> Status {
    etcd(Code::Unavailable, "etcdserver: server stopped")
}

pub(crate) fn empty_key() -> Status {
    etcd(Code::InvalidArgument, "etcdserver: key is not provided")
}

pub(crate) fn key_not_found() -> Status {
    etcd(Code::InvalidArgument, "etcdserver: key not found")
}

pub(crate) fn value_provided() -> Status {
    etcd(Code::InvalidArgument, "etcdserver: value is provided")
}

pub(crate) fn lease_provided() -> Status {
    etcd(Code::InvalidArgument, "etcdserver: lease is provided")
}

pub(crate) fn too_many_ops() -> Status {
    etcd(
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
}

pub(crate) fn duplicate_key() -> Status {
    etcd(
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    )
}

pub(crate) fn compacted() -> Status {
    etcd(
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )
}

/// etcd's answer to a read at a revision it has not reached.
pub(crate) fn future_revision() -> Status {
    etcd(
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )
}

pub(crate) fn no_space() -> Status {
    etcd(
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    )
}

pub(crate) fn lease_not_found() -> Status {
    etcd(Code::NotFound, "etcdserver: requested lease not found")
}

pub(crate) fn lease_exists() -> Status {
    etcd(Code::FailedPrecondition, "etcdserver: lease already exists")
}

pub(crate) fn lease_ttl_too_large() -> Status {
    etcd(Code::OutOfRange, "etcdserver: too large lease TTL")
}

/// etcd's refusal of a request the user's permissions do not cover (a
/// LeaseTimeToLive with keys it may not read all of).
pub(crate) fn permission_denied() -> Status {
    etcd(Code::PermissionDenied, "etcdserver: permission denied")
}

pub(crate) fn auth_failed() -> Status {
    etcd(
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    )
}

pub(crate) fn auth_not_enabled() -> Status {
    etcd(
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    )
}

/// A request etcd would serve that kvserver does not: `what` names the
/// method or field, `why` says what to do instead.
pub(crate) fn unsupported(what: &str, why: &str) -> Status {
    Status::unimplemented(format!("kvserver: {what} is not supported: {why}"))
}

/// A field kvserver does not serve, refused by name rather than ignored.
pub(crate) fn unsupported_field(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("kvserver: {field} is not supported: {why}"))
}

/// A sorted or filtered Range (`convert::RESHAPED_READ_PAGES`) whose range
/// holds more than `bound` bytes; in a Txn, the whole Txn is refused.
pub(crate) fn whole_read_too_large(bound: usize) -> Status {
    Status::resource_exhausted(format!(
        "a sorted or filtered range is read whole before it is answered, and this one \
         holds more than {bound} bytes ({} x --max-range-page-bytes): narrow the range, \
         or ask in key order with a limit and page on (a Txn reading it is refused whole, \
         none of its writes applied)",
        super::convert::RESHAPED_READ_PAGES
    ))
}

/// The status etcd answers for a storage failure.
pub(crate) fn from_store_error(error: StoreError) -> Status {
    match error {
        StoreError::LeaseNotFound(_) => lease_not_found(),
        StoreError::LeaseExists(_) => lease_exists(),
        StoreError::Compacted { .. } => compacted(),
        StoreError::FutureRevision { .. } => future_revision(),
        StoreError::ResourceExhausted(_) => no_space(),
        // Unavailable keeps its code: clients retry it, as they retry
        // etcd's "no leader" and "request timed out".
        StoreError::Unavailable(msg) => Status::unavailable(format!("etcdserver: {msg}")),
        StoreError::Internal(msg) => Status::internal(format!("etcdserver: {msg}")),
        StoreError::LimitReached(msg) => Status::resource_exhausted(msg),
        StoreError::WholeReadTooLarge(bound) => whole_read_too_large(bound),
        StoreError::Rejected(msg) => Status::invalid_argument(msg),
    }
}
