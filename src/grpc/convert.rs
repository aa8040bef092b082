//! Between the wire messages of `keyvalue.v1` and the storage layer's types.
//!
//! Requests become `storage::ops` values (after validation: every key, value
//! and count is checked against [`Limits`] here, so handlers cannot forget a
//! check); storage answers become messages. Nothing here does I/O.

use bytes::Bytes;
use tonic::Status;

use super::access::Checks;
use crate::proto::keyvalue::v1 as pb;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, Op, OpResult,
    RangeEnd, RangeQuery, RangeResult, Txn,
};
use crate::storage::{MAX_TTL, Record, Revision};

/// The wire form of a key and its record.
pub(crate) fn kv(key: Bytes, record: Record) -> pb::KeyValue {
    pb::KeyValue {
        key,
        value: record.value,
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
        lease: record.lease,
    }
}

pub(crate) fn kv_of(entry: KeyValue) -> pb::KeyValue {
    kv(entry.key, entry.record)
}

pub(crate) fn header(revision: Revision) -> Option<pb::Header> {
    Some(pb::Header { revision })
}

/// The key range named by `key`, `range_end` and `prefix`, as Range, Delete
/// and Watch take it.
pub(crate) fn key_range(
    checks: &Checks<'_>,
    key: Bytes,
    range_end: Bytes,
    prefix: bool,
    single_by_default: bool,
) -> Result<KeyRange, Status> {
    if prefix && !range_end.is_empty() {
        return Err(Status::invalid_argument(
            "give either prefix or range_end, not both",
        ));
    }
    let range = if prefix {
        checks.bound(&key)?;
        KeyRange::prefix(key)
    } else if !range_end.is_empty() {
        // An empty start with an end means "from the first key".
        checks.bound(&key)?;
        checks.bound(&range_end)?;
        if range_end <= key {
            return Err(Status::invalid_argument(
                "range_end must be after key (it is exclusive)",
            ));
        }
        KeyRange::between(key, range_end)
    } else if single_by_default {
        checks.limits.check_key(&key)?;
        KeyRange::key(key)
    } else {
        // Range without an end or prefix: from key to the end of the keyspace.
        checks.bound(&key)?;
        KeyRange {
            start: key,
            end: RangeEnd::Unbounded,
        }
    };
    checks.range(&range)?;
    Ok(range)
}

/// The first byte of a page token: its format.
const PAGE_TOKEN_V1: u8 = 1;

/// A page token: the format byte, the revision of the listing (8 bytes,
/// big-endian) and the first key of the next page. Opaque to clients.
fn page_token(revision: Revision, next: &[u8]) -> Bytes {
    let mut token = Vec::with_capacity(9 + next.len());
    token.push(PAGE_TOKEN_V1);
    token.extend_from_slice(&revision.to_be_bytes());
    token.extend_from_slice(next);
    Bytes::from(token)
}

/// The revision and next key a page token carries.
fn parse_page_token(token: &Bytes) -> Result<(Revision, Bytes), Status> {
    match token.split_first() {
        Some((&PAGE_TOKEN_V1, rest)) if rest.len() >= 8 => {
            let (revision, _) = rest.split_at(8);
            let revision = Revision::from_be_bytes(revision.try_into().unwrap_or_default());
            Ok((revision, token.slice(9..)))
        }
        _ => Err(Status::invalid_argument(
            "page_token is not a token this server gave: pass the next_page_token of the \
             previous page of the same range",
        )),
    }
}

/// A Range request as a query, with its paging resolved: a page token
/// carries the revision of the listing's first page, so every page reads
/// the same snapshot.
pub(crate) fn range_query(
    checks: &Checks<'_>,
    request: pb::RangeRequest,
) -> Result<RangeQuery, Status> {
    let mut range = key_range(
        checks,
        request.key,
        request.range_end,
        request.prefix,
        false,
    )?;
    let mut revision = request.revision;
    if !request.page_token.is_empty() {
        let (listed_at, next) = parse_page_token(&request.page_token)?;
        if !range.contains(&next) {
            return Err(Status::invalid_argument(
                "page_token is not in the requested range: pass the next_page_token of \
                 the previous page of the same range",
            ));
        }
        if revision != 0 && revision != listed_at {
            return Err(Status::invalid_argument(format!(
                "page_token continues a listing at revision {listed_at}, and the request \
                 asks for revision {revision}: leave revision out (or equal) for later pages"
            )));
        }
        revision = listed_at;
        range = range.resumed_at(next);
    }
    // A limit above the page size is capped, not refused: the answer says
    // `more`, and the client asks for the next page. So a client may always
    // send the limit it wants without knowing the server's --max-range-page.
    let limit = match request.limit as usize {
        0 => checks.limits.max_range_page,
        limit => limit.min(checks.limits.max_range_page),
    };
    Ok(RangeQuery {
        range,
        limit,
        keys_only: request.keys_only,
        count_only: request.count_only,
        count_all: request.count_all,
        revision,
        // Like the limit, the byte bound cuts the page and says `more`.
        max_bytes: checks.limits.max_range_page_bytes,
        whole_max_bytes: 0,
    })
}

/// The wire form of the answer to `query`, with the token of the next page
/// (which carries the revision the page was read at).
pub(crate) fn range_response(query: &RangeQuery, result: RangeResult) -> pb::RangeResponse {
    let read_at = match query.revision {
        0 => result.revision,
        revision => revision,
    };
    let next_page_token = match (result.more, result.kvs.last()) {
        (true, Some(last)) => {
            // The smallest key after the last one returned.
            let mut next = last.key.to_vec();
            next.push(0);
            page_token(read_at, &next)
        }
        _ => Bytes::new(),
    };
    pb::RangeResponse {
        header: header(result.revision),
        count: result.count,
        more: result.more,
        kvs: result.kvs.into_iter().map(kv_of).collect(),
        next_page_token,
        revision: read_at,
    }
}

/// The compare a Put's or Delete's condition stands for.
pub(crate) fn condition(key: &Bytes, condition: pb::Condition) -> Result<Compare, Status> {
    use pb::condition::Check;
    let (target, op) = match condition.check {
        Some(Check::ModRevision(revision)) => {
            (CompareTarget::ModRevision(revision), CompareOp::Equal)
        }
        Some(Check::Value(value)) => (CompareTarget::Value(value), CompareOp::Equal),
        Some(Check::Exists(true)) => (CompareTarget::Version(0), CompareOp::Greater),
        Some(Check::Exists(false)) => (CompareTarget::Version(0), CompareOp::Equal),
        None => {
            return Err(Status::invalid_argument(
                "condition is empty: set one of mod_revision, value or exists",
            ));
        }
    };
    Ok(Compare::key(key.clone(), target, op))
}

/// A put as an operation; `ttl_ms` and conditions are the handler's business.
pub(crate) fn put_op(checks: &Checks<'_>, put: &pb::PutRequest) -> Result<Op, Status> {
    checks.key(&put.key)?;
    checks.value(&put.value)?;
    if put.lease < 0 {
        return Err(Status::invalid_argument("lease ids are positive"));
    }
    Ok(Op::Put {
        key: put.key.clone(),
        value: put.value.clone(),
        lease: put.lease,
        prev: put.prev_kv,
    })
}

/// A TTL in milliseconds, checked.
pub(crate) fn ttl(ttl_ms: u64) -> Result<std::time::Duration, Status> {
    let ttl = std::time::Duration::from_millis(ttl_ms);
    if ttl.is_zero() {
        return Err(Status::invalid_argument("ttl_ms must be above zero"));
    }
    if ttl > MAX_TTL {
        return Err(Status::invalid_argument(format!(
            "ttl_ms is above the limit of {} ms (a year)",
            MAX_TTL.as_millis()
        )));
    }
    Ok(ttl)
}

/// A transaction request, checked against the limits. Operations inside a
/// Txn are plain: conditions belong in `compare`, TTLs in a granted lease.
pub(crate) fn txn(checks: &Checks<'_>, request: pb::TxnRequest) -> Result<Txn, Status> {
    let flag = "--max-txn-ops";
    checks.limits.check_count(
        "compares",
        request.compare.len(),
        checks.limits.max_txn_ops,
        flag,
    )?;
    checks.limits.check_count(
        "success operations",
        request.success.len(),
        checks.limits.max_txn_ops,
        flag,
    )?;
    checks.limits.check_count(
        "failure operations",
        request.failure.len(),
        checks.limits.max_txn_ops,
        flag,
    )?;
    let compares = request
        .compare
        .into_iter()
        .map(|compare| compare_of(checks, compare))
        .collect::<Result<_, _>>()?;
    let ops = |ops: Vec<pb::Op>| -> Result<Vec<Op>, Status> {
        ops.into_iter().map(|op| txn_op(checks, op)).collect()
    };
    Ok(Txn {
        compares,
        success: ops(request.success)?,
        failure: ops(request.failure)?,
    })
}

fn compare_of(checks: &Checks<'_>, compare: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{Op as WireOp, Target};
    checks.key(&compare.key)?;
    let op = match WireOp::try_from(compare.op) {
        Ok(WireOp::Equal) => CompareOp::Equal,
        Ok(WireOp::NotEqual) => CompareOp::NotEqual,
        Ok(WireOp::Less) => CompareOp::Less,
        Ok(WireOp::Greater) => CompareOp::Greater,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare op {}",
                compare.op
            )));
        }
    };
    let target = match compare.target {
        Some(Target::Value(value)) => CompareTarget::Value(value),
        Some(Target::ModRevision(revision)) => CompareTarget::ModRevision(revision),
        Some(Target::CreateRevision(revision)) => CompareTarget::CreateRevision(revision),
        Some(Target::Version(version)) => CompareTarget::Version(version),
        None => {
            return Err(Status::invalid_argument(
                "compare has no target: set value, mod_revision, create_revision or version",
            ));
        }
    };
    Ok(Compare::key(compare.key, target, op))
}

fn txn_op(checks: &Checks<'_>, op: pb::Op) -> Result<Op, Status> {
    use pb::op::Op as WireOp;
    match op.op {
        Some(WireOp::Range(range)) => Ok(Op::Get(range_query(checks, range)?)),
        Some(WireOp::Put(put)) => {
            if put.condition.is_some() || put.ttl_ms != 0 {
                return Err(Status::invalid_argument(
                    "a put inside a Txn takes no condition (use compare) and no ttl_ms \
                     (grant a lease and set lease)",
                ));
            }
            put_op(checks, &put)
        }
        Some(WireOp::Delete(delete)) => {
            if delete.condition.is_some() {
                return Err(Status::invalid_argument(
                    "a delete inside a Txn takes no condition (use compare)",
                ));
            }
            Ok(Op::Delete {
                range: key_range(checks, delete.key, delete.range_end, delete.prefix, true)?,
                prev: delete.prev_kv,
            })
        }
        None => Err(Status::invalid_argument("an operation of the Txn is empty")),
    }
}

/// The wire form of the answers to `ops`, one each.
pub(crate) fn op_responses(
    ops: &[Op],
    results: Vec<OpResult>,
    revision: Revision,
) -> Vec<pb::OpResponse> {
    use pb::op_response::Response;
    results
        .into_iter()
        .zip(ops)
        .map(|(result, op)| {
            let response = match (result, op) {
                (OpResult::Get(range), Op::Get(query)) => {
                    Response::Range(range_response(query, range))
                }
                (OpResult::Get(range), _) => Response::Range(range_response(
                    &RangeQuery::all(KeyRange::key(Bytes::new())),
                    range,
                )),
                (OpResult::Put { prev }, _) => Response::Put(pb::PutResponse {
                    header: header(revision),
                    succeeded: true,
                    prev_kv: prev.map(kv_of),
                    lease: 0,
                }),
                (OpResult::Delete { deleted, prev }, _) => Response::Delete(pb::DeleteResponse {
                    header: header(revision),
                    succeeded: true,
                    deleted,
                    prev_kvs: prev.into_iter().map(kv_of).collect(),
                }),
            };
            pb::OpResponse {
                response: Some(response),
            }
        })
        .collect()
}

/// The wire form of a watch event.
pub(crate) fn event(event: Event) -> pb::Event {
    let kind = match event.kind {
        EventKind::Put => pb::event::Kind::Put,
        EventKind::Delete => pb::event::Kind::Delete,
        EventKind::Expire => pb::event::Kind::Expire,
    };
    pb::Event {
        kind: kind.into(),
        kv: Some(kv(event.key, event.record)),
    }
}
