//! gRPC-Web on the gRPC port: a browser's request (HTTP/1.1, the message in
//! a length-prefixed frame, the status in a trailer frame of the body) sent
//! by hyper's client to the real server, as a browser application's
//! `grpc-web` library would send it.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use keyvalue::proto::keyvalue::v1 as pb;
use prost::Message;

use crate::harness::{Server, b};
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
    let response = send(
        addr,
        "POST",
        method,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("accept", "application/grpc-web+proto"),
        ],
        frame(message),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let mut status = response
        .headers()
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
    (data, status.expect("a grpc-status"))
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
    let empty = pb::GetRequest { key: Bytes::new() };
    let (_, status) = call(server.addr(), "/keyvalue.v1.KV/Get", &empty.encode_to_vec()).await;
    assert_eq!(status, "3");
}
