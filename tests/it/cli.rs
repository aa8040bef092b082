//! The `kv` command line: its output, its one-line errors and its exit codes.

use std::process::{Command, Output};

use crate::harness::Server;

fn kv(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .env_remove("KV_ADDR")
        .args(["--addr", addr])
        .args(args)
        .output()
        .expect("run kv")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An address where nothing listens: bind a port, then free it.
fn closed_port_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    drop(listener);
    addr
}

#[test]
fn set_then_get_prints_the_value_and_nothing_else() {
    let server = Server::start();
    let set = kv(server.addr(), &["set", "weather", "sunny"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(text(&set.stdout), "");
    let get = kv(server.addr(), &["get", "weather"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "sunny\n");
    assert_eq!(text(&get.stderr), "");
}

#[test]
fn values_may_start_with_a_dash_or_contain_equals() {
    let server = Server::start();
    assert!(kv(server.addr(), &["set", "n", "-5"]).status.success());
    assert_eq!(text(&kv(server.addr(), &["get", "n"]).stdout), "-5\n");
    assert!(kv(server.addr(), &["set", "a", "b=c"]).status.success());
    assert_eq!(text(&kv(server.addr(), &["get", "a"]).stdout), "b=c\n");
}

#[test]
fn a_missing_key_exits_1_with_one_line() {
    let server = Server::start();
    let get = kv(server.addr(), &["get", "weather"]);
    assert_eq!(get.status.code(), Some(1));
    assert_eq!(text(&get.stdout), "");
    assert_eq!(text(&get.stderr), "key \"weather\" not found\n");
}

#[test]
fn an_unreachable_server_exits_3_with_one_line() {
    let addr = closed_port_addr();
    let get = kv(&addr, &["get", "weather"]);
    assert_eq!(get.status.code(), Some(3));
    let stderr = text(&get.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("cannot reach kvserver at {addr}: ")),
        "{stderr}"
    );
}

#[test]
fn a_refused_request_exits_4_with_the_servers_reason() {
    let server = Server::start_with(&["--max-value-bytes", "3"]);
    let set = kv(server.addr(), &["set", "k", "four"]);
    assert_eq!(set.status.code(), Some(4));
    let stderr = text(&set.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("limit of 3 bytes (--max-value-bytes)"),
        "{stderr}"
    );
    let empty = kv(server.addr(), &["get", ""]);
    assert_eq!(empty.status.code(), Some(4));
    assert!(text(&empty.stderr).contains("key is empty"));
}

#[test]
fn the_address_can_come_from_kv_addr() {
    let server = Server::start();
    let set = Command::new(env!("CARGO_BIN_EXE_kv"))
        .env("KV_ADDR", server.addr())
        .args(["set", "weather", "sunny"])
        .output()
        .expect("run kv");
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(
        text(&kv(server.addr(), &["get", "weather"]).stdout),
        "sunny\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let missing_value = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["set", "only-a-key"])
        .output()
        .expect("run kv");
    assert_eq!(missing_value.status.code(), Some(2));
    let bad_address = kv("http://[not an address", &["get", "k"]);
    assert_eq!(bad_address.status.code(), Some(2));
    assert!(text(&bad_address.stderr).starts_with("invalid server address"));
}

#[test]
fn help_describes_every_command_and_the_exit_codes() {
    let help = Command::new(env!("CARGO_BIN_EXE_kv"))
        .arg("--help")
        .output()
        .expect("run kv --help");
    assert!(help.status.success());
    let help = text(&help.stdout);
    for expected in ["set", "get", "--addr", "KV_ADDR", "--timeout", "Exit codes"] {
        assert!(
            help.contains(expected),
            "kv --help lacks {expected:?}:\n{help}"
        );
    }
}

#[test]
fn kvserver_help_describes_every_flag() {
    let help = Command::new(env!("CARGO_BIN_EXE_kvserver"))
        .arg("--help")
        .output()
        .expect("run kvserver --help");
    assert!(help.status.success());
    let help = text(&help.stdout);
    for expected in [
        "--listen",
        "KVSERVER_LISTEN",
        "--backend",
        "--max-key-bytes",
        "--max-value-bytes",
        "--log-requests",
        "RUST_LOG",
    ] {
        assert!(
            help.contains(expected),
            "kvserver --help lacks {expected:?}"
        );
    }
}
