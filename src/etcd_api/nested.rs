//! Transactions nested in a transaction, run on a store whose transactions
//! are flat.
//!
//! etcd decides a nested Txn's branches from the state before any of its
//! operations runs, then applies the chosen operations in order. Here each
//! compare is first evaluated by the store (a read-only transaction of
//! that one compare, which also reads the keys it looks at), which chooses
//! the path; then the path's operations run as one flat transaction whose
//! compares pin every key those reads saw (same mod revision, and for a
//! range, no key written since the read). If anything the choice rested
//! on changed in between, the pins fail, nothing is applied, and it starts
//! over. So the result is what an atomic nested Txn would have done, and
//! what a compare means stays in `storage::apply`.

use tonic::Status;

use super::Api;
use super::convert::{Path, TxnTree};
use crate::storage::Store;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, KeyRange, Op, OpResult, RangeEnd, RangeQuery, Txn, TxnResult,
};

/// What running a nested Txn gave: the path taken and the flat result.
pub(crate) struct Ran {
    pub(crate) path: Path,
    pub(crate) result: TxnResult,
}

impl<S: Store> Api<S> {
    /// Runs `tree` (with nested Txns) atomically, as etcd would.
    pub(crate) async fn run_nested(&self, tree: &TxnTree) -> Result<Ran, Status> {
        loop {
            let mut pins = Vec::new();
            let path = self.choose(tree, &mut pins).await?;
            let mut ops = Vec::new();
            tree.ops_along(&path, &mut ops);
            let result = self
                .run(Txn {
                    compares: pins,
                    success: ops,
                    failure: Vec::new(),
                })
                .await?;
            if result.succeeded {
                return Ok(Ran { path, result });
            }
        }
    }

    /// The branches `tree` takes in the store as it is, with the compares
    /// that hold while it stays so.
    fn choose<'a>(
        &'a self,
        tree: &'a TxnTree,
        pins: &'a mut Vec<Compare>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Path, Status>> + Send + 'a>>
    {
        Box::pin(async move {
            let mut succeeded = true;
            for compare in &tree.compares {
                succeeded &= self.evaluate(compare, pins).await?;
            }
            let mut nested = Vec::new();
            for step in tree.branch(succeeded) {
                if let super::convert::Step::Nested(inner) = step {
                    nested.push(self.choose(inner, pins).await?);
                }
            }
            Ok(Path { succeeded, nested })
        })
    }

    /// Whether `compare` holds now; adds the pins of what it looked at.
    async fn evaluate(&self, compare: &Compare, pins: &mut Vec<Compare>) -> Result<bool, Status> {
        let mut read = RangeQuery::all(compare.range());
        read.keys_only = true;
        let result = self
            .run(Txn {
                compares: vec![compare.clone()],
                success: vec![Op::Get(read.clone())],
                failure: vec![Op::Get(read)],
            })
            .await?;
        let Some(OpResult::Get(seen)) = result.results.into_iter().next() else {
            return Err(Status::internal("a compare's read answered nothing"));
        };
        for kv in &seen.kvs {
            pins.push(Compare::key(
                kv.key.clone(),
                CompareTarget::ModRevision(kv.record.mod_revision),
                CompareOp::Equal,
            ));
        }
        match compare.range_end {
            // A missing key stays missing.
            RangeEnd::Single if seen.kvs.is_empty() => pins.push(Compare::key(
                compare.key.clone(),
                CompareTarget::ModRevision(0),
                CompareOp::Equal,
            )),
            RangeEnd::Single => {}
            // No key of the range written after the read (a new one
            // included); deleted ones fail their own pin above.
            _ => {
                let range: KeyRange = compare.range();
                pins.push(Compare {
                    key: range.start,
                    range_end: range.end,
                    target: CompareTarget::ModRevision(seen.revision + 1),
                    op: CompareOp::Less,
                });
            }
        }
        Ok(result.succeeded)
    }
}
