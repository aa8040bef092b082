//! The HTTP listener (`--http-listen`): probes, metrics, the console's
//! files, and every route of the JSON API, with its limits, tokens and
//! Server-Sent Events, through hyper's own HTTP/1.1 client against the real
//! binary.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

use crate::harness::Server;

/// How long a test waits for an event before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server with the HTTP listener on, and the listener's address.
pub(crate) fn start_http(args: &[&str]) -> (Server, String) {
    let mut all = vec!["--http-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start_with(&all);
    let addr = http_addr(&server);
    (server, addr)
}

/// The address the server announced for HTTP.
pub(crate) fn http_addr(server: &Server) -> String {
    server
        .stderr_lines()
        .iter()
        .find_map(|line| {
            let url = line.strip_prefix("http on ")?;
            url.strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
        })
        .and_then(|rest| rest.strip_suffix('/'))
        .expect("the HTTP address is announced")
        .to_owned()
}

/// A request of `method` for `path` on `addr`, with `headers` and `body`.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body.into())).unwrap()
}

/// `request` as the one request of a new HTTP/1.1 connection over `io`
/// (TCP, or TLS over it): the status and the whole body, or what failed (a
/// connection closed or reset) rather than a panic.
pub(crate) async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Sends one request and returns the response with its body unread.
pub(crate) async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
        .send_request(request(addr, method, path, headers, body))
        .await
        .unwrap()
}

/// One request with no body on a new connection, whose failure (a
/// connection refused, closed or reset) is returned rather than a panic.
pub(crate) async fn try_call(
    addr: &str,
    method: &str,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    exchange(stream, request(addr, method, path, &[], "")).await
}

/// One whole request: the status and the body.
pub(crate) async fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, Bytes) {
    let response = send(addr, method, path, headers, body).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// One request whose answer is JSON.
pub(crate) async fn call_json(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, Json) {
    let (status, body) = call(addr, method, path, headers, body).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} is not JSON ({e}): {body:?}"));
    (status, json)
}

#[tokio::test]
async fn probes_metrics_and_the_console_are_served() {
    let (server, addr) = start_http(&[]);
    let (status, body) = call_json(&addr, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &"SERVING".into())
    );
    let (status, body) = call_json(&addr, "GET", "/readyz", &[], "").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &"SERVING".into())
    );
    let (status, body) = call_json(&addr, "GET", "/readyz?service=keyvalue.v1.KV", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call_json(&addr, "GET", "/readyz?service=no.Such", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut client = server.client().await;
    crate::harness::set(&mut client, "a", "1").await;
    call(&addr, "GET", "/v1/kv/a", &[], "").await;
    let (status, page) = call(&addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page.to_vec()).unwrap();
    for expected in [
        "kv_requests_total{method=\"/simplekeyvalue.KeyValue/Set\",code=\"OK\"} 1",
        "kv_http_requests_total{route=\"/v1/kv/{*key}\",status=\"200\"} 1",
        "kv_http_request_duration_seconds_count{route=\"/v1/kv/{*key}\"} 1",
        "kv_store_commit_duration_seconds_bucket{le=\"+Inf\"} 0",
        "kv_keys 1",
    ] {
        assert!(page.contains(expected), "{expected} in:\n{page}");
    }

    let (status, html) = call(&addr, "GET", "/", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&html).contains("<title>keyvalue console</title>"));
    for asset in ["/console/console.js", "/console/console.css"] {
        let (status, body) = call(&addr, "GET", asset, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(!body.is_empty(), "{asset}");
    }
    let (status, body) = call_json(&addr, "GET", "/nowhere", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("no such route"));
}

#[tokio::test]
async fn keys_are_read_written_and_deleted_with_compare_and_set() {
    let (_server, addr) = start_http(&[]);
    // Keys are percent-encoded in the path; a slash may be either.
    let (status, put) = call_json(&addr, "PUT", "/v1/kv/app%2Fname", &[], "hello").await;
    assert_eq!(status, StatusCode::OK, "{put}");
    let first = put["revision"].as_u64().unwrap();
    let (status, kv) = call_json(&addr, "GET", "/v1/kv/app/name", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kv["key"], "app/name");
    assert_eq!(kv["value"], "hello");
    assert_eq!(kv["mod_revision"], first);
    assert_eq!(kv["version"], 1);

    let (status, missing) = call_json(&addr, "GET", "/v1/kv/nothing%20here", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "key not found");
    // Codes are gRPC's canonical names, as grpc-gateway and `kv` write them.
    assert_eq!(missing["code"], "NOT_FOUND");

    // Compare-and-set: the wrong revision is a 409 with the current state.
    let stale = format!("/v1/kv/app%2Fname?expect_revision={}", first + 100);
    let (status, conflict) = call_json(&addr, "PUT", &stale, &[], "lost").await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["current"]["value"], "hello");
    assert_eq!(conflict["code"], "FAILED_PRECONDITION");
    let fresh = format!("/v1/kv/app%2Fname?expect_revision={first}");
    let (status, _) = call_json(&addr, "PUT", &fresh, &[], "won").await;
    assert_eq!(status, StatusCode::OK);
    let (_, kv) = call_json(&addr, "GET", "/v1/kv/app/name", &[], "").await;
    assert_eq!(kv["value"], "won");
    // expect_revision=0: create only.
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/app/name?expect_revision=0", &[], "x").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Bytes that are not UTF-8 come back in base64, marked.
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/bin", &[], vec![0xffu8, 0, 1]).await;
    assert_eq!(status, StatusCode::OK);
    let (_, kv) = call_json(&addr, "GET", "/v1/kv/bin", &[], "").await;
    assert_eq!(kv["value"], "/wAB");
    assert_eq!(kv["value_encoding"], "base64");

    // A TTL gives the key a lease of its own.
    let (status, put) = call_json(&addr, "PUT", "/v1/kv/session?ttl=30s", &[], "s").await;
    assert_eq!(status, StatusCode::OK);
    let lease = put["lease"].as_i64().unwrap();
    assert!(lease > 0, "{put}");
    let (_, kv) = call_json(&addr, "GET", "/v1/kv/session", &[], "").await;
    assert_eq!(kv["lease"], lease);
    let (status, info) = call_json(&addr, "GET", &format!("/v1/leases/{lease}"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["ttl_ms"], 30_000);
    let (status, bad) = call_json(&addr, "PUT", "/v1/kv/session?ttl=soon", &[], "s").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"].as_str().unwrap().starts_with("ttl:"), "{bad}");
    assert_eq!(bad["code"], "INVALID_ARGUMENT");
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/x?colour=red", &[], "s").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Deletes: one key (with a revision to match, or not), then a prefix.
    let (status, gone) = call_json(&addr, "DELETE", "/v1/kv/bin?expect_revision=1", &[], "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{gone}");
    let (status, gone) = call_json(&addr, "DELETE", "/v1/kv/bin", &[], "").await;
    assert_eq!((status, &gone["deleted"]), (StatusCode::OK, &1.into()));
    call_json(&addr, "PUT", "/v1/kv/app/other", &[], "o").await;
    let (status, gone) = call_json(&addr, "DELETE", "/v1/kv/app/?prefix=true", &[], "").await;
    assert_eq!((status, &gone["deleted"]), (StatusCode::OK, &2.into()));
    let (status, _) = call_json(&addr, "GET", "/v1/kv/app/name", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn listing_pages_in_key_order_and_groups_by_a_delimiter() {
    let (_server, addr) = start_http(&[]);
    let mut keys = Vec::new();
    for dir in ["a", "b"] {
        for i in 0..12 {
            keys.push(format!("t/{dir}/{i:02}"));
        }
    }
    keys.push("t/top".to_owned());
    keys.push("u".to_owned());
    for key in &keys {
        call_json(&addr, "PUT", &format!("/v1/kv/{key}"), &[], "v").await;
    }
    // Pages of 10 under t/, in key order, until `more` is false.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/v1/kv?prefix=t/&limit=10".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (status, page) = call_json(&addr, "GET", &path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let kvs = page["kvs"].as_array().unwrap();
        assert!(kvs.len() <= 10);
        seen.extend(kvs.iter().map(|kv| kv["key"].as_str().unwrap().to_owned()));
        if page["more"] == false {
            assert!(page["next"].is_null());
            break;
        }
        after = Some(page["next"].as_str().unwrap().to_owned());
    }
    let mut expected: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("t/"))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    // With a delimiter: each directory once, then the keys beside them.
    let (_, page) = call_json(
        &addr,
        "GET",
        "/v1/kv?prefix=t/&delimiter=/&keys_only=true",
        &[],
        "",
    )
    .await;
    assert_eq!(
        page["prefixes"],
        serde_json::json!([{"prefix": "t/a/"}, {"prefix": "t/b/"}])
    );
    assert_eq!(page["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(page["kvs"][0]["key"], "t/top");
    assert!(page["kvs"][0].get("value").is_some());
    // Paging through directories one entry at a time.
    let (_, first) = call_json(
        &addr,
        "GET",
        "/v1/kv?prefix=t/&delimiter=/&limit=1",
        &[],
        "",
    )
    .await;
    assert_eq!(first["prefixes"], serde_json::json!([{"prefix": "t/a/"}]));
    assert!(first.get("next_encoding").is_none(), "{first}");
    assert_eq!(
        (&first["more"], &first["next"]),
        (&true.into(), &"t/a/".into())
    );
    let (_, second) = call_json(
        &addr,
        "GET",
        "/v1/kv?prefix=t/&delimiter=/&limit=1&after=t/a/",
        &[],
        "",
    )
    .await;
    assert_eq!(second["prefixes"], serde_json::json!([{"prefix": "t/b/"}]));
    let (_, third) = call_json(
        &addr,
        "GET",
        "/v1/kv?prefix=t/&delimiter=/&limit=1&after=t/b/",
        &[],
        "",
    )
    .await;
    assert_eq!(third["kvs"][0]["key"], "t/top");
    assert_eq!(third["more"], false);
    let (status, _) = call_json(&addr, "GET", "/v1/kv?prefix=t/&after=u", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn leases_are_listed_in_pages_with_their_ttls_and_keys() {
    let (_server, addr) = start_http(&[]);
    // Lease `shared` holds three keys; four more leases hold one each.
    let (_, put) = call_json(&addr, "PUT", "/v1/kv/s/a?ttl=60s", &[], "v").await;
    let shared = put["lease"].as_i64().unwrap();
    for key in ["s/b", "s/c"] {
        let path = format!("/v1/kv/{key}?lease={shared}");
        let (status, _) = call_json(&addr, "PUT", &path, &[], "v").await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut granted = vec![shared];
    for i in 0..4 {
        let (_, put) = call_json(&addr, "PUT", &format!("/v1/kv/one/{i}?ttl=30s"), &[], "v").await;
        granted.push(put["lease"].as_i64().unwrap());
    }
    granted.sort_unstable();

    // Two leases a page, in id order, each with its first two keys.
    let mut listed = Vec::new();
    let mut path = "/v1/leases?limit=2&keys=2".to_owned();
    loop {
        let (status, page) = call_json(&addr, "GET", &path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let leases = page["leases"].as_array().unwrap();
        assert!(leases.len() <= 2, "{page}");
        for lease in leases {
            let id = lease["id"].as_i64().unwrap();
            let keys: Vec<&str> = lease["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| key["key"].as_str().unwrap())
                .collect();
            if id == shared {
                assert_eq!(keys, ["s/a", "s/b"], "{lease}");
                assert_eq!(lease["more_keys"], true);
                assert_eq!(lease["ttl_ms"], 60_000);
            } else {
                assert_eq!(keys.len(), 1, "{lease}");
                assert_eq!(lease["more_keys"], false);
                assert_eq!(lease["ttl_ms"], 30_000);
            }
            assert!(lease["remaining_ms"].as_u64().unwrap() <= lease["ttl_ms"].as_u64().unwrap());
            listed.push(id);
        }
        if page["more"] == false {
            assert!(page["next"].is_null(), "{page}");
            break;
        }
        let next = page["next"].as_i64().unwrap();
        assert_eq!(Some(&next), listed.last());
        path = format!("/v1/leases?limit=2&keys=2&after={next}");
    }
    assert_eq!(listed, granted, "every lease once, in id order");

    // One lease's keys, in pages.
    let (status, first) = call_json(
        &addr,
        "GET",
        &format!("/v1/leases/{shared}?limit=2"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        first["keys"],
        serde_json::json!([{"key": "s/a"}, {"key": "s/b"}])
    );
    assert_eq!(
        (&first["more_keys"], &first["next_key"]),
        (&true.into(), &"s/b".into())
    );
    let path = format!("/v1/leases/{shared}?limit=2&after=s/b");
    let (_, rest) = call_json(&addr, "GET", &path, &[], "").await;
    assert_eq!(rest["keys"], serde_json::json!([{"key": "s/c"}]));
    assert_eq!(
        (&rest["more_keys"], &rest["next_key"]),
        (&false.into(), &Json::Null)
    );

    // Bad requests, and a lease that is not there.
    let (status, body) = call_json(&addr, "GET", "/v1/leases/soon", &[], "").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &"INVALID_ARGUMENT".into())
    );
    let (status, _) = call_json(&addr, "GET", "/v1/leases?colour=red", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call_json(&addr, "GET", "/v1/leases?after=x", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call_json(&addr, "GET", "/v1/leases/12345", &[], "").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &"NOT_FOUND".into())
    );
    // Deleted keys leave their lease, which lives on without them.
    call_json(&addr, "DELETE", "/v1/kv/s/?prefix=true", &[], "").await;
    let (_, page) = call_json(&addr, "GET", &format!("/v1/leases/{shared}"), &[], "").await;
    assert_eq!(page["keys"], serde_json::json!([]), "{page}");
}

#[tokio::test]
async fn tokens_and_limits_apply_as_on_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "reader read\nwriter readwrite\napp readwrite app/\n",
    )
    .unwrap();
    let (_server, addr) = start_http(&[
        "--auth-token-file",
        tokens.to_str().unwrap(),
        "--max-value-bytes",
        "8",
        "--max-key-bytes",
        "16",
    ]);
    let writer = [("authorization", "Bearer writer")];
    let reader = [("authorization", "Bearer reader")];
    let app = [("authorization", "Bearer app")];

    let (status, body) = call_json(&addr, "GET", "/v1/kv/k", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    assert_eq!(body["code"], "UNAUTHENTICATED");
    let (status, _) = call_json(
        &addr,
        "GET",
        "/v1/kv/k",
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = call_json(&addr, "PUT", "/v1/kv/k", &writer, "v").await;
    assert_eq!(status, StatusCode::OK);
    let (status, kv) = call_json(&addr, "GET", "/v1/kv/k", &reader, "").await;
    assert_eq!((status, &kv["value"]), (StatusCode::OK, &"v".into()));
    let (status, body) = call_json(&addr, "PUT", "/v1/kv/k", &reader, "w").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("may only read"),
        "{body}"
    );
    assert_eq!(body["code"], "PERMISSION_DENIED");
    let (status, _) = call_json(&addr, "DELETE", "/v1/kv/k", &reader, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A token confined to app/ reaches only app/, in every route.
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/app/x", &app, "v").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call_json(&addr, "GET", "/v1/kv/k", &app, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("app/"), "{body}");
    let (status, _) = call_json(&addr, "GET", "/v1/kv?prefix=", &app, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = call_json(&addr, "GET", "/v1/kv?prefix=app/", &app, "").await;
    assert_eq!(
        (status, page["kvs"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (status, _) = call(&addr, "GET", "/v1/watch?prefix=", &app, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A lease's keys are listed only to a token that may see them all (as
    // etcd's LeaseTimeToLive); a page of leases shows those in its prefix.
    let (_, put) = call_json(&addr, "PUT", "/v1/kv/app/l?ttl=60s", &app, "v").await;
    let lease = put["lease"].as_i64().unwrap();
    let (status, _) = call_json(
        &addr,
        "PUT",
        &format!("/v1/kv/z?lease={lease}"),
        &writer,
        "v",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/v1/leases/{lease}");
    let (status, seen) = call_json(&addr, "GET", &path, &app, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{seen}");
    assert!(
        seen["error"].as_str().unwrap().contains("list the keys of"),
        "{seen}"
    );
    let (_, seen) = call_json(&addr, "GET", &path, &reader, "").await;
    assert_eq!(
        seen["keys"],
        serde_json::json!([{"key": "app/l"}, {"key": "z"}]),
        "{seen}"
    );
    let (_, page) = call_json(&addr, "GET", "/v1/leases", &app, "").await;
    assert_eq!(
        page["leases"][0]["keys"],
        serde_json::json!([{"key": "app/l"}]),
        "{page}"
    );
    let (status, _) = call_json(&addr, "GET", "/v1/leases", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // What the console asks to know what it may do.
    let (_, who) = call_json(&addr, "GET", "/v1/whoami", &reader, "").await;
    assert_eq!((&who["role"], &who["auth"]), (&"read".into(), &true.into()));
    let (_, who) = call_json(&addr, "GET", "/v1/whoami", &app, "").await;
    assert_eq!(
        (&who["role"], &who["prefix"]),
        (&"readwrite".into(), &"app/".into())
    );
    let (status, _) = call_json(&addr, "GET", "/v1/whoami", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The limits of the gRPC API, with the same messages.
    let (status, body) = call_json(&addr, "PUT", "/v1/kv/big", &writer, "123456789").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-value-bytes"),
        "{body}"
    );
    let (status, body) = call_json(&addr, "PUT", "/v1/kv/big", &writer, vec![b'x'; 100_000]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-value-bytes"),
        "{body}"
    );
    let (status, body) = call_json(&addr, "GET", "/v1/kv/a-key-of-seventeen", &writer, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "key is 18 bytes, above the limit of 16 bytes (--max-key-bytes)"
    );
    // Probes and metrics need no token.
    let (status, _) = call(&addr, "GET", "/readyz", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
}

/// The next Server-Sent Event of `body`: its fields, by name.
pub(crate) async fn next_event(
    body: &mut Incoming,
    buffer: &mut String,
) -> std::collections::HashMap<String, String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.starts_with(':') {
                continue;
            }
            return block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.to_owned(), value.trim_start().to_owned()))
                .collect();
        }
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn watch_streams_events_and_resumes_after_last_event_id() {
    let (_server, addr) = start_http(&[]);
    let response = send(&addr, "GET", "/v1/watch?prefix=w/", &[], "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut buffer = String::new();
    call_json(&addr, "PUT", "/v1/kv/w/1", &[], "one").await;
    call_json(&addr, "PUT", "/v1/kv/elsewhere", &[], "no").await;
    call_json(&addr, "PUT", "/v1/kv/w/2", &[], "two").await;
    call_json(&addr, "DELETE", "/v1/kv/w/1", &[], "").await;
    let first = next_event(&mut body, &mut buffer).await;
    assert_eq!(first["event"], "put");
    let data: Json = serde_json::from_str(&first["data"]).unwrap();
    assert_eq!(
        (&data["kv"]["key"], &data["kv"]["value"]),
        (&"w/1".into(), &"one".into())
    );
    assert_eq!(data["revision"].to_string(), first["id"]);
    let second = next_event(&mut body, &mut buffer).await;
    assert_eq!(second["event"], "put");
    let third = next_event(&mut body, &mut buffer).await;
    assert_eq!(third["event"], "delete");
    drop(body);

    // A reconnecting client names the last event it saw, and gets what came
    // after it, from the history.
    let resumed = send(
        &addr,
        "GET",
        "/v1/watch?prefix=w/",
        &[("last-event-id", &first["id"])],
        "",
    )
    .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut body = resumed.into_body();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await["id"], second["id"]);
    assert_eq!(next_event(&mut body, &mut buffer).await["id"], third["id"]);
    // from_revision starts at that revision.
    let from = format!("/v1/watch?key=w/2&from_revision={}", second["id"]);
    let mut body = send(&addr, "GET", &from, &[], "").await.into_body();
    let mut buffer = String::new();
    let event = next_event(&mut body, &mut buffer).await;
    assert_eq!((&event["id"], &event["event"][..]), (&second["id"], "put"));
    let (status, _) = call(&addr, "GET", "/v1/watch", &[("last-event-id", "x")], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
