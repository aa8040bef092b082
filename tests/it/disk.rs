//! The disk backend through the real binary: what is acknowledged survives a
//! restart, and a data dir that cannot be used is refused with one clear line,
//! a non-zero exit, and nothing in it changed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use keyvalue::proto::simplekeyvalue::SetRequest;
use tonic::Code;

use crate::harness::{Server, get, kvserver, set, wait_with_patience};

/// Runs a kvserver on `data_dir` that is expected to refuse to start.
fn refused_start(data_dir: &Path) -> Output {
    let mut child = kvserver()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kvserver");
    // A server that starts after all is stopped, so that the test fails
    // with what it logged instead of waiting for it for good.
    if wait_with_patience(&mut child).is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("kvserver's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    output
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    set(&mut client, "weather", "rain").await;
    set(&mut client, "city", "Lisbon").await;
    drop(client);
    assert!(server.stop("TERM").await.status.success());

    let server = Server::start_on_disk(dir.path(), &[]);
    let mut client = server.client().await;
    assert_eq!(get(&mut client, "weather").await.unwrap(), "rain");
    assert_eq!(get(&mut client, "city").await.unwrap(), "Lisbon");
    assert_eq!(
        get(&mut client, "never-set").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn interval_sync_keeps_writes_through_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    // An interval far longer than the test: only the flush at shutdown can
    // have made the write durable.
    let server = Server::start_on_disk(dir.path(), &["--sync", "interval=3600000"]);
    let mut client = server.client().await;
    set(&mut client, "k", "kept").await;
    drop(client);
    assert!(server.stop("TERM").await.status.success());

    let server = Server::start_on_disk(dir.path(), &[]);
    let mut client = server.client().await;
    assert_eq!(get(&mut client, "k").await.unwrap(), "kept");
}

#[tokio::test]
async fn disk_is_the_default_backend_in_kvdata() {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = kvserver();
    command
        .current_dir(cwd.path())
        .args(["--listen", "127.0.0.1:0"]);
    let server = Server::spawn(command).expect("kvserver with defaults");
    let mut client = server.client().await;
    set(&mut client, "k", "v").await;
    assert!(cwd.path().join("kvdata").join("keyvalue.redb").is_file());
}

#[test]
fn a_bad_sync_flag_is_a_usage_error() {
    let output = kvserver()
        .args(["--listen", "127.0.0.1:0", "--sync", "sometimes"])
        .output()
        .expect("run kvserver");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("interval=<ms>"));
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_and_its_owner_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Server::start_on_disk(dir.path(), &[]);
    let mut client = owner.client().await;
    set(&mut client, "k", "before").await;

    let output = refused_start(dir.path());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    assert_eq!(get(&mut client, "k").await.unwrap(), "before");
    set(&mut client, "k", "after").await;
    assert_eq!(get(&mut client, "k").await.unwrap(), "after");
}

#[test]
fn a_directory_that_is_not_ours_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.tex"), "precious").unwrap();
    let stderr = stderr_of(&refused_start(dir.path()));
    assert!(stderr.contains("not empty"), "{stderr}");
    assert!(stderr.contains("thesis.tex"), "{stderr}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["thesis.tex"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("thesis.tex")).unwrap(),
        "precious"
    );
}

/// Writes 200 keys of 500 bytes to a new data dir (enough that the middle
/// of the file holds records), then stops the server cleanly.
async fn stopped_with_200_keys(data_dir: &Path) {
    let server = Server::start_on_disk(data_dir, &[]);
    let mut client = server.client().await;
    for i in 0..200 {
        set(&mut client, &format!("key{i}"), &"v".repeat(500)).await;
    }
    drop(client);
    assert!(server.stop("TERM").await.status.success());
}

/// Damages every 4 KiB page of `file` that holds one of
/// `stopped_with_200_keys`' values, and so the live records among them. A
/// page picked by its place (the middle of the file) may be free, and its
/// damage harmless: redb checks only the pages it uses, and which pages
/// are free varies from run to run.
fn damage_the_pages_of_values(file: &mut [u8]) {
    let holds_a_value = |page: &[u8]| {
        let mut run = 0;
        page.iter().any(|byte| {
            run = if *byte == b'v' { run + 1 } else { 0 };
            run == 500
        })
    };
    let mut damaged = 0;
    for page in file.chunks_mut(4096) {
        if holds_a_value(page) {
            page.iter_mut().for_each(|byte| *byte ^= 0x55);
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no page holds a value");
}

#[tokio::test]
async fn a_corrupt_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    stopped_with_200_keys(dir.path()).await;
    let file = dir.path().join("keyvalue.redb");
    let good = std::fs::read(&file).unwrap();

    // A damaged header, damaged records, and a file cut in half: all refused.
    let mut damaged_header = good.clone();
    damaged_header[64..200]
        .iter_mut()
        .for_each(|byte| *byte ^= 0xff);
    let mut damaged_records = good.clone();
    damage_the_pages_of_values(&mut damaged_records);
    let middle = good.len() / 2;
    let truncated = good[..middle].to_vec();
    for damaged in [damaged_header, damaged_records, truncated] {
        std::fs::write(&file, &damaged).unwrap();
        let stderr = stderr_of(&refused_start(dir.path()));
        assert!(stderr.contains("refusing to start"), "{stderr}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            damaged,
            "the file was changed"
        );
    }
}

/// A disk server on `data_dir` that logs at debug level (to see how it
/// opened its database).
fn start_logging_debug(data_dir: &Path) -> Server {
    let mut command = kvserver();
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "keyvalue=debug");
    Server::spawn(command).unwrap_or_else(|output| panic!("kvserver did not start: {output}"))
}

const TRUSTED: &str = "closed cleanly and is unchanged since";

#[tokio::test]
async fn a_clean_restart_skips_the_whole_file_check_only_for_the_untouched_file() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("keyvalue.clean");
    let file = dir.path().join("keyvalue.redb");
    let server = Server::start_on_disk(dir.path(), &[]);
    set(&mut server.client().await, "weather", "sunny").await;
    assert!(!clean.exists(), "a running server leaves no record");
    assert!(server.stop("TERM").await.status.success());
    assert!(clean.exists(), "a clean stop records itself");

    // Untouched since: trusted, and the record is used up.
    let server = start_logging_debug(dir.path());
    server.wait_for_log_line(TRUSTED);
    assert!(!clean.exists());
    assert_eq!(
        get(&mut server.client().await, "weather").await.unwrap(),
        "sunny"
    );
    assert!(server.stop("TERM").await.status.success());

    // The same bytes written back: the file changed, so it is read whole.
    std::fs::write(&file, std::fs::read(&file).unwrap()).unwrap();
    let server = start_logging_debug(dir.path());
    assert_eq!(
        get(&mut server.client().await, "weather").await.unwrap(),
        "sunny"
    );
    let stopped = server.stop("TERM").await;
    assert!(stopped.status.success());
    assert!(
        !stopped.stderr.iter().any(|line| line.contains(TRUSTED)),
        "{:?}",
        stopped.stderr
    );

    // A crash leaves no record: the next start verifies.
    let server = Server::start_on_disk(dir.path(), &[]);
    set(&mut server.client().await, "weather", "rain").await;
    let crashed = server.stop("KILL").await;
    assert!(!crashed.status.success());
    assert!(!clean.exists());
    let server = start_logging_debug(dir.path());
    assert_eq!(
        get(&mut server.client().await, "weather").await.unwrap(),
        "rain"
    );
    let stopped = server.stop("TERM").await;
    assert!(!stopped.stderr.iter().any(|line| line.contains(TRUSTED)));
}

#[tokio::test]
async fn kvserver_check_verifies_a_stopped_data_dir_and_names_damage() {
    let dir = tempfile::tempdir().unwrap();
    stopped_with_200_keys(dir.path()).await;
    let check = || {
        kvserver()
            .arg("check")
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run kvserver check")
    };
    let sound = check();
    let stdout = String::from_utf8_lossy(&sound.stdout);
    assert_eq!(sound.status.code(), Some(0), "{}", stderr_of(&sound));
    assert!(stdout.contains("every page verified"), "{stdout}");
    assert!(stdout.contains("revision 201"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let file = dir.path().join("keyvalue.redb");
    let mut damaged = std::fs::read(&file).unwrap();
    damage_the_pages_of_values(&mut damaged);
    std::fs::write(&file, &damaged).unwrap();
    let refused = check();
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        damaged,
        "the file was changed"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyvalue.redb");
    std::fs::write(&file, "name,value\nweather,sunny\n").unwrap();
    let stderr = stderr_of(&refused_start(dir.path()));
    assert!(stderr.contains("keyvalue.redb"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "name,value\nweather,sunny\n"
    );
}

/// Whether this process runs as root (the test then drops to `nobody`, since
/// root ignores file permissions, and can mount a small tmpfs).
fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

#[test]
fn a_data_dir_without_permission_is_a_clear_error() {
    let parent = tempfile::tempdir().unwrap();
    let locked = parent.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_dir = locked.join("data");
    // Kept until the end: `nobody` runs the binary from here.
    let shared = tempfile::tempdir().unwrap();
    let mut command = if running_as_root() {
        // Root may enter any directory; `nobody` may not enter root's 0700
        // one. `nobody` may not reach the build directory either, so it runs
        // a copy of the binary from a directory anyone may enter.
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary = shared.path().join("kvserver");
        std::fs::copy(env!("CARGO_BIN_EXE_kvserver"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary);
        command
    } else {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        kvserver()
    };
    let output = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run kvserver");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A small tmpfs, unmounted when dropped.
struct SmallFileSystem {
    mount_point: tempfile::TempDir,
}

impl SmallFileSystem {
    /// Mounts a tmpfs of `size` (e.g. "8m"), if this process may mount.
    fn mount(size: &str) -> Option<SmallFileSystem> {
        let mount_point = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point.path())
            .output()
            .is_ok_and(|output| output.status.success());
        mounted.then_some(SmallFileSystem { mount_point })
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test]
async fn a_full_disk_is_resource_exhausted_loses_nothing_and_recovers() {
    if !running_as_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let Some(small) = SmallFileSystem::mount("8m") else {
        eprintln!("skipped: this machine refuses to mount a tmpfs");
        return;
    };
    let server = Server::start_on_disk(&small.path().join("data"), &[]);
    let mut client = server.client().await;
    set(&mut client, "kept", "stored before the disk filled").await;

    let filler = small.path().join("filler");
    fill(&filler);
    let status = client
        .set(SetRequest {
            key: "new".into(),
            value: "x".repeat(10_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("full"), "{}", status.message());
    assert_eq!(
        get(&mut client, "kept").await.unwrap(),
        "stored before the disk filled"
    );
    assert_eq!(
        get(&mut client, "new").await.unwrap_err().code(),
        Code::NotFound
    );

    std::fs::remove_file(&filler).unwrap();
    set(&mut client, "new", "after space returned").await;
    assert_eq!(
        get(&mut client, "new").await.unwrap(),
        "after space returned"
    );
    assert_eq!(
        get(&mut client, "kept").await.unwrap(),
        "stored before the disk filled"
    );
    drop(client);
    assert!(server.stop("TERM").await.status.success());
}

#[tokio::test]
async fn a_healthy_database_on_a_read_only_file_system_says_so() {
    if !running_as_root() {
        eprintln!("skipped: mounting a file system needs root");
        return;
    }
    let file_system = SmallFileSystem::mount("16m").expect("mount a tmpfs");
    let data_dir = file_system.path().join("data");
    {
        let server = Server::start_on_disk(&data_dir, &[]);
        set(&mut server.client().await, "k", "v").await;
        assert!(server.stop("TERM").await.status.success());
    }
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(file_system.path())
        .status()
        .expect("run mount");
    assert!(remounted.success());
    let stderr = stderr_of(&refused_start(&data_dir));
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(!stderr.contains("not a readable"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
