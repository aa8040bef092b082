//! The HTTP listener when the server is full: a JSON API request beyond
//! `--max-in-flight` (shared with gRPC) is answered at once with 429 and a
//! JSON error naming the flag, and a connection beyond `--max-connections`
//! (shared with gRPC) is closed at once; neither waits, and both are served
//! again as soon as a place frees.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::hostile::{grpc_request, raw_http2};
use crate::http::{call_json, start_http, try_call};

/// How long a refusal may take: far less than any timeout of the server's.
const AT_ONCE: Duration = Duration::from_secs(3);

/// Retries `GET path` until it answers 200; fails after 10 s.
async fn served_again(addr: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_call(addr, "GET", path).await {
            Ok((StatusCode::OK, _)) => return,
            other => assert!(Instant::now() < deadline, "never served again: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_beyond_max_in_flight_gets_429_with_a_json_error_at_once() {
    let (server, addr) = start_http(&["--max-in-flight", "1", "--request-timeout", "30s"]);
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/k", &[], "v").await;
    assert_eq!(status, StatusCode::OK);

    // A gRPC call whose body never comes holds the one place.
    let mut grpc = raw_http2(&server).await;
    let held = grpc
        .send_request(grpc_request(&server, "/keyvalue.v1.KV/Put"), false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let started = Instant::now();
        let (status, body) = call_json(&addr, "GET", "/v1/kv/k", &[], "").await;
        assert!(
            started.elapsed() < AT_ONCE,
            "{status} took {:?}",
            started.elapsed()
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            break body;
        }
        // (The held call may not have reached the server yet.)
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused["code"], "RESOURCE_EXHAUSTED", "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(message.contains("--max-in-flight"), "{message}");
    // Probes and metrics are not requests to the store: still served.
    let (status, _) = call_json(&addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, StatusCode::OK);

    // The held call goes; its place is free again.
    drop(held);
    drop(grpc);
    served_again(&addr, "/v1/kv/k").await;
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_closed_at_once_not_left_waiting() {
    let (_server, addr) = start_http(&["--max-connections", "1"]);
    // One HTTP/1.1 keep-alive connection, served, holds the only place.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut holder, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header("host", &addr)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = holder.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();

    // Another client's connection is closed as soon as it is accepted.
    let started = Instant::now();
    let refused = tokio::time::timeout(AT_ONCE, try_call(&addr, "GET", "/healthz"))
        .await
        .expect("a connection beyond the limit is closed at once, not left waiting");
    assert!(refused.is_err(), "{refused:?}");
    assert!(started.elapsed() < AT_ONCE);

    // When the first client goes, the next is served.
    drop(holder);
    let _ = connection.await;
    served_again(&addr, "/healthz").await;
}
