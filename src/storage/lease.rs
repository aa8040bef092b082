//! Leases: the time to live of keys.
//!
//! A lease has an id and a TTL. Keys put with a lease are deleted when it
//! expires (nobody kept it alive for a whole TTL) or is revoked. A key with a
//! TTL is a key with a lease of its own; several keys may share one lease, as
//! in etcd, so that one keep-alive keeps a whole group alive.
//!
//! [`Leases`] holds every lease's deadline in memory, for every backend.
//! Deadlines are not stored: like etcd, a restarted server gives every lease
//! a full TTL again (a lease never expires early because the server was down).
//! Expiry is both lazy and eager: readers treat keys of an expired lease as
//! gone from the deadline on ([`Leases::is_expired`]), and each store's
//! expiry task revokes expired leases soon after, which deletes the keys for
//! good and tells watchers (`EventKind::Expire`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::future::Future;

use super::ops::LeaseId;
use super::{Revision, StoreError};

/// The longest TTL a lease may have (a year), so deadlines never overflow.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A lease as a caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: LeaseId,
    /// The TTL it was granted with.
    pub ttl: Duration,
    /// Time left before it expires, unless kept alive.
    pub remaining: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

/// The deadlines of every live lease.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// In id order, so that leases are listed in pages ([`Leases::page`]).
    leases: BTreeMap<LeaseId, Lease>,
    /// Deadlines in order, so finding the expired leases costs what expired,
    /// not every lease, every tick. Entries go stale when a lease is kept
    /// alive or removed; [`Leases::expired`] skips those.
    due: BinaryHeap<Reverse<(Instant, LeaseId)>>,
}

impl Leases {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update completes under the lock: a panic elsewhere cannot
        // leave the state half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking lease `id`, expiring `ttl` from now.
    pub(crate) fn insert(&self, id: LeaseId, ttl: Duration) -> LeaseInfo {
        let ttl = ttl.min(MAX_TTL);
        let deadline = Instant::now() + ttl;
        let mut state = self.state();
        state.leases.insert(id, Lease { ttl, deadline });
        state.due.push(Reverse((deadline, id)));
        LeaseInfo {
            id,
            ttl,
            remaining: ttl,
        }
    }

    /// Stops tracking lease `id`.
    pub(crate) fn remove(&self, id: LeaseId) {
        self.state().leases.remove(&id);
    }

    /// Whether lease `id` exists and has not expired.
    pub(crate) fn is_live(&self, id: LeaseId) -> bool {
        self.state()
            .leases
            .get(&id)
            .is_some_and(|lease| lease.deadline > Instant::now())
    }

    /// Whether keys of lease `id` must look deleted: it expired, or it is
    /// gone (revoked, and its keys are being deleted). Transactions ask
    /// through `KeyspaceRead::lease_expired`, which a replay answers from
    /// the log.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_expired(&self, id: LeaseId) -> bool {
        id != 0 && !self.is_live(id)
    }

    /// Restarts the TTL of a live lease; `None` if it expired or never was.
    pub(crate) fn keep_alive(&self, id: LeaseId) -> Option<LeaseInfo> {
        let now = Instant::now();
        let mut state = self.state();
        let lease = state
            .leases
            .get_mut(&id)
            .filter(|lease| lease.deadline > now)?;
        lease.deadline = now + lease.ttl;
        let (ttl, deadline) = (lease.ttl, lease.deadline);
        state.due.push(Reverse((deadline, id)));
        Some(LeaseInfo {
            id,
            ttl,
            remaining: ttl,
        })
    }

    /// The ids of every live lease.
    pub(crate) fn live_ids(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        self.state()
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline > now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The live leases with ids above `after` (from the first without
    /// one), in id order: at most `limit`. Costs the page, not every lease.
    pub(crate) fn page(&self, after: Option<LeaseId>, limit: usize) -> Vec<LeaseInfo> {
        let now = Instant::now();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.state()
            .leases
            .range((from, Bound::Unbounded))
            .filter(|(_, lease)| lease.deadline > now)
            .take(limit)
            .map(|(id, lease)| LeaseInfo {
                id: *id,
                ttl: lease.ttl,
                remaining: lease.deadline - now,
            })
            .collect()
    }

    /// The state of a live lease.
    pub(crate) fn info(&self, id: LeaseId) -> Option<LeaseInfo> {
        let now = Instant::now();
        self.state()
            .leases
            .get(&id)
            .filter(|lease| lease.deadline > now)
            .map(|lease| LeaseInfo {
                id,
                ttl: lease.ttl,
                remaining: lease.deadline - now,
            })
    }

    /// Revokes every expired lease with `revoke` (which reports its keys as
    /// expired); a lease already gone is just forgotten. Returns how many
    /// keys were deleted.
    ///
    /// Every revocation is started before any is awaited, so a backend
    /// whose `revoke` queues its work at the call (the disk store's
    /// committer) commits them together: one fsync, not one per lease.
    pub(crate) async fn expire_with<F, Fut>(&self, revoke: F) -> Result<u64, StoreError>
    where
        F: FnMut(LeaseId) -> Fut,
        Fut: Future<Output = Result<(u64, Revision), StoreError>>,
    {
        let expired = self.expired();
        let answers: Vec<Fut> = expired.iter().copied().map(revoke).collect();
        let mut deleted = 0;
        let mut failed = Vec::new();
        let mut first_error = None;
        for (&id, answer) in expired.iter().zip(answers) {
            match answer.await {
                Ok((count, _)) => deleted += count,
                Err(StoreError::LeaseNotFound(_)) => self.remove(id),
                Err(error) => {
                    failed.push(id);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            None => Ok(deleted),
            Some(error) => {
                // Still expired: the next round tries these again.
                self.requeue(&failed);
                Err(error)
            }
        }
    }

    /// The leases whose deadline has passed, taken off the queue of
    /// deadlines: the caller revokes them (or [`Leases::requeue`]s them).
    pub(crate) fn expired(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        let mut state = self.state();
        let mut expired = Vec::new();
        while let Some(&Reverse((deadline, id))) = state.due.peek() {
            if deadline > now {
                break;
            }
            state.due.pop();
            // Skip entries a keep-alive or a removal made stale.
            if state
                .leases
                .get(&id)
                .is_some_and(|lease| lease.deadline <= now)
            {
                expired.push(id);
            }
        }
        expired.sort_unstable();
        expired.dedup();
        expired
    }

    /// Puts leases that `expired` handed out, but were not revoked, back on
    /// the queue, due now.
    fn requeue(&self, ids: &[LeaseId]) {
        let now = Instant::now();
        let mut state = self.state();
        for &id in ids {
            state.due.push(Reverse((now, id)));
        }
    }
}

/// A random positive lease id (ids are never reused in practice, so a stale
/// id held by a client cannot touch a newer lease).
pub(crate) fn random_lease_id() -> LeaseId {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 1) as LeaseId | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lives_for_its_ttl_and_keep_alive_restarts_it() {
        let leases = Leases::default();
        leases.insert(7, Duration::from_millis(300));
        assert!(leases.is_live(7));
        assert!(!leases.is_expired(7));
        std::thread::sleep(Duration::from_millis(150));
        assert!(leases.keep_alive(7).is_some());
        std::thread::sleep(Duration::from_millis(150));
        assert!(leases.is_live(7), "kept alive");
        std::thread::sleep(Duration::from_millis(200));
        assert!(leases.is_expired(7));
        assert_eq!(leases.keep_alive(7), None, "an expired lease stays expired");
        assert_eq!(leases.expired(), vec![7]);
        assert_eq!(leases.expired(), Vec::<LeaseId>::new(), "handed out once");
        leases.requeue(&[7]);
        assert_eq!(leases.expired(), vec![7], "until put back");
    }

    #[tokio::test]
    async fn expiry_starts_every_revocation_first_and_requeues_only_failures() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let leases = Leases::default();
        for id in [1, 2, 3] {
            leases.insert(id, Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        let started = Rc::new(RefCell::new(Vec::new()));
        let outcome = leases
            .expire_with(|id| {
                started.borrow_mut().push(id);
                let started = Rc::clone(&started);
                async move {
                    assert_eq!(started.borrow().len(), 3, "all started before any awaited");
                    if id == 2 {
                        Err(StoreError::Unavailable("disk".into()))
                    } else {
                        Ok((1, 0))
                    }
                }
            })
            .await;
        assert_eq!(outcome, Err(StoreError::Unavailable("disk".into())));
        assert_eq!(leases.expired(), vec![2], "only the failed one is retried");
    }

    #[test]
    fn pages_list_live_leases_in_id_order_from_after() {
        let leases = Leases::default();
        for id in [30, -5, 10, 20] {
            leases.insert(id, Duration::from_secs(60));
        }
        let ids = |page: Vec<LeaseInfo>| page.iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(ids(leases.page(None, 2)), vec![-5, 10]);
        assert_eq!(ids(leases.page(Some(10), 2)), vec![20, 30]);
        assert_eq!(ids(leases.page(Some(30), 2)), Vec::<LeaseId>::new());
        leases.remove(20);
        assert_eq!(ids(leases.page(Some(10), 5)), vec![30]);
        let first = leases.page(None, 1)[0];
        assert_eq!(first.ttl, Duration::from_secs(60));
        assert!(first.remaining <= first.ttl && first.remaining > Duration::ZERO);
    }

    #[test]
    fn no_lease_never_expires_and_unknown_leases_are_expired() {
        let leases = Leases::default();
        assert!(!leases.is_expired(0));
        assert!(leases.is_expired(42));
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn kept_alive_and_removed_leases_are_not_expired() {
        let leases = Leases::default();
        // Sleeps only ever run long: lease 1 (deadline 400 ms) is expired at
        // the first look, and lease 2 (renewed to 600 ms) only if the sleeps
        // overran by 150 ms.
        leases.insert(1, Duration::from_millis(400));
        leases.insert(2, Duration::from_millis(400));
        leases.insert(3, Duration::from_millis(400));
        std::thread::sleep(Duration::from_millis(200));
        leases.keep_alive(2).unwrap();
        leases.remove(3);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(leases.expired(), vec![1]);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            leases.expired(),
            vec![2],
            "once its renewed deadline passed"
        );
    }
}
