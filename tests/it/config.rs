//! `kvserver --config FILE` and `--print-config`: one precedence order,
//! flags > environment > config file > defaults.

use keyvalue::proto::simplekeyvalue::SetRequest;
use tonic::Code;

use crate::harness::{Server, kvserver};

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = kvserver();
    command.args(args).arg("--print-config");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_config_file_configures_the_server() {
    let file = config_file("backend = \"memory\"\nmax-key-bytes = 8\n");
    let server = Server::start_with(&["--config", file.path().to_str().unwrap()]);
    let mut client = server.client().await;
    let status = client
        .set(SetRequest {
            key: "123456789".into(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("limit of 8 bytes"),
        "{}",
        status.message()
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let file = config_file("max-key-bytes = 10\nmax-value-bytes = 20\nmax-batch-keys = 30\n");
    let path = file.path().to_str().unwrap();
    let printed = print_config(
        &["--config", path, "--max-key-bytes", "11"],
        &[
            ("KVSERVER_MAX_KEY_BYTES", "12"),
            ("KVSERVER_MAX_VALUE_BYTES", "21"),
        ],
    );
    assert!(
        printed.contains("max-key-bytes = \"11\"\n"),
        "flag: {printed}"
    );
    assert!(
        printed.contains("max-value-bytes = \"21\"\n"),
        "environment: {printed}"
    );
    assert!(
        printed.contains("max-batch-keys = \"30\"\n"),
        "file: {printed}"
    );
    assert!(
        printed.contains("max-range-page = \"10000\"\n"),
        "default: {printed}"
    );
}

#[test]
fn printed_settings_read_back_as_the_same_settings() {
    let first = print_config(
        &[
            "--max-txn-ops",
            "7",
            "--log-requests",
            "--etcd-endpoints",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
        ],
        &[],
    );
    assert!(
        first.contains(r#"etcd-endpoints = "http://10.0.0.1:2379,http://10.0.0.2:2379""#),
        "a list is printed whole: {first}"
    );
    let file = config_file(&first);
    let second = print_config(&["--config", file.path().to_str().unwrap()], &[]);
    assert_eq!(first, second);
}

/// Starts kvserver with a config file of `text`, which it must refuse
/// without serving; returns the file and what kvserver printed.
fn refused(text: &str) -> (tempfile::NamedTempFile, String) {
    let file = config_file(text);
    let output = kvserver()
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    (file, stderr)
}

#[test]
fn a_mistake_in_the_config_file_stops_the_server_with_a_message() {
    for (text, expected) in [
        ("max-key-byts = 1\n", "unknown setting \"max-key-byts\""),
        ("max-key-bytes = [1]\n", "max-key-bytes"),
        ("max-key-bytes = \n", "config file"),
        ("max-key-bytes = 0\n", "max-key-bytes"),
    ] {
        let (_file, stderr) = refused(text);
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn print_config_quotes_every_value() {
    let printed = print_config(&["--log-requests"], &[]);
    for line in printed.lines().filter(|line| !line.starts_with('#')) {
        let (_, value) = line.split_once(" = ").expect("name = value");
        assert!(
            value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
            "not quoted: {line}"
        );
    }
    assert!(printed.contains("log-requests = \"true\"\n"), "{printed}");
}

#[tokio::test]
async fn an_on_off_setting_may_be_quoted_as_print_config_writes_it() {
    let file = config_file("backend = \"memory\"\nlog-requests = \"true\"\n");
    let server = Server::start_with(&["--config", file.path().to_str().unwrap()]);
    let mut client = server.client().await;
    crate::harness::set(&mut client, "weather", "sunny").await;
    drop(client);
    let stderr = server.stop("TERM").await.stderr.join("\n");
    assert!(
        stderr.contains(r#"serving set request for key "weather""#),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_in_the_config_file_names_the_file_and_the_setting() {
    for (text, setting) in [
        ("log-requests = \"yes\"\n", "log-requests = \"yes\""),
        ("log-requests = 1\n", "log-requests = 1"),
        ("max-key-bytes = 0\n", "max-key-bytes = 0"),
        ("sync = \"sometimes\"\n", "sync = \"sometimes\""),
        ("listen = [1]\n", "listen = (a value of type array)"),
    ] {
        let (file, stderr) = refused(text);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        let expected = format!("config file {}: {setting}: ", file.path().display());
        assert!(stderr.contains(&expected), "{text}: {stderr}");
    }
}

/// The lines of deploy/kvserver.service that start with `key=`.
fn unit_settings(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kvserver.service"),
    )
    .unwrap();
    unit.lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_systemd_unit_reads_its_config_file_below_its_env_file() {
    // No flags: a flag would beat the env file and the config file both.
    assert_eq!(unit_settings("ExecStart"), ["/usr/local/bin/kvserver"]);
    let environment = unit_settings("Environment");
    let [config] = environment.as_slice() else {
        panic!("one Environment=: {environment:?}");
    };
    assert_eq!(config, "KVSERVER_CONFIG=/etc/kvserver/kvserver.toml");
    assert_eq!(unit_settings("EnvironmentFile"), ["-/etc/kvserver/env"]);
    // The stop timeout leaves room for the default grace period (10s).
    let timeout: u64 = unit_settings("TimeoutStopSec")[0].parse().unwrap();
    assert!(timeout > 10, "TimeoutStopSec={timeout}");

    // As the unit runs it: the file written as the unit's comment says,
    // then the same with a variable from the env file.
    let dir = tempfile::tempdir().unwrap();
    let written = print_config(&["--data-dir", "/var/lib/kvserver"], &[]);
    let file = dir.path().join("kvserver.toml");
    std::fs::write(&file, written).unwrap();
    let config = format!("KVSERVER_CONFIG={}", file.display());
    let (name, value) = config.split_once('=').unwrap();
    let from_file = print_config(&[], &[(name, value)]);
    assert!(
        from_file.contains("data-dir = \"/var/lib/kvserver\"\n"),
        "{from_file}"
    );
    let from_env = print_config(&[], &[(name, value), ("KVSERVER_DATA_DIR", "/srv/kv")]);
    assert!(from_env.contains("data-dir = \"/srv/kv\"\n"), "{from_env}");
}
