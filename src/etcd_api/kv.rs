//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn and Compact over the
//! store. Each handler checks, converts (`convert`), delegates and maps
//! errors (`errors`).
//!
//! A Put with `ignore_value` or `ignore_lease` keeps what the key holds:
//! it reads the key and writes with a compare on the revision it read,
//! again if another write came between, so the kept value or lease is
//! never one a concurrent write replaced.

use tonic::{Request, Response, Status};

use super::convert::{self, check_put_flags, delete_op, key_value, put_op};
use super::{Api, errors};
use crate::grpc::{Checks, scope_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::kv_server::Kv;
use crate::storage::Store;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, KeyRange, Op, OpResult, RangeQuery, Txn, TxnResult,
};

/// The handlers of `etcdserverpb.KV`.
pub(crate) struct KvApi<S>(pub(crate) Api<S>);

impl<S: Store> KvApi<S> {
    async fn run(&self, txn: Txn) -> Result<TxnResult, Status> {
        self.0
            .store
            .txn(txn)
            .await
            .map_err(errors::from_store_error)
    }

    /// `op` (a put) with the value or lease the key holds now, written only
    /// if the key still holds them.
    async fn put_keeping(&self, mut op: Op, request: &pb::PutRequest) -> Result<TxnResult, Status> {
        loop {
            let current = self
                .0
                .store
                .range(RangeQuery::all(KeyRange::key(request.key.clone())))
                .await
                .map_err(errors::from_store_error)?;
            let Some(held) = current.kvs.into_iter().next() else {
                return Err(errors::key_not_found());
            };
            if let Op::Put { value, lease, .. } = &mut op {
                if request.ignore_value {
                    *value = held.record.value.clone();
                }
                if request.ignore_lease {
                    *lease = held.record.lease;
                }
            }
            let result = self
                .run(Txn {
                    compares: vec![Compare::key(
                        request.key.clone(),
                        CompareTarget::ModRevision(held.record.mod_revision),
                        CompareOp::Equal,
                    )],
                    success: vec![op.clone()],
                    failure: Vec::new(),
                })
                .await?;
            if result.succeeded {
                return Ok(result);
            }
        }
    }
}

#[tonic::async_trait]
impl<S: Store> Kv for KvApi<S> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.0.limits, scope.as_ref());
        let (query, shape) = convert::range_query(&checks, request.into_inner())?;
        let result = self
            .0
            .store
            .range(query)
            .await
            .map_err(errors::from_store_error)?;
        let header = self.0.identity.header(result.revision);
        Ok(Response::new(convert::range_answer(
            result, &shape, header,
        )?))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.0.limits, scope.as_ref());
        let request = request.into_inner();
        check_put_flags(&request)?;
        let op = put_op(&checks, &request)?;
        let mut result = if request.ignore_value || request.ignore_lease {
            self.put_keeping(op, &request).await?
        } else {
            self.run(Txn::of(vec![op])).await?
        };
        let prev_kv = match result.results.pop() {
            Some(OpResult::Put { prev }) => prev.map(key_value),
            _ => None,
        };
        Ok(Response::new(pb::PutResponse {
            header: self.0.identity.header(result.revision),
            prev_kv,
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.0.limits, scope.as_ref());
        let op = delete_op(&checks, request.into_inner())?;
        let mut result = self.run(Txn::of(vec![op])).await?;
        let (deleted, prev_kvs) = match result.results.pop() {
            Some(OpResult::Delete { deleted, prev }) => {
                (deleted, prev.into_iter().map(key_value).collect())
            }
            _ => (0, Vec::new()),
        };
        Ok(Response::new(pb::DeleteRangeResponse {
            header: self.0.identity.header(result.revision),
            deleted: i64::try_from(deleted).unwrap_or(i64::MAX),
            prev_kvs,
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.0.limits, scope.as_ref());
        let tree = convert::txn(&checks, request.into_inner(), self.0.limits.max_txn_ops)?;
        let (path, result) = if tree.has_nested() {
            let ran = self.0.run_nested(&tree).await?;
            (ran.path, ran.result)
        } else {
            let result = self.run(tree.flat()).await?;
            let path = convert::Path {
                succeeded: result.succeeded,
                nested: Vec::new(),
            };
            (path, result)
        };
        let revision = result.revision;
        let responses = tree.responses(&path, &mut result.results.into_iter(), revision);
        Ok(Response::new(pb::TxnResponse {
            header: self.0.identity.header(revision),
            succeeded: path.succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        // `physical` asks to wait until the compacted history is gone from
        // the backend; the store drops it in chunks after it has recorded
        // the compaction, and reads below it fail from that moment on, so
        // the answer is the same either way.
        let revision = request.into_inner().revision;
        let revision = u64::try_from(revision)
            .ok()
            .filter(|&revision| revision > 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "etcdserver: compact revision must be positive, got {revision}"
                ))
            })?;
        let current = self
            .0
            .store
            .compact(revision)
            .await
            .map_err(errors::from_store_error)?;
        Ok(Response::new(pb::CompactionResponse {
            header: self.0.identity.header(current),
        }))
    }
}
