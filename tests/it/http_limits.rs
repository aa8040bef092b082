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
    let mut held = grpc
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
        // (The held call may not have reached the server yet; or it came
        // while a GET had the place and was refused: then it goes again.)
        assert_eq!(status, StatusCode::OK, "{body}");
        if tokio::time::timeout(Duration::ZERO, &mut held.0)
            .await
            .is_ok()
        {
            held = grpc
                .send_request(grpc_request(&server, "/keyvalue.v1.KV/Put"), false)
                .unwrap();
        }
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

/// A raw HTTP/2 connection to the HTTP listener at `addr`, its driver
/// spawned.
async fn raw_http2_to(addr: &str) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send.ready().await.unwrap()
}

/// A PUT of `/v1/kv/{key}` announcing `length` bytes and sending `sent`.
fn stalled_put(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: &str,
    key: &str,
    length: usize,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let request = http::Request::put(format!("http://{addr}/v1/kv/{key}"))
        .header("content-length", length)
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from(vec![b'v'; sent]), false)
        .unwrap();
    (response, body)
}

/// The status and JSON body of an HTTP/2 answer.
async fn answer(response: h2::client::ResponseFuture) -> (StatusCode, serde_json::Value) {
    let response = response.await.unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
        text.extend_from_slice(&data);
    }
    (status, serde_json::from_slice(&text).unwrap())
}

#[tokio::test]
async fn http_requests_count_against_their_connections_limit_and_time_out() {
    let (_server, addr) = start_http(&[
        "--max-in-flight-per-connection",
        "2",
        "--request-timeout",
        "2s",
    ]);
    // Two PUTs whose bodies stop halfway hold the connection's two places.
    let mut send = raw_http2_to(&addr).await;
    let first = stalled_put(&mut send, &addr, "a", 10, 3);
    send = send.ready().await.unwrap();
    let second = stalled_put(&mut send, &addr, "b", 10, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third request on the same connection is refused at once...
    send = send.ready().await.unwrap();
    let request = http::Request::get(format!("http://{addr}/v1/kv/a"))
        .body(())
        .unwrap();
    let (third, _) = send.send_request(request, true).unwrap();
    let started = Instant::now();
    let (status, refused) = answer(third).await;
    assert!(started.elapsed() < AT_ONCE);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("--max-in-flight-per-connection"),
        "{message}"
    );
    // ...while another connection is served.
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/c", &[], "v").await;
    assert_eq!(status, StatusCode::OK);
    // The stalled ones end at --request-timeout, naming it.
    for (response, _body) in [first, second] {
        let (status, timed_out) = tokio::time::timeout(Duration::from_secs(10), answer(response))
            .await
            .expect("a stalled body is answered at the request timeout");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{timed_out}");
        let message = timed_out["error"].as_str().unwrap();
        assert!(message.contains("--request-timeout"), "{message}");
    }
}

#[tokio::test]
async fn http_request_bodies_share_the_byte_budget_with_grpc() {
    let (server, addr) = start_http(&[
        "--max-request-bytes-in-flight",
        "1048576",
        "--request-timeout",
        "30s",
    ]);
    // 600 KB of a 1 MB value, stalled: held in the 1 MiB budget.
    let mut send = raw_http2_to(&addr).await;
    let _held = stalled_put(&mut send, &addr, "a", 1_000_000, 600_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another 600 KB does not fit beside it.
    send = send.ready().await.unwrap();
    let (refused, _body) = stalled_put(&mut send, &addr, "b", 1_000_000, 600_000);
    let (status, refused) = tokio::time::timeout(AT_ONCE, answer(refused))
        .await
        .expect("refused at once");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("--max-request-bytes-in-flight"),
        "{message}"
    );
    // Nor does a gRPC request's: the budget is one.
    let mut kv = server.kv_client().await;
    let status = kv
        .put(keyvalue::proto::keyvalue::v1::PutRequest {
            key: "g".into(),
            value: vec![b'v'; 600_000].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // A small one still fits.
    let (status, _) = call_json(&addr, "PUT", "/v1/kv/c", &[], "v").await;
    assert_eq!(status, StatusCode::OK);
}
