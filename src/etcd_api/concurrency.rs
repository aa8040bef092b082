//! The steps of etcd's `clientv3/concurrency` recipes, over the store: the
//! waiting that etcd's Lock and Election services do for their callers
//! (etcd runs the Go recipes inside its server; these are the same steps,
//! without a client in between).
//!
//! A contender's key is `PREFIX` + its lease id in hex; the holder (lock
//! owner, leader) is the key of the prefix created first; a contender
//! waits, as etcd's `waitDeletes` does, for every key created before its
//! own to be deleted, watching the newest of them each time.

use bytes::{Bytes, BytesMut};
use tokio_stream::StreamExt;
use tonic::Status;

use super::{Api, errors};
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, KeyValue, LeaseId, Op, OpResult,
    RangeQuery, Txn, TxnResult,
};
use crate::storage::{Revision, Store};

/// `prefix` + `lease` in lower-case hex: a contender's key, as etcd names it.
pub(crate) fn contender_key(prefix: &[u8], lease: LeaseId) -> Bytes {
    let mut key = BytesMut::from(prefix);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key.freeze()
}

/// `name` + "/": the prefix of a lock's or election's keys.
pub(crate) fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = BytesMut::from(name);
    prefix.extend_from_slice(b"/");
    prefix.freeze()
}

impl<S: Store> Api<S> {
    pub(crate) async fn run(&self, txn: Txn) -> Result<TxnResult, Status> {
        self.store.txn(txn).await.map_err(errors::from_store_error)
    }

    /// The keys of `prefix`, and the revision they were read at.
    async fn contenders(&self, prefix: &Bytes) -> Result<(Vec<KeyValue>, Revision), Status> {
        let result = self
            .store
            .range(RangeQuery::all(KeyRange::prefix(prefix.clone())))
            .await
            .map_err(errors::from_store_error)?;
        Ok((result.kvs, result.revision))
    }

    /// The holder of `prefix` (its key created first), if any, and the
    /// revision of the read.
    pub(crate) async fn holder(
        &self,
        prefix: &Bytes,
    ) -> Result<(Option<KeyValue>, Revision), Status> {
        let (keys, revision) = self.contenders(prefix).await?;
        let first = keys.into_iter().min_by_key(|kv| kv.record.create_revision);
        Ok((first, revision))
    }

    /// Puts `key` (with `value` and `lease`) unless it exists; returns the
    /// key's create revision and the revision of the transaction.
    pub(crate) async fn enter(
        &self,
        key: &Bytes,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<(KeyValue, Revision), Status> {
        let result = self
            .run(Txn {
                compares: vec![Compare::key(
                    key.clone(),
                    CompareTarget::CreateRevision(0),
                    CompareOp::Equal,
                )],
                success: vec![Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease,
                    prev: false,
                }],
                failure: vec![Op::Get(RangeQuery::all(KeyRange::key(key.clone())))],
            })
            .await?;
        let revision = result.revision;
        if result.succeeded {
            let record = crate::storage::Record::after_put(None, value, revision, lease);
            return Ok((
                KeyValue {
                    key: key.clone(),
                    record,
                },
                revision,
            ));
        }
        match result.results.into_iter().next() {
            Some(OpResult::Get(range)) if !range.kvs.is_empty() => {
                Ok((range.kvs.into_iter().next().expect("one key"), revision))
            }
            // Deleted between the compare and the read: impossible in one
            // transaction; answered as an error rather than a panic.
            _ => Err(Status::internal(
                "the contender's key vanished inside a transaction",
            )),
        }
    }

    /// Waits until no key of `prefix` created at or before `max_create` is
    /// left; returns the revision of the read that found none.
    pub(crate) async fn wait_deletes(
        &self,
        prefix: &Bytes,
        max_create: Revision,
    ) -> Result<Revision, Status> {
        loop {
            let (keys, revision) = self.contenders(prefix).await?;
            let newest_before = keys
                .into_iter()
                .filter(|kv| kv.record.create_revision <= max_create)
                .max_by_key(|kv| kv.record.create_revision);
            let Some(blocking) = newest_before else {
                return Ok(revision);
            };
            self.wait_delete(blocking.key, revision).await?;
        }
    }

    /// Waits for `key` to be deleted at or after revision `from`.
    async fn wait_delete(&self, key: Bytes, from: Revision) -> Result<(), Status> {
        let mut events = self
            .store
            .watch(KeyRange::key(key), Some(from))
            .await
            .map_err(errors::from_store_error)?;
        while let Some(batch) = events.next().await {
            let batch = batch.map_err(errors::from_store_error)?;
            if batch
                .iter()
                .any(|event| matches!(event.kind, EventKind::Delete | EventKind::Expire))
            {
                return Ok(());
            }
        }
        Err(Status::unavailable("lost watcher waiting for delete"))
    }
}

/// Deletes a contender's key unless disarmed: a caller that gives up
/// (cancels its Lock or Campaign) must not leave its key queued, as etcd's
/// recipe deletes it when its wait fails.
pub(crate) struct Withdraw<S: Store> {
    api: Option<(Api<S>, Bytes)>,
}

impl<S: Store> Withdraw<S> {
    pub(crate) fn new(api: Api<S>, key: Bytes) -> Withdraw<S> {
        Withdraw {
            api: Some((api, key)),
        }
    }

    /// The wait succeeded: the key stays.
    pub(crate) fn disarm(mut self) {
        self.api = None;
    }
}

impl<S: Store> Drop for Withdraw<S> {
    fn drop(&mut self) {
        if let Some((api, key)) = self.api.take() {
            // Dropped on a runtime thread (a cancelled request future).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = api
                        .run(Txn::of(vec![Op::Delete {
                            range: KeyRange::key(key),
                            prev: false,
                        }]))
                        .await;
                });
            }
        }
    }
}
