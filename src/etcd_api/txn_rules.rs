//! etcd's rule that one Txn may not write a key twice: two puts of one key,
//! or a put of a key that a delete of the same branch covers, are refused
//! with "duplicate key given in txn request". Deletes may overlap each
//! other. In a nested Txn only one branch runs, so a key put in both its
//! branches is one write.
//!
//! Our storage would apply such a Txn (the later write wins); etcd refuses
//! it before anything runs, and clients rely on the refusal, so the rule is
//! checked here, as etcd's `checkIntervals` does, before the store is called.

use std::collections::HashSet;

use bytes::Bytes;
use tonic::Status;

use super::errors;
use crate::proto::etcd::etcdserverpb as pb;

/// A deleted interval: `[start, end)`, `end` `None` for a single key, or
/// empty for "to the end of the keyspace".
struct Deleted {
    start: Bytes,
    end: Option<Bytes>,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_ref(),
            Some(end) if end.is_empty() || end.as_ref() == b"\0" => key >= self.start.as_ref(),
            Some(end) => self.start.as_ref() <= key && key < end.as_ref(),
        }
    }
}

/// Refuses `ops` (one branch) if it writes a key twice.
pub(crate) fn check_writes(ops: &[pb::RequestOp]) -> Result<(), Status> {
    intervals(ops).map(|_| ())
}

/// The keys the branch puts and the ranges it deletes, nested branches
/// included, or the duplicate-key refusal.
fn intervals(ops: &[pb::RequestOp]) -> Result<(HashSet<Bytes>, Vec<Deleted>), Status> {
    use pb::request_op::Request;
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(delete)) => Some(Deleted {
                start: delete.key.clone(),
                end: (!delete.range_end.is_empty()).then(|| delete.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let covered = |deleted: &[Deleted], key: &[u8]| deleted.iter().any(|range| range.covers(key));
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deleted_then) = intervals(&nested.success)?;
        let (puts_else, deleted_else) = intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || covered(&deleted, key) {
                return Err(errors::duplicate_key());
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            // Put in both branches of the nested Txn: one write.
            if (puts.contains(key) && !puts_then.contains(key)) || covered(&deleted, key) {
                return Err(errors::duplicate_key());
            }
            puts.insert(key.clone());
        }
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || covered(&deleted, &put.key) {
            return Err(errors::duplicate_key());
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_op::Request;

    fn put(key: &'static [u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: Bytes::from_static(key),
                ..Default::default()
            })),
        }
    }

    fn delete(key: &'static [u8], end: &'static [u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: Bytes::from_static(key),
                range_end: Bytes::from_static(end),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestTxn(pb::TxnRequest {
                compare: Vec::new(),
                success,
                failure,
            })),
        }
    }

    #[test]
    fn a_key_written_twice_is_refused_and_overlapping_deletes_are_not() {
        assert!(check_writes(&[put(b"a"), put(b"b")]).is_ok());
        assert!(check_writes(&[put(b"a"), put(b"a")]).is_err());
        assert!(check_writes(&[delete(b"a", b"c"), put(b"b")]).is_err());
        assert!(check_writes(&[delete(b"a", b"c"), put(b"c")]).is_ok());
        assert!(check_writes(&[delete(b"a", b"\0"), put(b"z")]).is_err());
        assert!(check_writes(&[delete(b"a", b""), put(b"a")]).is_err());
        assert!(check_writes(&[delete(b"a", b"c"), delete(b"b", b"d")]).is_ok());
    }

    #[test]
    fn nested_branches_are_one_write_each_but_not_with_the_outer_level() {
        assert!(check_writes(&[nested(vec![put(b"a")], vec![put(b"a")])]).is_ok());
        assert!(check_writes(&[nested(vec![put(b"a")], vec![]), put(b"a")]).is_err());
        assert!(check_writes(&[nested(vec![delete(b"a", b"c")], vec![]), put(b"b")]).is_err());
        assert!(
            check_writes(&[
                nested(vec![put(b"a")], vec![]),
                nested(vec![], vec![put(b"a")])
            ])
            .is_err()
        );
    }
}
