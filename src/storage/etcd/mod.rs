//! The etcd backend: the [`Store`] trait over an etcd cluster, so that any
//! number of kvservers serve the same data as stateless gateways and the data
//! survives the loss of a machine (etcd's Raft does that; we write no
//! consensus of our own).
//!
//! Our data model is etcd's, so every operation maps onto one etcd call: a
//! read onto a linearizable Range, every write onto a Put or a Txn, a lease
//! onto an etcd lease, a watch onto an etcd watch. Where the two differ
//! (etcd's leases count whole seconds and are expired by etcd, which reports
//! an expiry as a delete; revisions are the cluster's, shared with everyone
//! using it) `docs/DEPLOYMENT.md` says so.
//!
//! This is the one part of the storage layer that speaks gRPC: as a client of
//! etcd, through the code `build.rs` generates from `proto/etcd/`. Not the
//! `etcd-client` crate: its build script needs a system `protoc` (we build
//! with none), we call few of etcd's methods, and owning the calls is what
//! lets them follow our rules for failover, retries and deadlines.
//!
//! - `cluster`: channels to the members, failover, deadlines, error mapping.
//! - `convert`: our operations as etcd messages, and the key prefix.
//! - `watch`: etcd watches, resumed on another member when one fails.

mod cluster;
pub(crate) mod convert;
mod watch;

/// Real etcd processes for the conformance suite (shared with `tests/it`).
#[cfg(test)]
#[path = "../../../tests/support/etcd.rs"]
mod etcd_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch as signal};

pub use cluster::EtcdConfig;
use cluster::{Cluster, Retry, kv_client, lease_client, maintenance_client};
use convert::{Keys, etcd_number, record, revision_of};

use super::apply;
use super::lease::MAX_TTL;
use super::ops::{KeyRange, LeaseId, Op, OpResult, RangeQuery, RangeResult, Txn, TxnResult};
use super::watch::WatcherSlot;
use super::{
    EventStream, LeaseInfo, Record, Revision, SNAPSHOT_CHUNK, SNAPSHOT_CHUNK_BYTES, Snapshot,
    Store, StoreError, StoreStats, WatchLimits,
};
use crate::proto::etcd::etcdserverpb as pb;

/// How often the cluster is probed for health.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys of the first page of a snapshot's values: etcd's Range has no
/// byte bound, so a snapshot's pages start small and grow towards
/// [`SNAPSHOT_CHUNK`] keys while they hold less than
/// [`SNAPSHOT_CHUNK_BYTES`] (see [`next_snapshot_page`]).
const FIRST_SNAPSHOT_PAGE: usize = 1;

/// The limit of a snapshot's next page after one that read `kvs` at
/// `limit`: doubled (up to [`SNAPSHOT_CHUNK`]) under half of
/// [`SNAPSHOT_CHUNK_BYTES`], halved (down to one) past twice it. So a page
/// stays near a megabyte whatever the values' size: 1,000 values of 1 MiB
/// were one gigabyte answer, past what kvserver takes from etcd. (Only a
/// sudden run of large values after many small ones makes one page large
/// before the limit comes down; past 256 MiB it fails with its reason.)
fn next_snapshot_page(limit: usize, kvs: &[super::ops::KeyValue]) -> usize {
    let bytes = kvs
        .iter()
        .map(|kv| kv.key.len() + kv.record.value.len())
        .fold(0usize, usize::saturating_add);
    if bytes < SNAPSHOT_CHUNK_BYTES / 2 {
        (limit * 2).min(SNAPSHOT_CHUNK)
    } else if bytes > SNAPSHOT_CHUNK_BYTES * 2 {
        (limit / 2).max(1)
    } else {
        limit
    }
}

/// How many TTLs of a page of leases are asked of etcd at a time.
const LEASE_INFO_CALLS: usize = 16;

/// Every how many probes our keys are counted for the metrics (a count
/// walks etcd's whole index of them).
const COUNT_EVERY: u32 = 15;
/// How long a probe waits for an answer before the cluster counts as
/// unreachable.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// A store whose data lives in an etcd cluster.
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// The probe task, stopped when the store goes.
    probe: tokio::task::JoinHandle<()>,
}

struct Shared {
    cluster: Arc<Cluster>,
    keys: Keys,
    watchers: Arc<AtomicUsize>,
    max_watchers: usize,
    available: signal::Sender<bool>,
    keys_stored: AtomicU64,
    revision: AtomicU64,
    disk_bytes: AtomicU64,
}

impl EtcdStore {
    /// A store over the cluster of `config`. It waits at most two seconds
    /// for the cluster: one that is down makes the store unavailable (and
    /// the server NOT_SERVING) until it is back.
    pub async fn connect(config: &EtcdConfig, limits: WatchLimits) -> Result<EtcdStore, String> {
        let cluster = Arc::new(Cluster::new(config)?);
        let (available, _) = signal::channel(false);
        let shared = Arc::new(Shared {
            cluster,
            keys: Keys::new(&config.prefix),
            watchers: Arc::new(AtomicUsize::new(0)),
            max_watchers: limits.max_watchers,
            available,
            keys_stored: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
        });
        // One look before serving, so the health service starts out right; a
        // cluster that takes longer to answer is found by the probe task.
        if let Err(error) = shared.probe(true).await {
            tracing::warn!("NOT_SERVING until etcd answers: {error}");
        }
        let probe = tokio::spawn(probe_forever(Arc::downgrade(&shared)));
        Ok(EtcdStore { shared, probe })
    }

    async fn kv_txn(
        &self,
        what: &str,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, StoreError> {
        let retry = if request.success.iter().chain(&request.failure).any(writes) {
            Retry::IfNeverSent
        } else {
            Retry::Always
        };
        self.shared
            .cluster
            .unary(what, retry, request, |channel, request| async move {
                kv_client(channel).txn(request).await
            })
            .await
    }

    async fn time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, StoreError> {
        let answer = self
            .shared
            .cluster
            .unary(
                "LeaseTimeToLive",
                Retry::Always,
                pb::LeaseTimeToLiveRequest { id, keys },
                |channel, request| async move {
                    lease_client(channel).lease_time_to_live(request).await
                },
            )
            .await?;
        if answer.ttl < 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(answer)
    }
}

fn writes(op: &pb::RequestOp) -> bool {
    !matches!(op.request, Some(pb::request_op::Request::RequestRange(_)))
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

impl Shared {
    async fn kv_range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        self.cluster
            .unary(
                "Range",
                Retry::Always,
                request,
                |channel, request| async move { kv_client(channel).range(request).await },
            )
            .await
    }

    /// One page of at most `limit` of our keys after the etcd key `after`
    /// (from the first key for `None`), at `revision` (0: the current one).
    async fn page(
        &self,
        after: Option<&Bytes>,
        revision: Revision,
        keys_only: bool,
        limit: usize,
    ) -> Result<pb::RangeResponse, StoreError> {
        let (first, range_end) = self.keys.everything();
        let key = match after {
            Some(after) => {
                let mut next = after.to_vec();
                next.push(0);
                Bytes::from(next)
            }
            None => first,
        };
        self.kv_range(pb::RangeRequest {
            key,
            range_end,
            limit: limit as i64,
            revision: etcd_number(revision),
            keys_only,
            ..Default::default()
        })
        .await
    }

    /// Asks the cluster a linearizable question, which only a cluster with a
    /// leader and a quorum answers, and records the verdict for the health
    /// service. With `count`, the question is how many keys are ours, and
    /// the answer (with etcd's database size) goes to the metrics.
    async fn probe(&self, count: bool) -> Result<(), StoreError> {
        let question = if count {
            let (key, range_end) = self.keys.everything();
            pb::RangeRequest {
                key,
                range_end,
                count_only: true,
                ..Default::default()
            }
        } else {
            pb::RangeRequest {
                key: self.keys.outgoing(b"\0"),
                ..Default::default()
            }
        };
        let answer = match tokio::time::timeout(PROBE_LIMIT, self.kv_range(question)).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not answer within {PROBE_LIMIT:?}"
            ))),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                if *self.available.borrow() {
                    tracing::warn!("the etcd cluster does not answer: {error}");
                }
                self.available.send_replace(false);
                return Err(error);
            }
        };
        if !*self.available.borrow() {
            tracing::info!("the etcd cluster answers: serving");
        }
        self.available.send_replace(true);
        self.revision
            .store(revision_of(answer.header.as_ref()), Ordering::Relaxed);
        if count {
            self.keys_stored
                .store(answer.count.max(0) as u64, Ordering::Relaxed);
            let (_, channel) = self.cluster.current();
            let status = tokio::time::timeout(
                PROBE_LIMIT,
                maintenance_client(channel).status(pb::StatusRequest {}),
            )
            .await;
            if let Ok(Ok(status)) = status {
                self.disk_bytes
                    .store(status.into_inner().db_size.max(0) as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Probes the cluster every [`PROBE_INTERVAL`] until the store is gone.
async fn probe_forever(shared: std::sync::Weak<Shared>) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    for probe in 1u32.. {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Failures are logged when the availability changes.
        let _ = shared.probe(probe.is_multiple_of(COUNT_EVERY)).await;
    }
}

/// etcd grants whole seconds: a TTL rounds up to the next second.
fn whole_seconds(ttl: Duration) -> i64 {
    let ttl = ttl.min(MAX_TTL);
    (ttl.as_millis().div_ceil(1000) as i64).max(1)
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// `error` of a read at `revision`, naming the revision where etcd's
/// message does not.
fn at_revision(error: StoreError, revision: Revision) -> StoreError {
    match error {
        StoreError::Compacted { compacted, .. } => StoreError::Compacted {
            requested: revision,
            compacted,
        },
        StoreError::FutureRevision { current, .. } => StoreError::FutureRevision {
            requested: revision,
            current,
        },
        other => other,
    }
}

/// The capped whole reads of `txn` (`RangeQuery::whole_max_bytes`) in a
/// branch that writes (etcd applies the writes and answers the reads in
/// one step), with the operations before each. A transaction that writes
/// nothing is refused by its answer instead.
fn capped_reads(txn: &Txn) -> impl Iterator<Item = (&RangeQuery, &[Op])> {
    [&txn.success, &txn.failure]
        .into_iter()
        .filter(|ops| ops.iter().any(Op::writes))
        .flat_map(|ops| {
            ops.iter().enumerate().filter_map(|(index, op)| match op {
                Op::Get(query) if query.is_capped_whole() => Some((query, &ops[..index])),
                _ => None,
            })
        })
}

/// How often a transaction with capped reads is tried again when their
/// ranges changed between the check and the write.
const CAPPED_TXN_ATTEMPTS: usize = 16;

/// The lease that an etcd "lease not found" in `txn` is about: the first
/// leased put of either branch (etcd does not say which lease it missed).
fn first_lease(txn: &Txn) -> LeaseId {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .unwrap_or(0)
}

impl EtcdStore {
    /// `request` (the etcd form of `txn`, which has capped whole reads
    /// after writes) sent as `storage::apply` applies it locally: refused
    /// with [`StoreError::WholeReadTooLarge`] before anything is written if
    /// a capped read's range, plus what the transaction puts into it first,
    /// holds more than its cap (both branches are checked: which one runs
    /// is known only once etcd applies it). etcd applies a transaction and
    /// answers its reads in one step, so the ranges are read first, at one
    /// revision, and the transaction is sent nested in one that applies it
    /// only if none of those ranges changed since (every key's
    /// `mod_revision` at most that revision; a deleted key only makes a
    /// range smaller). If one did, it is checked again.
    async fn txn_with_capped_reads(
        &self,
        txn: &Txn,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, StoreError> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let keys = &self.shared.keys;
        for _ in 0..CAPPED_TXN_ATTEMPTS {
            let mut read_at = 0;
            let mut unchanged = Vec::new();
            for (query, earlier) in capped_reads(txn) {
                // A read of the past is what it is; the others at one
                // revision, the first one's.
                let past = query.revision != 0;
                let mut whole = query.clone();
                if !past {
                    whole.revision = read_at;
                }
                let answer = self
                    .shared
                    .kv_range(keys.range_request(&whole))
                    .await
                    .map_err(|error| at_revision(error, whole.revision))?;
                if read_at == 0 && !past {
                    read_at = revision_of(answer.header.as_ref());
                }
                let held = keys.range_result(&whole, answer).page_bytes();
                query.check_whole(held.saturating_add(apply::puts_into(query, earlier)))?;
                if past {
                    continue;
                }
                let (key, range_end) = keys.range(&query.range);
                unchanged.push(pb::Compare {
                    result: CompareResult::Less as i32,
                    target: CompareTarget::Mod as i32,
                    key,
                    range_end,
                    target_union: Some(TargetUnion::ModRevision(
                        etcd_number(read_at).saturating_add(1),
                    )),
                });
            }
            let guarded = pb::TxnRequest {
                compare: unchanged,
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(request.clone())),
                }],
                failure: Vec::new(),
            };
            let mut answer = self.kv_txn("Txn", guarded).await?;
            if !answer.succeeded {
                continue;
            }
            let inner = answer.responses.pop().and_then(|op| match op.response {
                Some(pb::response_op::Response::ResponseTxn(inner)) => Some(inner),
                _ => None,
            });
            let Some(mut inner) = inner else {
                return Err(StoreError::Internal(
                    "etcd answered a nested transaction without its answer".to_owned(),
                ));
            };
            // The outer header is the one with the whole header's revision.
            inner.header = answer.header;
            return Ok(inner);
        }
        Err(StoreError::Unavailable(format!(
            "the ranges of a transaction's sorted or filtered reads changed each of the \
             {CAPPED_TXN_ATTEMPTS} times they were checked against their cap; retry"
        )))
    }

    /// etcd's LeaseGrant of `id` (0: etcd chooses).
    async fn grant(&self, id: LeaseId, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        let request = pb::LeaseGrantRequest {
            ttl: whole_seconds(ttl),
            id,
        };
        let answer = self
            .shared
            .cluster
            .unary(
                "LeaseGrant",
                Retry::IfNeverSent,
                request,
                |channel, request| async move { lease_client(channel).lease_grant(request).await },
            )
            .await?;
        if !answer.error.is_empty() {
            return Err(StoreError::Rejected(format!(
                "etcd refused the lease: {}",
                answer.error
            )));
        }
        Ok(LeaseInfo {
            id: answer.id,
            ttl: seconds(answer.ttl),
            remaining: seconds(answer.ttl),
        })
    }
}

impl Store for EtcdStore {
    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<Record>, StoreError> {
        let answer = self
            .shared
            .kv_range(pb::RangeRequest {
                key: self.shared.keys.outgoing(key),
                revision: etcd_number(revision),
                ..Default::default()
            })
            .await
            .map_err(|error| at_revision(error, revision))?;
        Ok(answer.kvs.into_iter().next().map(record))
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<Revision, StoreError> {
        let request = pb::PutRequest {
            key: self.shared.keys.outgoing(&key),
            value,
            ..Default::default()
        };
        let answer = self
            .shared
            .cluster
            .unary(
                "Put",
                Retry::IfNeverSent,
                request,
                |channel, request| async move { kv_client(channel).put(request).await },
            )
            .await?;
        Ok(revision_of(answer.header.as_ref()))
    }

    async fn range(&self, query: RangeQuery) -> Result<RangeResult, StoreError> {
        let answer = self
            .shared
            .kv_range(self.shared.keys.range_request(&query))
            .await
            .map_err(|error| at_revision(error, query.revision))?;
        let result = self.shared.keys.range_result(&query, answer);
        // etcd reads and answers the range whole: past the cap of a whole
        // read it is refused here, as the local backends refuse it.
        query.check_whole(result.page_bytes())?;
        Ok(result)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let keys = &self.shared.keys;
        let request = pb::TxnRequest {
            compare: txn.compares.iter().map(|c| keys.compare(c)).collect(),
            success: txn.success.iter().map(|op| keys.op(op)).collect(),
            failure: txn.failure.iter().map(|op| keys.op(op)).collect(),
        };
        let sent = if capped_reads(&txn).next().is_some() {
            self.txn_with_capped_reads(&txn, request).await
        } else {
            self.kv_txn("Txn", request).await
        };
        let answer = match sent {
            Err(StoreError::LeaseNotFound(_)) => {
                return Err(StoreError::LeaseNotFound(first_lease(&txn)));
            }
            other => other?,
        };
        let branch = if answer.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // The Ranges of a transaction share one byte bound, as on the
        // local backends.
        let mut spent = 0usize;
        let mut results = Vec::with_capacity(branch.len());
        for (answer, op) in answer.responses.into_iter().zip(branch) {
            let result = match op {
                Op::Get(query) => keys.op_result(&Op::Get(query.after_spent(spent)), answer)?,
                _ => keys.op_result(op, answer)?,
            };
            if let OpResult::Get(range) = &result {
                spent = spent.saturating_add(range.page_bytes());
                // A capped read of a transaction that wrote nothing (those
                // that write were checked before they were sent).
                if let Op::Get(query) = op {
                    query.check_whole(range.page_bytes())?;
                }
            }
            results.push(result);
        }
        Ok(TxnResult {
            succeeded: answer.succeeded,
            revision: revision_of(answer.header.as_ref()),
            results,
        })
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        // etcd's own compaction of its own history; etcd compacts its
        // whole keyspace, not only our prefix.
        let request = pb::CompactionRequest {
            revision: etcd_number(revision),
            physical: false,
        };
        let answer = self
            .shared
            .cluster
            .unary(
                "Compact",
                Retry::IfNeverSent,
                request,
                |channel, request| async move { kv_client(channel).compact(request).await },
            )
            .await
            .map_err(|error| at_revision(error, revision))?;
        Ok(revision_of(answer.header.as_ref()))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        self.grant(0, ttl).await
    }

    async fn lease_grant_as(&self, id: LeaseId, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        match self.grant(id, ttl).await {
            Err(StoreError::LeaseExists(_)) => Err(StoreError::LeaseExists(id)),
            other => other,
        }
    }

    async fn lease_ids(&self) -> Result<Vec<LeaseId>, StoreError> {
        let answer = self
            .shared
            .cluster
            .unary(
                "LeaseLeases",
                Retry::Always,
                pb::LeaseLeasesRequest {},
                |channel, request| async move { lease_client(channel).lease_leases(request).await },
            )
            .await?;
        Ok(answer.leases.into_iter().map(|lease| lease.id).collect())
    }

    async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<Vec<LeaseInfo>, StoreError> {
        // etcd lists ids only, all of them: the page is cut here, and each
        // of its leases asked for its TTL (LEASE_INFO_CALLS at a time; one
        // gone meanwhile is left out).
        use futures_util::StreamExt as _;
        let mut ids = self.lease_ids().await?;
        ids.retain(|id| after.is_none_or(|after| *id > after));
        ids.sort_unstable();
        ids.truncate(limit);
        let answers: Vec<_> = futures_util::stream::iter(ids)
            .map(|id| self.lease_info(id))
            .buffered(LEASE_INFO_CALLS)
            .collect()
            .await;
        let mut leases = Vec::new();
        for answer in answers {
            match answer {
                Ok(lease) => leases.push(lease),
                Err(StoreError::LeaseNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(leases)
    }

    async fn lease_keys(
        &self,
        id: LeaseId,
        range: KeyRange,
        limit: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        // etcd answers every key of the lease at once (its own bound); ours
        // are those under --etcd-prefix, without it.
        let answer = self.time_to_live(id, true).await?;
        let mut keys: Vec<Bytes> = answer
            .keys
            .into_iter()
            .filter(|key| self.shared.keys.owns(key))
            .map(|key| self.shared.keys.incoming(key))
            .filter(|key| range.contains(key))
            .collect();
        keys.sort_unstable();
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }

    async fn lease_holds_foreign_keys(&self, id: LeaseId) -> Result<bool, StoreError> {
        let answer = self.time_to_live(id, true).await?;
        Ok(answer.keys.iter().any(|key| !self.shared.keys.owns(key)))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        // One request on etcd's keep-alive stream, one answer. Refreshing a
        // lease twice is harmless, so it may be retried anywhere.
        let answer = self
            .shared
            .cluster
            .unary(
                "LeaseKeepAlive",
                Retry::Always,
                pb::LeaseKeepAliveRequest { id },
                |channel, request| async move {
                    let (metadata, extensions, message) = request.into_parts();
                    let request = tonic::Request::from_parts(
                        metadata,
                        extensions,
                        tokio_stream::once(message),
                    );
                    let mut answers = lease_client(channel)
                        .lease_keep_alive(request)
                        .await?
                        .into_inner();
                    match answers.message().await? {
                        Some(answer) => Ok(tonic::Response::new(answer)),
                        None => Err(tonic::Status::unavailable(
                            "etcd closed the keep-alive stream without an answer",
                        )),
                    }
                },
            )
            .await?;
        if answer.ttl <= 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(LeaseInfo {
            id,
            ttl: seconds(answer.ttl),
            remaining: seconds(answer.ttl),
        })
    }

    async fn lease_info(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        let answer = self.time_to_live(id, false).await?;
        Ok(LeaseInfo {
            id,
            ttl: seconds(answer.granted_ttl),
            remaining: seconds(answer.ttl),
        })
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(u64, Revision), StoreError> {
        // etcd does not say how many keys a revocation deleted; its keys
        // just before are the closest answer (a key attached in between is
        // deleted but not counted).
        let attached = self.time_to_live(id, true).await?;
        let ours = attached
            .keys
            .iter()
            .filter(|key| self.shared.keys.owns(key))
            .count() as u64;
        let answer = self
            .shared
            .cluster
            .unary(
                "LeaseRevoke",
                Retry::IfNeverSent,
                pb::LeaseRevokeRequest { id },
                |channel, request| async move { lease_client(channel).lease_revoke(request).await },
            )
            .await;
        match answer {
            Ok(answer) => Ok((ours, revision_of(answer.header.as_ref()))),
            Err(StoreError::LeaseNotFound(_)) => Err(StoreError::LeaseNotFound(id)),
            Err(error) => Err(error),
        }
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        // etcd's leader expires leases and deletes their keys itself.
        Ok(0)
    }

    async fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        let slot = WatcherSlot::take(&self.shared.watchers, self.shared.max_watchers)?;
        watch::start(
            Arc::clone(&self.shared.cluster),
            self.shared.keys.clone(),
            range,
            from,
            slot,
        )
        .await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.shared.keys_stored.load(Ordering::Relaxed),
            disk_bytes: self.shared.disk_bytes.load(Ordering::Relaxed),
            revision: self.shared.revision.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Every page is read at one revision, so the copy is consistent while
        // writes go on (unless etcd compacts that revision away meanwhile,
        // which ends the copy with an error). A first pass over the keys
        // alone finds the leases they use, which the snapshot lists first.
        let first = self.shared.page(None, 0, true, SNAPSHOT_CHUNK).await?;
        let revision = revision_of(first.header.as_ref());
        let mut used = std::collections::BTreeSet::new();
        let mut page = first;
        loop {
            used.extend(page.kvs.iter().map(|kv| kv.lease).filter(|&id| id != 0));
            let Some(last) = page.kvs.last().filter(|_| page.more) else {
                break;
            };
            let last = last.key.clone();
            page = self
                .shared
                .page(Some(&last), revision, true, SNAPSHOT_CHUNK)
                .await?;
        }
        let mut leases = Vec::with_capacity(used.len());
        for id in used {
            match self.lease_info(id).await {
                Ok(info) => leases.push((id, info.ttl)),
                // Expired since: its keys are gone from the present, not
                // from this revision's copy; they keep a lease of the
                // shortest TTL and go soon after a restore.
                Err(StoreError::LeaseNotFound(_)) => leases.push((id, Duration::from_secs(1))),
                Err(error) => return Err(error),
            }
        }
        let (sender, chunks) = mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut after: Option<Bytes> = None;
            let mut limit = FIRST_SNAPSHOT_PAGE;
            loop {
                let page = match shared.page(after.as_ref(), revision, false, limit).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let more = page.more;
                after = page.kvs.last().map(|kv| kv.key.clone());
                let kvs: Vec<_> = page
                    .kvs
                    .into_iter()
                    .map(|kv| shared.keys.key_value(kv))
                    .collect();
                limit = next_snapshot_page(limit, &kvs);
                if !kvs.is_empty() && sender.send(Ok(kvs)).await.is_err() {
                    return;
                }
                if !more || after.is_none() {
                    return;
                }
            }
        });
        Ok(Snapshot {
            revision,
            leases,
            chunks,
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write is already in etcd's fsynced log.
        Ok(())
    }

    fn availability(&self) -> signal::Receiver<bool> {
        self.shared.available.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::etcd_process::EtcdCluster;
    use super::*;
    use crate::storage::conformance::{Alongside, Expiry, conformance_suite};

    /// A store over a fresh single-member etcd of its own, so that revisions
    /// start over as on a fresh local store. Under a prefix, to show that
    /// the prefix is invisible.
    async fn fresh() -> Alongside<EtcdStore, EtcdCluster> {
        let etcd = tokio::task::spawn_blocking(EtcdCluster::single)
            .await
            .expect("etcd starts");
        let mut config = EtcdConfig::new(etcd.urls());
        config.prefix = b"conformance/".to_vec();
        let store = EtcdStore::connect(&config, WatchLimits::default())
            .await
            .expect("store over etcd");
        Alongside { store, _kept: etcd }
    }

    conformance_suite!(fresh().await, Expiry::Remote);

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::MAX), MAX_TTL.as_secs() as i64);
    }
}
