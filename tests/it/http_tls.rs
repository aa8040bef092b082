//! The HTTP listener over TLS: with `--tls-cert`/`--tls-key` it speaks
//! HTTPS with the gRPC port's certificate, refuses plaintext, and takes a
//! new certificate on SIGHUP together with the gRPC port. The client is
//! hyper's over tokio-rustls, trusting only the test's CA.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value as Json;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::harness::{Server, send_signal};
use crate::tls::{Authority, write};

/// One HTTPS request to `addr` (by the name `localhost`), trusting only
/// `ca_pem`; the status and JSON body, or why it failed.
async fn https(
    addr: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Result<(StatusCode, Json), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = crate::http::request(addr, method, path, headers, body);
    let (status, body) = crate::http::exchange(tls, request).await?;
    let json = serde_json::from_slice(&body).map_err(|e| format!("{status}: {e}: {body:?}"))?;
    Ok((status, json))
}

/// A server certificate for localhost signed by `ca`, written into `dir`.
fn server_files(dir: &Path, ca: &Authority) {
    let (cert, key) = ca.sign(&["localhost", "127.0.0.1"]);
    write(dir, "server.pem", &cert);
    write(dir, "server.key", &key);
}

#[tokio::test]
async fn the_http_listener_speaks_tls_with_the_grpc_certificate_and_reloads_it_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::new("first CA");
    server_files(dir.path(), &first);
    let tokens = write(dir.path(), "tokens", "writer readwrite\n");
    let server = Server::start_with(&[
        "--http-listen",
        "127.0.0.1:0",
        "--tls-cert",
        dir.path().join("server.pem").to_str().unwrap(),
        "--tls-key",
        dir.path().join("server.key").to_str().unwrap(),
        "--auth-token-file",
        tokens.to_str().unwrap(),
    ]);
    // Announced as https.
    let addr = crate::http::http_addr(&server);
    assert!(
        server
            .stderr_lines()
            .contains(&format!("http on https://{addr}/")),
        "{:?}",
        server.stderr_lines()
    );

    let writer = [("authorization", "Bearer writer")];
    let (status, put) = https(&addr, &first.pem, "PUT", "/v1/kv/k", &writer, "v")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{put}");
    let (status, kv) = https(&addr, &first.pem, "GET", "/v1/kv/k", &writer, "")
        .await
        .unwrap();
    assert_eq!((status, &kv["value"]), (StatusCode::OK, &"v".into()));
    // Tokens apply over TLS as over plaintext.
    let (status, refused) = https(&addr, &first.pem, "GET", "/v1/kv/k", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["code"], "UNAUTHENTICATED");
    // The gRPC port has the same certificate: a kv trusting the CA reads it.
    let ca_file = write(dir.path(), "first.pem", &first.pem);
    let got = crate::harness::kv(
        server.addr(),
        &[
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--token",
            "writer",
            "get",
            "k",
        ],
    );
    assert_eq!(crate::harness::text(&got.stdout), "v\n");

    // Plaintext HTTP to the TLS listener gets no answer, and no JSON.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        crate::http::try_call(&addr, "GET", "/healthz"),
    )
    .await
    .expect("a plaintext request is refused, not left hanging");
    assert!(plain.is_err(), "{plain:?}");
    // A client that trusts another CA is refused in the handshake.
    let stranger = Authority::new("stranger");
    let untrusted = https(&addr, &stranger.pem, "GET", "/healthz", &[], "").await;
    assert!(untrusted.unwrap_err().starts_with("TLS: "));

    // A new certificate from another CA, and SIGHUP: new HTTPS connections
    // get it, as gRPC ones do.
    let second = Authority::new("second CA");
    server_files(dir.path(), &second);
    send_signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match https(&addr, &second.pem, "GET", "/v1/kv/k", &writer, "").await {
            Ok((status, kv)) => {
                assert_eq!((status, &kv["value"]), (StatusCode::OK, &"v".into()));
                break;
            }
            Err(error) => assert!(
                Instant::now() < deadline,
                "the HTTP listener kept the old certificate: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = https(&addr, &first.pem, "GET", "/healthz", &[], "").await;
    assert!(old.unwrap_err().starts_with("TLS: "));
}
