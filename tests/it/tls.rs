//! TLS through the real binary: server certificates, mutual TLS, reload on
//! SIGHUP without dropping the listener, and `kv --ca-file/--cert/--key`.
//! Certificates are made by the test (rcgen) in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Output;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::harness::{self, Server, kvserver, send_signal, text};

/// A certificate authority that signs server and client certificates.
pub(crate) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate, as PEM.
    pub(crate) pem: String,
}

impl Authority {
    /// A new self-signed CA called `name`.
    pub(crate) fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Authority {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` and its key, as PEM.
    pub(crate) fn sign(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name`; returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The server's certificate files, signed by `ca`, in `dir`.
fn server_files(dir: &Path, ca: &Authority) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.sign(&["localhost", "127.0.0.1"]);
    (
        write(dir, "server.pem", &cert),
        write(dir, "server.key", &key),
    )
}

fn start_tls(cert: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// `kv` with the TLS flags `tls`, then `args`.
fn kv(server: &Server, tls: &[&str], args: &[&str]) -> Output {
    harness::kv(server.addr(), &[&["--timeout", "3s"], tls, args].concat())
}

#[test]
fn a_tls_server_serves_clients_that_trust_its_ca_and_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA");
    let (cert, key) = server_files(dir.path(), &ca);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let server = start_tls(&cert, &key, &[]);
    let trusted = ["--ca-file", ca_file.to_str().unwrap()];
    let set = kv(&server, &trusted, &["set", "k", "over tls"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(
        text(&kv(&server, &trusted, &["get", "k"]).stdout),
        "over tls\n"
    );
    // A plaintext client gets nowhere, and is told why it may be.
    let plaintext = kv(&server, &[], &["get", "k"]);
    assert_eq!(
        plaintext.status.code(),
        Some(3),
        "{}",
        text(&plaintext.stderr)
    );
    assert!(
        text(&plaintext.stderr).contains("if it serves TLS, pass --ca-file"),
        "{}",
        text(&plaintext.stderr)
    );
    // And the server says why it closed the connection.
    server.wait_for_log_line("TLS handshake with ");
    // Nor does one that trusts another CA.
    let stranger = write(dir.path(), "other-ca.pem", &Authority::new("other").pem);
    let untrusted = kv(
        &server,
        &["--ca-file", stranger.to_str().unwrap()],
        &["get", "k"],
    );
    assert_eq!(
        untrusted.status.code(),
        Some(3),
        "{}",
        text(&untrusted.stderr)
    );
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA");
    let (cert, key) = server_files(dir.path(), &ca);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let clients = Authority::new("client CA");
    let client_ca = write(dir.path(), "client-ca.pem", &clients.pem);
    let server = start_tls(
        &cert,
        &key,
        &["--tls-client-ca", client_ca.to_str().unwrap()],
    );

    let (client_cert, client_key) = clients.sign(&["alice"]);
    let client_cert = write(dir.path(), "alice.pem", &client_cert);
    let client_key = write(dir.path(), "alice.key", &client_key);
    let with_cert = [
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ];
    let set = kv(&server, &with_cert, &["set", "k", "v"]);
    assert!(set.status.success(), "{}", text(&set.stderr));

    let without = kv(
        &server,
        &["--ca-file", ca_file.to_str().unwrap()],
        &["get", "k"],
    );
    assert_eq!(
        without.status.code(),
        Some(3),
        "no client certificate: {}",
        text(&without.stderr)
    );
    assert!(
        text(&without.stderr).contains("pass --cert and --key"),
        "no client certificate: {}",
        text(&without.stderr)
    );
    server.wait_for_log_line("TLS handshake with ");
    let (rogue_cert, rogue_key) = Authority::new("rogue").sign(&["mallory"]);
    let rogue_cert = write(dir.path(), "m.pem", &rogue_cert);
    let rogue_key = write(dir.path(), "m.key", &rogue_key);
    let rogue = [
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--cert",
        rogue_cert.to_str().unwrap(),
        "--key",
        rogue_key.to_str().unwrap(),
    ];
    let foreign = kv(&server, &rogue, &["get", "k"]);
    assert_eq!(
        foreign.status.code(),
        Some(3),
        "a foreign certificate: {}",
        text(&foreign.stderr)
    );
}

#[test]
fn sighup_reloads_the_certificate_on_the_same_listener() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::new("first CA");
    let (cert, key) = server_files(dir.path(), &first);
    let first_ca = write(dir.path(), "first.pem", &first.pem);
    let server = start_tls(&cert, &key, &[]);
    let with = |ca: &Path| ["--ca-file".to_owned(), ca.to_str().unwrap().to_owned()];
    let trusts_first = with(&first_ca);
    let trusts_first: Vec<&str> = trusts_first.iter().map(String::as_str).collect();
    assert!(
        kv(&server, &trusts_first, &["set", "k", "v"])
            .status
            .success()
    );

    // New files in place, then SIGHUP.
    let second = Authority::new("second CA");
    let (new_cert, new_key) = second.sign(&["localhost", "127.0.0.1"]);
    std::fs::write(&cert, new_cert).unwrap();
    std::fs::write(&key, new_key).unwrap();
    let second_ca = write(dir.path(), "second.pem", &second.pem);
    let trusts_second = with(&second_ca);
    let trusts_second: Vec<&str> = trusts_second.iter().map(String::as_str).collect();
    send_signal(server.pid(), "HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kv(&server, &trusts_second, &["get", "k"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Same address, same data; the old certificate is no longer offered.
    assert_eq!(
        text(&kv(&server, &trusts_second, &["get", "k"]).stdout),
        "v\n"
    );
    assert_eq!(
        kv(&server, &trusts_first, &["get", "k"]).status.code(),
        Some(3)
    );
    // A broken file on the next SIGHUP keeps the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    send_signal(server.pid(), "HUP");
    server.wait_for_log_line("SIGHUP: kept the old TLS certificate");
    let kept = kv(&server, &trusts_second, &["get", "k"]);
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert_eq!(text(&kept.stdout), "v\n");
}

#[test]
fn unusable_certificate_files_stop_the_server_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_files(dir.path(), &Authority::new("ca"));
    let (_, other_key) = Authority::new("ca").sign(&["localhost"]);
    let mismatched = write(dir.path(), "other.key", &other_key);
    let garbage = write(dir.path(), "garbage.pem", "hello");
    for (cert, key, expected) in [
        (&garbage, &key, "garbage.pem"),
        (&cert, &mismatched, "does not fit"),
        (&cert, &dir.path().join("missing.key"), "missing.key"),
    ] {
        let output = kvserver()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "memory",
                "--tls-cert",
            ])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(!stderr.contains("listening on"));
    }
}

#[test]
fn kv_speaks_tls_and_tokens_together() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA");
    let (cert, key) = server_files(dir.path(), &ca);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let tokens = write(
        dir.path(),
        "tokens",
        "writer-secret readwrite\nreader-secret read\n",
    );
    let server = start_tls(
        &cert,
        &key,
        &["--auth-token-file", tokens.to_str().unwrap()],
    );
    let trusted = ["--ca-file", ca_file.to_str().unwrap()];
    let writer = [trusted[0], trusted[1], "--token", "writer-secret"];
    let reader = [trusted[0], trusted[1], "--token", "reader-secret"];
    assert!(
        kv(&server, &writer, &["set", "k", "secret"])
            .status
            .success()
    );
    assert_eq!(
        text(&kv(&server, &reader, &["get", "k"]).stdout),
        "secret\n"
    );
    let refused = kv(&server, &reader, &["set", "k", "x"]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        text(&refused.stderr).contains("PERMISSION_DENIED"),
        "{}",
        text(&refused.stderr)
    );
    let anonymous = kv(&server, &trusted, &["get", "k"]);
    assert_eq!(anonymous.status.code(), Some(4));
    assert!(
        text(&anonymous.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&anonymous.stderr)
    );
}

#[test]
fn kv_files_without_a_certificate_or_key_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let (client_cert, client_key) = ca.sign(&["client"]);
    let client_cert = write(dir.path(), "client.pem", &client_cert);
    let client_key = write(dir.path(), "client.key", &client_key);
    let text_file = write(dir.path(), "hostname", "localhost\n");
    let [ca_file, client_cert, client_key, text_file] =
        [&ca_file, &client_cert, &client_key, &text_file].map(|path| path.to_str().unwrap());
    // A server that would accept these clients, so that only the files
    // themselves can make kv fail.
    let (cert, key) = server_files(dir.path(), &ca);
    let server = start_tls(&cert, &key, &[]);
    let with_identity = kv(
        &server,
        &[
            "--ca-file",
            ca_file,
            "--cert",
            client_cert,
            "--key",
            client_key,
        ],
        &["set", "k", "v"],
    );
    assert!(
        with_identity.status.success(),
        "{}",
        text(&with_identity.stderr)
    );
    for (tls, expected) in [
        (
            &["--ca-file", text_file][..],
            format!("{text_file} holds no PEM certificate\n"),
        ),
        (
            &[
                "--ca-file",
                ca_file,
                "--cert",
                text_file,
                "--key",
                client_key,
            ][..],
            format!("{text_file} holds no PEM certificate\n"),
        ),
        (
            &[
                "--ca-file",
                ca_file,
                "--cert",
                client_cert,
                "--key",
                text_file,
            ][..],
            format!("{text_file} holds no PEM private key\n"),
        ),
        (
            // A certificate where the key should be is no key either.
            &[
                "--ca-file",
                ca_file,
                "--cert",
                client_cert,
                "--key",
                client_cert,
            ][..],
            format!("{client_cert} holds no PEM private key\n"),
        ),
    ] {
        let output = kv(&server, tls, &["get", "k"]);
        assert_eq!(
            (output.status.code(), text(&output.stderr)),
            (Some(2), expected),
            "{tls:?}"
        );
    }
}
