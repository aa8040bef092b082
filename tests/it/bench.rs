//! `kv bench` against the real server: it runs the requested load, checks
//! every answer, and reports what it measured.

use std::process::Output;

use crate::etcd_process::EtcdCluster;
use crate::harness::{Server, kv, kv_command, text};

fn kv_bench(addr: &str, args: &[&str]) -> Output {
    kv(addr, &[&["bench"], args].concat())
}

fn json_report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn a_fixed_number_of_requests_is_run_verified_and_reported() {
    let server = Server::start();
    let output = kv_bench(
        server.addr(),
        &[
            "--requests",
            "3000",
            "--conns",
            "2",
            "--concurrency",
            "8",
            "--keys",
            "100",
            "--mix",
            "get=70,set=30",
            "--value-size",
            "50",
            "--json",
        ],
    );
    let report = json_report(&output);
    assert_eq!(report["ops"], 3000);
    let (gets, sets) = (
        report["gets"].as_u64().unwrap(),
        report["sets"].as_u64().unwrap(),
    );
    assert_eq!(gets + sets, 3000);
    // 30% sets, give or take what 3000 random draws allow.
    assert!((600..1200).contains(&sets), "sets: {sets}");
    assert_eq!(report["errors"], 0);
    assert_eq!(report["mismatches"], 0);
    assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap());
    assert!(latency["p99"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
}

#[test]
fn the_text_report_has_throughput_percentiles_and_a_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let output = kv_bench(
        server.addr(),
        &[
            "--duration",
            "300ms",
            "--concurrency",
            "4",
            "--keys",
            "200",
            "--mix",
            "set=100",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(" ops/s (0 gets, "), "{stdout}");
    assert!(stdout.contains("errors 0, mismatches 0"), "{stdout}");
    assert!(stdout.contains("p99.9"), "{stdout}");
    assert!(stdout.contains("% #"), "a histogram bar: {stdout}");
}

#[test]
fn a_bad_mix_is_a_usage_error() {
    for (mix, complaint) in [
        ("get=50,set=60", "add up to 110, not 100"),
        ("get=50", "add up to 50, not 100"),
        ("get=100,get=0", "get is given more than once"),
        ("delete=100", "unknown operation \"delete\""),
        ("get", "expected op=percent"),
        ("get=50,range=50", "needs --api v1"),
    ] {
        let output = kv_bench("127.0.0.1:1", &["--mix", mix]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--mix {mix}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "--mix {mix}: {stderr}");
        assert!(stderr.contains(complaint), "--mix {mix}: {stderr}");
    }
}

#[test]
fn a_configuration_that_cannot_work_is_a_usage_error_before_connecting() {
    // The address is unreachable: only a check made before connecting can
    // tell these apart from it.
    for (addr, args, complaint) in [
        ("127.0.0.1:1", &["--conns", "0"][..], "above zero"),
        ("127.0.0.1:1", &["--concurrency", "0"][..], "above zero"),
        ("127.0.0.1:1", &["--key-size", "2"][..], "--key-size 2"),
        (
            "127.0.0.1:1",
            &["--keys", "4", "--concurrency", "8"][..],
            "--keys 4",
        ),
        ("not an address", &[][..], "invalid server address"),
    ] {
        let output = kv_bench(addr, &[&["--requests", "10"], args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
}

#[test]
fn the_global_token_is_sent_with_every_request() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "bench-secret readwrite\n").unwrap();
    let server = Server::start_with(&["--auth-token-file", tokens.path().to_str().unwrap()]);
    let load = ["--requests", "500", "--concurrency", "4", "--keys", "20"];
    let with_token = kv_bench(
        server.addr(),
        &[&load[..], &["--token", "bench-secret", "--json"]].concat(),
    );
    let report = json_report(&with_token);
    assert_eq!(report["ops"], 500);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["mismatches"], 0);

    // Without it every request is refused, and the benchmark fails.
    let without = kv_bench(server.addr(), &[&load[..], &["--json"]].concat());
    assert_eq!(
        without.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
    assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("UNAUTHENTICATED"),
        "{report}"
    );
}

#[test]
fn an_unreachable_server_exits_3_with_one_line() {
    let output = kv_bench("127.0.0.1:1", &["--requests", "10"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach kvserver"), "{stderr}");
}

#[test]
fn the_full_api_mix_is_run_and_verified() {
    let server = Server::start();
    let output = kv_bench(
        server.addr(),
        &[
            "--api",
            "v1",
            "--mix",
            "get=30,set=20,range=20,batch=20,txn=10",
            "--requests",
            "4000",
            "--concurrency",
            "8",
            "--keys",
            "200",
            "--json",
        ],
    );
    let report = json_report(&output);
    assert_eq!(report["ops"], 4000);
    for kind in ["gets", "sets", "ranges", "batches", "txns"] {
        assert!(report[kind].as_u64().unwrap() > 0, "{kind}: {report}");
    }
    assert_eq!(report["mismatches"], 0);
    assert_eq!(report["errors"], 0);
}

#[test]
fn a_server_that_loses_writes_fails_the_benchmark() {
    // Another client deletes the benchmark's keys while it runs: the reads
    // that follow must not match what the benchmark wrote, and it must say so.
    let server = Server::start();
    let bench = kv_command()
        .args([
            "--addr",
            server.addr(),
            "bench",
            "--api",
            "v1",
            "--duration",
            "3s",
            "--keys",
            "50",
            "--concurrency",
            "4",
            "--key-prefix",
            "victim/",
            "--mix",
            "get=80,set=10,txn=10",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kv bench");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let deleted = kv(server.addr(), &["del", "--prefix", "victim/"]);
        assert!(deleted.status.success());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = bench.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
    assert!(!report["problems"].as_array().unwrap().is_empty());
}

#[test]
fn watch_fan_out_delivers_every_event_to_every_watcher_in_order() {
    let server = Server::start();
    let pid = server.pid().to_string();
    let output = kv_bench(
        server.addr(),
        &[
            "--watchers",
            "30",
            "--conns",
            "3",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--server-pid",
            &pid,
            "--json",
        ],
    );
    let report = json_report(&output);
    let puts = report["puts"].as_u64().unwrap();
    assert!(puts >= 20, "about 100 puts at 50/s for 2 s: {report}");
    assert_eq!(report["delivered"].as_u64().unwrap(), 30 * puts, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap());
    assert!(
        report["server_cpu_us_per_event"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// `--api etcd`: 40 watchers on 4 etcd Watch streams; against kvserver and
/// against a real etcd, every watcher gets every event in order.
#[test]
fn watch_fan_out_over_etcds_api_delivers_every_event_on_kvserver_and_on_etcd() {
    let server = Server::start();
    let etcd = EtcdCluster::single();
    let etcd_addr = etcd.url(0).trim_start_matches("http://").to_owned();
    for (name, addr) in [("kvserver", server.addr()), ("etcd", etcd_addr.as_str())] {
        let output = kv_bench(
            addr,
            &[
                "--watchers",
                "40",
                "--conns",
                "4",
                "--api",
                "etcd",
                "--rate",
                "50",
                "--duration",
                "1s",
                "--json",
            ],
        );
        let report = json_report(&output);
        let puts = report["puts"].as_u64().unwrap();
        assert!(puts >= 10, "{name}: about 50 puts: {report}");
        assert_eq!(report["api"], "etcd", "{name}: {report}");
        assert_eq!(
            report["delivered"].as_u64().unwrap(),
            40 * puts,
            "{name}: {report}"
        );
        assert_eq!(report["mismatches"], 0, "{name}: {report}");
        assert_eq!(report["errors"], 0, "{name}: {report}");
    }
}

#[test]
fn the_request_load_refuses_the_etcd_api_by_name() {
    let server = Server::start();
    let output = kv_bench(server.addr(), &["--api", "etcd", "--requests", "10"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--api etcd is for the watch fan-out"),
        "{output:?}"
    );
}

#[test]
fn watch_fan_out_with_a_server_pid_that_is_not_there_is_a_usage_error() {
    let server = Server::start();
    let output = kv_bench(
        server.addr(),
        &[
            "--watchers",
            "2",
            "--duration",
            "1s",
            "--server-pid",
            "4294967295",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--server-pid 4294967295"),
        "{output:?}"
    );
}
