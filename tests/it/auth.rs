//! Token authentication through the real binary: `--auth-token-file`, roles,
//! prefixes, both services, and `kv --token`.

use std::io::Read;
use std::process::Stdio;

use bytes::Bytes;
use keyvalue::proto::keyvalue::v1 as pb;
use keyvalue::proto::simplekeyvalue::{GetRequest, SetRequest};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::harness::{Server, kv_command, kvserver, wait_with_patience};

const TOKENS: &str = "# tokens of the test\n\
                      reader-secret read\n\
                      writer-secret readwrite\n\
                      app-secret readwrite app/\n";

/// A server that checks the tokens above, and the file they are in.
fn server_with_tokens() -> (Server, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), TOKENS).unwrap();
    let server = Server::start_with(&["--auth-token-file", file.path().to_str().unwrap()]);
    (server, file)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthenticated() {
    let (server, _file) = server_with_tokens();
    let mut tutorial = server.client().await;
    let status = tutorial.set(set("k", "v")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization: Bearer"),
        "{}",
        status.message()
    );
    let status = tutorial
        .set(with_token(set("k", "v"), "guess"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut kv = server.kv_client().await;
    let status = kv
        .get(pb::GetRequest {
            key: Bytes::from("k"),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Nothing was written by the refused requests.
    let got = tutorial
        .get(with_token(GetRequest { key: "k".into() }, "reader-secret"))
        .await;
    assert_eq!(got.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_read_token_reads_and_may_not_write() {
    let (server, _file) = server_with_tokens();
    let mut tutorial = server.client().await;
    tutorial
        .set(with_token(set("k", "v"), "writer-secret"))
        .await
        .unwrap();
    let value = tutorial
        .get(with_token(GetRequest { key: "k".into() }, "reader-secret"))
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(value, "v");
    let status = tutorial
        .set(with_token(set("k", "x"), "reader-secret"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut kv = server.kv_client().await;
    for status in [
        kv.put(with_token(
            pb::PutRequest {
                key: Bytes::from("k"),
                ..Default::default()
            },
            "reader-secret",
        ))
        .await
        .unwrap_err(),
        kv.delete(with_token(
            pb::DeleteRequest {
                key: Bytes::from("k"),
                ..Default::default()
            },
            "reader-secret",
        ))
        .await
        .unwrap_err(),
        kv.lease_grant(with_token(
            pb::LeaseGrantRequest { ttl_ms: 1000 },
            "reader-secret",
        ))
        .await
        .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
}

#[tokio::test]
async fn a_prefix_token_reaches_only_its_keys() {
    let (server, _file) = server_with_tokens();
    let mut kv = server.kv_client().await;
    let put = |key: &str| pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from("v"),
        ..Default::default()
    };
    kv.put(with_token(put("app/one"), "app-secret"))
        .await
        .unwrap();
    kv.put(with_token(put("other"), "writer-secret"))
        .await
        .unwrap();
    let status = kv
        .put(with_token(put("other"), "app-secret"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("app/"), "{}", status.message());
    let mine = kv
        .range(with_token(
            pb::RangeRequest {
                key: Bytes::from("app/"),
                prefix: true,
                ..Default::default()
            },
            "app-secret",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.kvs.len(), 1);
    let everything = kv
        .range(with_token(
            pb::RangeRequest {
                key: Bytes::new(),
                prefix: true,
                ..Default::default()
            },
            "app-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(everything.code(), Code::PermissionDenied);
    let watch = kv
        .watch(with_token(
            pb::WatchRequest {
                key: Bytes::from("oth"),
                prefix: true,
                ..Default::default()
            },
            "app-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::PermissionDenied);
    // A lease holding a key outside the prefix: the prefix token may not
    // keep it alive (which would keep that key) nor revoke it (which would
    // delete it).
    let grant = |kv: &mut pb::kv_client::KvClient<_>, token| {
        let request = with_token(pb::LeaseGrantRequest { ttl_ms: 60_000 }, token);
        let mut kv = kv.clone();
        async move { kv.lease_grant(request).await.unwrap().into_inner().id }
    };
    let put_with = |key: &str, lease: i64| pb::PutRequest { lease, ..put(key) };
    let theirs = grant(&mut kv, "writer-secret").await;
    kv.put(with_token(put_with("app/mine", theirs), "writer-secret"))
        .await
        .unwrap();
    kv.put(with_token(put_with("other", theirs), "writer-secret"))
        .await
        .unwrap();
    let keep = kv
        .lease_keep_alive(with_token(
            pb::LeaseKeepAliveRequest { id: theirs },
            "app-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(keep.code(), Code::PermissionDenied);
    assert!(
        keep.message().contains("\"other\"") && keep.message().contains("keep alive"),
        "the refusal names the key and what the token may not do: {}",
        keep.message()
    );
    let revoke = kv
        .lease_revoke(with_token(
            pb::LeaseRevokeRequest { id: theirs },
            "app-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::PermissionDenied);
    assert!(revoke.message().contains("revoke"), "{}", revoke.message());
    // Nor list its keys (etcd's rule for LeaseTimeToLive: a list of those
    // in the prefix would read as all of them); its TTL alone it may read.
    let reader = kv.clone();
    let info = |id, keys_limit, token| {
        let mut kv = reader.clone();
        let request = pb::LeaseInfoRequest {
            id,
            keys_limit,
            keys_after: Default::default(),
        };
        async move { kv.lease_info(with_token(request, token)).await }
    };
    let listed = info(theirs, 10, "app-secret").await.unwrap_err();
    assert_eq!(listed.code(), Code::PermissionDenied);
    assert!(
        listed.message().contains("list the keys of"),
        "{}",
        listed.message()
    );
    assert!(
        info(theirs, 0, "app-secret")
            .await
            .unwrap()
            .into_inner()
            .keys
            .is_empty()
    );
    assert_eq!(
        info(theirs, 10, "writer-secret")
            .await
            .unwrap()
            .into_inner()
            .keys
            .len(),
        2
    );
    // Nothing was deleted; a token for every key may do both.
    kv.lease_keep_alive(with_token(
        pb::LeaseKeepAliveRequest { id: theirs },
        "writer-secret",
    ))
    .await
    .unwrap();
    // A lease whose keys are all inside the prefix (or that has none) is
    // the prefix token's to keep alive and revoke.
    let mine = grant(&mut kv, "app-secret").await;
    kv.lease_keep_alive(with_token(
        pb::LeaseKeepAliveRequest { id: mine },
        "app-secret",
    ))
    .await
    .unwrap();
    kv.put(with_token(put_with("app/leased", mine), "app-secret"))
        .await
        .unwrap();
    let listed = info(mine, 10, "app-secret").await.unwrap().into_inner();
    assert_eq!(listed.keys, [Bytes::from_static(b"app/leased")]);
    kv.lease_keep_alive(with_token(
        pb::LeaseKeepAliveRequest { id: mine },
        "app-secret",
    ))
    .await
    .unwrap();
    let revoked = kv
        .lease_revoke(with_token(
            pb::LeaseRevokeRequest { id: mine },
            "app-secret",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.deleted, 1);
    // The tutorial service is confined the same way.
    let mut tutorial = server.client().await;
    let status = tutorial
        .get(with_token(
            GetRequest {
                key: "other".into(),
            },
            "app-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn health_needs_no_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let (server, _file) = server_with_tokens();
    let answer = server.health("").await;
    assert!(matches!(answer, Ok(ServingStatus::Serving)), "{answer:?}");
}

#[test]
fn kv_sends_its_token_and_never_prints_it() {
    let (server, _file) = server_with_tokens();
    let kv = |args: &[&str], token: Option<&str>| {
        let mut command = kv_command();
        command.args(["--addr", server.addr()]).args(args);
        if let Some(token) = token {
            command.env("KV_TOKEN", token);
        }
        command.output().unwrap()
    };
    assert!(
        kv(&["set", "k", "v"], Some("writer-secret"))
            .status
            .success()
    );
    let read = kv(&["get", "k"], Some("reader-secret"));
    assert_eq!(String::from_utf8_lossy(&read.stdout), "v\n");
    let refused = kv(&["set", "k", "x"], Some("reader-secret"));
    assert_eq!(refused.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    assert!(!stderr.contains("reader-secret"), "{stderr}");
    let anonymous = kv(&["get", "k"], None);
    assert_eq!(anonymous.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    // A token the server does not know is not echoed back either.
    let unknown = kv(&["get", "k"], Some("guessed-secret"));
    assert_eq!(unknown.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert!(!stderr.contains("guessed-secret"), "{stderr}");
    let flag = kv(&["--token", "writer-secret", "get", "k"], None);
    assert!(flag.status.success());
    assert!(
        !String::from_utf8_lossy(&flag.stderr).contains("writer-secret"),
        "{}",
        String::from_utf8_lossy(&flag.stderr)
    );
    let help = String::from_utf8_lossy(&kv(&["--help"], Some("writer-secret")).stdout).into_owned();
    assert!(
        help.contains("--token") && !help.contains("writer-secret"),
        "{help}"
    );
}

/// Runs kvserver with a token file holding `contents`, which it is expected
/// to refuse as other bad startup input is: one line on stderr, exit 1, never
/// listening. Returns that line. A server that starts anyway fails the test
/// (after the harness's patience) instead of hanging it.
fn refused_start(contents: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), contents).unwrap();
    let mut child = kvserver()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "memory",
            "--auth-token-file",
        ])
        .arg(file.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = wait_with_patience(&mut child) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("kvserver started with the token file {contents:?}");
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}

#[test]
fn a_bad_token_file_stops_the_server_with_the_line() {
    let stderr = refused_start("good read\nbad superuser\n");
    assert!(
        stderr.contains("line 2") && stderr.contains("superuser"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("good"),
        "tokens are never printed: {stderr}"
    );
}

#[test]
fn a_token_on_two_lines_stops_the_server_naming_both() {
    // Were the last line to win, this read token would be allowed to write.
    let stderr = refused_start("twice-secret read\nother-secret read\ntwice-secret readwrite\n");
    assert!(
        stderr.contains("line 3") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("-secret"),
        "tokens are never printed: {stderr}"
    );
}
