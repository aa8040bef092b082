//! Our storage vocabulary in etcd's messages and back, and the key prefix
//! (`--etcd-prefix`) that every key carries inside etcd.
//!
//! The data models are the same (etcd's revisions, versions and leases are
//! ours), so this is field-for-field; the one transformation is the prefix,
//! added to every key going out and stripped from every key coming back.
//! Numbers going out pass through [`etcd_number`]: etcd's are signed.

use bytes::{Bytes, BytesMut};

use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::mvccpb;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, Op, OpResult,
    RangeEnd, RangeQuery, RangeResult, prefix_end,
};
use crate::storage::{Record, StoreError};

/// Where our keys live inside etcd.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: Bytes,
}

impl Keys {
    pub(crate) fn new(prefix: &[u8]) -> Keys {
        Keys {
            prefix: Bytes::copy_from_slice(prefix),
        }
    }

    /// `key` as etcd stores it.
    pub(crate) fn outgoing(&self, key: &[u8]) -> Bytes {
        if self.prefix.is_empty() {
            return Bytes::copy_from_slice(key);
        }
        let mut full = BytesMut::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full.freeze()
    }

    /// A key from etcd without the prefix.
    pub(crate) fn incoming(&self, key: Bytes) -> Bytes {
        key.slice(self.prefix.len().min(key.len())..)
    }

    /// `range` as etcd's `key` and `range_end`.
    ///
    /// Two of etcd's spellings must never come out by accident: an empty
    /// `key` (refused) and a `range_end` of one zero byte (every key from
    /// `key` on). A range that holds no key (its end at or before its
    /// start) becomes an empty interval `[k, k)` instead, which etcd answers
    /// with nothing, as the local backends do.
    pub(crate) fn range(&self, range: &KeyRange) -> (Bytes, Bytes) {
        // The empty key is no key: the smallest one is "\0".
        let lowest: &[u8] = if range.start.is_empty() {
            b"\0"
        } else {
            &range.start
        };
        match &range.end {
            RangeEnd::Single => (self.outgoing(&range.start), Bytes::new()),
            RangeEnd::Before(end) if end.as_ref() <= lowest => {
                let mut at = self.outgoing(lowest);
                if at.as_ref() == b"\0" {
                    at = Bytes::from_static(b"\0\0");
                }
                (at.clone(), at)
            }
            RangeEnd::Before(end) => (self.outgoing(lowest), self.outgoing(end)),
            // Everything from `start` on, within the prefix; etcd spells
            // "no upper bound" as a single zero byte.
            RangeEnd::Unbounded => (
                self.outgoing(lowest),
                prefix_end(&self.prefix).unwrap_or(Bytes::from_static(b"\0")),
            ),
        }
    }

    /// Every key of ours.
    pub(crate) fn everything(&self) -> (Bytes, Bytes) {
        self.range(&KeyRange::prefix(Bytes::new()))
    }

    /// Whether an etcd key is one of ours.
    pub(crate) fn owns(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    pub(crate) fn range_request(&self, query: &RangeQuery) -> pb::RangeRequest {
        let (key, range_end) = self.range(&query.range);
        pb::RangeRequest {
            key,
            range_end,
            limit: etcd_number(query.limit as u64),
            keys_only: query.keys_only,
            count_only: query.count_only,
            revision: etcd_number(query.revision),
            ..Default::default()
        }
    }

    pub(crate) fn key_value(&self, kv: mvccpb::KeyValue) -> KeyValue {
        KeyValue {
            key: self.incoming(kv.key.clone()),
            record: record(kv),
        }
    }

    /// The answer to `query`. etcd always counts the whole range; without
    /// `count_all` the count is the page's, as on the local backends. A
    /// page over `query.max_bytes` is cut, saying `more`.
    pub(crate) fn range_result(
        &self,
        query: &RangeQuery,
        answer: pb::RangeResponse,
    ) -> RangeResult {
        let count = if query.count_all || query.count_only {
            answer.count.max(0) as u64
        } else {
            answer.kvs.len() as u64
        };
        RangeResult {
            revision: revision_of(answer.header.as_ref()),
            more: answer.more,
            count,
            kvs: answer
                .kvs
                .into_iter()
                .map(|kv| self.key_value(kv))
                .collect(),
        }
        // etcd has no byte bound on a page: the answer is cut here.
        .bounded(query.max_bytes, query.count_all || query.count_only)
    }

    pub(crate) fn compare(&self, compare: &Compare) -> pb::Compare {
        use pb::compare::{CompareResult, CompareTarget as Target, TargetUnion};
        let (target, union) = match &compare.target {
            CompareTarget::Value(value) => (Target::Value, TargetUnion::Value(value.clone())),
            CompareTarget::ModRevision(revision) => (
                Target::Mod,
                TargetUnion::ModRevision(etcd_number(*revision)),
            ),
            CompareTarget::CreateRevision(revision) => (
                Target::Create,
                TargetUnion::CreateRevision(etcd_number(*revision)),
            ),
            CompareTarget::Version(version) => {
                (Target::Version, TargetUnion::Version(etcd_number(*version)))
            }
            CompareTarget::Lease(lease) => (Target::Lease, TargetUnion::Lease(*lease)),
        };
        let result = match compare.op {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::NotEqual => CompareResult::NotEqual,
            CompareOp::Less => CompareResult::Less,
            CompareOp::Greater => CompareResult::Greater,
        };
        let (key, range_end) = match compare.range_end {
            RangeEnd::Single => (self.outgoing(&compare.key), Bytes::new()),
            _ => self.range(&compare.range()),
        };
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    pub(crate) fn op(&self, op: &Op) -> pb::RequestOp {
        use pb::request_op::Request;
        let request = match op {
            Op::Get(query) => Request::RequestRange(self.range_request(query)),
            Op::Put {
                key,
                value,
                lease,
                prev,
            } => Request::RequestPut(pb::PutRequest {
                key: self.outgoing(key),
                value: value.clone(),
                lease: *lease,
                prev_kv: *prev,
                ..Default::default()
            }),
            Op::Delete { range, prev } => {
                let (key, range_end) = self.range(range);
                Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: *prev,
                })
            }
        };
        pb::RequestOp {
            request: Some(request),
        }
    }

    /// The answer to `op`.
    pub(crate) fn op_result(
        &self,
        op: &Op,
        answer: pb::ResponseOp,
    ) -> Result<OpResult, StoreError> {
        use pb::response_op::Response;
        match (answer.response, op) {
            (Some(Response::ResponseRange(range)), Op::Get(query)) => {
                Ok(OpResult::Get(self.range_result(query, range)))
            }
            (response, _) => self.write_result(response),
        }
    }

    fn write_result(
        &self,
        response: Option<pb::response_op::Response>,
    ) -> Result<OpResult, StoreError> {
        use pb::response_op::Response;
        match response {
            Some(Response::ResponsePut(put)) => Ok(OpResult::Put {
                prev: put.prev_kv.map(|kv| self.key_value(kv)),
            }),
            Some(Response::ResponseDeleteRange(delete)) => Ok(OpResult::Delete {
                deleted: delete.deleted.max(0) as u64,
                prev: delete
                    .prev_kvs
                    .into_iter()
                    .map(|kv| self.key_value(kv))
                    .collect(),
            }),
            Some(Response::ResponseTxn(_) | Response::ResponseRange(_)) | None => {
                Err(StoreError::Internal(
                    "etcd answered a transaction operation with an unexpected response".to_owned(),
                ))
            }
        }
    }

    /// A watch event; etcd reports a lease's expiry as a delete.
    pub(crate) fn event(&self, event: mvccpb::Event) -> Option<Event> {
        let kv = event.kv?;
        let kind = match mvccpb::event::EventType::try_from(event.r#type) {
            Ok(mvccpb::event::EventType::Put) => EventKind::Put,
            _ => EventKind::Delete,
        };
        Some(Event {
            kind,
            key: self.incoming(kv.key.clone()),
            record: record(kv),
        })
    }
}

/// The record etcd holds for a key.
/// `n` as etcd's signed revisions, versions and limits. Ours are unsigned,
/// and a plain cast turns 2^63 and above into negative numbers: a compare
/// `mod_revision < 2^64-1` would then fail on etcd and hold on the local
/// backends. etcd never holds a number above `i64::MAX`, so it stands for
/// every larger one: compares and watches come out the same.
pub(crate) fn etcd_number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn record(kv: mvccpb::KeyValue) -> Record {
    Record {
        value: kv.value,
        create_revision: kv.create_revision.max(0) as u64,
        mod_revision: kv.mod_revision.max(0) as u64,
        version: kv.version.max(0) as u64,
        lease: kv.lease,
    }
}

/// The store revision an answer reflects.
pub(crate) fn revision_of(header: Option<&pb::ResponseHeader>) -> u64 {
    header.map_or(0, |header| header.revision.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_goes_on_every_key_and_bound_and_comes_off_again() {
        let keys = Keys::new(b"app/");
        assert_eq!(keys.outgoing(b"k"), Bytes::from_static(b"app/k"));
        assert_eq!(
            keys.incoming(Bytes::from_static(b"app/k")),
            Bytes::from_static(b"k")
        );
        assert_eq!(
            keys.range(&KeyRange::key(Bytes::from_static(b"k"))),
            (Bytes::from_static(b"app/k"), Bytes::new())
        );
        assert_eq!(
            keys.range(&KeyRange::prefix(Bytes::from_static(b"u/"))),
            (Bytes::from_static(b"app/u/"), Bytes::from_static(b"app/u0"))
        );
        // "Everything" starts at the smallest key ("\0", the empty key
        // being none) and stops at the end of the prefix.
        assert_eq!(
            keys.everything(),
            (Bytes::from_static(b"app/\0"), Bytes::from_static(b"app0"))
        );
        assert!(keys.owns(b"app/x") && !keys.owns(b"other/x"));
    }

    #[test]
    fn a_range_that_holds_no_key_never_becomes_every_key() {
        for prefix in [&b""[..], b"app/"] {
            let keys = Keys::new(prefix);
            for (start, end) in [("", "\0"), ("b", "a"), ("k", "k")] {
                let (key, range_end) = keys.range(&KeyRange::between(
                    Bytes::copy_from_slice(start.as_bytes()),
                    Bytes::copy_from_slice(end.as_bytes()),
                ));
                assert_eq!(key, range_end, "[{start:?}, {end:?}) is empty");
                assert_ne!(range_end.as_ref(), b"\0");
                assert!(!key.is_empty());
            }
        }
    }

    #[test]
    fn without_a_prefix_everything_is_every_key_of_the_cluster() {
        let keys = Keys::new(b"");
        assert_eq!(
            keys.everything(),
            (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
        );
        assert_eq!(keys.outgoing(b"k"), Bytes::from_static(b"k"));
    }
}
