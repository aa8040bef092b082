//! The `kv` command line: its output, its one-line errors and its exit codes.

use std::process::Output;

use crate::harness::{Server, kv, kv_command, kv_with_input, kvserver, text, wait_with_patience};

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
    // The status by its canonical name, as kv-py, kv-rb and the docs write it.
    assert!(
        stderr.starts_with("server refused the request (INVALID_ARGUMENT): "),
        "{stderr}"
    );
    let empty = kv(server.addr(), &["get", ""]);
    assert_eq!(empty.status.code(), Some(4));
    assert!(text(&empty.stderr).contains("key is empty"));
}

#[test]
fn the_address_can_come_from_kv_addr() {
    let server = Server::start();
    let set = kv_command()
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

/// Asserts that `output` is a usage error of `program`: exit 2, nothing on
/// stdout, and one line on stderr that names the program, says what is
/// wrong (`complaint`) and points at --help.
fn assert_one_line_usage_error(output: &Output, program: &str, complaint: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(text(&output.stdout), "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("{program}: ")), "{stderr}");
    assert!(stderr.contains(complaint), "{stderr}");
    assert!(
        stderr.ends_with(&format!(" (see {program} --help)\n")),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for (args, complaint) in [
        // (Without a VALUE, set reads it from stdin: no usage error.)
        (&["set"][..], "<KEY>"),
        (
            &["set", "--ttl", "5s", "--lease", "1", "k", "v"][..],
            "'--ttl <TTL>' cannot be used with '--lease <LEASE>'",
        ),
        (
            &["cas", "k", "v", "--expect-rev", "-1"][..],
            "unexpected argument '-1'",
        ),
        (&[][..], "requires a subcommand"),
        (&["lease"][..], "'kv lease' requires a subcommand"),
        (&["--timeout", "0s", "get", "k"][..], "above zero"),
    ] {
        let output = kv_command().args(args).output().expect("run kv");
        assert_one_line_usage_error(&output, "kv", complaint);
    }
    let bad_address = kv("http://[not an address", &["get", "k"]);
    assert_eq!(bad_address.status.code(), Some(2));
    assert!(text(&bad_address.stderr).starts_with("invalid server address"));
}

#[test]
fn an_address_without_a_port_is_a_usage_error() {
    // Were the scheme's port (80) tried, this would be "connection refused".
    for addr in ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:"] {
        let output = kv(addr, &["get", "k"]);
        assert_eq!(
            (output.status.code(), text(&output.stderr)),
            (
                Some(2),
                format!(
                    "invalid server address {addr:?}: expected host:port, e.g. 127.0.0.1:50051\n"
                )
            )
        );
    }
}

#[test]
fn kvserver_usage_errors_exit_2_with_one_line() {
    for (args, complaint) in [
        (&["--max-key-bytes", "0"][..], "0 is not in 1.."),
        (&["--backend", "paper"][..], "invalid value 'paper'"),
        (&["restore"][..], "<FILE>"),
        (&["--tls-key", "k.pem"][..], "--tls-cert"),
    ] {
        let output = kvserver().args(args).output().expect("run kvserver");
        assert_one_line_usage_error(&output, "kvserver", complaint);
    }
    // A bad setting in the config file is checked like the flag, and named
    // with its file.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "max-key-bytes = 0\n").unwrap();
    let output = kvserver()
        .args(["--config", file.path().to_str().unwrap()])
        .output()
        .expect("run kvserver");
    let complaint = format!(
        "config file {}: max-key-bytes = 0: invalid value '0': 0 is not in 1..",
        file.path().display()
    );
    assert_one_line_usage_error(&output, "kvserver", &complaint);
}

#[test]
fn help_and_version_print_in_full_and_exit_0() {
    for program in ["kv", "kvserver"] {
        let mut command = if program == "kv" {
            kv_command()
        } else {
            kvserver()
        };
        let version = command.arg("--version").output().expect("run --version");
        assert_eq!(version.status.code(), Some(0), "{program}");
        assert_eq!(
            text(&version.stdout),
            format!("{program} {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    let help = kv_command().args(["lease", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(help.contains("Usage: kv lease"), "{help}");
    assert!(help.lines().count() > 5, "{help}");
}

#[test]
fn help_describes_every_command_and_the_exit_codes() {
    let help = kv_command().arg("--help").output().expect("run kv --help");
    assert!(help.status.success());
    let help = text(&help.stdout);
    for expected in ["set", "get", "--addr", "KV_ADDR", "--timeout", "Exit codes"] {
        assert!(
            help.contains(expected),
            "kv --help lacks {expected:?}:\n{help}"
        );
    }
    // Every code of kv_cli::exit, as it is documented.
    for code in [
        "0 success",
        "1 key not found",
        "2 usage error",
        "3 server unreachable",
        "4 request refused by the server",
        "5 `kv bench` saw a wrong answer",
        "6 `kv cas` found another revision",
        "7 the output could not be written",
    ] {
        assert!(help.contains(code), "kv --help lacks {code:?}:\n{help}");
    }
    // The short help is about kv, not the whole package.
    let short = kv_command().arg("-h").output().expect("run kv -h");
    assert!(
        text(&short.stdout).starts_with("Command-line client of kvserver\n"),
        "{}",
        text(&short.stdout)
    );
}

#[test]
fn kvserver_help_describes_every_flag() {
    let help = kvserver()
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
        "keyvalue.v1.KV/Put",
        "RUST_LOG",
        // Both services, not only the tutorial's.
        "simplekeyvalue.KeyValue",
        "keyvalue.v1.KV",
        "etcd's v3 API",
        "gRPC-Web",
        "--grpc-web-allow-origin",
        "--http-listen",
        "--config",
    ] {
        assert!(
            help.contains(expected),
            "kvserver --help lacks {expected:?}"
        );
    }
    let short = kvserver().arg("-h").output().expect("run kvserver -h");
    assert!(
        text(&short.stdout).starts_with("The key/value gRPC server\n"),
        "{}",
        text(&short.stdout)
    );
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON value")
}

#[test]
fn get_with_revisions_as_text_and_json() {
    let server = Server::start();
    kv(server.addr(), &["set", "weather", "sunny"]);
    kv(server.addr(), &["set", "weather", "rain"]);
    let text_form = text(&kv(server.addr(), &["get", "-w", "weather"]).stdout);
    assert!(text_form.contains("value: rain\n"), "{text_form}");
    assert!(text_form.contains("version: 2\n"), "{text_form}");
    let object = json_of(&kv(server.addr(), &["get", "-w", "--json", "weather"]));
    assert_eq!(object["key"], "weather");
    assert_eq!(object["value"], "rain");
    assert_eq!(object["version"], 2);
    assert_eq!(
        object["create_revision"], 2,
        "an empty store is at revision 1"
    );
    assert_eq!(object["mod_revision"], 3);
}

#[test]
fn del_ls_and_their_json() {
    let server = Server::start();
    for key in ["user/1", "user/2", "user/3", "other"] {
        assert!(kv(server.addr(), &["set", key, "v"]).status.success());
    }
    let listed = text(&kv(server.addr(), &["ls", "user/"]).stdout);
    assert_eq!(listed, "user/1\tv\nuser/2\tv\nuser/3\tv\n");
    let keys = text(&kv(server.addr(), &["ls", "--keys-only", "--limit", "2"]).stdout);
    assert_eq!(keys, "other\nuser/1\n");
    let array = json_of(&kv(server.addr(), &["ls", "--json"]));
    assert_eq!(array.as_array().unwrap().len(), 4);
    assert_eq!(array[1]["key"], "user/1");
    assert_eq!(array[1]["value"], "v");
    assert_eq!(text(&kv(server.addr(), &["del", "other"]).stdout), "1\n");
    assert_eq!(
        text(&kv(server.addr(), &["del", "--prefix", "user/"]).stdout),
        "3\n"
    );
    assert_eq!(text(&kv(server.addr(), &["del", "nothing"]).stdout), "0\n");
    assert_eq!(text(&kv(server.addr(), &["ls"]).stdout), "");
}

#[test]
fn ls_pages_through_more_keys_than_one_page() {
    let server = Server::start_with(&["--max-range-page", "100"]);
    let mut script = String::new();
    for i in 0..250 {
        script.push_str(&format!("put k{i:03} v\n"));
    }
    // One transaction of 250 puts is above --max-txn-ops (128): two halves.
    let (first, second) = script.split_at(script.find("put k128").unwrap());
    for half in [first, second] {
        let output = kv_with_input(server.addr(), &["txn"], &format!("\n{half}"));
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let keys = text(&kv(server.addr(), &["ls", "--keys-only"]).stdout);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 250);
    assert_eq!((keys[0], keys[249]), ("k000", "k249"));
}

#[test]
fn cas_succeeds_at_the_expected_revision_and_exits_6_otherwise() {
    let server = Server::start();
    // An empty store is at revision 1: the first write gets 2.
    kv(server.addr(), &["set", "k", "v1"]);
    let won = kv(server.addr(), &["cas", "k", "v2", "--expect-rev", "2"]);
    assert!(won.status.success(), "{}", text(&won.stderr));
    let lost = kv(server.addr(), &["cas", "k", "v3", "--expect-rev", "2"]);
    assert_eq!(lost.status.code(), Some(6));
    assert_eq!(
        text(&lost.stderr),
        "compare failed: key \"k\" is at revision 3, not at revision 2\n"
    );
    let object: serde_json::Value = serde_json::from_slice(
        &kv(
            server.addr(),
            &["cas", "--json", "k", "v3", "--expect-rev", "2"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(object["succeeded"], false);
    assert_eq!(object["current"]["value"], "v2");
    let created = kv(server.addr(), &["cas", "fresh", "new", "--expect-rev", "0"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert_eq!(text(&kv(server.addr(), &["get", "fresh"]).stdout), "new\n");
    // Revision 0 means "does not exist": now that it does, the compare fails.
    let again = kv(
        server.addr(),
        &["cas", "fresh", "newer", "--expect-rev", "0"],
    );
    assert_eq!(again.status.code(), Some(6), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).starts_with("compare failed: key \"fresh\" is at revision "),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(text(&kv(server.addr(), &["get", "fresh"]).stdout), "new\n");
    assert_eq!(text(&kv(server.addr(), &["get", "k"]).stdout), "v2\n");
}

#[test]
fn txn_reads_a_transaction_from_stdin_or_a_file() {
    let server = Server::start();
    kv(server.addr(), &["set", "balance", "100"]);
    let script = "value(\"balance\") = \"100\"\n\nput balance 50\nput spent 50\n\nget balance\n";
    let first = kv_with_input(server.addr(), &["txn"], script);
    assert_eq!(text(&first.stdout), "SUCCESS\nOK\nOK\n");
    let again = kv_with_input(server.addr(), &["txn", "--json"], script);
    let object = json_of(&again);
    assert_eq!(object["succeeded"], false);
    assert_eq!(object["responses"][0]["kvs"][0]["value"], "50");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\ndel spent\n").unwrap();
    let from_file = kv(server.addr(), &["txn", file.path().to_str().unwrap()]);
    assert_eq!(text(&from_file.stdout), "SUCCESS\n1\n");
    let bad = kv_with_input(server.addr(), &["txn"], "mod(\"k\") = \"soon\"\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).starts_with("line 1: "),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn txn_deletes_a_prefix_and_refuses_an_unknown_option() {
    let server = Server::start();
    for key in ["x/1", "x/2", "y"] {
        assert!(kv(server.addr(), &["set", key, "v"]).status.success());
    }
    // Read as `del KEY END`, this deleted nothing and the server refused it.
    let deleted = kv_with_input(server.addr(), &["txn"], "\ndel x/ --prefix\n");
    assert_eq!(
        (deleted.status.code(), text(&deleted.stdout)),
        (Some(0), "SUCCESS\n2\n".to_owned()),
        "{}",
        text(&deleted.stderr)
    );
    let unknown = kv_with_input(server.addr(), &["txn"], "\nput y w\ndel y --from-key\n");
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        text(&unknown.stderr),
        "line 3: \"del y --from-key\": unknown option \"--from-key\" (only --prefix is one; \
         quote a key or value that starts with --)\n"
    );
    assert_eq!(text(&kv(server.addr(), &["ls"]).stdout), "y\tv\n");
}

#[test]
fn set_with_a_ttl_prints_its_lease_and_the_key_expires() {
    let server = Server::start();
    let set = kv(server.addr(), &["set", "--ttl", "1s", "temp", "v"]);
    let printed = text(&set.stdout);
    // The bare id, as `kv lease grant` prints it.
    let lease = printed.strip_suffix('\n').expect("one line");
    assert!(lease.parse::<i64>().unwrap() > 0, "{printed:?}");
    let granted = text(&kv(server.addr(), &["lease", "grant", "10s"]).stdout);
    assert!(granted.trim_end().parse::<i64>().is_ok(), "{granted:?}");
    let info = text(&kv(server.addr(), &["lease", "info", lease]).stdout);
    assert!(info.contains("ttl 1000ms"), "{info}");
    std::thread::sleep(std::time::Duration::from_millis(1400));
    assert_eq!(kv(server.addr(), &["get", "temp"]).status.code(), Some(1));
    let keep_alive = kv(server.addr(), &["lease", "keep-alive", lease]);
    assert_eq!(keep_alive.status.code(), Some(4));
    assert!(text(&keep_alive.stderr).contains("not found"));
}

#[test]
fn leases_are_granted_shared_and_revoked_from_the_command_line() {
    let server = Server::start();
    let lease = text(&kv(server.addr(), &["lease", "grant", "60s"]).stdout);
    let lease = lease.trim();
    for key in ["a", "b"] {
        assert!(
            kv(server.addr(), &["set", "--lease", lease, key, "v"])
                .status
                .success()
        );
    }
    assert!(
        kv(server.addr(), &["lease", "keep-alive", lease])
            .status
            .success()
    );
    // Listed with the others, in id order, and with its keys (etcdctl's
    // `lease list` and `lease timetolive --keys`).
    let other = text(&kv(server.addr(), &["lease", "grant", "30s"]).stdout);
    let other = other.trim();
    let listed = text(&kv(server.addr(), &["lease", "list"]).stdout);
    let mut ids: Vec<i64> = [lease, other]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    ids.sort_unstable();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    for (line, id) in lines.iter().zip(&ids) {
        assert!(line.starts_with(&format!("lease {id} ttl ")), "{listed}");
    }
    let info = text(&kv(server.addr(), &["lease", "info", "--keys", lease]).stdout);
    let mut info = info.lines();
    assert!(
        info.next()
            .unwrap()
            .starts_with(&format!("lease {lease} ttl 60000ms")),
        "{info:?}"
    );
    assert_eq!(info.collect::<Vec<_>>(), ["a", "b"]);
    let json = text(&kv(server.addr(), &["--json", "lease", "info", "--keys", lease]).stdout);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["keys"], serde_json::json!(["a", "b"]));
    let json = text(&kv(server.addr(), &["--json", "lease", "list"]).stdout);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(
        text(&kv(server.addr(), &["lease", "revoke", lease]).stdout),
        "2\n"
    );
    assert_eq!(kv(server.addr(), &["get", "a"]).status.code(), Some(1));
}

#[test]
fn binary_keys_and_values_pass_as_hex_or_base64() {
    let server = Server::start();
    assert!(
        kv(server.addr(), &["--hex", "set", "00ff", "deadbeef"])
            .status
            .success()
    );
    assert_eq!(
        text(&kv(server.addr(), &["--hex", "get", "00ff"]).stdout),
        "deadbeef\n"
    );
    assert_eq!(
        text(&kv(server.addr(), &["--base64", "get", "AP8="]).stdout),
        "3q2+7w==\n"
    );
    let raw = kv(server.addr(), &["--hex", "ls", "--json"]);
    assert_eq!(json_of(&raw)[0]["value"], "deadbeef");
    assert_eq!(json_of(&raw)[0]["value_encoding"], "hex");
    // Without an encoding, JSON holds bytes that are not UTF-8 in base64,
    // and says so (the shape the HTTP API uses too).
    let marked = json_of(&kv(server.addr(), &["ls", "--json"]));
    assert_eq!(marked[0]["key"], "AP8=");
    assert_eq!(marked[0]["key_encoding"], "base64");
    assert_eq!(marked[0]["value"], "3q2+7w==");
    assert_eq!(marked[0]["value_encoding"], "base64");
    let bad = kv(server.addr(), &["--hex", "get", "xyz"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn watch_streams_changes_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let server = Server::start();
    kv(server.addr(), &["set", "w/old", "before"]);
    let mut watcher = kv_command()
        .args([
            "--addr",
            server.addr(),
            "watch",
            "--prefix",
            "w/",
            "--from-rev",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run kv watch");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["kv"]["key"].as_str()),
        (Some("put"), Some("w/old"))
    );
    kv(server.addr(), &["set", "elsewhere", "x"]);
    kv(server.addr(), &["set", "w/new", "after"]);
    kv(server.addr(), &["del", "w/old"]);
    let put: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(put["kv"]["value"], "after");
    let delete: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (delete["type"].as_str(), delete["revision"].as_u64()),
        (Some("delete"), Some(5))
    );
    crate::harness::send_signal(watcher.id(), "INT");
    let status = watcher.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a watch cleanly");
}

/// Waits for `child` to exit (see `wait_with_patience`); kills it and fails
/// the test if it does not.
fn exits(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    wait_with_patience(child).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{what} did not end")
    })
}

#[test]
fn a_reader_that_goes_away_ends_kv_quietly() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let server = Server::start();
    // More output than a pipe holds (64 KiB), so kv is still writing when
    // the reader leaves, as under `kv ls | head -1`.
    let value = "v".repeat(1000);
    let mut script = String::from("\n");
    for i in 0..100 {
        script.push_str(&format!("put k{i:03} {value}\n"));
    }
    let output = kv_with_input(server.addr(), &["txn"], &script);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for json in [false, true] {
        let mut command = kv_command();
        command.args(["--addr", server.addr(), "ls"]);
        if json {
            command.arg("--json");
        }
        let mut ls = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kv ls");
        let mut first = [0u8; 10];
        ls.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The read end is closed here.
        let status = exits(&mut ls, "kv ls");
        let mut stderr = String::new();
        ls.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(
            (status.code(), stderr.as_str()),
            (Some(0), ""),
            "json: {json}"
        );
    }
    // `kv watch | head -1`: kv notices the reader left, with no event to
    // write.
    kv(server.addr(), &["set", "w", "before"]);
    let mut watch = kv_command()
        .args(["--addr", server.addr(), "watch", "w", "--from-rev", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kv watch");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("text");
    assert!(first.contains("PUT w before"), "{first}");
    drop(lines);
    let status = exits(&mut watch, "kv watch, once its reader was gone,");
    let mut stderr = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
}

#[test]
fn output_that_cannot_be_written_exits_7_with_one_line() {
    let server = Server::start();
    kv(server.addr(), &["set", "k", "v"]);
    let full = std::fs::File::create("/dev/full").expect("open /dev/full");
    let output = kv_command()
        .args(["--addr", server.addr(), "get", "k"])
        .stdout(full)
        .output()
        .expect("run kv get");
    assert_eq!(output.status.code(), Some(7));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
}

#[test]
fn set_reads_the_value_from_stdin_or_a_file_as_raw_bytes() {
    let server = Server::start();
    // Above the kernel's 128 KiB limit on one argument: only stdin can carry it.
    let big = "x".repeat(300 * 1024);
    let stored = kv_with_input(server.addr(), &["set", "big"], &big);
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let read = kv(server.addr(), &["get", "big"]);
    assert_eq!(text(&read.stdout), format!("{big}\n"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, [0xffu8, 0x00, 0x10]).unwrap();
    let stored = kv(
        server.addr(),
        &["set", "raw", "--file", file.to_str().unwrap()],
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    // --hex reads the key as hex too: 726177 is "raw".
    assert_eq!(
        text(&kv(server.addr(), &["--hex", "get", "726177"]).stdout),
        "ff0010\n"
    );
    let missing = kv(server.addr(), &["set", "raw", "--file", "/no/such/file"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the value from /no/such/file"));
    let both = kv(
        server.addr(),
        &["set", "raw", "v", "--file", file.to_str().unwrap()],
    );
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn a_backup_into_a_missing_directory_exits_7() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-such-dir").join("today.kv");
    let output = kv(server.addr(), &["backup", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cannot write "), "{stderr}");
}

#[test]
fn a_server_that_answers_unavailable_is_not_called_unreachable() {
    // A kvserver over an etcd cluster that is down answers UNAVAILABLE
    // naming etcd: it was reached, and says so.
    let etcd = closed_port_addr();
    let mut command = kvserver();
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "etcd",
        "--etcd-timeout",
        "1s",
    ]);
    command
        .arg("--etcd-endpoints")
        .arg(format!("http://{etcd}"));
    let server = Server::spawn(command).expect("kvserver starts with its etcd down");
    let get = kv(server.addr(), &["get", "k"]);
    assert_eq!(get.status.code(), Some(3), "{}", text(&get.stderr));
    let stderr = text(&get.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "kvserver at {} cannot serve now (UNAVAILABLE): ",
            server.addr()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("etcd"), "{stderr}");
}

/// The Dockerfile's step that installs completions and man pages, run as
/// it is written (its `RUN` line, with `/usr/share` moved into a temporary
/// directory and the built binaries first on `PATH`): every file it writes
/// is there, and bash loads the completion.
#[test]
fn the_dockerfiles_install_step_writes_completions_and_man_pages() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let mut lines = dockerfile
        .lines()
        .skip_while(|line| !line.starts_with("# Shell completions and man pages"))
        .skip(1);
    let mut step = String::new();
    // Docker joins a line that ends in a backslash to the next.
    for line in lines.by_ref() {
        step.push_str(line.trim_end_matches('\\'));
        step.push(' ');
        if !line.ends_with('\\') {
            break;
        }
    }
    let step = step
        .strip_prefix("RUN ")
        .expect("a RUN step after the comment");
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("usr/share");
    let step = step.replace("/usr/share", share.to_str().unwrap());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kv"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = std::process::Command::new("sh")
        .args(["-c", &step])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    for name in ["kv", "kvserver"] {
        for file in [
            format!("bash-completion/completions/{name}"),
            format!("zsh/vendor-completions/_{name}"),
            format!("fish/vendor_completions.d/{name}.fish"),
        ] {
            let script = std::fs::read_to_string(share.join(&file)).unwrap();
            assert!(script.contains(name), "{file}");
        }
        let man = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(share.join(format!("man/man1/{name}.1.gz")))
            .output()
            .unwrap();
        assert!(text(&man.stdout).contains(&format!(".TH {name} 1")));
        let bash = share.join(format!("bash-completion/completions/{name}"));
        let loaded = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p {name}", bash.display()))
            .output()
            .unwrap();
        assert!(
            text(&loaded.stdout).contains(name),
            "{}",
            text(&loaded.stderr)
        );
    }
}

#[test]
fn both_binaries_print_their_completions_and_man_pages() {
    for (mut command, flag) in [(kv_command(), "--hex"), (kvserver(), "--http-listen")] {
        let bash = command.args(["completions", "bash"]).output().unwrap();
        assert!(bash.status.success(), "{}", text(&bash.stderr));
        assert!(text(&bash.stdout).contains(flag), "{flag}");
    }
    for (mut command, name, flag) in [
        (kv_command(), "kv", "base64"),
        (kvserver(), "kvserver", "http\\-listen"),
    ] {
        let man = command.arg("man").output().unwrap();
        assert!(man.status.success(), "{}", text(&man.stderr));
        let page = text(&man.stdout);
        assert!(page.contains(&format!(".TH {name} 1")), "{page}");
        assert!(page.contains(flag), "{flag} in {page}");
    }
}
