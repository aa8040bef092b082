//! etcd's v3 API served by kvserver, through etcd's own command line
//! client, `etcdctl` (Debian's etcd-client, the 3.4 release).
//!
//! Each scenario runs twice or more: against kvserver (memory, disk, and a
//! gateway over etcd with a prefix) and against a real etcd member on
//! loopback. The transcripts (what etcdctl printed, with lease ids, which
//! both choose at random, replaced by a placeholder) must be equal, so the
//! scenario itself is shown right by etcd, and kvserver shown to answer as
//! etcd does. Each also checks a few lines by hand, so that two servers
//! failing alike cannot pass.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::gateway;
use crate::etcd_process::EtcdCluster;
use crate::harness::Server;

/// Runs etcdctl against `endpoint`; returns what it printed, stdout then
/// stderr (prefixed `! `), and how it exited.
pub(crate) fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (Debian's etcd-client)");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write etcdctl's stdin");
    drop(input);
    let output = child.wait_with_output().expect("etcdctl finishes");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        // clientv3 logs each retry as JSON with a time stamp.
        if line.starts_with("{\"level\"") {
            continue;
        }
        text.push_str("! ");
        text.push_str(line);
        text.push('\n');
    }
    if !output.status.success() {
        text.push_str(&format!("exit {:?}\n", output.status.code()));
    }
    text
}

/// A transcript of commands and their output.
struct Transcript<'a> {
    endpoint: &'a str,
    lines: Vec<String>,
    /// Text replaced by a placeholder (lease ids).
    placeholders: Vec<(String, String)>,
    /// Words replaced by a placeholder where they stand alone (revisions).
    words: Vec<(String, String)>,
}

impl<'a> Transcript<'a> {
    fn new(endpoint: &'a str) -> Transcript<'a> {
        Transcript {
            endpoint,
            lines: Vec::new(),
            placeholders: Vec::new(),
            words: Vec::new(),
        }
    }

    fn run_with(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let mut output = etcdctl(self.endpoint, args, stdin);
        for (text, placeholder) in &self.placeholders {
            output = output.replace(text, placeholder);
        }
        let mut shown: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for (text, placeholder) in &self.placeholders {
            shown = shown.iter().map(|a| a.replace(text, placeholder)).collect();
        }
        let word = |word: &str| {
            self.words
                .iter()
                .find(|(text, _)| text == word)
                .map_or(word.to_owned(), |(_, placeholder)| placeholder.clone())
        };
        let shown: Vec<String> = shown.iter().map(|a| word(a)).collect();
        let output = output
            .lines()
            .map(|line| line.split(' ').map(word).collect::<Vec<_>>().join(" ") + "\n")
            .collect::<String>();
        self.lines.push(format!("$ etcdctl {}", shown.join(" ")));
        self.lines.extend(output.lines().map(str::to_owned));
        output
    }

    fn run(&mut self, args: &[&str]) -> String {
        self.run_with(args, None)
    }

    /// Grants a lease; its id (hex, as etcdctl prints it) becomes `name`.
    fn grant(&mut self, ttl: &str, name: &str) -> String {
        let output = etcdctl(self.endpoint, &["lease", "grant", ttl], None);
        // "lease 694d7a6c6b8e2b04 granted with TTL(60s)"
        let id = output
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no lease id in {output:?}"))
            .to_owned();
        self.placeholders.push((id.clone(), name.to_owned()));
        // `-w fields` prints it in decimal.
        let decimal = i64::from_str_radix(&id, 16).expect("a hex lease id");
        self.placeholders
            .push((format!(": {decimal}"), format!(": {name}")));
        self.lines.push(format!("$ etcdctl lease grant {ttl}"));
        self.lines.push(output.trim().replace(&id, name));
        id
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Keys, ranges, sorting, limits, puts with their flags, deletes and
/// transactions, leases: what `etcdctl` can ask of KV and Lease.
fn kv_and_lease_scenario(endpoint: &str) -> String {
    let mut t = Transcript::new(endpoint);
    for (key, value) in [("a", "3"), ("b", "1"), ("c", "2"), ("d/x", "4")] {
        t.run(&["put", key, value]);
    }
    t.run(&["get", "a"]);
    t.run(&["get", "missing"]);
    t.run(&["get", "a", "c"]);
    t.run(&["get", "b", "--from-key"]);
    t.run(&["get", "", "--prefix", "--keys-only"]);
    t.run(&["get", "d/", "--prefix"]);
    t.run(&["get", "", "--prefix", "--limit", "2"]);
    t.run(&[
        "get",
        "",
        "--prefix",
        "--sort-by",
        "VALUE",
        "--order",
        "DESCEND",
    ]);
    t.run(&[
        "get",
        "",
        "--prefix",
        "--sort-by",
        "KEY",
        "--order",
        "DESCEND",
        "--limit",
        "1",
    ]);
    t.run(&["get", "", "--prefix", "--count-only", "-w", "json"])
        .contains("\"count\":4");
    t.run(&["put", "a", "30", "--prev-kv"]);
    t.run(&["get", "a", "-w", "fields"]);
    t.run(&["put", "b", "--ignore-value"]);
    t.run(&["put", "b", "x", "--ignore-value"]);
    t.run(&["put", "nothing", "--ignore-value"]);
    t.run(&["get", "b"]);
    t.run(&["del", "c", "--prev-kv"]);
    t.run(&["del", "c"]);
    t.run(&["del", "a", "b"]);
    t.run(&["get", "", "--prefix"]);
    // Transactions: compares on value, version, revision, lease; both
    // branches; etcd's duplicate-key rule.
    t.run_with(
        &["txn"],
        Some("value(\"d/x\") = \"4\"\nversion(\"d/x\") = \"1\"\n\nput d/y 5\nget d/ --prefix\n\nput d/z 6\n\n"),
    );
    t.run_with(
        &["txn"],
        Some("value(\"d/x\") > \"9\"\n\nput d/y 7\n\nget d/y\ndel d/y --prev-kv\n\n"),
    );
    t.run_with(&["txn"], Some("\nput k 1\nput k 2\n\n\n"));
    t.run_with(&["txn"], Some("\ndel k0 k9\nput k5 1\n\n\n"));
    t.run_with(
        &["txn"],
        Some("mod(\"missing\") = \"0\"\ncreate(\"missing\") = \"0\"\n\nput m 1\n\n\n"),
    );
    // Leases.
    let lease = t.grant("60", "<lease>");
    t.run(&["put", "leased", "v", "--lease", &lease]);
    t.run(&["get", "leased", "-w", "fields"]);
    t.run(&["lease", "timetolive", &lease, "--keys"]);
    t.run(&["lease", "keep-alive", "--once", &lease]);

    t.run(&["put", "b", "y", "--ignore-lease"]);
    t.run(&["put", "leased", "w", "--ignore-lease"]);
    t.run(&["get", "leased", "-w", "fields"]);
    t.run(&["lease", "revoke", &lease]);
    t.run(&["get", "leased"]);
    t.run(&["lease", "timetolive", &lease]);
    t.run(&["lease", "revoke", &lease]);
    t.run(&["lease", "keep-alive", "--once", &lease]);
    t.run(&["put", "k", "v", "--lease", "1234abcd"]);
    // History: reads at past revisions, then compaction. The revisions
    // (which may differ) become placeholders.
    let first = put_revision(t.endpoint, &["h", "1"]);
    t.words.push((first.to_string(), "<first>".to_owned()));
    t.run(&["put", "h", "2"]);
    t.run(&["del", "h"]);
    let second = (first + 1).to_string();
    t.words.push((second.clone(), "<first+1>".to_owned()));
    let future = (first + 100).to_string();
    t.words.push((future.clone(), "<first+100>".to_owned()));
    let first = first.to_string();
    t.run(&["get", "h", "--rev", &first]);
    t.run(&["get", "h", "--rev", &second]);
    t.run(&["get", "h", "--rev", &future]);
    t.run(&["get", "h"]);
    t.run(&["compaction", &second]);
    t.run(&["get", "h", "--rev", &first]);
    t.run(&["get", "h", "--rev", &second]);
    t.run(&["compaction", &first]);
    t.run(&["compaction", &future]);
    t.run(&["del", "", "--prefix"]);
    t.text()
}

/// Only the lines that both servers print alike: the header fields of
/// `-w fields` (ids, revisions) differ by design and are dropped.
fn comparable(transcript: &str) -> String {
    transcript
        .lines()
        .filter(|line| {
            ![
                "\"ClusterID\"",
                "\"MemberID\"",
                "\"Revision\"",
                "\"RaftTerm\"",
                "\"CreateRevision\"",
                "\"ModRevision\"",
            ]
            .iter()
            .any(|field| line.starts_with(field))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same(ours: &str, etcd: &str) {
    let (ours, etcd) = (comparable(ours), comparable(etcd));
    if ours != etcd {
        for (n, (a, b)) in ours.lines().zip(etcd.lines()).enumerate() {
            assert_eq!(a, b, "line {n} differs; kvserver:\n{ours}\n\netcd:\n{etcd}");
        }
        assert_eq!(ours, etcd);
    }
}

fn url(server: &Server) -> String {
    format!("http://{}", server.addr())
}

#[test]
fn etcdctl_reads_writes_transactions_and_leases_as_on_etcd() {
    let etcd = EtcdCluster::single();
    let reference = kv_and_lease_scenario(&etcd.url(0));
    // The scenario checks itself on etcd: these lines are etcd's.
    for expected in [
        "$ etcdctl get a c\na\n3\nb\n1",
        "$ etcdctl get  --prefix --sort-by VALUE --order DESCEND\nd/x\n4\na\n3\nc\n2\nb\n1",
        "! Error: etcdserver: duplicate key given in txn request",
        "! Error: etcdserver: key not found",
        "! Error: etcdserver: requested lease not found",
        "lease <lease> already expired",
        "lease <lease> keepalived with TTL(60)",
        "$ etcdctl get h --rev <first>\nh\n1",
        "$ etcdctl get h --rev <first+1>\nh\n2",
        "$ etcdctl get h --rev <first+100>\n! Error: etcdserver: mvcc: required revision is a future revision",
        "$ etcdctl compaction <first+1>\ncompacted revision <first+1>",
        "$ etcdctl get h --rev <first>\n! Error: etcdserver: mvcc: required revision has been compacted",
    ] {
        assert!(
            reference.contains(expected),
            "{expected:?} not in:\n{reference}"
        );
    }

    let memory = Server::start();
    assert_same(&kv_and_lease_scenario(&url(&memory)), &reference);

    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &[]);
    assert_same(&kv_and_lease_scenario(&url(&disk)), &reference);

    // Through a gateway: the same answers, the keys inside etcd under the
    // prefix.
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw/"]);
    let before = etcd.etcdctl(&["get", "", "--prefix", "--keys-only"]);
    assert!(before.trim().is_empty(), "the scenario cleans up: {before}");
    let ours = kv_and_lease_scenario(&url(&through));
    assert_same(&ours, &reference);
    etcdctl(&url(&through), &["put", "seen", "1"], None);
    assert_eq!(
        etcd.etcdctl(&["get", "gw/seen", "--print-value-only"])
            .trim(),
        "1"
    );
}

/// `etcdctl watch` until it printed `lines` lines (or the deadline).
fn watch_lines(endpoint: &str, args: &[&str], lines: usize, within: Duration) -> Vec<String> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while seen.len() < lines {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// The revision of a put (`args`: key, value, flags), from etcdctl's JSON.
fn put_revision(endpoint: &str, args: &[&str]) -> u64 {
    let mut command = vec!["put"];
    command.extend(args);
    command.extend(["-w", "json"]);
    let output = etcdctl(endpoint, &command, None);
    let json: serde_json::Value = serde_json::from_str(&output).expect(&output);
    json["header"]["revision"].as_u64().expect("a revision")
}

/// Watches from a past revision over a range, and of a key whose lease
/// expires under the watch.
fn watch_scenario(endpoint: &str) -> Vec<String> {
    let first = put_revision(endpoint, &["w/a", "1"]);
    etcdctl(endpoint, &["put", "w/b", "2"], None);
    etcdctl(endpoint, &["del", "w/a"], None);
    etcdctl(endpoint, &["put", "other", "3"], None);
    let from = first.to_string();
    let mut seen = watch_lines(
        endpoint,
        &["--prefix", "w/", "--rev", &from],
        9,
        Duration::from_secs(10),
    );
    // A lease that expires under a watch: its key's deletion is seen.
    let grant = etcdctl(endpoint, &["lease", "grant", "2"], None);
    let lease = grant.split_whitespace().nth(1).unwrap().to_owned();
    let leased = put_revision(endpoint, &["w/leased", "v", "--lease", &lease]);
    seen.push("--".into());
    seen.extend(watch_lines(
        endpoint,
        &["w/leased", "--rev", &leased.to_string()],
        6,
        Duration::from_secs(15),
    ));
    seen
}

#[test]
fn etcdctl_watches_replay_history_and_see_a_lease_expire_as_on_etcd() {
    let etcd = EtcdCluster::single();
    let reference = watch_scenario(&etcd.url(0));
    assert_eq!(
        reference,
        [
            "PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a", "", "--", "PUT", "w/leased",
            "v", "DELETE", "w/leased", ""
        ],
        "etcd's own answers"
    );
    let memory = Server::start();
    assert_eq!(watch_scenario(&url(&memory)), reference);
}

#[test]
fn etcdctl_sees_a_one_member_cluster_with_a_stable_member_id() {
    let dir = tempfile::tempdir().unwrap();
    let member_id = |server: &Server| {
        // host:port, not a URL: etcdctl 3.4 sends an endpoint's URL as the
        // HTTP/2 authority for this command, which kvserver's HTTP/2 stack
        // refuses (docs/ETCD.md).
        let output = etcdctl(server.addr(), &["endpoint", "status", "-w", "json"], None);
        let json: serde_json::Value = serde_json::from_str(&output).expect(&output);
        let status = &json[0]["Status"];
        assert_eq!(status["version"], "3.4.23", "{output}");
        assert_eq!(status["leader"], status["header"]["member_id"], "{output}");
        status["header"]["member_id"].as_u64().expect("a member id")
    };
    let server = Server::start_on_disk(dir.path(), &[]);
    let id = member_id(&server);
    let members = etcdctl(&url(&server), &["member", "list"], None);
    assert_eq!(
        members.trim(),
        format!("{id:x}, started, kvserver, , {}, false", url(&server))
    );
    let alarms = etcdctl(&url(&server), &["alarm", "list"], None);
    assert_eq!(alarms, "");
    drop(server);
    let again = Server::start_on_disk(dir.path(), &[]);
    assert_eq!(
        member_id(&again),
        id,
        "the member id belongs to the data dir"
    );
    let refused = etcdctl(
        &url(&again),
        &["member", "add", "x", "--peer-urls", "http://127.0.0.1:1"],
        None,
    );
    assert!(
        refused.contains("kvserver: Cluster.MemberAdd is not supported"),
        "{refused}"
    );
    let compaction = etcdctl(&url(&again), &["compaction", "1"], None);
    assert!(compaction.contains("compacted revision 1"), "{compaction}");
}

#[test]
fn etcdctl_logs_in_with_a_token_as_password_and_keeps_its_role_and_prefix() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "reader-1 read\nwriter-2 readwrite\napp-3 readwrite app/\n",
    )
    .unwrap();
    let server = Server::start_with(&["--auth-token-file", file.path().to_str().unwrap()]);
    let endpoint = url(&server);
    let as_user = |password: &str, args: &[&str]| {
        let mut all = vec!["--user", "someone", "--password", password];
        all.extend(args);
        etcdctl(&endpoint, &all, None)
    };
    assert_eq!(as_user("writer-2", &["put", "a", "1"]), "OK\n");
    assert_eq!(as_user("reader-1", &["get", "a"]), "a\n1\n");
    let denied = as_user("reader-1", &["put", "a", "2"]);
    assert!(
        denied.contains("PermissionDenied") || denied.contains("may only read"),
        "{denied}"
    );
    assert_eq!(as_user("app-3", &["put", "app/x", "1"]), "OK\n");
    let outside = as_user("app-3", &["put", "a", "3"]);
    assert!(
        outside.contains("may only use keys that start with"),
        "{outside}"
    );
    let wrong = as_user("nope", &["get", "a"]);
    assert!(
        wrong.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{wrong}"
    );
    let anonymous = etcdctl(&endpoint, &["get", "a"], None);
    assert!(anonymous.contains("needs a token"), "{anonymous}");
    // A lease with a key outside the prefix is not the prefix token's to
    // keep alive, revoke or list; one with its keys inside is.
    let lease_of = |granted: String| {
        granted
            .split_whitespace()
            .nth(1)
            .expect("lease <id> granted")
            .to_owned()
    };
    let theirs = lease_of(as_user("writer-2", &["lease", "grant", "60"]));
    as_user("writer-2", &["put", "app/y", "1", "--lease", &theirs]);
    as_user("writer-2", &["put", "b", "1", "--lease", &theirs]);
    for args in [
        vec!["lease", "keep-alive", "--once", &theirs],
        vec!["lease", "revoke", &theirs],
    ] {
        let denied = as_user("app-3", &args);
        assert!(
            denied.contains("outside the prefix \"app/\""),
            "{args:?}: {denied}"
        );
    }
    assert_eq!(
        as_user("writer-2", &["get", "b", "--print-value-only"]),
        "1\n"
    );
    // Nor are its keys listed: etcd 3.5 refuses a LeaseTimeToLive with
    // keys to a user who may not read every one (checkLeaseTimeToLive),
    // with its own words; the TTL alone is answered.
    let listed = as_user("app-3", &["lease", "timetolive", &theirs, "--keys"]);
    assert!(listed.contains("etcdserver: permission denied"), "{listed}");
    let ttl = as_user("app-3", &["lease", "timetolive", &theirs]);
    assert!(ttl.contains("remaining"), "{ttl}");
    let mine = lease_of(as_user("app-3", &["lease", "grant", "60"]));
    as_user("app-3", &["put", "app/z", "1", "--lease", &mine]);
    let alive = as_user("app-3", &["lease", "keep-alive", "--once", &mine]);
    assert!(alive.contains("keepalived"), "{alive}");
    let listed = as_user("app-3", &["lease", "timetolive", &mine, "--keys"]);
    assert!(listed.contains("attached keys([app/z])"), "{listed}");
    let revoked = as_user("app-3", &["lease", "revoke", &mine]);
    assert!(revoked.contains("revoked"), "{revoked}");
    // Without a token file, etcd's clients that log in are told so, as etcd
    // tells them, and go on without a token.
    let open = Server::start();
    let logged_in = etcdctl(
        &url(&open),
        &["--user", "x", "--password", "y", "put", "k", "v"],
        None,
    );
    assert_eq!(logged_in, "OK\n");
}
