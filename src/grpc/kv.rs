//! The full API, `keyvalue.v1.KV`: every handler validates (through
//! `convert`), delegates to the [`Store`], and maps errors through `status`.
//!
//! Put and Delete with a condition are transactions with one compare, whose
//! failure branch reads the key, so a failed compare answers with the current
//! state. Put with `ttl_ms` grants a lease of its own first (and revokes it if
//! the put does not happen).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::Limits;
use super::access::{Checks, scope_of};
use super::convert::{self, header, kv_of};
use super::leases;
use super::status::from_store_error;
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_server::{Kv, KvServer};
use crate::shutdown::Stopping;
use crate::storage::Store;
use crate::storage::ops::{Compare, KeyRange, Op, OpResult, RangeQuery, Txn, TxnResult};

/// How long a snapshot waits, by default, for a client that stopped reading.
pub const DEFAULT_SNAPSHOT_STALL: Duration = Duration::from_secs(60);

/// What an open watch gets when the server stops.
fn server_stops() -> Status {
    Status::unavailable(
        "the server is stopping: reconnect (to another server, if there is one) and \
         watch again from the revision after the last event received",
    )
}

/// `chunks`, handed over through a task that gives up once the client has
/// taken nothing for `stall`: a snapshot holds a read transaction of the
/// store (on disk, every page it sees stays allocated), so a client that
/// stops reading must not hold it for good. The client then gets
/// `DEADLINE_EXCEEDED`, and the store's reader ends as its channel closes.
fn unless_stalled(
    chunks: impl Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static,
    stall: Duration,
) -> impl Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static {
    let (out, taken) = tokio::sync::mpsc::channel(1);
    let (gave_up, verdict) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            match tokio::time::timeout(stall, out.send(chunk)).await {
                Ok(Ok(())) => {}
                // The client went away: nothing to tell.
                Ok(Err(_)) => return,
                Err(_) => {
                    let _ = gave_up.send(Status::deadline_exceeded(format!(
                        "the snapshot was ended: the client read nothing for {stall:?} \
                         (--snapshot-stall-timeout), and a snapshot holds the store's pages \
                         while it is open"
                    )));
                    return;
                }
            }
        }
    });
    // After the chunks, the status of a snapshot that was given up, if it
    // was (a finished one drops `gave_up`, and nothing follows).
    let ended = tokio_stream::once(verdict)
        .then(|verdict| async move { verdict.await.ok() })
        .filter_map(|status| status.map(Err));
    tokio_stream::wrappers::ReceiverStream::new(taken).chain(ended)
}

/// Handlers of `keyvalue.v1.KV` over a [`Store`].
pub struct KvService<S> {
    store: Arc<S>,
    limits: Limits,
    /// Ends open watches when the server stops.
    stopping: Stopping,
    /// How long a snapshot waits for a client that stopped reading.
    snapshot_stall: Duration,
}

impl<S: Store> KvService<S> {
    /// A service over `store`.
    pub fn new(store: Arc<S>, limits: Limits) -> Self {
        KvService {
            store,
            limits,
            stopping: Stopping::never(),
            snapshot_stall: DEFAULT_SNAPSHOT_STALL,
        }
    }

    /// The service, whose snapshots end with `DEADLINE_EXCEEDED` once their
    /// client has read nothing for `stall` (`--snapshot-stall-timeout`).
    pub fn with_snapshot_stall(self, stall: Duration) -> Self {
        KvService {
            snapshot_stall: stall,
            ..self
        }
    }

    /// The service, whose watches end with `UNAVAILABLE` as soon as
    /// `stopping` says the server stops (instead of holding the graceful
    /// shutdown for its whole grace).
    pub fn with_stopping(self, stopping: Stopping) -> Self {
        KvService { stopping, ..self }
    }

    /// The tonic service, ready to add to a server.
    pub fn into_server(self) -> KvServer<Self> {
        let max_message = self.limits.max_message_bytes();
        KvServer::new(self).max_decoding_message_size(max_message)
    }

    /// Runs `txn`, mapping a storage error to its status.
    async fn run(&self, txn: Txn) -> Result<TxnResult, Status> {
        self.store.txn(txn).await.map_err(from_store_error)
    }
}

/// The token scope the auth layer gave the request, if any.
/// The compares a Put's or Delete's `condition` on `key` stands for (none
/// without a condition).
fn compares_for(key: &Bytes, condition: Option<pb::Condition>) -> Result<Vec<Compare>, Status> {
    condition
        .map(|condition| convert::condition(key, condition))
        .into_iter()
        .collect()
}

/// The compare-and-set transaction: `ops` if `compares` hold, else a read of
/// `key`, so a failed compare answers with the current state. Without
/// compares there is nothing to fail, and no read.
fn conditional(key: &Bytes, compares: Vec<Compare>, ops: Vec<Op>) -> Txn {
    let failure = if compares.is_empty() {
        Vec::new()
    } else {
        vec![Op::Get(RangeQuery::all(KeyRange::key(key.clone())))]
    };
    Txn {
        compares,
        success: ops,
        failure,
    }
}

/// The record the failure branch of [`conditional`] read.
fn current_state(result: &mut TxnResult) -> Option<pb::KeyValue> {
    match result.results.pop() {
        Some(OpResult::Get(range)) => range.kvs.into_iter().next().map(kv_of),
        _ => None,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Kv for KvService<S> {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let request = request.into_inner();
        checks.key(&request.key)?;
        let query = RangeQuery::all(KeyRange::key(request.key)).at(request.revision);
        let result = self.store.range(query).await.map_err(from_store_error)?;
        Ok(Response::new(pb::GetResponse {
            header: header(result.revision),
            kv: result.kvs.into_iter().next().map(kv_of),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let mut request = request.into_inner();
        let mut op = convert::put_op(&checks, &request)?;
        let ttl = match (request.ttl_ms, request.lease) {
            (0, _) => None,
            (ttl_ms, 0) => Some(convert::ttl(ttl_ms)?),
            _ => {
                return Err(Status::invalid_argument(
                    "give either lease or ttl_ms, not both",
                ));
            }
        };
        // The condition is checked before a lease is granted for it.
        let compares = compares_for(&request.key, request.condition.take())?;
        let lease = match ttl {
            Some(ttl) => {
                let lease = self
                    .store
                    .lease_grant(ttl)
                    .await
                    .map_err(from_store_error)?;
                if let Op::Put {
                    lease: attached, ..
                } = &mut op
                {
                    *attached = lease.id;
                }
                lease.id
            }
            None => 0,
        };
        let outcome = self
            .run(conditional(&request.key, compares, vec![op]))
            .await;
        let mut result = match outcome {
            Ok(result) if result.succeeded => result,
            other => {
                // The put did not happen: its own lease has nothing to keep.
                if lease != 0 {
                    let _ = self.store.lease_revoke(lease).await;
                }
                let mut result = other?;
                return Ok(Response::new(pb::PutResponse {
                    header: header(result.revision),
                    succeeded: false,
                    prev_kv: current_state(&mut result),
                    lease: 0,
                }));
            }
        };
        let prev_kv = match result.results.pop() {
            Some(OpResult::Put { prev }) => prev.map(kv_of),
            _ => None,
        };
        Ok(Response::new(pb::PutResponse {
            header: header(result.revision),
            succeeded: true,
            prev_kv,
            lease,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let request = request.into_inner();
        let single = request.range_end.is_empty() && !request.prefix;
        if request.condition.is_some() && !single {
            return Err(Status::invalid_argument(
                "a condition applies to single-key deletes only; use Txn for ranges",
            ));
        }
        let key = request.key.clone();
        let range = convert::key_range(
            &checks,
            request.key,
            request.range_end,
            request.prefix,
            true,
        )?;
        let delete = Op::Delete {
            range,
            prev: request.prev_kv,
        };
        let mut result = self
            .run(conditional(
                &key,
                compares_for(&key, request.condition)?,
                vec![delete],
            ))
            .await?;
        if !result.succeeded {
            return Ok(Response::new(pb::DeleteResponse {
                header: header(result.revision),
                succeeded: false,
                deleted: 0,
                prev_kvs: current_state(&mut result).into_iter().collect(),
            }));
        }
        let (deleted, prev_kvs) = match result.results.pop() {
            Some(OpResult::Delete { deleted, prev }) => {
                (deleted, prev.into_iter().map(kv_of).collect())
            }
            _ => (0, Vec::new()),
        };
        Ok(Response::new(pb::DeleteResponse {
            header: header(result.revision),
            succeeded: true,
            deleted,
            prev_kvs,
        }))
    }

    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let query = convert::range_query(&checks, request.into_inner())?;
        let result = self
            .store
            .range(query.clone())
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(convert::range_response(&query, result)))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let txn = convert::txn(&checks, request.into_inner())?;
        let result = self.run(txn.clone()).await?;
        let branch = if result.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        Ok(Response::new(pb::TxnResponse {
            header: header(result.revision),
            succeeded: result.succeeded,
            responses: convert::op_responses(branch, result.results, result.revision),
        }))
    }

    async fn batch_get(
        &self,
        request: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let request = request.into_inner();
        let (keys, revision) = (request.keys, request.revision);
        self.limits.check_count(
            "keys",
            keys.len(),
            self.limits.max_batch_keys,
            "--max-batch-keys",
        )?;
        let mut gets = Vec::with_capacity(keys.len());
        for key in keys {
            checks.key(&key)?;
            gets.push(Op::Get(RangeQuery::all(KeyRange::key(key)).at(revision)));
        }
        let result = self.run(Txn::of(gets)).await?;
        let revision = result.revision;
        let results = result
            .results
            .into_iter()
            .map(|result| pb::GetResponse {
                header: header(revision),
                kv: match result {
                    OpResult::Get(range) => range.kvs.into_iter().next().map(kv_of),
                    _ => None,
                },
            })
            .collect();
        Ok(Response::new(pb::BatchGetResponse {
            header: header(revision),
            results,
        }))
    }

    async fn batch_put(
        &self,
        request: Request<pb::BatchPutRequest>,
    ) -> Result<Response<pb::BatchPutResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let puts = request.into_inner().puts;
        self.limits.check_count(
            "puts",
            puts.len(),
            self.limits.max_batch_keys,
            "--max-batch-keys",
        )?;
        let mut ops = Vec::with_capacity(puts.len());
        for put in &puts {
            if put.condition.is_some() || put.ttl_ms != 0 {
                return Err(Status::invalid_argument(
                    "puts of a batch take no condition (use Txn) and no ttl_ms (grant a \
                     lease and set lease)",
                ));
            }
            ops.push(convert::put_op(&checks, put)?);
        }
        let result = self.run(Txn::of(ops)).await?;
        Ok(Response::new(pb::BatchPutResponse {
            header: header(result.revision),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let request = request.into_inner();
        let range = convert::key_range(
            &checks,
            request.key,
            request.range_end,
            request.prefix,
            true,
        )?;
        let from = match request.start_revision {
            0 => None,
            revision => Some(revision),
        };
        let events = self
            .store
            .watch(range, from)
            .await
            .map_err(from_store_error)?;
        let responses = events.map(|batch| {
            let events = batch.map_err(from_store_error)?;
            let revision = events.last().map_or(0, |event| event.revision());
            Ok(pb::WatchResponse {
                header: header(revision),
                events: events.into_iter().map(convert::event).collect(),
            })
        });
        let responses = self.stopping.interrupt(responses, || Err(server_stops()));
        Ok(Response::new(Box::pin(responses)))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // A copy of everything: only for tokens that may see every key.
        let scope = scope_of(&request);
        Checks::new(&self.limits, scope.as_ref()).everything_for("take a snapshot (a backup)")?;
        let snapshot = self.store.snapshot().await.map_err(from_store_error)?;
        let revision = snapshot.revision;
        // The first chunk names the revision and every lease, even in a
        // store with leases and no keys; the keys follow.
        let head = pb::SnapshotChunk {
            header: header(revision),
            leases: snapshot
                .leases
                .iter()
                .map(|(id, ttl)| pb::SnapshotLease {
                    id: *id,
                    ttl_ms: ttl.as_millis() as u64,
                })
                .collect(),
            kvs: Vec::new(),
            done: false,
        };
        let chunks = tokio_stream::once(Ok(head))
            .chain(
                tokio_stream::wrappers::ReceiverStream::new(snapshot.chunks).map(move |chunk| {
                    let kvs = chunk.map_err(from_store_error)?;
                    Ok(pb::SnapshotChunk {
                        header: header(revision),
                        leases: Vec::new(),
                        kvs: kvs.into_iter().map(kv_of).collect(),
                        done: false,
                    })
                }),
            )
            .chain(tokio_stream::once(Ok(pb::SnapshotChunk {
                header: header(revision),
                leases: Vec::new(),
                kvs: Vec::new(),
                done: true,
            })));
        let chunks = unless_stalled(chunks, self.snapshot_stall);
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        // Compaction forgets the history of every key: only for tokens that
        // may see every key.
        let scope = scope_of(&request);
        Checks::new(&self.limits, scope.as_ref()).everything_for("compact the history")?;
        let revision = request.into_inner().revision;
        if revision == 0 {
            return Err(Status::invalid_argument(
                "revision is required: the oldest revision to keep",
            ));
        }
        let current = self
            .store
            .compact(revision)
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(pb::CompactResponse {
            header: header(current),
        }))
    }

    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let ttl = convert::ttl(request.into_inner().ttl_ms)?;
        let lease = self
            .store
            .lease_grant(ttl)
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            id: lease.id,
            ttl_ms: lease.ttl.as_millis() as u64,
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let scope = scope_of(&request);
        let id = request.into_inner().id;
        Checks::new(&self.limits, scope.as_ref())
            .lease(&*self.store, id, "keep alive")
            .await
            .map_err(from_store_error)??;
        let lease = self
            .store
            .lease_keep_alive(id)
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            id: lease.id,
            ttl_ms: lease.ttl.as_millis() as u64,
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        // Revoking deletes the lease's keys: a scoped token may revoke only
        // a lease whose keys are all in its scope.
        let scope = scope_of(&request);
        let id = request.into_inner().id;
        Checks::new(&self.limits, scope.as_ref())
            .lease(&*self.store, id, "revoke")
            .await
            .map_err(from_store_error)??;
        let (deleted, revision) = self
            .store
            .lease_revoke(id)
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(revision),
            deleted,
        }))
    }

    async fn lease_info(
        &self,
        request: Request<pb::LeaseInfoRequest>,
    ) -> Result<Response<pb::LeaseInfoResponse>, Status> {
        let scope = scope_of(&request);
        let answer = leases::info(
            &*self.store,
            &self.limits,
            scope.as_ref(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn lease_list(
        &self,
        request: Request<pb::LeaseListRequest>,
    ) -> Result<Response<pb::LeaseListResponse>, Status> {
        let scope = scope_of(&request);
        let answer = leases::list(
            &*self.store,
            &self.limits,
            scope.as_ref(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(answer))
    }
}
