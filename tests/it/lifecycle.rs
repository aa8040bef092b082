//! Starting, announcing, logging and stopping: `--listen`, `KVSERVER_LISTEN`,
//! `--log-requests`, graceful exit on SIGINT / SIGTERM, and SIGHUP.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyvalue::proto::simplekeyvalue::SetRequest;

use crate::harness::{Server, get, kvserver, set, until_more_acks};

#[tokio::test]
async fn port_zero_announces_the_real_port() {
    let server = Server::start();
    let port: u16 = server
        .addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("address ends in a port");
    assert_ne!(port, 0);
    assert!(server.addr().starts_with("127.0.0.1:"));
    let mut client = server.client().await;
    set(&mut client, "k", "v").await;
}

#[tokio::test]
async fn the_listen_address_can_come_from_the_environment() {
    let mut command = kvserver();
    command
        .args(["--backend", "memory"])
        .env("KVSERVER_LISTEN", "127.0.0.1:0");
    let server = Server::spawn(command).expect("server from KVSERVER_LISTEN");
    assert!(server.addr().starts_with("127.0.0.1:"));
    let mut client = server.client().await;
    set(&mut client, "from-env", "yes").await;
    assert_eq!(get(&mut client, "from-env").await.unwrap(), "yes");
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let first = Server::start();
    let output = kvserver()
        .args(["--listen", first.addr(), "--backend", "memory"])
        .output()
        .expect("run second kvserver");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unparsable_listen_address_is_a_clear_error() {
    let output = kvserver()
        .args(["--listen", "not-an-address"])
        .output()
        .expect("run kvserver");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen on not-an-address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_and_sigint_exit_zero() {
    for signal in ["TERM", "INT"] {
        let server = Server::start();
        let mut client = server.client().await;
        set(&mut client, "k", "v").await;
        drop(client);
        let stopped = server.stop(signal).await;
        assert!(stopped.status.success(), "SIG{signal}: {}", stopped.status);
        assert!(
            stopped
                .stderr
                .iter()
                .any(|l| l.contains(&format!("received SIG{signal}"))),
            "{:?}",
            stopped.stderr
        );
    }
}

#[tokio::test]
async fn sighup_without_tls_is_logged_and_the_server_goes_on() {
    let server = Server::start();
    let mut client = server.client().await;
    set(&mut client, "k", "before").await;
    crate::harness::send_signal(server.pid(), "HUP");
    server.wait_for_log_line("SIGHUP: nothing to reload");
    assert_eq!(get(&mut client, "k").await.unwrap(), "before");
    drop(client);
    let stopped = server.stop("TERM").await;
    assert!(stopped.status.success(), "{}", stopped.status);
}

#[tokio::test]
async fn sighup_as_soon_as_the_server_announces_itself_does_not_end_it() {
    // `systemctl reload` right after start: the signal arrives as the
    // `listening on` line does, before the server's TLS-reload listener runs.
    for _ in 0..5 {
        let server = Server::start();
        crate::harness::send_signal(server.pid(), "HUP");
        let mut client = server.client().await;
        set(&mut client, "k", "v").await;
        let stopped = server.stop("TERM").await;
        assert!(stopped.status.success(), "{}", stopped.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_every_request_the_server_started() {
    // With --log-requests the server logs each Set as its handler starts; every
    // logged request must have reached its client as a success. A request cut
    // off half-way by the shutdown would be logged but never acknowledged.
    let server = Server::start_with(&["--log-requests"]);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for id in 0..16 {
        let mut client = server.client().await;
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            for op in 0.. {
                let (key, value) = (format!("w{id}"), op.to_string());
                let request = SetRequest {
                    key: key.clone(),
                    value: value.clone(),
                };
                // After shutdown starts, new requests fail (refused, or the
                // connection is gone); that is fine as long as the server never
                // started them.
                if client.set(request).await.is_err() {
                    break;
                }
                acked.insert(format!("key {key:?} and value {value:?}"));
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    until_more_acks(
        &acknowledged,
        2000,
        Duration::from_secs(30),
        "before SIGTERM",
    )
    .await;
    let stopped = server.stop("TERM").await;
    assert!(stopped.status.success(), "exit status {}", stopped.status);

    let mut acked = HashSet::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer task"));
    }
    let started: Vec<&str> = stopped
        .stderr
        .iter()
        .filter_map(|line| line.split_once("serving set request for ").map(|(_, r)| r))
        .collect();
    assert!(
        started.len() >= 2000,
        "only {} requests logged",
        started.len()
    );
    for request in started {
        assert!(
            acked.contains(request),
            "started but never acknowledged: {request}"
        );
    }
}

#[tokio::test]
async fn log_requests_prints_the_tutorials_lines() {
    let server = Server::start_with(&["--log-requests"]);
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    get(&mut client, "weather").await.unwrap();
    drop(client);
    let stderr = server.stop("TERM").await.stderr.join("\n");
    assert!(
        stderr.contains(r#"serving set request for key "weather" and value "sunny""#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"serving get request for key "weather""#),
        "{stderr}"
    );
}

#[test]
fn log_requests_logs_the_full_apis_requests_too() {
    let server = Server::start_with(&["--log-requests"]);
    let set = crate::harness::kv(server.addr(), &["set", "weather", "sunny"]);
    assert!(set.status.success());
    let ls = crate::harness::kv(server.addr(), &["ls"]);
    assert!(ls.status.success());
    let stderr = server.stop_blocking("TERM").stderr.join("\n");
    assert!(
        stderr.contains("serving keyvalue.v1.KV/Put request"),
        "{stderr}"
    );
    assert!(
        stderr.contains("serving keyvalue.v1.KV/Range request"),
        "{stderr}"
    );
    // The tutorial's service keeps its own lines, once each.
    assert!(!stderr.contains("simplekeyvalue.KeyValue/"), "{stderr}");
}

#[tokio::test]
async fn requests_are_not_logged_by_default() {
    let server = Server::start();
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    get(&mut client, "weather").await.unwrap();
    drop(client);
    // After the process exits, every line it would print has been read.
    let lines = server.stop("TERM").await.stderr;
    assert!(lines.iter().any(|line| line.starts_with("listening on")));
    assert!(
        !lines.iter().any(|line| line.contains("serving")),
        "{lines:?}"
    );
}

#[test]
fn a_silent_connection_cannot_hold_shutdown_past_the_grace_period() {
    let server = Server::start_with(&["--shutdown-grace", "1s"]);
    // A peer that opens an HTTP/2 connection and then falls silent, so it
    // never acknowledges the server's GOAWAY. It waits for the server's
    // SETTINGS first: a connection still in the listen backlog when shutdown
    // starts is never served at all, and would not hold anything.
    use std::io::{Read, Write};
    let mut silent = std::net::TcpStream::connect(server.addr()).expect("connect");
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("send the HTTP/2 preface");
    let mut settings = [0u8; 9];
    silent
        .read_exact(&mut settings)
        .expect("the server's SETTINGS");
    assert_eq!(settings[3], 4, "a SETTINGS frame");
    let stopped = server.stop_blocking("TERM");
    assert!(stopped.status.success(), "exit status {}", stopped.status);
    assert!(
        stopped.stderr.iter().any(|l| l.contains("shutdown grace")),
        "{:?}",
        stopped.stderr
    );
    drop(silent);
}

#[tokio::test]
async fn a_non_loopback_address_without_protection_is_warned_about() {
    let mut command = kvserver();
    command.args(["--listen", "0.0.0.0:0", "--backend", "memory"]);
    let server = Server::spawn(command).expect("server on all interfaces");
    let stderr = server.stop("TERM").await.stderr.join("\n");
    assert!(stderr.contains("no TLS or authentication"), "{stderr}");

    let quiet = Server::start().stop("TERM").await.stderr.join("\n");
    assert!(!quiet.contains("no TLS"), "{quiet}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = Server::start_with(&["--log-format", "json", "--log-requests"]);
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    drop(client);
    let stopped = server.stop("TERM").await;
    let logged: Vec<serde_json::Value> = stopped
        .stderr
        .iter()
        .filter(|line| !line.starts_with("listening on"))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert!(
        logged.iter().any(|entry| entry["fields"]["message"]
            == "serving set request for key \"weather\" and value \"sunny\""),
        "{logged:?}"
    );
    assert!(logged.iter().all(|entry| entry["level"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_on_disk_loses_no_acknowledged_write() {
    for sync in ["always", "interval=5000"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_on_disk(dir.path(), &["--sync", sync]);
        let acknowledged = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for id in 0..16 {
            let mut client = server.client().await;
            let acknowledged = Arc::clone(&acknowledged);
            writers.push(tokio::spawn(async move {
                let mut last = None;
                for op in 0u64.. {
                    let request = SetRequest {
                        key: format!("w{id}"),
                        value: op.to_string(),
                    };
                    if client.set(request).await.is_err() {
                        break;
                    }
                    last = Some(op);
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                (id, last)
            }));
        }
        until_more_acks(
            &acknowledged,
            1000,
            Duration::from_secs(30),
            "before SIGTERM",
        )
        .await;
        assert!(server.stop("TERM").await.status.success());
        let server = Server::start_on_disk(dir.path(), &[]);
        let mut client = server.client().await;
        for writer in writers {
            let (id, last) = writer.await.unwrap();
            let stored = get(&mut client, &format!("w{id}")).await;
            let Some(last) = last else {
                // Nothing acknowledged: the one write in flight at the stop
                // may have landed, or not.
                match stored {
                    Ok(value) => assert_eq!(value, "0", "--sync {sync}: w{id}"),
                    Err(status) => assert_eq!(
                        status.code(),
                        tonic::Code::NotFound,
                        "--sync {sync}: w{id}: {status:?}"
                    ),
                }
                continue;
            };
            let stored: u64 = stored.unwrap().parse().unwrap();
            // The write in flight at the stop may have landed too.
            assert!(
                stored == last || stored == last + 1,
                "--sync {sync}: w{id} holds {stored}, {last} was acknowledged"
            );
        }
    }
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[tokio::test]
async fn threads_and_serve_threads_set_the_number_of_threads() {
    // Served on the shared runtime: the main thread (blocked on the
    // runtime) and one worker.
    let server = Server::start_with(&["--threads", "1", "--serve-threads", "0"]);
    let mut client = server.client().await;
    set(&mut client, "k", "one thread").await;
    assert_eq!(get(&mut client, "k").await.unwrap(), "one thread");
    let threads = thread_names(server.pid());
    assert_eq!(
        threads.len(),
        2,
        "threads of a --threads 1 server: {threads:?}"
    );
    // --threads is also the default of --serve-threads.
    let server = Server::start_with(&["--threads", "1"]);
    let mut client = server.client().await;
    set(&mut client, "k", "served on its own thread").await;
    let threads = thread_names(server.pid());
    assert_eq!(threads.len(), 3, "{threads:?}");
    assert_eq!(
        threads.iter().filter(|name| *name == "kv-serve-0").count(),
        1,
        "{threads:?}"
    );
    let server = Server::start_with(&["--threads", "1", "--serve-threads", "3"]);
    let mut client = server.client().await;
    set(&mut client, "k", "three").await;
    let mut serving: Vec<String> = thread_names(server.pid())
        .into_iter()
        .filter(|name| name.starts_with("kv-serve-"))
        .collect();
    serving.sort();
    assert_eq!(serving, ["kv-serve-0", "kv-serve-1", "kv-serve-2"]);
    let zero = kvserver().args(["--threads", "0"]).output().unwrap();
    assert_eq!(zero.status.code(), Some(2));
}

/// The connections open on each serving thread, from the metrics.
async fn open_per_serve_thread(http: &str) -> Vec<u64> {
    let (_, metrics) = crate::http::call(http, "GET", "/metrics", &[], "").await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let mut open: Vec<(String, u64)> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("kv_serve_thread_connections_open{thread=\""))
        .filter_map(|rest| {
            let (thread, count) = rest.split_once("\"} ")?;
            Some((thread.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    assert!(
        !open.is_empty(),
        "no kv_serve_thread_connections_open in {metrics}"
    );
    open.sort();
    open.into_iter().map(|(_, count)| count).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_are_spread_over_the_serving_threads_and_drained_at_shutdown() {
    let (server, http) = crate::http::start_http(&["--serve-threads", "3", "--log-requests"]);
    assert_eq!(open_per_serve_thread(&http).await, [0, 0, 0]);
    // 24 connections, each with a request answered: eight on each thread.
    let mut clients = Vec::new();
    for id in 0..24 {
        let mut client = server.client().await;
        set(&mut client, &format!("c{id}"), "served").await;
        clients.push(client);
    }
    assert_eq!(open_per_serve_thread(&http).await, [8, 8, 8]);
    // Each of them busy when the server is told to stop: every request
    // the server started is answered (drained) on every thread.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (id, mut client) in clients.into_iter().enumerate() {
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            for op in 0.. {
                let (key, value) = (format!("c{id}"), op.to_string());
                let request = SetRequest {
                    key: key.clone(),
                    value: value.clone(),
                };
                if client.set(request).await.is_err() {
                    break;
                }
                acked.insert(format!("key {key:?} and value {value:?}"));
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    until_more_acks(
        &acknowledged,
        1000,
        Duration::from_secs(30),
        "before SIGTERM",
    )
    .await;
    let stopped = server.stop("TERM").await;
    assert!(stopped.status.success(), "exit status {}", stopped.status);
    // The first request of each connection was answered above.
    let mut acked: HashSet<String> = (0..24)
        .map(|id| format!("key \"c{id}\" and value \"served\""))
        .collect();
    for writer in writers {
        acked.extend(writer.await.expect("writer task"));
    }
    let started: Vec<&str> = stopped
        .stderr
        .iter()
        .filter_map(|line| line.split_once("serving set request for ").map(|(_, r)| r))
        .collect();
    assert!(
        started.len() >= 1000,
        "only {} requests logged",
        started.len()
    );
    for request in started {
        assert!(
            acked.contains(request),
            "started but never acknowledged: {request}"
        );
    }
    assert!(
        stopped
            .stderr
            .iter()
            .any(|line| line.contains("all connections closed")),
        "drained, not cut off by the grace: {:?}",
        stopped.stderr
    );
}

#[tokio::test]
async fn an_open_watch_ends_at_once_when_the_server_stops() {
    use keyvalue::proto::keyvalue::v1 as pb;
    // A grace far longer than the test: the watch must not hold it.
    let server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut kv = server.kv_client().await;
    let mut events = kv
        .watch(pb::WatchRequest {
            key: bytes::Bytes::from("w"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    crate::harness::send_signal(server.pid(), "TERM");
    let ended = tokio::time::timeout(Duration::from_secs(30), events.message())
        .await
        .expect("the watch ends when the server stops");
    let status = ended.expect_err("with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("reconnect"), "{status:?}");
    drop((events, kv));
    let stopped = server.stop("TERM").await;
    assert!(stopped.status.success(), "{}", stopped.status);
    assert!(started.elapsed() < Duration::from_secs(30));
}
