//! The JSON API's lease routes: the live leases in pages, and one lease
//! with a page of its keys.
//!
//! | route | gRPC method |
//! |---|---|
//! | `GET /v1/leases` | `keyvalue.v1.KV/LeaseList` (`after`, `limit`, `keys`) |
//! | `GET /v1/leases/{id}` | `keyvalue.v1.KV/LeaseInfo` (`after`, `limit`: its keys) |
//!
//! Lease ids are JSON numbers, as everywhere in the API (63-bit: a
//! JavaScript client must read them exactly, see docs/API.md).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::error::ApiError;
use super::json::{BytesAs, bytes_object};
use super::query::key_query;
use super::{Shared, respond};
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_server::Kv;
use crate::storage::Store;

/// Leases in a page when the request does not say.
const DEFAULT_LEASES: u32 = 100;
/// Keys shown with each lease of a page when the request does not say.
const DEFAULT_KEYS_PER_LEASE: u32 = 10;
/// Keys in a page of one lease's keys when the request does not say.
const DEFAULT_KEYS: u32 = 100;

pub(super) fn routes<S: Store>() -> Router<Arc<Shared<S>>> {
    Router::new()
        .route("/v1/leases", get(list::<S>))
        .route("/v1/leases/{id}", get(lease::<S>))
}

/// A lease as JSON: `id`, `ttl_ms`, `remaining_ms`, `keys` (each an object
/// with `key`, and `key_encoding` when not text) and `more_keys`.
fn lease_json(lease: &pb::LeaseInfoResponse) -> Json {
    let keys: Vec<Json> = lease
        .keys
        .iter()
        .map(|key| bytes_object(BytesAs::TextOrBase64, "key", key))
        .collect();
    json!({
        "id": lease.id,
        "ttl_ms": lease.ttl_ms,
        "remaining_ms": lease.remaining_ms,
        "keys": keys,
        "more_keys": lease.more_keys,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Leases with a greater id (the `next` of the previous page).
    after: Option<i64>,
    /// Most leases in the page (at most `--max-range-page`).
    limit: Option<u32>,
    /// Most keys shown with each lease (0: none).
    keys: Option<u32>,
}

/// `GET /v1/leases`: a page of live leases in id order, each with its
/// first keys.
async fn list<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let list = pb::LeaseListRequest {
        after: query.after,
        limit: query.limit.unwrap_or(DEFAULT_LEASES).max(1),
        keys_limit: query.keys.unwrap_or(DEFAULT_KEYS_PER_LEASE),
    };
    let (request, _place) = shared.call("/keyvalue.v1.KV/LeaseList", &headers, list)?;
    let reply = shared.kv.lease_list(request).await?.into_inner();
    let next = if reply.more {
        reply.leases.last().map(|lease| json!(lease.id))
    } else {
        None
    };
    Ok(respond(
        StatusCode::OK,
        &json!({
            "leases": reply.leases.iter().map(lease_json).collect::<Vec<_>>(),
            "more": reply.more,
            "next": next,
            "revision": reply.header.map_or(0, |header| header.revision),
        }),
    ))
}

/// One lease's parameters other than `after` (keys strictly after this
/// one: the `next_key` of the previous page), which is bytes, read by
/// `query::key_query`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LeaseQuery {
    /// Most keys in the page (at most `--max-range-page`; 0: none).
    limit: Option<u32>,
}

/// `GET /v1/leases/{id}`: the lease's TTL and a page of its keys.
async fn lease<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (query, [after]) = key_query::<LeaseQuery, 1>(&uri, ["after"])?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a lease id")))?;
    let info = pb::LeaseInfoRequest {
        id,
        keys_limit: query.limit.unwrap_or(DEFAULT_KEYS),
        keys_after: after.unwrap_or_default(),
    };
    let (request, _place) = shared.call("/keyvalue.v1.KV/LeaseInfo", &headers, info)?;
    let reply = shared.kv.lease_info(request).await?.into_inner();
    let mut body = lease_json(&reply);
    body["next_key"] = Json::Null;
    if let (Some(last), true, Json::Object(object)) =
        (reply.keys.last(), reply.more_keys, &mut body)
    {
        BytesAs::TextOrBase64.put(object, "next_key", last);
    }
    Ok(respond(StatusCode::OK, &body))
}
