//! etcd's requests as our storage ops, and our answers as etcd's responses:
//! the server's half of the conversion whose client half (ops to etcd
//! requests, etcd responses to ops) is the etcd backend's
//! `storage::etcd_convert`. The two are each other's inverse, which the
//! tests below check by round trips through both.
//!
//! Every key and range passes through [`Checks`] (size limits and the
//! token's scope) on the way in; etcd's own refusals (an empty key, too many
//! operations, a key written twice in one Txn) use etcd's exact messages
//! (`errors`). What an etcd request means that our ops cannot say is refused
//! by name, never dropped.

use bytes::Bytes;
use tonic::Status;

use super::errors;
use super::identity::revision_number;
use crate::grpc::Checks;
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::mvccpb;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, Op, OpResult,
    RangeEnd, RangeQuery, RangeResult, Txn,
};
use crate::storage::{Record, Revision};

/// A record as etcd's `KeyValue`.
pub(crate) fn key_value(kv: KeyValue) -> mvccpb::KeyValue {
    let KeyValue { key, record } = kv;
    mvccpb::KeyValue {
        key,
        create_revision: revision_number(record.create_revision),
        mod_revision: revision_number(record.mod_revision),
        version: revision_number(record.version),
        value: record.value,
        lease: record.lease,
    }
}

/// A watch event as etcd's; an expiry is a delete to etcd's clients.
pub(crate) fn event(event: Event) -> mvccpb::Event {
    let kind = match event.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete | EventKind::Expire => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(KeyValue {
            key: event.key,
            record: event.record,
        })),
        prev_kv: None,
    }
}

/// etcd's `key` and `range_end` as a key range: an empty end is the key
/// alone, `"\0"` every key from `key` on, anything else the interval
/// `[key, range_end)` (empty if the end is not after the key, which etcd
/// answers with nothing, not an error). An empty key is etcd's "key is not
/// provided" wherever etcd checks it (`allow_empty` is for Watch, which
/// does not).
pub(crate) fn key_range(
    checks: &Checks<'_>,
    key: Bytes,
    range_end: Bytes,
    allow_empty: bool,
) -> Result<KeyRange, Status> {
    if key.is_empty() && !allow_empty {
        return Err(errors::empty_key());
    }
    let range = if range_end.is_empty() {
        checks.bound(&key)?;
        KeyRange::key(key)
    } else if range_end.as_ref() == b"\0" {
        checks.bound(&key)?;
        KeyRange {
            start: key,
            end: RangeEnd::Unbounded,
        }
    } else {
        checks.bound(&key)?;
        checks.bound(&range_end)?;
        KeyRange::between(key, range_end)
    };
    checks.range(&range)?;
    Ok(range)
}

/// What etcd does to a range's records after reading them: filters by
/// revision, sorts, and cuts at the limit. None of it is storage's
/// business (etcd's apply layer does it too, over the whole range).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The requested limit (the query reads everything when it must sort or
    /// filter first); 0 for none.
    limit: usize,
    /// Leave the values out of the answer.
    keys_only: bool,
    order: Option<(pb::range_request::SortTarget, bool)>,
    min_mod: u64,
    max_mod: u64,
    min_create: u64,
    max_create: u64,
    /// `--max-range-page-bytes`, for an answer sorted or filtered here (the
    /// store bounds the others).
    max_bytes: usize,
}

impl Shape {
    /// Whether the records need more than storage's key order and limit.
    fn reshapes(&self) -> bool {
        self.order.is_some()
            || self.min_mod != 0
            || self.max_mod != 0
            || self.min_create != 0
            || self.max_create != 0
    }

    /// `result` as etcd answers it.
    fn apply(&self, mut result: RangeResult) -> RangeResult {
        if !self.reshapes() {
            return result;
        }
        let keep = |record: &Record| {
            (self.min_mod == 0 || record.mod_revision >= self.min_mod)
                && (self.max_mod == 0 || record.mod_revision <= self.max_mod)
                && (self.min_create == 0 || record.create_revision >= self.min_create)
                && (self.max_create == 0 || record.create_revision <= self.max_create)
        };
        result.kvs.retain(|kv| keep(&kv.record));
        if let Some((target, descending)) = self.order {
            use pb::range_request::SortTarget;
            result.kvs.sort_by(|a, b| {
                let ordering = match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.record.version.cmp(&b.record.version),
                    SortTarget::Create => a.record.create_revision.cmp(&b.record.create_revision),
                    SortTarget::Mod => a.record.mod_revision.cmp(&b.record.mod_revision),
                    SortTarget::Value => a.record.value.cmp(&b.record.value),
                };
                if descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        if self.limit > 0 && result.kvs.len() > self.limit {
            result.kvs.truncate(self.limit);
            result.more = true;
        } else {
            result.more = false;
        }
        if self.keys_only {
            for kv in &mut result.kvs {
                kv.record.value = Bytes::new();
            }
        }
        // etcd's count is the whole range's, which the cut leaves alone.
        result.bounded(self.max_bytes, true)
    }
}

/// How many pages' worth of bytes (`--max-range-page-bytes`) a sorted or
/// filtered Range may read: such a Range reads its whole range, then sorts
/// or filters it, so without a cap one request could read the whole store
/// into memory. Past it the Range is refused (`errors::whole_read_too_large`),
/// in a Txn the whole Txn (`RangeQuery::whole_max_bytes`).
pub(crate) const RESHAPED_READ_PAGES: usize = 16;

/// A Range request as a query and what to do with its answer.
pub(crate) fn range_query(
    checks: &Checks<'_>,
    request: pb::RangeRequest,
) -> Result<(RangeQuery, Shape), Status> {
    use pb::range_request::{SortOrder, SortTarget};
    let range = key_range(checks, request.key, request.range_end, false)?;
    let target = SortTarget::try_from(request.sort_target).map_err(|_| {
        Status::invalid_argument(format!("unknown sort_target {}", request.sort_target))
    })?;
    let order = match SortOrder::try_from(request.sort_order) {
        // etcd's own rule: a target other than the key sorts ascending
        // even without an order (storage already answers in key order).
        Ok(SortOrder::None) if target == SortTarget::Key => None,
        Ok(SortOrder::None) | Ok(SortOrder::Ascend) => Some((target, false)),
        Ok(SortOrder::Descend) => Some((target, true)),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown sort_order {}",
                request.sort_order
            )));
        }
    };
    let positive = |n: i64| n.max(0) as u64;
    let shape = Shape {
        limit: positive(request.limit) as usize,
        keys_only: request.keys_only,
        order,
        min_mod: positive(request.min_mod_revision),
        max_mod: positive(request.max_mod_revision),
        min_create: positive(request.min_create_revision),
        max_create: positive(request.max_create_revision),
        max_bytes: checks.limits.max_range_page_bytes,
    };
    // etcd reads the current revision for any revision <= 0.
    let mut query = RangeQuery::all(range).at(positive(request.revision));
    query.count_only = request.count_only;
    // Sorting by value needs the values even for a keys-only answer;
    // `range_response` leaves them out then.
    query.keys_only = request.keys_only && !matches!(order, Some((SortTarget::Value, _)));
    if shape.reshapes() {
        // The store reads the whole range, refusing one past the cap.
        query.whole_max_bytes = shape.max_bytes.saturating_mul(RESHAPED_READ_PAGES);
    } else {
        // In key order the store stops at the limit and at the byte bound.
        query.limit = shape.limit;
        query.max_bytes = shape.max_bytes;
    }
    Ok((query, shape))
}

/// The answer to a Range request: `result` shaped, in etcd's message; or,
/// if `--max-range-page-bytes` cut it short of what etcd would answer (every
/// record, or `limit` of them), a refusal that says so. etcd answers a range
/// whole, and etcdctl and python-etcd3 do not page on `more`: a cut answer
/// would read as the whole range.
pub(crate) fn range_answer(
    result: RangeResult,
    shape: &Shape,
    header: Option<pb::ResponseHeader>,
) -> Result<pb::RangeResponse, Status> {
    let answer = range_response(result, shape, header);
    let cut = answer.more && (shape.limit == 0 || answer.kvs.len() < shape.limit);
    if cut {
        return Err(Status::resource_exhausted(format!(
            "range answer larger than --max-range-page-bytes ({} bytes), where etcd would \
             answer it whole: ask for fewer keys (a limit, and page on), or start kvserver \
             with a larger --max-range-page-bytes",
            shape.max_bytes
        )));
    }
    Ok(answer)
}

/// The answer to a Range: `result` shaped, in etcd's message (inside a
/// Txn, whose writes are done: a cut answer says `more`).
pub(crate) fn range_response(
    result: RangeResult,
    shape: &Shape,
    header: Option<pb::ResponseHeader>,
) -> pb::RangeResponse {
    let keys_only = shape.keys_only;
    let result = shape.apply(result);
    pb::RangeResponse {
        header,
        count: revision_number(result.count),
        more: result.more,
        kvs: result
            .kvs
            .into_iter()
            .map(|mut kv| {
                if keys_only {
                    kv.record.value = Bytes::new();
                }
                key_value(kv)
            })
            .collect(),
    }
}

/// A Put as an operation, for a put whose `ignore_value` and `ignore_lease`
/// the caller has resolved.
pub(crate) fn put_op(checks: &Checks<'_>, put: &pb::PutRequest) -> Result<Op, Status> {
    if put.key.is_empty() {
        return Err(errors::empty_key());
    }
    checks.key(&put.key)?;
    checks.value(&put.value)?;
    Ok(Op::Put {
        key: put.key.clone(),
        value: put.value.clone(),
        lease: put.lease,
        prev: put.prev_kv,
    })
}

/// The checks etcd makes of a Put's `ignore_value` and `ignore_lease`.
pub(crate) fn check_put_flags(put: &pb::PutRequest) -> Result<(), Status> {
    if put.ignore_value && !put.value.is_empty() {
        return Err(errors::value_provided());
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(errors::lease_provided());
    }
    Ok(())
}

/// A DeleteRange as an operation.
pub(crate) fn delete_op(checks: &Checks<'_>, delete: pb::DeleteRangeRequest) -> Result<Op, Status> {
    Ok(Op::Delete {
        range: key_range(checks, delete.key, delete.range_end, false)?,
        prev: delete.prev_kv,
    })
}

/// A Txn as etcd sent it, converted: compares, and per branch the steps,
/// each an operation (with the shape of its answer) or a nested Txn.
#[derive(Debug)]
pub(crate) struct TxnTree {
    pub(crate) compares: Vec<Compare>,
    pub(crate) success: Vec<Step>,
    pub(crate) failure: Vec<Step>,
}

/// One operation of a [`TxnTree`]'s branch.
#[derive(Debug)]
pub(crate) enum Step {
    /// An operation of ours, and how to shape its answer.
    Op(Op, Shape),
    /// A Txn inside the Txn.
    Nested(Box<TxnTree>),
}

/// Which branches a [`TxnTree`] takes: its own, and those of the nested
/// Txns of that branch, in order.
#[derive(Debug, Default)]
pub(crate) struct Path {
    pub(crate) succeeded: bool,
    pub(crate) nested: Vec<Path>,
}

impl TxnTree {
    /// The branch `succeeded` chooses.
    pub(crate) fn branch(&self, succeeded: bool) -> &[Step] {
        if succeeded {
            &self.success
        } else {
            &self.failure
        }
    }

    /// Whether a nested Txn is anywhere in it.
    pub(crate) fn has_nested(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .any(|step| matches!(step, Step::Nested(_)))
    }

    /// The tree as one of our transactions; only for a tree without
    /// nested Txns.
    pub(crate) fn flat(&self) -> Txn {
        let ops = |steps: &[Step]| {
            steps
                .iter()
                .filter_map(|step| match step {
                    Step::Op(op, _) => Some(op.clone()),
                    Step::Nested(_) => None,
                })
                .collect()
        };
        Txn {
            compares: self.compares.clone(),
            success: ops(&self.success),
            failure: ops(&self.failure),
        }
    }

    /// The operations `path` runs, nested Txns' spliced in, in order.
    pub(crate) fn ops_along(&self, path: &Path, ops: &mut Vec<Op>) {
        let mut nested = path.nested.iter();
        for step in self.branch(path.succeeded) {
            match step {
                Step::Op(op, _) => ops.push(op.clone()),
                Step::Nested(tree) => {
                    if let Some(path) = nested.next() {
                        tree.ops_along(path, ops);
                    }
                }
            }
        }
    }

    /// The answers to the operations of `path`, in etcd's messages, nested
    /// as the request was.
    pub(crate) fn responses(
        &self,
        path: &Path,
        results: &mut impl Iterator<Item = OpResult>,
        revision: Revision,
    ) -> Vec<pb::ResponseOp> {
        use pb::response_op::Response;
        // Inner answers carry the revision only, as etcd's do.
        let header = Some(pb::ResponseHeader {
            revision: revision_number(revision),
            ..Default::default()
        });
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for step in self.branch(path.succeeded) {
            let response = match step {
                Step::Op(_, shape) => match results.next() {
                    Some(OpResult::Get(range)) => {
                        Response::ResponseRange(range_response(range, shape, header))
                    }
                    Some(OpResult::Put { prev }) => Response::ResponsePut(pb::PutResponse {
                        header,
                        prev_kv: prev.map(key_value),
                    }),
                    Some(OpResult::Delete { deleted, prev }) => {
                        Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                            header,
                            deleted: revision_number(deleted),
                            prev_kvs: prev.into_iter().map(key_value).collect(),
                        })
                    }
                    None => break,
                },
                Step::Nested(tree) => {
                    let Some(path) = nested.next() else { break };
                    Response::ResponseTxn(pb::TxnResponse {
                        header,
                        succeeded: path.succeeded,
                        responses: tree.responses(path, results, revision),
                    })
                }
            };
            responses.push(pb::ResponseOp {
                response: Some(response),
            });
        }
        responses
    }
}

/// A Txn request, checked as etcd checks it (operation counts at every
/// level, empty keys, a key written twice) and against the limits and the
/// token's scope.
pub(crate) fn txn(
    checks: &Checks<'_>,
    request: pb::TxnRequest,
    max_ops: usize,
) -> Result<TxnTree, Status> {
    super::txn_rules::check_writes(&request.success)?;
    super::txn_rules::check_writes(&request.failure)?;
    tree(checks, request, max_ops)
}

fn tree(checks: &Checks<'_>, request: pb::TxnRequest, max_ops: usize) -> Result<TxnTree, Status> {
    if request.compare.len() > max_ops
        || request.success.len() > max_ops
        || request.failure.len() > max_ops
    {
        return Err(errors::too_many_ops());
    }
    let compares = request
        .compare
        .into_iter()
        .map(|compare| compare_of(checks, compare))
        .collect::<Result<_, _>>()?;
    Ok(TxnTree {
        compares,
        success: branch(checks, request.success, max_ops)?,
        failure: branch(checks, request.failure, max_ops)?,
    })
}

fn branch(
    checks: &Checks<'_>,
    ops: Vec<pb::RequestOp>,
    max_ops: usize,
) -> Result<Vec<Step>, Status> {
    use pb::request_op::Request;
    let mut steps = Vec::with_capacity(ops.len());
    for op in ops {
        let step = match op.request {
            Some(Request::RequestRange(range)) => {
                let (query, shape) = range_query(checks, range)?;
                Step::Op(Op::Get(query), shape)
            }
            Some(Request::RequestPut(put)) => {
                if put.ignore_value || put.ignore_lease {
                    return Err(errors::unsupported_field(
                        "ignore_value and ignore_lease inside a Txn",
                        "use them in a plain Put, or put the value and lease in the Txn",
                    ));
                }
                Step::Op(put_op(checks, &put)?, Shape::default())
            }
            Some(Request::RequestDeleteRange(delete)) => {
                Step::Op(delete_op(checks, delete)?, Shape::default())
            }
            Some(Request::RequestTxn(nested)) => {
                Step::Nested(Box::new(tree(checks, nested, max_ops)?))
            }
            None => return Err(Status::invalid_argument("an operation of the Txn is empty")),
        };
        steps.push(step);
    }
    Ok(steps)
}

/// An etcd compare as ours, over its key or its range (`range_end` as in
/// Range). A negative number, which no record holds, makes a compare that
/// is always true or always false, as it is in etcd.
fn compare_of(checks: &Checks<'_>, compare: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget as Target, TargetUnion};
    let op = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {}",
                compare.result
            )));
        }
    };
    let target = Target::try_from(compare.target).map_err(|_| {
        Status::invalid_argument(format!("unknown compare target {}", compare.target))
    })?;
    let range = if compare.range_end.is_empty() {
        checks.key(&compare.key)?;
        KeyRange::key(compare.key)
    } else {
        key_range(checks, compare.key, compare.range_end, true)?
    };
    // etcd reads the number of the union the target names; another one
    // reads as zero.
    let expected = match (target, &compare.target_union) {
        (Target::Version, Some(TargetUnion::Version(n)))
        | (Target::Create, Some(TargetUnion::CreateRevision(n)))
        | (Target::Mod, Some(TargetUnion::ModRevision(n)))
        | (Target::Lease, Some(TargetUnion::Lease(n))) => *n,
        _ => 0,
    };
    let counter = |make: fn(u64) -> CompareTarget| match u64::try_from(expected) {
        Ok(expected) => make(expected),
        // Every counter is at least 0, so above any negative number: no
        // version reaches u64::MAX (a put each nanosecond would take five
        // centuries), so comparing with it is constant.
        Err(_) => CompareTarget::Version(u64::MAX),
    };
    let (target, op) = match target {
        Target::Version | Target::Create | Target::Mod if expected < 0 => {
            let holds = matches!(op, CompareOp::NotEqual | CompareOp::Greater);
            let op = if holds {
                CompareOp::NotEqual
            } else {
                CompareOp::Greater
            };
            (counter(CompareTarget::Version), op)
        }
        Target::Version => (counter(CompareTarget::Version), op),
        Target::Create => (counter(CompareTarget::CreateRevision), op),
        Target::Mod => (counter(CompareTarget::ModRevision), op),
        Target::Lease => (CompareTarget::Lease(expected), op),
        Target::Value => {
            let value = match compare.target_union {
                Some(TargetUnion::Value(value)) => value,
                _ => Bytes::new(),
            };
            (CompareTarget::Value(value), op)
        }
    };
    Ok(Compare {
        key: range.start,
        range_end: range.end,
        target,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Limits;
    use crate::storage::etcd_convert::{Keys, record};

    fn kv(key: &'static [u8], lease: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key),
            record: Record {
                value: Bytes::from_static(b"v"),
                create_revision: 3,
                mod_revision: 7,
                version: 2,
                lease,
            },
        }
    }

    #[test]
    fn records_go_to_etcd_and_come_back_unchanged() {
        let original = kv(b"k", 42);
        let keys = Keys::new(b"");
        assert_eq!(keys.key_value(key_value(original.clone())), original);
        assert_eq!(record(key_value(original.clone())), original.record);
    }

    #[test]
    fn ranges_as_the_backend_sends_them_come_back_as_the_same_range() {
        let limits = Limits::default();
        let checks = Checks::new(&limits, None);
        let keys = Keys::new(b"");
        for range in [
            KeyRange::key(Bytes::from_static(b"k")),
            KeyRange::prefix(Bytes::from_static(b"app/")),
            KeyRange::between(Bytes::from_static(b"a"), Bytes::from_static(b"c")),
            KeyRange {
                start: Bytes::from_static(b"m"),
                end: RangeEnd::Unbounded,
            },
        ] {
            let mut query = RangeQuery::all(range.clone());
            query.limit = 5;
            query.keys_only = true;
            query.max_bytes = limits.max_range_page_bytes;
            let request = keys.range_request(&query);
            let (back, shape) = range_query(&checks, request).unwrap();
            assert_eq!(back, query, "{range:?}");
            assert_eq!(shape.limit, 5);
        }
    }

    #[test]
    fn transactions_as_the_backend_sends_them_come_back_the_same() {
        let limits = Limits::default();
        let checks = Checks::new(&limits, None);
        let keys = Keys::new(b"");
        let k = || Bytes::from_static(b"k");
        let txn = Txn {
            compares: vec![
                Compare::key(k(), CompareTarget::ModRevision(4), CompareOp::Less),
                Compare::key(
                    k(),
                    CompareTarget::Value(Bytes::from_static(b"x")),
                    CompareOp::NotEqual,
                ),
                Compare::key(k(), CompareTarget::Lease(9), CompareOp::Equal),
                Compare::key(k(), CompareTarget::CreateRevision(1), CompareOp::Greater),
                Compare::key(k(), CompareTarget::Version(0), CompareOp::Equal),
            ],
            success: vec![Op::Put {
                key: k(),
                value: Bytes::from_static(b"v"),
                lease: 9,
                prev: true,
            }],
            failure: vec![
                Op::Get(RangeQuery {
                    max_bytes: limits.max_range_page_bytes,
                    ..RangeQuery::all(KeyRange::prefix(Bytes::from_static(b"p")))
                }),
                Op::Delete {
                    range: KeyRange::between(Bytes::from_static(b"a"), Bytes::from_static(b"b")),
                    prev: true,
                },
            ],
        };
        let request = pb::TxnRequest {
            compare: txn.compares.iter().map(|c| keys.compare(c)).collect(),
            success: txn.success.iter().map(|op| keys.op(op)).collect(),
            failure: txn.failure.iter().map(|op| keys.op(op)).collect(),
        };
        let tree = super::txn(&checks, request, 128).unwrap();
        assert!(!tree.has_nested());
        assert_eq!(tree.flat(), txn);
        // And the answers back: ours, to etcd's, to ours again.
        let results = vec![
            OpResult::Get(RangeResult {
                kvs: vec![kv(b"p1", 0)],
                more: false,
                count: 1,
                revision: 7,
            }),
            OpResult::Delete {
                deleted: 1,
                prev: vec![kv(b"a1", 0)],
            },
        ];
        let path = Path {
            succeeded: false,
            nested: Vec::new(),
        };
        let responses = tree.responses(&path, &mut results.clone().into_iter(), 7);
        let back: Vec<OpResult> = responses
            .into_iter()
            .zip(&txn.failure)
            .map(|(response, op)| keys.op_result(op, response).unwrap())
            .collect();
        assert_eq!(back, results);
    }

    #[test]
    fn events_keep_their_kind_and_an_expiry_is_a_delete() {
        let keys = Keys::new(b"");
        let put = Event {
            kind: EventKind::Put,
            key: Bytes::from_static(b"k"),
            record: kv(b"k", 0).record,
        };
        assert_eq!(keys.event(event(put.clone())), Some(put));
        let mut expired = Event {
            kind: EventKind::Expire,
            key: Bytes::from_static(b"k"),
            record: kv(b"k", 0).record,
        };
        expired.kind = EventKind::Expire;
        assert_eq!(
            keys.event(event(expired)).map(|e| e.kind),
            Some(EventKind::Delete)
        );
    }

    #[test]
    fn sorting_filters_and_the_limit_apply_as_etcd_does() {
        let mut result = RangeResult::default();
        for (key, create, modified) in [(b"a", 5, 9), (b"b", 3, 3), (b"c", 4, 8)] {
            let mut entry = kv(b"x", 0);
            entry.key = Bytes::copy_from_slice(key);
            entry.record.create_revision = create;
            entry.record.mod_revision = modified;
            result.kvs.push(entry);
        }
        result.count = 3;
        let shape = Shape {
            limit: 1,
            order: Some((pb::range_request::SortTarget::Create, false)),
            max_create: 4,
            keys_only: true,
            ..Shape::default()
        };
        let answer = range_response(result.clone(), &shape, None);
        assert_eq!(answer.kvs.len(), 1);
        assert_eq!(answer.kvs[0].key, Bytes::from_static(b"b"));
        assert!(answer.kvs[0].value.is_empty());
        assert!(answer.more);
        assert_eq!(answer.count, 3, "count is the range's, before filters");
        let newest_first = Shape {
            order: Some((pb::range_request::SortTarget::Mod, true)),
            ..Shape::default()
        };
        let answer = range_response(result, &newest_first, None);
        let order: Vec<&[u8]> = answer.kvs.iter().map(|kv| kv.key.as_ref()).collect();
        assert_eq!(order, [b"a", b"c", b"b"]);
    }

    #[test]
    fn etcd_refusals_keep_etcd_words() {
        let limits = Limits::default();
        let checks = Checks::new(&limits, None);
        let empty = range_query(&checks, pb::RangeRequest::default()).unwrap_err();
        assert_eq!(empty.message(), "etcdserver: key is not provided");
        let put = |key: &'static [u8]| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: Bytes::from_static(key),
                ..Default::default()
            })),
        };
        let twice = pb::TxnRequest {
            success: vec![put(b"k"), put(b"k")],
            ..Default::default()
        };
        assert_eq!(
            super::txn(&checks, twice, 128).unwrap_err().message(),
            "etcdserver: duplicate key given in txn request"
        );
        let many = pb::TxnRequest {
            success: vec![put(b"a"), put(b"b"), put(b"c")],
            ..Default::default()
        };
        assert_eq!(
            super::txn(&checks, many, 2).unwrap_err().message(),
            "etcdserver: too many operations in txn request"
        );
    }
}
