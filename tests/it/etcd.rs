//! kvserver over real etcd (`--backend etcd`): the APIs through a gateway,
//! an unreachable cluster, and two gateways over a three-member cluster that
//! loses a member, then its leader, under load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keyvalue::proto::keyvalue::v1 as pb;
use keyvalue::proto::simplekeyvalue::SetRequest;
use keyvalue::proto::simplekeyvalue::key_value_client::KeyValueClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{
    Server, b, get, kv, kv_with_input, kvserver, send_signal, set, text, until_more_acks,
};

use crate::etcd_process::{ClientTls, EtcdCluster};

/// A kvserver over `endpoints` (comma-separated), with extra arguments.
pub(crate) fn gateway(endpoints: &str, args: &[&str]) -> Server {
    let mut command = kvserver();
    command.args(["--listen", "127.0.0.1:0", "--backend", "etcd"]);
    command.args(["--etcd-endpoints", endpoints]);
    command.args(args);
    Server::spawn(command).unwrap_or_else(|output| panic!("kvserver did not start: {output}"))
}

/// Waits (polling, with a deadline) until the server reports `wanted`.
async fn until_health(server: &Server, wanted: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = server.health("").await.unwrap();
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health stayed {now:?}, not {wanted:?}, for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_work_through_a_gateway_and_the_prefix_stays_inside_etcd() {
    let etcd = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let server = gateway(&etcd.endpoints(), &["--etcd-prefix", "kv/"]);
    assert_eq!(server.health("").await.unwrap(), ServingStatus::Serving);

    // The tutorial's contract, unchanged.
    let mut tutorial = server.client().await;
    set(&mut tutorial, "weather", "sunny").await;
    assert_eq!(get(&mut tutorial, "weather").await.unwrap(), "sunny");
    let missing = get(&mut tutorial, "nothing").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "key not found");

    // In etcd, under the prefix; to the client, without it.
    let stored = etcd.etcdctl(&["get", "kv/weather", "--print-value-only"]);
    assert_eq!(stored.trim(), "sunny");
    let mut client = server.kv_client().await;
    let listed = client
        .range(pb::RangeRequest {
            key: Bytes::new(),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(names, [b("weather")]);

    // A batch as large as kvserver allows is one etcd transaction.
    let puts = (0..1000)
        .map(|i| pb::PutRequest {
            key: b(&format!("batch/{i:04}")),
            value: b(&i.to_string()),
            ..Default::default()
        })
        .collect();
    client
        .batch_put(pb::BatchPutRequest { puts })
        .await
        .unwrap();
    let counted = client
        .range(pb::RangeRequest {
            key: b("batch/"),
            prefix: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.count, 1000);

    // A key with a TTL becomes an etcd lease; etcd deletes it.
    client
        .put(pb::PutRequest {
            key: b("session"),
            value: b("open"),
            ttl_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&mut tutorial, "session").await.is_ok() {
        assert!(Instant::now() < deadline, "a 1 s TTL key outlived 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad input is refused before it reaches etcd.
    let empty = client.put(pb::PutRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_one_gateway_sees_writes_through_another() {
    let etcd = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let writer = gateway(&etcd.endpoints(), &[]);
    let watcher = gateway(&etcd.endpoints(), &[]);
    let mut events = watcher
        .kv_client()
        .await
        .watch(pb::WatchRequest {
            key: b("jobs/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut tutorial = writer.client().await;
    set(&mut tutorial, "jobs/1", "queued").await;
    set(&mut tutorial, "other", "ignored").await;
    set(&mut tutorial, "jobs/1", "done").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let answer = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the watch goes on")
            .expect("events, not an error");
        seen.extend(answer.events.into_iter().map(|e| e.kv.unwrap().value));
    }
    assert_eq!(seen, [b("queued"), b("done")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_unavailable_at_once_and_the_gateway_reconnects() {
    let mut etcd = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let server = gateway(&etcd.endpoints(), &["--etcd-timeout", "1s"]);
    let mut tutorial = server.client().await;
    set(&mut tutorial, "kept", "yes").await;

    etcd.kill(0);
    until_health(&server, ServingStatus::NotServing, Duration::from_secs(10)).await;
    let started = Instant::now();
    let failed = get(&mut tutorial, "kept").await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(
        failed.message().contains("etcd"),
        "the message names the cause: {}",
        failed.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?} against --etcd-timeout 1s",
        started.elapsed()
    );

    // A client deadline shorter than --etcd-timeout is kept too.
    let slow = gateway(&etcd.endpoints(), &["--etcd-timeout", "30s"]);
    let mut impatient = slow.kv_client().await;
    let mut request = tonic::Request::new(pb::GetRequest {
        key: b("kept"),
        revision: 0,
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let failed = impatient.get(request).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(failed.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{failed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "a 300 ms deadline answered after {elapsed:?}: {failed:?}"
    );

    tokio::task::block_in_place(|| etcd.restart(0));
    until_health(&server, ServingStatus::Serving, Duration::from_secs(20)).await;
    assert_eq!(get(&mut tutorial, "kept").await.unwrap(), "yes");
}

/// What the load acknowledged: key to value.
type Acknowledged = Arc<Mutex<BTreeMap<String, String>>>;

/// Writers of unique keys through `gateway` until `stop`, recording every
/// acknowledged write. Failures (during a failover) are counted, not fatal:
/// a write that failed may or may not have happened, and is not checked.
fn load(
    gateway: &Server,
    writer: usize,
    acknowledged: Acknowledged,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let addr = format!("http://{}", gateway.addr());
    tokio::spawn(async move {
        let channel = Channel::from_shared(addr).unwrap().connect_lazy();
        let mut client = pb::kv_client::KvClient::new(channel);
        let mut failures = 0;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("load/{writer}/{i:06}");
            let mut request = tonic::Request::new(pb::PutRequest {
                key: b(&name),
                value: b(&i.to_string()),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(3));
            match client.put(request).await {
                Ok(_) => {
                    acknowledged.lock().unwrap().insert(name, i.to_string());
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            i += 1;
        }
        failures
    })
}

/// Waits until member `i` alone (a serializable read of its own copy)
/// holds `name` = `value`: it has caught up with writes made without it.
async fn until_member_has(etcd: &EtcdCluster, i: usize, name: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = etcd.etcdctl_on(i, &["get", "--consistency=s", "--print-value-only", name]);
        if read.is_some_and(|stdout| stdout.trim() == value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} did not catch up with {name}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets `key` through a gateway while etcd fails over: an `UNAVAILABLE`
/// answer ("did not answer in time; it may or may not have been applied")
/// is what a client retries, and a Set of the same value is idempotent, so
/// it is sent again for up to 20 s (once, a loaded CI machine took longer
/// than the gateway's 3 s timeout for one Put right after an election).
async fn set_through_failover(client: &mut KeyValueClient<Channel>, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = SetRequest {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match client.set(request).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("set {key:?}: {status}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_over_three_members_lose_a_member_then_the_leader_and_lose_nothing() {
    let mut etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let leader = etcd.leader();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    // Gateway B starts on the follower that dies first, so its watch must
    // move to another member.
    let order = |first: usize| {
        [first, (first + 1) % 3, (first + 2) % 3]
            .map(|i| etcd.url(i))
            .join(",")
    };
    let gateway_a = gateway(&order(other), &["--etcd-timeout", "3s"]);
    let gateway_b = gateway(&order(follower), &["--etcd-timeout", "3s"]);

    let mut through_a = gateway_a.client().await;
    let mut through_b = gateway_b.client().await;
    set(&mut through_a, "greeting", "hello").await;
    assert_eq!(get(&mut through_b, "greeting").await.unwrap(), "hello");
    let mut watch = gateway_b
        .kv_client()
        .await
        .watch(pb::WatchRequest {
            key: b("watched/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let acknowledged: Acknowledged = Arc::default();
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let via = if w % 2 == 0 { &gateway_a } else { &gateway_b };
            load(
                via,
                w,
                Arc::clone(&acknowledged),
                Arc::clone(&acks),
                Arc::clone(&stop),
            )
        })
        .collect();
    until_more_acks(&acks, 100, Duration::from_secs(20), "before any failure").await;

    // A follower dies under load: writes go on.
    etcd.kill(follower);
    until_more_acks(&acks, 200, Duration::from_secs(20), "after a follower died").await;
    set_through_failover(&mut through_a, "written-while-down", "1").await;
    tokio::task::block_in_place(|| etcd.restart(follower));
    until_member_has(&etcd, follower, "written-while-down", "1").await;

    // The leader dies under load: a new one is elected, writes go on.
    let leader = etcd.leader();
    etcd.kill(leader);
    until_more_acks(&acks, 200, Duration::from_secs(30), "after the leader died").await;
    set_through_failover(&mut through_b, "written-without-leader", "2").await;
    tokio::task::block_in_place(|| etcd.restart(leader));
    until_member_has(&etcd, leader, "written-without-leader", "2").await;
    until_more_acks(&acks, 100, Duration::from_secs(20), "after the restarts").await;

    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for writer in writers {
        failures += writer.await.unwrap();
    }

    // Every acknowledged write is there, through both gateways.
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged, {failures} failed during the failovers",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 600, "{} writes", acknowledged.len());
    for server in [&gateway_a, &gateway_b] {
        let mut client = server.kv_client().await;
        let names: Vec<&String> = acknowledged.keys().collect();
        for chunk in names.chunks(1000) {
            let answer = client
                .batch_get(pb::BatchGetRequest {
                    keys: chunk.iter().map(|name| b(name)).collect(),
                    revision: 0,
                })
                .await
                .unwrap()
                .into_inner();
            for (name, result) in chunk.iter().zip(answer.results) {
                let value = result.kv.map(|kv| kv.value);
                assert_eq!(
                    value,
                    Some(b(&acknowledged[*name])),
                    "acknowledged write {name} through {}",
                    server.addr()
                );
            }
        }
    }

    // B's watch moved off the dead member and still reports A's writes.
    set(&mut through_a, "watched/after", "both failures").await;
    let answer = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch reports within 20 s")
        .expect("the watch goes on")
        .expect("events, not an error");
    assert_eq!(
        answer.events[0].kv.as_ref().unwrap().value,
        b("both failures")
    );
}

#[test]
fn a_backup_through_an_etcd_gateway_restores_into_a_disk_data_dir() {
    let etcd = EtcdCluster::single();
    let server = gateway(&etcd.endpoints(), &["--etcd-prefix", "app/"]);
    let kv = |addr: &str, args: &[&str]| {
        let output = kv(addr, args);
        assert!(
            output.status.success(),
            "kv {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let batch: Vec<String> = (0..2500).map(|i| format!("k{i:04}=v{i}")).collect();
    // 2,500 keys, more than one snapshot chunk, in transactions of 100.
    for chunk in batch.chunks(100) {
        let puts = chunk
            .iter()
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                format!("put {k} {v}")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let txn = kv_with_input(server.addr(), &["txn"], &format!("\n{puts}\n"));
        assert!(txn.status.success(), "{}", text(&txn.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    kv(server.addr(), &["backup", file.to_str().unwrap()]);
    let data = dir.path().join("data");
    let restored = kvserver()
        .arg("--data-dir")
        .arg(&data)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert!(restored.status.success());
    let local = Server::start_on_disk(&data, &[]);
    let listing = kv(local.addr(), &["ls"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2500);
    assert_eq!(lines[0], "k0000\tv0");
    assert_eq!(lines[2499], "k2499\tv2499");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_etcd_over_mutual_tls_with_a_user_and_password() {
    use crate::tls::{Authority, write};
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let ca = Authority::new("etcd test CA");
    write(dir.path(), "ca.pem", &ca.pem);
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"]);
    write(dir.path(), "etcd.pem", &cert);
    write(dir.path(), "etcd.key", &key);
    let (cert, key) = ca.sign(&["kvserver"]);
    write(dir.path(), "client.pem", &cert);
    write(dir.path(), "client.key", &key);
    write(dir.path(), "password", "s3cret\n");
    write(dir.path(), "wrong-password", "guess\n");
    let tls = ClientTls {
        cert: path("etcd.pem").into(),
        key: path("etcd.key").into(),
        ca: path("ca.pem").into(),
        client_cert: path("client.pem").into(),
        client_key: path("client.key").into(),
    };
    let mut etcd = tokio::task::spawn_blocking(move || EtcdCluster::start_with(1, Some(tls)))
        .await
        .unwrap();
    etcd.etcdctl(&["user", "add", "root:s3cret", "--interactive=false"]);
    etcd.etcdctl(&["auth", "enable"]);
    etcd.add_etcdctl_flag("--user=root:s3cret");

    let certificates = [
        "--etcd-ca-file",
        &path("ca.pem"),
        "--etcd-cert",
        &path("client.pem"),
        "--etcd-key",
        &path("client.key"),
    ];
    let mut args = certificates.to_vec();
    let password = path("password");
    args.extend(["--etcd-user", "root", "--etcd-password-file", &password]);
    let server = gateway(&etcd.endpoints(), &args);
    assert_eq!(server.health("").await.unwrap(), ServingStatus::Serving);
    let mut client = server.client().await;
    set(&mut client, "secure", "yes").await;
    assert_eq!(get(&mut client, "secure").await.unwrap(), "yes");
    assert_eq!(
        etcd.etcdctl(&["get", "secure", "--print-value-only"])
            .trim(),
        "yes"
    );

    // A wrong password: the gateway runs but does not serve, and says why.
    let mut args = certificates.to_vec();
    let wrong = path("wrong-password");
    args.extend(["--etcd-user", "root", "--etcd-password-file", &wrong]);
    let refused = gateway(&etcd.endpoints(), &args);
    assert_eq!(refused.health("").await.unwrap(), ServingStatus::NotServing);
    let failed = get(&mut refused.client().await, "secure")
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    assert!(
        failed.message().contains("--etcd-user"),
        "{}",
        failed.message()
    );

    // No client certificate: etcd refuses the connection.
    let anonymous = gateway(
        &etcd.endpoints(),
        &["--etcd-ca-file", &path("ca.pem"), "--etcd-timeout", "1s"],
    );
    assert_eq!(
        anonymous.health("").await.unwrap(),
        ServingStatus::NotServing
    );
    let failed = get(&mut anonymous.client().await, "secure")
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_etcd_compacted_is_refused_with_the_oldest_left() {
    let etcd = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let server = gateway(&etcd.endpoints(), &[]);
    let mut client = server.kv_client().await;
    let mut revisions = Vec::new();
    for i in 0..10 {
        let answer = client
            .put(pb::PutRequest {
                key: b("k"),
                value: b(&i.to_string()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        revisions.push(answer.header.unwrap().revision);
    }
    etcd.etcdctl(&["compact", &revisions[5].to_string()]);

    let refused = client
        .watch(pb::WatchRequest {
            key: b("k"),
            start_revision: revisions[2],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("the compacted revision is {}", revisions[5])),
        "{}",
        refused.message()
    );

    // From the oldest revision left, the rest is replayed.
    let mut events = client
        .watch(pb::WatchRequest {
            key: b("k"),
            start_revision: revisions[6],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut values = Vec::new();
    while values.len() < 4 {
        let answer = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        values.extend(answer.events.into_iter().map(|e| e.kv.unwrap().value));
    }
    assert_eq!(values, [b("6"), b("7"), b("8"), b("9")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_hangs_is_passed_over_within_the_timeout() {
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    // The gateway talks to a follower first; that follower then freezes
    // (SIGSTOP): its connections stay open, but nothing answers.
    let leader = etcd.leader();
    let frozen = (leader + 1) % 3;
    let order = [frozen, (frozen + 1) % 3, (frozen + 2) % 3]
        .map(|i| etcd.url(i))
        .join(",");
    let server = gateway(&order, &["--etcd-timeout", "2s"]);
    let mut client = server.client().await;
    set(&mut client, "before", "1").await;
    send_signal(etcd.pid(frozen), "STOP");

    // A read is retried on the next member within the timeout.
    let started = Instant::now();
    assert_eq!(get(&mut client, "before").await.unwrap(), "1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Writes go on (the first may be refused as of unknown outcome).
    let mut written = None;
    for attempt in 0..5 {
        let answer = client
            .set(keyvalue::proto::simplekeyvalue::SetRequest {
                key: "after".to_owned(),
                value: attempt.to_string(),
            })
            .await;
        if answer.is_ok() {
            written = Some(attempt);
            break;
        }
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
    let written = written.expect("no write succeeded with one member of three frozen");
    assert_eq!(
        get(&mut client, "after").await.unwrap(),
        written.to_string()
    );
    until_health(&server, ServingStatus::Serving, Duration::from_secs(5)).await;
    send_signal(etcd.pid(frozen), "CONT");
}

#[test]
fn bad_etcd_settings_stop_kvserver_with_a_message() {
    for (endpoints, complaint) in [
        ("https://127.0.0.1:2379", "--etcd-ca-file"),
        ("127.0.0.1:2379", "must start with http:// or https://"),
    ] {
        let output = kvserver()
            .args(["--listen", "127.0.0.1:0", "--backend", "etcd"])
            .args(["--etcd-endpoints", endpoints])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{endpoints}: {stderr}");
        assert!(stderr.contains(complaint), "{endpoints}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

/// A prefix-scoped token may not keep alive, revoke or list the keys of a
/// lease that also holds keys of other users of the etcd cluster (outside
/// `--etcd-prefix`): the scope check sees them (through etcd's
/// LeaseTimeToLive with keys), on both APIs. A lease whose keys are all in
/// its prefix stays the token's.
#[test]
fn a_scoped_token_may_not_touch_a_lease_holding_other_etcd_users_keys() {
    let etcd = EtcdCluster::single();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "all-1 readwrite\napp-3 readwrite app/\n").unwrap();
    let server = gateway(
        &etcd.endpoints(),
        &[
            "--etcd-prefix",
            "gw/",
            "--auth-token-file",
            file.path().to_str().unwrap(),
        ],
    );
    let endpoint = format!("http://{}", server.addr());
    let as_user = |password: &str, args: &[&str]| {
        let mut all = vec!["--user", "someone", "--password", password];
        all.extend(args);
        crate::etcd_api::etcdctl(&endpoint, &all, None)
    };
    let lease_of = |granted: String| {
        granted
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("lease <id> granted: {granted}"))
            .to_owned()
    };
    // Another user of the cluster, straight to etcd: a lease on a key of
    // its own and on one the gateway serves as app/x.
    let theirs = lease_of(etcd.etcdctl(&["lease", "grant", "60"]));
    etcd.etcdctl(&["put", "other/secret", "1", "--lease", &theirs]);
    etcd.etcdctl(&["put", "gw/app/x", "1", "--lease", &theirs]);
    for args in [
        vec!["lease", "keep-alive", "--once", &theirs],
        vec!["lease", "revoke", &theirs],
    ] {
        let denied = as_user("app-3", &args);
        assert!(
            denied.contains("PermissionDenied")
                && denied.contains("outside the keys this server serves"),
            "{args:?}: {denied}"
        );
    }
    let listed = as_user("app-3", &["lease", "timetolive", &theirs, "--keys"]);
    assert!(listed.contains("etcdserver: permission denied"), "{listed}");
    // keyvalue.v1 refuses the same.
    let id = i64::from_str_radix(&theirs, 16).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut kv = server.kv_client().await;
        fn with_token<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request
                .metadata_mut()
                .insert("authorization", "Bearer app-3".parse().unwrap());
            request
        }
        let keep = kv
            .lease_keep_alive(with_token(pb::LeaseKeepAliveRequest { id }))
            .await
            .unwrap_err();
        assert_eq!(keep.code(), Code::PermissionDenied, "{keep:?}");
        let request = with_token(pb::LeaseInfoRequest {
            id,
            keys_limit: 10,
            keys_after: Bytes::new(),
        });
        let info = kv.lease_info(request).await.unwrap_err();
        assert_eq!(info.code(), Code::PermissionDenied, "{info:?}");
    });
    // Nothing of theirs went: both keys are there.
    assert_eq!(
        etcd.etcdctl(&["get", "other/secret", "--print-value-only"]),
        "1\n"
    );
    assert_eq!(
        etcd.etcdctl(&["get", "gw/app/x", "--print-value-only"]),
        "1\n"
    );
    // A token for every key the gateway serves may keep it alive.
    let alive = as_user("all-1", &["lease", "keep-alive", "--once", &theirs]);
    assert!(alive.contains("keepalived"), "{alive}");
    // A lease whose keys are all in the token's prefix is the token's.
    let mine = lease_of(as_user("app-3", &["lease", "grant", "60"]));
    as_user("app-3", &["put", "app/y", "1", "--lease", &mine]);
    let alive = as_user("app-3", &["lease", "keep-alive", "--once", &mine]);
    assert!(alive.contains("keepalived"), "{alive}");
    let listed = as_user("app-3", &["lease", "timetolive", &mine, "--keys"]);
    assert!(listed.contains("attached keys([app/y])"), "{listed}");
    let revoked = as_user("app-3", &["lease", "revoke", &mine]);
    assert!(revoked.contains("revoked"), "{revoked}");
}

/// The etcd backend keeps the cap of a Txn's sorted Range as the local
/// backends do: it reads the ranges first and sends the Txn nested in one
/// that applies it only if they did not change, so a refused Txn writes
/// nothing to etcd (the checks of `limits.rs`, through a gateway).
#[test]
fn a_txn_whose_sorted_range_passes_the_read_cap_is_refused_whole_over_etcd() {
    let etcd = EtcdCluster::single();
    let server = gateway(
        &etcd.endpoints(),
        &["--etcd-prefix", "cap/", "--max-range-page-bytes", "4000"],
    );
    crate::limits::txn_read_cap_is_kept(&server);
    // Straight from etcd: the refused Txns' puts are not there.
    assert_eq!(etcd.etcdctl(&["get", "cap/t/new"]), "");
    assert_eq!(etcd.etcdctl(&["get", "cap/s/98"]), "");
    assert_eq!(
        etcd.etcdctl(&["get", "cap/s/99", "--print-value-only"]),
        "y\n"
    );
}
