//! Key and value size limits: the defaults, the flags, and that a refused write
//! never touches what is stored.

use keyvalue::proto::simplekeyvalue::SetRequest;
use tonic::Code;
use tonic::transport::Channel;

use keyvalue::proto::simplekeyvalue::key_value_client::KeyValueClient;

use crate::harness::{Server, get, set};

async fn try_set(
    client: &mut KeyValueClient<Channel>,
    key: String,
    value: String,
) -> Result<(), tonic::Status> {
    client.set(SetRequest { key, value }).await.map(|_| ())
}

#[tokio::test]
async fn default_key_limit_is_4096_bytes() {
    let server = Server::start();
    let mut client = server.client().await;
    try_set(&mut client, "k".repeat(4096), "v".into())
        .await
        .unwrap();
    let status = try_set(&mut client, "k".repeat(4097), "v".into())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "key is 4097 bytes, above the limit of 4096 bytes (--max-key-bytes)"
    );
    // Get checks the same limit.
    let status = get(&mut client, &"k".repeat(4097)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn default_value_limit_is_one_mebibyte() {
    let server = Server::start();
    let mut client = server.client().await;
    let at_limit = "v".repeat(1024 * 1024);
    try_set(&mut client, "big".into(), at_limit.clone())
        .await
        .unwrap();
    assert_eq!(get(&mut client, "big").await.unwrap(), at_limit);
    let status = try_set(&mut client, "big".into(), "v".repeat(1024 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("above the limit of 1048576 bytes (--max-value-bytes)"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_value_far_above_the_limit_gets_the_same_status() {
    let server = Server::start();
    let mut client = server.client().await;
    for size in [2 * 1024 * 1024, 16 * 1024 * 1024] {
        let status = try_set(&mut client, "huge".into(), "v".repeat(size))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{size}: {status:?}");
        assert!(
            status.message().contains("--max-value-bytes"),
            "{size}: {}",
            status.message()
        );
    }
    // The connection is still usable, and nothing was stored.
    let status = get(&mut client, "huge").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn limits_follow_the_flags() {
    let server = Server::start_with(&["--max-key-bytes", "8", "--max-value-bytes", "16"]);
    let mut client = server.client().await;
    try_set(&mut client, "12345678".into(), "x".repeat(16))
        .await
        .unwrap();
    let key_status = try_set(&mut client, "123456789".into(), "x".into())
        .await
        .unwrap_err();
    assert_eq!(key_status.code(), Code::InvalidArgument);
    assert!(
        key_status
            .message()
            .contains("limit of 8 bytes (--max-key-bytes)")
    );
    let value_status = try_set(&mut client, "k".into(), "x".repeat(17))
        .await
        .unwrap_err();
    assert_eq!(value_status.code(), Code::InvalidArgument);
    assert!(
        value_status
            .message()
            .contains("limit of 16 bytes (--max-value-bytes)")
    );
}

#[tokio::test]
async fn a_value_limit_above_grpcs_default_message_size_is_honoured() {
    // tonic refuses messages above 4 MiB unless told otherwise.
    let server = Server::start_with(&["--max-value-bytes", &(6 * 1024 * 1024).to_string()]);
    let mut client = server.client().await;
    let value = "x".repeat(5 * 1024 * 1024);
    try_set(&mut client, "large".into(), value.clone())
        .await
        .unwrap();
    let client = client.max_decoding_message_size(8 * 1024 * 1024);
    let mut client = client;
    assert_eq!(get(&mut client, "large").await.unwrap().len(), value.len());
}

#[tokio::test]
async fn a_refused_write_leaves_the_stored_value_alone() {
    let server = Server::start_with(&["--max-value-bytes", "4"]);
    let mut client = server.client().await;
    set(&mut client, "kept", "ok").await;
    let status = try_set(&mut client, "kept".into(), "too long".into())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, "kept").await.unwrap(), "ok");
}

#[test]
fn a_zero_key_limit_is_refused_at_startup() {
    let output = crate::harness::kvserver()
        .args(["--listen", "127.0.0.1:0", "--max-key-bytes", "0"])
        .output()
        .expect("run kvserver");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-key-bytes"), "{stderr}");
}

#[tokio::test]
async fn a_range_page_stops_at_its_byte_bound_on_every_api() {
    use keyvalue::proto::keyvalue::v1 as pb;
    // Ten 1,000-byte values; a page holds three (3 x 1,067 bytes counted).
    let (server, http) = crate::http::start_http(&["--max-range-page-bytes", "4000"]);
    let mut kv = server.kv_client().await;
    for i in 0..10 {
        kv.put(pb::PutRequest {
            key: format!("b/{i}").into(),
            value: vec![b'v'; 1000].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // keyvalue.v1: pages of three, each token continuing the listing.
    let mut pages = Vec::new();
    let mut token = bytes::Bytes::new();
    loop {
        let page = kv
            .range(pb::RangeRequest {
                key: "b/".into(),
                prefix: true,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.kvs.len());
        if !page.more {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, [3, 3, 3, 1]);
    // A value larger than the bound still comes, alone on its page.
    kv.put(pb::PutRequest {
        key: "b/3".into(),
        value: vec![b'v'; 9000].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let page = kv
        .range(pb::RangeRequest {
            key: "b/3".into(),
            range_end: "b/9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.kvs.len(), page.more), (1, true));
    assert_eq!(page.kvs[0].value.len(), 9000);
    // etcd's API: an answer that fits is whole; one the bound would cut
    // short of what etcd answers (every key, or `limit` of them) is refused
    // by name, since etcdctl prints what it gets as the whole range.
    let json = crate::etcd_api::etcdctl(server.addr(), &["get", "b/0", "b/3", "-w", "json"], None);
    let answer: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(answer["kvs"].as_array().map(Vec::len), Some(3), "{json}");
    let refused = crate::etcd_api::etcdctl(server.addr(), &["get", "b/", "--prefix"], None);
    assert!(
        refused.contains("ResourceExhausted")
            && refused.contains("larger than --max-range-page-bytes (4000 bytes)")
            && refused.contains("exit Some(1)"),
        "{refused}"
    );
    // With a limit that fits, a page and `more`, with the whole range's count.
    let json = crate::etcd_api::etcdctl(
        server.addr(),
        &["get", "b/", "--prefix", "--limit", "3", "-w", "json"],
        None,
    );
    let answer: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(answer["kvs"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(
        (answer["more"].as_bool(), answer["count"].as_i64()),
        (Some(true), Some(10))
    );
    // Sorted by etcd's rules, then checked: the newest (9,000 bytes) alone
    // fits a limit of one, not a limit of two.
    let sorted = |limit: &'static str| {
        crate::etcd_api::etcdctl(
            server.addr(),
            &[
                "get",
                "b/",
                "--prefix",
                "--sort-by",
                "MODIFY",
                "--order",
                "DESCEND",
                "--limit",
                limit,
                "-w",
                "json",
            ],
            None,
        )
    };
    let json = sorted("1");
    let answer: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(answer["kvs"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(answer["more"].as_bool(), Some(true), "{json}");
    let refused = sorted("2");
    assert!(refused.contains("ResourceExhausted"), "{refused}");
    // A sorted read takes its whole range into memory first: at most 16
    // pages' worth (64,000 bytes here), then it is refused, limit or not;
    // in key order the same range pages as usual.
    for i in 0..61 {
        kv.put(pb::PutRequest {
            key: format!("s/{i:02}").into(),
            value: vec![b'v'; 1000].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let refused = crate::etcd_api::etcdctl(
        server.addr(),
        &[
            "get",
            "s/",
            "--prefix",
            "--sort-by",
            "MODIFY",
            "--limit",
            "1",
        ],
        None,
    );
    assert!(
        refused.contains("ResourceExhausted")
            && refused.contains("sorted or filtered range is read whole")
            && refused.contains("more than 64000 bytes"),
        "{refused}"
    );
    let json = crate::etcd_api::etcdctl(
        server.addr(),
        &["get", "s/", "--prefix", "--limit", "1", "-w", "json"],
        None,
    );
    let answer: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(answer["count"].as_i64(), Some(61), "{json}");
    // The HTTP listing: three, and `next` where to go on.
    let (status, page) = crate::http::call_json(&http, "GET", "/v1/kv?prefix=b/", &[], "").await;
    assert_eq!(status, hyper::StatusCode::OK, "{page}");
    assert_eq!(page["kvs"].as_array().map(Vec::len), Some(3), "{page}");
    assert_eq!(
        (page["more"].as_bool(), page["next"].as_str()),
        (Some(true), Some("b/2"))
    );
}

#[tokio::test]
async fn etcd_lease_keys_past_a_page_are_refused_not_cut() {
    use keyvalue::proto::keyvalue::v1 as pb;
    let (server, _http) = crate::http::start_http(&["--max-range-page", "2"]);
    let mut kv = server.kv_client().await;
    let lease = kv
        .lease_grant(pb::LeaseGrantRequest { ttl_ms: 60_000 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let put = |key: &'static str| pb::PutRequest {
        key: key.into(),
        value: "v".into(),
        lease,
        ..Default::default()
    };
    kv.put(put("l/1")).await.unwrap();
    kv.put(put("l/2")).await.unwrap();
    let id = format!("{lease:x}");
    let listed =
        crate::etcd_api::etcdctl(server.addr(), &["lease", "timetolive", &id, "--keys"], None);
    assert!(listed.contains("attached keys([l/1 l/2])"), "{listed}");
    // A third key passes the page: etcd's answer is whole or refused.
    kv.put(put("l/3")).await.unwrap();
    let refused =
        crate::etcd_api::etcdctl(server.addr(), &["lease", "timetolive", &id, "--keys"], None);
    assert!(
        refused.contains("ResourceExhausted")
            && refused.contains("more keys than --max-range-page allows")
            && refused.contains("exit Some(2)"),
        "{refused}"
    );
    // Without the keys it is answered as before.
    let ttl = crate::etcd_api::etcdctl(server.addr(), &["lease", "timetolive", &id], None);
    assert!(ttl.contains("granted with TTL(60s)"), "{ttl}");
}

/// A sorted Range inside a Txn reads its whole range as one outside does,
/// capped at 16 x --max-range-page-bytes: past it the whole Txn is refused
/// and none of its writes apply, on both local backends (through etcdctl).
#[test]
fn a_txn_whose_sorted_range_passes_the_read_cap_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &["--max-range-page-bytes", "4000"]);
    let memory = Server::start_with(&["--max-range-page-bytes", "4000"]);
    for server in [&memory, &disk] {
        txn_read_cap_is_kept(server);
    }
}

/// What [`a_txn_whose_sorted_range_passes_the_read_cap_is_refused_whole`]
/// checks, on `server` (started with `--max-range-page-bytes 4000`); the
/// etcd backend's test runs it through a gateway too.
pub(crate) fn txn_read_cap_is_kept(server: &Server) {
    let etcdctl =
        |args: &[&str], stdin: Option<&str>| crate::etcd_api::etcdctl(server.addr(), args, stdin);
    let refused_by_cap = |answer: &str| {
        answer.contains("ResourceExhausted")
            && answer.contains("sorted or filtered range is read whole")
            && answer.contains("more than 64000 bytes")
            && answer.contains("none of its writes applied")
    };
    // 61 records of 1,000 bytes (1,068 counted each): 65,148 bytes,
    // past the cap of 64,000 (16 x 4,000); 59 of them (63,012) fit.
    let value = "v".repeat(1000);
    for i in 0..61 {
        etcdctl(&["put", &format!("s/{i:02}"), &value], None);
    }
    let revision = || {
        let json = etcdctl(&["get", "s/00", "-w", "json"], None);
        let answer: serde_json::Value = serde_json::from_str(&json).expect(&json);
        answer["header"]["revision"].as_i64().expect(&json)
    };
    let before = revision();
    // Writes, then the sorted Range over the whole prefix.
    let refused = etcdctl(
        &["txn"],
        Some("\nput t/new x\nput s/99 y\nget s/ --prefix --sort-by MODIFY --limit 1\n\n\n"),
    );
    assert!(refused_by_cap(&refused), "{refused}");
    assert_eq!(
        etcdctl(&["get", "t/new"], None),
        "",
        "the Txn's put applied"
    );
    assert_eq!(etcdctl(&["get", "s/99"], None), "", "the Txn's put applied");
    assert_eq!(revision(), before, "the refused Txn took a revision");
    // The same sorted read before any write: refused as well.
    let refused = etcdctl(
        &["txn"],
        Some("\nget s/ --prefix --sort-by CREATE --limit 1\nput t/new x\n\n\n"),
    );
    assert!(refused_by_cap(&refused), "{refused}");
    assert_eq!(
        etcdctl(&["get", "t/new"], None),
        "",
        "the Txn's put applied"
    );
    // The Txn's own puts count: 59 records stored fit, and a put of a
    // sixtieth into the range passes the cap.
    etcdctl(&["del", "s/59", "s/61"], None);
    let refused = etcdctl(
        &["txn"],
        Some(&format!(
            "\nput s/98 {value}\nget s/ --prefix --sort-by MODIFY --limit 1\n\n\n"
        )),
    );
    assert!(refused_by_cap(&refused), "{refused}");
    assert_eq!(etcdctl(&["get", "s/98"], None), "", "the Txn's put applied");
    assert_eq!(revision(), before + 1, "only the delete took a revision");
    // A Txn whose sorted range fits with its own put (as a clientv3
    // lock's does) applies, and answers sorted: its put is the newest.
    let answered = etcdctl(
        &["txn"],
        Some("\nput s/99 y\nget s/ --prefix --sort-by MODIFY --order DESCEND --limit 1\n\n\n"),
    );
    assert!(answered.starts_with("SUCCESS"), "{answered}");
    assert!(answered.contains("s/99\ny\n"), "{answered}");
    assert_eq!(etcdctl(&["get", "s/99", "--print-value-only"], None), "y\n");
    // Outside a Txn the cap refuses as it did.
    etcdctl(&["put", "s/59", &value], None);
    let refused = etcdctl(
        &[
            "get",
            "s/",
            "--prefix",
            "--sort-by",
            "VALUE",
            "--limit",
            "1",
        ],
        None,
    );
    assert!(
        refused.contains("ResourceExhausted") && refused.contains("more than 64000 bytes"),
        "{refused}"
    );
}
