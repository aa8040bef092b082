//! Limits that protect the server under load: requests in flight,
//! connections, and the process's file descriptors. (Client deadlines are enforced by tonic's grpc-timeout
//! handling, which drops a handler's future when the deadline passes.)

use std::time::Duration;

use keyvalue::proto::simplekeyvalue::SetRequest;
use tonic::Code;

use crate::harness::{Server, get, set};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_max_in_flight_are_shed_with_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    // Durable writes take a commit each: with room for one at a time, most of
    // two hundred concurrent ones arrive while another is being worked on.
    let server = Server::start_on_disk(dir.path(), &["--max-in-flight", "1"]);
    let mut tasks = Vec::new();
    for connection in 0..4 {
        let client = server.client().await;
        for i in 0..50 {
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let request = SetRequest {
                    key: format!("k{connection}-{i}"),
                    value: "v".into(),
                };
                client.set(request).await.map(|_| ())
            }));
        }
    }
    let (mut done, mut shed) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => done += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("--max-in-flight"),
                    "{}",
                    status.message()
                );
                shed += 1;
            }
        }
    }
    assert!(shed > 0, "some requests were shed ({done} done)");
    assert!(done > 0, "and some were served");
    // Once the burst is over, the server serves again.
    let mut client = server.client().await;
    set(&mut client, "after", "calm").await;
    assert_eq!(get(&mut client, "after").await.unwrap(), "calm");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let mut first = server.client().await;
    let mut second = server.client().await;
    set(&mut first, "k", "1").await;
    set(&mut second, "k", "2").await;
    // A third connection is closed at once: its call fails, the others go on.
    let third = tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = third {
        let mut client =
            keyvalue::proto::simplekeyvalue::key_value_client::KeyValueClient::new(channel);
        let status = get(&mut client, "k").await.unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{status:?}"
        );
    }
    assert_eq!(get(&mut first, "k").await.unwrap(), "2");
    // A client retrying in a loop gets one warning in the log, not one each.
    for _ in 0..20 {
        let _ = tokio::net::TcpStream::connect(server.addr()).await;
    }
    // Closing one makes room for the next.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
            .unwrap()
            .connect()
            .await;
        if let Ok(channel) = channel {
            let mut client =
                keyvalue::proto::simplekeyvalue::key_value_client::KeyValueClient::new(channel);
            if get(&mut client, "k").await.is_ok() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a place never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted once the server has exited, so every refusal has been handled
    // (and logged, if it was going to be).
    drop(first);
    let stderr = server.stop("TERM").await.stderr;
    let warnings = stderr
        .iter()
        .filter(|line| line.contains("--max-connections"))
        .count();
    assert_eq!(warnings, 1, "{stderr:?}");
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().expect("a tick count");
    field(14) + field(15)
}

#[tokio::test]
async fn out_of_file_descriptors_the_server_waits_instead_of_spinning() {
    // A kvserver allowed 64 descriptors, and more connections than that: the
    // kernel completes them, and each accept beyond the limit fails with
    // EMFILE while the listener stays readable. Retrying at once would spin a
    // core until a descriptor frees up.
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""]);
    command.arg(crate::harness::kvserver().get_program());
    command.args(["--listen", "127.0.0.1:0", "--backend", "memory"]);
    let server = Server::spawn(command).expect("kvserver starts with 64 descriptors");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(std::net::TcpStream::connect(server.addr()).expect("the kernel accepts"));
    }
    // Let the server take what it can and hit the limit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks(server.pid()) - before;
    let hz: u64 = crate::harness::text(
        &std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .trim()
    .parse()
    .expect("ticks per second");
    assert!(
        spent * 10 < hz,
        "the server used {spent} ticks of CPU (of {hz} per second) in a second without \
         descriptors: it spins on accept"
    );
    let warnings: Vec<String> = server
        .stderr_lines()
        .into_iter()
        .filter(|line| line.contains("accepting a connection failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per 10 s: {warnings:?}");
    assert!(warnings[0].contains("ulimit"), "{}", warnings[0]);
    // Descriptors free up: the server serves again.
    drop(held);
    let mut client = server.client().await;
    set(&mut client, "after", "fds").await;
    assert_eq!(get(&mut client, "after").await.unwrap(), "fds");
}
