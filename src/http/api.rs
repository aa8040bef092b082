//! The JSON API's key routes: each validates what only HTTP has (the path,
//! the query), calls the gRPC method it stands for, and maps the answer.
//!
//! | route | gRPC method |
//! |---|---|
//! | `GET /v1/kv/{key}` | `keyvalue.v1.KV/Get` |
//! | `PUT /v1/kv/{key}` | `keyvalue.v1.KV/Put` (`ttl`, `expect_revision`, `lease`) |
//! | `DELETE /v1/kv/{key}` | `keyvalue.v1.KV/Delete` (`prefix`, `expect_revision`) |
//! | `GET /v1/kv` | `keyvalue.v1.KV/Range`, one or more pages (`delimiter`) |
//!
//! The lease routes are in `leases`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes as BodyBytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tonic::Code;

use super::error::ApiError;
use super::json::{BytesAs, bytes_object, key_value};
use super::query::key_query;
use super::{Shared, respond};
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_server::Kv;
use crate::storage::Store;
use crate::storage::ops::{page_bytes, prefix_end};

/// Where keys start in a path.
const KEY_ROUTE: &str = "/v1/kv/";

pub(super) fn routes<S: Store>() -> Router<Arc<Shared<S>>> {
    Router::new().route("/v1/kv", get(list::<S>)).route(
        "/v1/kv/{*key}",
        get(get_key::<S>).put(put_key::<S>).delete(delete_key::<S>),
    )
}

/// The key a `/v1/kv/...` path names, percent-decoded to bytes (so any key,
/// binary too, has a path).
fn key_of(uri: &Uri) -> Result<Bytes, ApiError> {
    let encoded = uri
        .path()
        .strip_prefix(KEY_ROUTE)
        .ok_or_else(|| ApiError::bad_request("keys are under /v1/kv/"))?;
    Ok(Bytes::from(
        percent_encoding::percent_decode_str(encoded).collect::<Vec<u8>>(),
    ))
}

fn key_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, "key not found")
}

async fn get_key<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let (request, _place) = shared.call(
        "/keyvalue.v1.KV/Get",
        &headers,
        pb::GetRequest { key, revision: 0 },
    )?;
    let reply = shared.kv.get(request).await?.into_inner();
    let kv = reply.kv.ok_or_else(key_not_found)?;
    Ok(respond(
        StatusCode::OK,
        &key_value(&kv, BytesAs::TextOrBase64, true),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PutQuery {
    /// A lease of the key's own with this TTL (`30s`, `500ms`).
    ttl: Option<String>,
    /// Compare-and-set: put only if the key's mod_revision is this (0: the
    /// key must not exist).
    expect_revision: Option<u64>,
    /// Attach the key to this lease.
    lease: Option<i64>,
}

async fn put_key<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let key = key_of(&uri)?;
    let ttl_ms = match &query.ttl {
        Some(ttl) => {
            let ttl = crate::duration::parse_duration(ttl)
                .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
            // Below a millisecond would be 0: no TTL at all.
            (ttl.as_millis() as u64).max(1)
        }
        None => 0,
    };
    let value = read_value(&shared, body).await?;
    let put = pb::PutRequest {
        key,
        value,
        lease: query.lease.unwrap_or(0),
        ttl_ms,
        prev_kv: false,
        condition: query.expect_revision.map(|revision| pb::Condition {
            check: Some(pb::condition::Check::ModRevision(revision)),
        }),
    };
    let (request, _place) = shared.call("/keyvalue.v1.KV/Put", &headers, put)?;
    let reply = shared.kv.put(request).await?.into_inner();
    let revision = reply.header.map_or(0, |header| header.revision);
    if !reply.succeeded {
        return Err(conflict(reply.prev_kv.as_ref(), revision));
    }
    Ok(respond(
        StatusCode::OK,
        &json!({"revision": revision, "lease": reply.lease}),
    ))
}

/// 409 for a failed compare-and-set, with the key's current state.
fn conflict(current: Option<&pb::KeyValue>, revision: u64) -> ApiError {
    let message = match current {
        Some(kv) => format!(
            "the key is at revision {}, not the expected one",
            kv.mod_revision
        ),
        None => "the key does not exist, and a revision was expected".to_owned(),
    };
    ApiError::new(StatusCode::CONFLICT, Code::FailedPrecondition, message)
        .with(
            "current",
            current.map_or(Json::Null, |kv| key_value(kv, BytesAs::TextOrBase64, true)),
        )
        .with("revision", json!(revision))
}

/// The request body, refused as the gRPC API refuses a value above
/// `--max-value-bytes` (without reading more than one byte beyond it).
async fn read_value<S: Store>(shared: &Shared<S>, body: Body) -> Result<Bytes, ApiError> {
    let limit = shared.limits.max_value_bytes;
    let value: BodyBytes = axum::body::to_bytes(body, limit.saturating_add(1))
        .await
        .map_err(|error| match super::admit::refusal(&error) {
            // The byte budget's refusal.
            Some(status) => ApiError::from(status),
            None => ApiError::bad_request(format!(
                "value is above the limit of {limit} bytes (--max-value-bytes)"
            )),
        })?;
    Ok(value)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Delete every key that starts with the key.
    #[serde(default)]
    prefix: bool,
    /// Delete only if the key's mod_revision is this.
    expect_revision: Option<u64>,
}

async fn delete_key<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let key = key_of(&uri)?;
    let delete = pb::DeleteRequest {
        key,
        prefix: query.prefix,
        condition: query.expect_revision.map(|revision| pb::Condition {
            check: Some(pb::condition::Check::ModRevision(revision)),
        }),
        ..Default::default()
    };
    let (request, _place) = shared.call("/keyvalue.v1.KV/Delete", &headers, delete)?;
    let reply = shared.kv.delete(request).await?.into_inner();
    let revision = reply.header.map_or(0, |header| header.revision);
    if !reply.succeeded {
        return Err(conflict(reply.prev_kvs.first(), revision));
    }
    Ok(respond(
        StatusCode::OK,
        &json!({"deleted": reply.deleted, "revision": revision}),
    ))
}

/// The listing's parameters other than its keys: `prefix` (keys that start
/// with it, default every key), `after` (keys strictly after it: the `next`
/// of the previous page) and `delimiter` (group keys by what follows the
/// prefix up to it, `/`: a group is one entry in `prefixes`, like a
/// directory) are bytes, read by `query::key_query`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Most entries in the page (at most `--max-range-page`).
    limit: Option<usize>,
    /// Leave the values out.
    #[serde(default)]
    keys_only: bool,
}

/// One page of keys in key order, and with a delimiter, the groups of
/// keys ("directories") in their place.
async fn list<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (query, [prefix, after, delimiter]) =
        key_query::<ListQuery, 3>(&uri, ["prefix", "after", "delimiter"])?;
    let prefix = prefix.unwrap_or_default();
    let limit = query
        .limit
        .unwrap_or(shared.limits.max_range_page)
        .clamp(1, shared.limits.max_range_page);
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut start = match &after {
        Some(after) if !after.starts_with(&prefix) => {
            return Err(ApiError::bad_request("after must start with prefix"));
        }
        // After a group, the next key outside it.
        Some(after) if delimiter.as_ref().is_some_and(|d| after.ends_with(d)) => {
            match prefix_end(after) {
                Some(end) => end,
                None => return Ok(page(Vec::new(), Vec::new(), None, 0)),
            }
        }
        Some(after) => {
            let mut next = after.to_vec();
            next.push(0);
            Bytes::from(next)
        }
        None => prefix.clone(),
    };
    let end = prefix_end(&prefix).unwrap_or_default();
    let mut kvs = Vec::new();
    let mut groups: Vec<Bytes> = Vec::new();
    let mut revision = 0;
    // Each round reads one page from `start`; a group ends the round, and
    // the next starts after it, so a group of many keys costs one read.
    // The bytes of the records listed: the page stops once they reach
    // --max-range-page-bytes, as each round's Range does.
    let mut bytes = 0usize;
    let more = 'rounds: loop {
        if !end.is_empty() && start >= end {
            break false;
        }
        if bytes >= shared.limits.max_range_page_bytes {
            break true;
        }
        let wanted = limit - kvs.len() - groups.len();
        let range = pb::RangeRequest {
            key: start.clone(),
            range_end: end.clone(),
            limit: wanted as u32,
            keys_only: query.keys_only,
            // Every round at the first one's revision: one listing, one
            // snapshot. No count: a round never scans past its page.
            revision,
            count_all: false,
            ..Default::default()
        };
        let (request, _place) = shared.call("/keyvalue.v1.KV/Range", &headers, range)?;
        let reply = shared.kv.range(request).await?.into_inner();
        revision = reply.header.map_or(revision, |header| header.revision);
        let fetched = reply.kvs.len();
        for (index, kv) in reply.kvs.into_iter().enumerate() {
            let group = delimiter.as_ref().and_then(|delimiter| {
                let rest = &kv.key[prefix.len()..];
                let at = find(rest, delimiter)?;
                Some(kv.key.slice(..prefix.len() + at + delimiter.len()))
            });
            match group {
                Some(group) => {
                    let next = prefix_end(&group);
                    groups.push(group);
                    let full = kvs.len() + groups.len() == limit;
                    match next {
                        // Nothing can follow the group: the listing is over.
                        None => break 'rounds false,
                        Some(next) => {
                            start = next;
                            if full {
                                break 'rounds true;
                            }
                            continue 'rounds;
                        }
                    }
                }
                None => {
                    let last = index + 1 == fetched;
                    let mut next = kv.key.to_vec();
                    next.push(0);
                    start = Bytes::from(next);
                    bytes = bytes.saturating_add(page_bytes(kv.key.len(), kv.value.len()));
                    kvs.push(kv);
                    if kvs.len() + groups.len() == limit {
                        break 'rounds !last || reply.more;
                    }
                }
            }
        }
        if !reply.more {
            break false;
        }
        if fetched < wanted {
            // The round stopped at --max-range-page-bytes: so does the page.
            break true;
        }
    };
    let next = if more {
        // The last entry, group or key, whichever came last in key order.
        let last_key = kvs.last().map(|kv| kv.key.clone());
        let last_group = groups.last().cloned();
        Some(match (last_key, last_group) {
            (Some(key), Some(group)) => key.max(group),
            (Some(key), None) => key,
            (None, Some(group)) => group,
            (None, None) => Bytes::new(),
        })
    } else {
        None
    };
    Ok(page(kvs, groups, next, revision))
}

/// A page as JSON: each key field (`key` of each entry, `prefix` of each
/// of `prefixes`, `next`) is text when it is UTF-8, else base64 marked by
/// `{field}_encoding`, as values are.
fn page(
    kvs: Vec<pb::KeyValue>,
    groups: Vec<Bytes>,
    next: Option<Bytes>,
    revision: u64,
) -> Response {
    let bytes = BytesAs::TextOrBase64;
    let mut body = json!({
        "kvs": kvs
            .iter()
            .map(|kv| key_value(kv, bytes, true))
            .collect::<Vec<_>>(),
        "prefixes": groups
            .iter()
            .map(|group| bytes_object(bytes, "prefix", group))
            .collect::<Vec<_>>(),
        "more": next.is_some(),
        "next": null,
        "revision": revision,
    });
    if let (Some(next), Json::Object(object)) = (next, &mut body) {
        bytes.put(object, "next", &next);
    }
    respond(StatusCode::OK, &body)
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
