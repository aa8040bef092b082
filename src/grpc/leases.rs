//! `keyvalue.v1.KV/LeaseInfo` and `LeaseList`: a lease's TTL and its keys,
//! and every live lease, in pages.
//!
//! Both read the store's index of each lease's keys (`Store::lease_keys`,
//! the table a revocation uses), never a scan of every key; etcd's
//! LeaseTimeToLive reads the same. A lease's keys are those the token may
//! see (its prefix). A page of leases asks each lease for its first keys,
//! so the keys per lease are capped to keep a page at most the server's
//! page size of keys in all.

use bytes::Bytes;
use tonic::Status;

use super::Limits;
use super::access::Checks;
use super::auth::Scope;
use super::convert::header;
use super::status::from_store_error;
use crate::proto::keyvalue::v1 as pb;
use crate::storage::ops::{KeyRange, LeaseId};
use crate::storage::{LeaseInfo, Store, StoreError};

/// The keys a lease's listing may show: the token's prefix (every key
/// without one), from just after `after` (the last key of the previous
/// page; empty: from the first).
fn keys_range(scope: Option<&Scope>, after: &[u8]) -> KeyRange {
    let visible = KeyRange::prefix(scope.map(|scope| scope.prefix.clone()).unwrap_or_default());
    if after.is_empty() {
        return visible;
    }
    let mut next = after.to_vec();
    next.push(0);
    if next.as_slice() <= visible.start.as_ref() {
        return visible;
    }
    visible.resumed_at(Bytes::from(next))
}

/// A lease as LeaseInfo answers it.
fn answer(lease: &LeaseInfo, keys: Vec<Bytes>, more_keys: bool) -> pb::LeaseInfoResponse {
    pb::LeaseInfoResponse {
        id: lease.id,
        ttl_ms: lease.ttl.as_millis() as u64,
        remaining_ms: lease.remaining.as_millis() as u64,
        keys,
        more_keys,
    }
}

/// Up to `limit` keys of lease `id` in `range` (none for 0), and whether
/// more follow.
async fn keys_of<S: Store>(
    store: &S,
    id: LeaseId,
    range: KeyRange,
    limit: usize,
) -> Result<(Vec<Bytes>, bool), StoreError> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    store.lease_keys(id, range, limit).await
}

/// `LeaseInfo`: the lease, and a page of its keys if asked.
pub(super) async fn info<S: Store>(
    store: &S,
    limits: &Limits,
    scope: Option<&Scope>,
    request: pb::LeaseInfoRequest,
) -> Result<pb::LeaseInfoResponse, Status> {
    Checks::new(limits, scope).bound(&request.keys_after)?;
    let lease = store
        .lease_info(request.id)
        .await
        .map_err(from_store_error)?;
    let limit = (request.keys_limit as usize).min(limits.max_range_page);
    let range = keys_range(scope, &request.keys_after);
    let (keys, more) = keys_of(store, request.id, range, limit)
        .await
        .map_err(from_store_error)?;
    Ok(answer(&lease, keys, more))
}

/// `LeaseList`: a page of live leases in id order, each with its first
/// keys if asked.
pub(super) async fn list<S: Store>(
    store: &S,
    limits: &Limits,
    scope: Option<&Scope>,
    request: pb::LeaseListRequest,
) -> Result<pb::LeaseListResponse, Status> {
    let page = limits.max_range_page;
    let limit = match request.limit as usize {
        0 => page,
        limit => limit.min(page),
    };
    let keys_limit = (request.keys_limit as usize).min((page / limit).max(1));
    let revision = store.stats().revision;
    let mut leases = store
        .leases(request.after, limit + 1)
        .await
        .map_err(from_store_error)?;
    let more = leases.len() > limit;
    leases.truncate(limit);
    let mut answers = Vec::with_capacity(leases.len());
    for lease in &leases {
        match keys_of(store, lease.id, keys_range(scope, b""), keys_limit).await {
            Ok((keys, more_keys)) => answers.push(answer(lease, keys, more_keys)),
            // It expired since the page was read: it is no longer listed.
            Err(StoreError::LeaseNotFound(_)) => {}
            Err(error) => return Err(from_store_error(error)),
        }
    }
    Ok(pb::LeaseListResponse {
        header: header(revision),
        leases: answers,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_after_the_last_one_and_stay_in_the_tokens_prefix() {
        let scope = Scope {
            prefix: Bytes::from_static(b"app/"),
        };
        assert_eq!(keys_range(None, b""), KeyRange::prefix(Bytes::new()));
        assert_eq!(
            keys_range(Some(&scope), b""),
            KeyRange::prefix(Bytes::from_static(b"app/"))
        );
        let resumed = keys_range(Some(&scope), b"app/b");
        assert_eq!(resumed.start.as_ref(), b"app/b\0");
        assert!(!resumed.contains(b"app/b") && resumed.contains(b"app/c"));
        assert!(!resumed.contains(b"apq"));
        // An `after` before the prefix starts at the prefix, never before.
        assert_eq!(
            keys_range(Some(&scope), b"a"),
            KeyRange::prefix(Bytes::from_static(b"app/"))
        );
    }
}
