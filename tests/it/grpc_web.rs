//! gRPC-Web on the gRPC port: a browser's request (HTTP/1.1, the message in
//! a length-prefixed frame, the status in a trailer frame of the body) sent
//! by hyper's client to the real server, as a browser application's
//! `grpc-web` library would send it.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::HeaderMap;
use keyvalue::proto::keyvalue::v1 as pb;
use prost::Message;

use crate::harness::{Server, b, kvserver, text};
use crate::http::send;

/// `message` in a gRPC-Web data frame.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend((message.len() as u32).to_be_bytes());
    framed.extend(message);
    framed
}

/// One gRPC-Web call: the data frames of the answer and its status (from
/// the trailer frame, or the headers of a trailers-only answer).
async fn call(addr: &str, method: &str, message: &[u8]) -> (Vec<Bytes>, String) {
    let (_, data, status) = call_with(addr, method, message, &[]).await;
    (data, status)
}

/// [`call`] with `extra` headers (an `origin`, say); also the answer's
/// headers.
async fn call_with(
    addr: &str,
    method: &str,
    message: &[u8],
    extra: &[(&str, &str)],
) -> (HeaderMap, Vec<Bytes>, String) {
    let mut headers = vec![
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
        ("accept", "application/grpc-web+proto"),
    ];
    headers.extend_from_slice(extra);
    let response = send(addr, "POST", method, &headers, frame(message)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let headers = response.headers().clone();
    let mut status = headers
        .get("grpc-status")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let mut data = Vec::new();
    let mut at = 0;
    while at + 5 <= body.len() {
        let flags = body[at];
        let length = u32::from_be_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
        let payload = body.slice(at + 5..at + 5 + length);
        at += 5 + length;
        if flags & 0x80 == 0 {
            data.push(payload);
        } else {
            let trailers = String::from_utf8(payload.to_vec()).unwrap();
            status = trailers.lines().find_map(|line| {
                line.strip_prefix("grpc-status:")
                    .map(|code| code.trim().to_owned())
            });
        }
    }
    (headers, data, status.expect("a grpc-status"))
}

#[tokio::test]
async fn grpc_web_calls_reach_the_kv_service_on_the_grpc_port() {
    let server = Server::start();
    let put = pb::PutRequest {
        key: b("web/greeting"),
        value: b("from a browser"),
        ..Default::default()
    };
    let (data, status) = call(server.addr(), "/keyvalue.v1.KV/Put", &put.encode_to_vec()).await;
    assert_eq!(status, "0");
    let reply = pb::PutResponse::decode(data[0].clone()).unwrap();
    assert!(reply.succeeded);

    let get = pb::GetRequest {
        key: b("web/greeting"),
        revision: 0,
    };
    let (data, status) = call(server.addr(), "/keyvalue.v1.KV/Get", &get.encode_to_vec()).await;
    assert_eq!(status, "0");
    let reply = pb::GetResponse::decode(data[0].clone()).unwrap();
    assert_eq!(reply.kv.unwrap().value, b("from a browser"));
    // And a gRPC client sees what the browser wrote.
    let mut client = server.client().await;
    assert_eq!(
        crate::harness::get(&mut client, "web/greeting")
            .await
            .unwrap(),
        "from a browser"
    );

    // Validation is the same: an empty key is INVALID_ARGUMENT (3).
    let empty = pb::GetRequest {
        key: Bytes::new(),
        revision: 0,
    };
    let (_, status) = call(server.addr(), "/keyvalue.v1.KV/Get", &empty.encode_to_vec()).await;
    assert_eq!(status, "3");
}

/// A browser's CORS preflight for a gRPC-Web call from `origin`: the
/// answer's status and headers.
async fn preflight(addr: &str, origin: &str) -> (StatusCode, HeaderMap) {
    let response = send(
        addr,
        "OPTIONS",
        "/keyvalue.v1.KV/Get",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web,x-user-agent",
            ),
        ],
        "",
    )
    .await;
    (response.status(), response.headers().clone())
}

/// A header's value as text ("" when it is absent).
fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map_or("", |value| value.to_str().unwrap())
}

#[tokio::test]
async fn pages_from_an_allowed_origin_pass_cors_and_others_do_not() {
    const APP: &str = "https://app.example.com";
    let server = Server::start_with(&["--grpc-web-allow-origin", APP]);
    let (status, headers) = preflight(server.addr(), APP).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), APP);
    assert!(header(&headers, "access-control-allow-methods").contains("POST"));
    let allowed = header(&headers, "access-control-allow-headers");
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed:?}");
    }
    // The call itself: answered, with its status readable by the page.
    let put = pb::PutRequest {
        key: b("web/cors"),
        value: b("v"),
        ..Default::default()
    };
    let (headers, _, status) = call_with(
        server.addr(),
        "/keyvalue.v1.KV/Put",
        &put.encode_to_vec(),
        &[("origin", APP)],
    )
    .await;
    assert_eq!(status, "0");
    assert_eq!(header(&headers, "access-control-allow-origin"), APP);
    assert!(header(&headers, "access-control-expose-headers").contains("grpc-status"));

    // Another origin is not allowed: no CORS headers, so its browser
    // refuses the page the call.
    let (_, headers) = preflight(server.addr(), "https://elsewhere.example").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), "");
}

#[tokio::test]
async fn without_the_flag_no_cors_headers_are_sent() {
    let server = Server::start();
    let (_, headers) = preflight(server.addr(), "https://app.example.com").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), "");
    let get = pb::GetRequest {
        key: b("k"),
        ..Default::default()
    };
    let (headers, _, _) = call_with(
        server.addr(),
        "/keyvalue.v1.KV/Get",
        &get.encode_to_vec(),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), "");
}

#[test]
fn an_origin_that_is_not_one_is_a_usage_error_naming_the_flag() {
    let output = kvserver()
        .args(["--grpc-web-allow-origin", "https://app.example.com/ui"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--grpc-web-allow-origin"), "{stderr}");
    assert!(stderr.contains("no path"), "{stderr}");
}
