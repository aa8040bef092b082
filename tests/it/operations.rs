//! What operators' tools see: `grpc.health.v1.Health` and server reflection
//! (what `grpc_health_probe` and `grpcurl list` use), through the real binary.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::harness::Server;

async fn channel(server: &Server) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .expect("connect to kvserver")
}

#[tokio::test]
async fn health_reports_every_service_serving() {
    let server = Server::start();
    for service in ["", "simplekeyvalue.KeyValue", "keyvalue.v1.KV"] {
        let status = server.health(service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = server.health("no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_without_proto_files() {
    let server = Server::start();
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("a list of services: {response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // Ours, and as on grpc-go servers (`grpcurl list`), health and both
    // versions of reflection.
    for expected in [
        "simplekeyvalue.KeyValue",
        "keyvalue.v1.KV",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // And a service can be described: its file comes back.
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "keyvalue.v1.KV".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([describe]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("the file descriptor: {response:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn health_turns_not_serving_while_draining() {
    let server = Server::start_with(&["--shutdown-grace", "10s"]);
    let mut health = server.health_client().await;
    let mut updates = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = updates
        .message()
        .await
        .unwrap()
        .expect("the current status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The open watch keeps the server draining: it reports the change on it.
    crate::harness::send_signal(server.pid(), "TERM");
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), updates.message())
        .await
        .expect("a status change within 10 s")
        .unwrap()
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(updates);
    drop(health);
    assert!(server.stop("TERM").await.status.success());
}

/// The body of `GET /metrics` at `addr`, over plain HTTP/1.1.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn metrics_count_requests_codes_latency_keys_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = crate::harness::kvserver();
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path());
    let server = Server::spawn(command).expect("kvserver with metrics");
    let metrics_addr = server
        .stderr_lines()
        .iter()
        .find_map(|line| line.strip_prefix("metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("the metrics address is announced")
        .to_owned();
    let mut client = server.client().await;
    crate::harness::set(&mut client, "a", "1").await;
    crate::harness::set(&mut client, "b", "2").await;
    let _ = crate::harness::get(&mut client, "missing").await;
    let page = tokio::task::spawn_blocking(move || scrape(&metrics_addr))
        .await
        .unwrap();
    for expected in [
        "kv_requests_total{method=\"/simplekeyvalue.KeyValue/Set\",code=\"OK\"} 2",
        "kv_requests_total{method=\"/simplekeyvalue.KeyValue/Get\",code=\"NOT_FOUND\"} 1",
        "kv_request_duration_seconds_count{method=\"/simplekeyvalue.KeyValue/Set\"} 2",
        "kv_keys 2",
        "kv_connections_open 1",
        "kv_store_commits_total 2",
    ] {
        assert!(page.contains(expected), "{expected} in:\n{page}");
    }
    assert!(page.contains("kv_store_disk_bytes "), "{page}");
}
