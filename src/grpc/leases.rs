//! `keyvalue.v1.KV/LeaseInfo` and `LeaseList`: a lease's TTL and its keys,
//! and every live lease, in pages.
//!
//! Both read the store's index of each lease's keys (`Store::lease_keys`,
//! the table a revocation uses), never a scan of every key; etcd's
//! LeaseTimeToLive reads the same. LeaseInfo lists a lease's keys only to
//! a token that may use every one of them (etcd's rule for
//! LeaseTimeToLive); LeaseList shows each lease's keys within the token's
//! prefix. A page of leases asks each lease for its first keys,
//! so the keys per lease are capped to keep a page at most the server's
//! page size of keys in all. Keys also count against the byte bound of a
//! page (`--max-range-page-bytes`, each key as a record without a value),
//! so an answer fits a client's message limit however long the keys are.

use bytes::Bytes;
use tonic::Status;

use super::Limits;
use super::access::Checks;
use super::auth::Scope;
use super::convert::header;
use super::status::from_store_error;
use crate::proto::keyvalue::v1 as pb;
use crate::storage::ops::{KeyRange, LeaseId, page_bytes};
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

/// The first of `keys` that fit in `budget` bytes, at least `at_least` of
/// them, taken from the budget; `more` if any were cut (or `more` was).
fn within(
    mut keys: Vec<Bytes>,
    more: bool,
    budget: &mut usize,
    at_least: usize,
) -> (Vec<Bytes>, bool) {
    let mut kept = 0;
    for key in &keys {
        let cost = page_bytes(key.len(), 0);
        if kept >= at_least && cost > *budget {
            break;
        }
        *budget = budget.saturating_sub(cost);
        kept += 1;
    }
    let cut = kept < keys.len();
    keys.truncate(kept);
    (keys, more || cut)
}

/// `LeaseInfo`: the lease, and a page of its keys if asked.
pub(super) async fn info<S: Store>(
    store: &S,
    limits: &Limits,
    scope: Option<&Scope>,
    request: pb::LeaseInfoRequest,
) -> Result<pb::LeaseInfoResponse, Status> {
    let checks = Checks::new(limits, scope);
    checks.bound(&request.keys_after)?;
    let lease = store
        .lease_info(request.id)
        .await
        .map_err(from_store_error)?;
    let limit = (request.keys_limit as usize).min(limits.max_range_page);
    if limit > 0 {
        // As etcd's LeaseTimeToLive: a lease's keys only for a token that
        // may use every one of them (a partial list would read as the
        // lease's every key).
        checks
            .lease(store, request.id, "list the keys of")
            .await
            .map_err(from_store_error)??;
    }
    let range = keys_range(scope, &request.keys_after);
    let (keys, more) = keys_of(store, request.id, range, limit)
        .await
        .map_err(from_store_error)?;
    // At least one key, so that paging always moves on.
    let mut budget = limits.max_range_page_bytes;
    let (keys, more) = within(keys, more, &mut budget, 1);
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
    let mut budget = limits.max_range_page_bytes;
    for lease in &leases {
        match keys_of(store, lease.id, keys_range(scope, b""), keys_limit).await {
            Ok((keys, more_keys)) => {
                let (keys, more_keys) = within(keys, more_keys, &mut budget, 0);
                answers.push(answer(lease, keys, more_keys));
            }
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
    use std::time::Duration;

    use super::*;
    use crate::storage::MemoryStore;
    use crate::storage::ops::{Op, Txn};

    /// A store with lease `a` on keys k1, k2, k3 and lease `b` on k4, k5.
    async fn two_leases() -> (MemoryStore, LeaseId, LeaseId) {
        let store = MemoryStore::new();
        let a = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
        let b = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
        let put = |key: &'static str, lease| Op::Put {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            lease,
            prev: false,
        };
        let ops = vec![
            put("k1", a),
            put("k2", a),
            put("k3", a),
            put("k4", b),
            put("k5", b),
        ];
        store.txn(Txn::of(ops)).await.unwrap();
        (store, a, b)
    }

    /// Each lease's key count and `more_keys`, lease `a`'s first.
    fn key_count(answer: &pb::LeaseListResponse, a: LeaseId) -> Vec<(usize, bool)> {
        let mut leases: Vec<_> = answer.leases.iter().collect();
        leases.sort_by_key(|lease| lease.id != a);
        let counts = leases.iter().map(|l| (l.keys.len(), l.more_keys));
        counts.collect()
    }

    #[tokio::test]
    async fn a_page_of_leases_holds_at_most_a_page_of_keys() {
        let (store, a, _) = two_leases().await;
        let limits = Limits {
            max_range_page: 4,
            ..Limits::default()
        };
        let request = pb::LeaseListRequest {
            after: None,
            limit: 2,
            keys_limit: 10,
        };
        let answer = list(&store, &limits, None, request).await.unwrap();
        // Two keys a lease: four in all.
        assert_eq!(key_count(&answer, a), [(2, true), (2, false)]);
        assert!(!answer.more);
    }

    #[tokio::test]
    async fn keys_stop_at_the_byte_bound_of_a_page_but_one_always_comes() {
        let (store, a, _) = two_leases().await;
        let two_keys = 2 * page_bytes(2, 0);
        let limits = Limits {
            max_range_page_bytes: two_keys,
            ..Limits::default()
        };
        let request = pb::LeaseListRequest {
            after: None,
            limit: 2,
            keys_limit: 10,
        };
        let answer = list(&store, &limits, None, request).await.unwrap();
        // The first lease in id order takes the budget; the other's keys
        // are cut, and it says so.
        let expected = if answer.leases[0].id == a {
            [(2, true), (0, true)]
        } else {
            [(0, true), (2, false)]
        };
        assert_eq!(key_count(&answer, a), expected);
        let ask = |limits| {
            let request = pb::LeaseInfoRequest {
                id: a,
                keys_limit: 10,
                keys_after: Bytes::new(),
            };
            info(&store, limits, None, request)
        };
        let answer = ask(&limits).await.unwrap();
        assert_eq!((answer.keys.len(), answer.more_keys), (2, true));
        let tiny = Limits {
            max_range_page_bytes: 1,
            ..Limits::default()
        };
        let answer = ask(&tiny).await.unwrap();
        assert_eq!(answer.keys, [Bytes::from_static(b"k1")]);
        assert!(answer.more_keys);
    }

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
