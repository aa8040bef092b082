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

#[test]
fn a_mistake_in_the_config_file_stops_the_server_with_a_message() {
    for (text, expected) in [
        ("max-key-byts = 1\n", "unknown setting \"max-key-byts\""),
        ("max-key-bytes = [1]\n", "max-key-bytes"),
        ("max-key-bytes = \n", "config file"),
        ("max-key-bytes = 0\n", "max-key-bytes"),
    ] {
        let file = config_file(text);
        let output = kvserver()
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(file.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{text}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}
