//! The runner of executable docs: every shell, Python and Ruby example in
//! README.md and docs/*.md runs against a real kvserver, and what a console
//! transcript says a command prints is checked.
//!
//! A small runner of fenced blocks rather than `trycmd`: the docs' examples
//! are shell (pipes, `$(...)`, variables from one line used in the next, a
//! venv to activate, a server to start), which trycmd does not run, and
//! they must reach a server the runner started on a free port. How to write
//! a block that runs, and the markers for the few that cannot, are in
//! docs/ARCHITECTURE.md ("Docs that run").
//!
//! One file is one session: one temporary working directory (holding links
//! to the repository's `clients`, `deploy`, `.venv` ...), one kvserver
//! (`--backend memory`, with its HTTP listener on) started before its first block, the blocks run in
//! order, and the environment (exported variables, `cd`) carried from one
//! block to the next, as in a reader's terminal.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_process::EtcdCluster;
use crate::harness::Server;

/// The address every doc uses for the server; the runner puts the real one
/// in its place (and `localhost:50051` likewise).
const DOC_ADDR: &str = "127.0.0.1:50051";
/// The address every doc uses for the server's HTTP listener
/// (`--http-listen`); the runner puts the one the server announced (`http on
/// URL`) in its place (and `localhost:8080` likewise).
const DOC_HTTP: &str = "127.0.0.1:8080";
/// The address docs use for an etcd member (with `<!-- doc-test: etcd -->`).
const DOC_ETCD: &str = "127.0.0.1:2379";
/// The marker comment, on the line before a fence.
const MARKER: &str = "<!-- doc-test:";
/// Longest a block may run.
const BLOCK_PATIENCE: Duration = Duration::from_secs(60);
/// Separates the output of one console command from the next's: a line of
/// its own, with the command's exit status after it.
const SEPARATOR: &str = "\u{1e}doc-test-status ";

/// What a marker says of the block after it.
#[derive(Debug, PartialEq)]
pub(crate) enum Marker {
    /// No marker: run it.
    Run,
    /// `skip REASON`: not run here (a real host, `/etc`, systemd).
    Skip(String),
    /// `server`: the block's one command starts a kvserver, in the
    /// background, that serves the blocks after it.
    Server,
}

/// A fenced block of a doc.
#[derive(Debug)]
pub(crate) struct Block {
    /// The line of the opening fence (1-based).
    pub(crate) line: usize,
    /// The fence's language (`console`, `sh`, `python` ...).
    pub(crate) lang: String,
    pub(crate) marker: Marker,
    /// The block's lines, each with its line number in the file.
    pub(crate) body: Vec<(usize, String)>,
}

/// Languages the runner runs; other blocks (`text`, `toml`, `proto` ...)
/// are not examples of something to run.
const RUN: [&str; 6] = ["console", "sh", "bash", "shell", "python", "ruby"];

/// The fenced blocks of a markdown text, with their markers. A marker that
/// does not stand right before a fence, or is unknown, is an error.
pub(crate) fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut marker: Option<(usize, Marker)> = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(MARKER) {
            let Some(words) = rest.trim().strip_suffix("-->") else {
                return Err(format!("line {number}: a marker is one line: {line}"));
            };
            let words = words.trim();
            let parsed = match words.split_once(' ').unwrap_or((words, "")) {
                ("skip", reason) if !reason.trim().is_empty() => {
                    Marker::Skip(reason.trim().to_owned())
                }
                ("skip", _) => return Err(format!("line {number}: `skip` needs a reason")),
                ("server", "") => Marker::Server,
                // The file's etcd: read by `etcd_wanted`, not a block's.
                ("etcd", "") => continue,
                _ => return Err(format!("line {number}: unknown marker {words:?}")),
            };
            marker = Some((number, parsed));
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            if let Some((at, _)) = &marker
                && !line.trim().is_empty()
            {
                return Err(format!(
                    "line {at}: a marker must come right before a fence"
                ));
            }
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut body = Vec::new();
        let mut closed = false;
        for (number, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            let unindented = line.get(indent.min(line.len())..).unwrap_or(line);
            body.push((number, unindented.to_owned()));
        }
        if !closed {
            return Err(format!("line {number}: the block is never closed"));
        }
        let lang = info.split_whitespace().next().unwrap_or("").to_owned();
        let marker = marker.take().map_or(Marker::Run, |(_, marker)| marker);
        if marker == Marker::Server && lang != "console" {
            return Err(format!(
                "line {number}: a `server` block is a console block"
            ));
        }
        blocks.push(Block {
            line: number,
            lang,
            marker,
            body,
        });
    }
    match marker {
        Some((at, _)) => Err(format!("line {at}: a marker with no block after it")),
        None => Ok(blocks),
    }
}

/// Whether the file asks for an etcd member (`<!-- doc-test: etcd -->`).
fn etcd_wanted(text: &str) -> bool {
    text.lines()
        .any(|line| line.trim() == format!("{MARKER} etcd -->"))
}

/// One command of a console block, and what it should print.
#[derive(Debug, PartialEq)]
pub(crate) struct Step {
    /// The line of its `$ `.
    pub(crate) line: usize,
    /// The command, continuation lines (after a trailing `\`) included.
    pub(crate) command: String,
    /// The expected output (stdout and stderr, as a terminal shows them).
    pub(crate) expected: Vec<String>,
}

/// A console block's commands (`$ ` lines, continued by a trailing `\`)
/// and the lines each prints.
pub(crate) fn steps(body: &[(usize, String)]) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for (number, line) in body {
        if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: *number,
                command: command.to_owned(),
                expected: Vec::new(),
            });
            continued = command.ends_with('\\');
        } else {
            match steps.last_mut() {
                Some(step) => step.expected.push(line.clone()),
                None => {
                    return Err(format!(
                        "line {number}: output before any `$ ` command: {line:?}"
                    ));
                }
            }
        }
    }
    Ok(steps)
}

/// Whether `actual` lines match `expected`: a line `...` stands for any
/// number of lines, and `[..]` within a line for any text (as in trycmd).
pub(crate) fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && matches(rest, more)),
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A doc being run: its directory, its server, and what carries over from
/// one block to the next.
struct Session {
    file: String,
    dir: tempfile::TempDir,
    server: Server,
    etcd: Option<EtcdCluster>,
    /// Exported variables and the working directory, as the last block
    /// left them (a script bash sources).
    state: PathBuf,
    failures: Vec<String>,
}

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What of the repository a doc may name by a relative path.
const LINKED: [&str; 9] = [
    ".venv",
    "clients",
    "deploy",
    "docs",
    "proto",
    "scripts",
    "tests",
    "Cargo.toml",
    "README.md",
];

/// Runs every block of `file` (relative to the repository's root); fails
/// with every failing block, each named by file and line.
pub(crate) fn run_doc(file: &str) {
    let text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    let mut blocks = blocks(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    // A client README's Python or Ruby examples are run by that client's
    // own tests (clients/python/tests/test_readme.py,
    // clients/ruby/test/readme_test.rb); here, its shell examples.
    if file.starts_with("clients/") {
        blocks.retain(|block| !matches!(block.lang.as_str(), "python" | "ruby"));
    }
    let venv = root().join(".venv/bin/python");
    let needs_venv = blocks
        .iter()
        .any(|b| b.marker == Marker::Run && b.lang == "python");
    assert!(
        !needs_venv || venv.exists(),
        "{file} has Python examples, which run with {}: run scripts/test once to create it",
        venv.display()
    );
    let dir = tempfile::tempdir().expect("a working directory");
    for name in LINKED {
        let target = root().join(name);
        if target.exists() {
            std::os::unix::fs::symlink(&target, dir.path().join(name)).expect("link");
        }
    }
    let state = dir.path().join(".doc-test-state");
    let mut session = Session {
        file: file.to_owned(),
        server: Server::start_with(&["--http-listen", "127.0.0.1:0"]),
        etcd: etcd_wanted(&text).then(EtcdCluster::single),
        state,
        dir,
        failures: Vec::new(),
    };
    for block in &blocks {
        if !RUN.contains(&block.lang.as_str()) {
            continue;
        }
        match &block.marker {
            Marker::Skip(_) => {}
            Marker::Server => session.start_server(block),
            Marker::Run if block.lang == "console" => session.console(block),
            Marker::Run => session.script(block),
        }
    }
    assert!(
        session.failures.is_empty(),
        "{} example(s) in {file} do not work as written:\n\n{}",
        session.failures.len(),
        session.failures.join("\n\n")
    );
}

impl Session {
    fn fail(&mut self, line: usize, what: String) {
        self.failures.push(format!("{}:{line}: {what}", self.file));
    }

    /// `text` with the docs' addresses replaced by the real ones.
    fn substitute(&self, text: &str) -> String {
        let port = self.server.addr().rsplit(':').next().unwrap_or_default();
        let mut text = text
            .replace(DOC_ADDR, self.server.addr())
            .replace("localhost:50051", &format!("localhost:{port}"));
        if let Some(http) = self.http_addr() {
            let http_port = http.rsplit(':').next().unwrap_or_default();
            text = text
                .replace(DOC_HTTP, &http)
                .replace("localhost:8080", &format!("localhost:{http_port}"));
        }
        if let Some(etcd) = &self.etcd {
            let url = etcd.url(0);
            text = text.replace(DOC_ETCD, url.trim_start_matches("http://"));
        }
        text
    }

    /// The address the server announced for HTTP (`http on URL`), if it
    /// serves HTTP.
    fn http_addr(&self) -> Option<String> {
        self.server.stderr_lines().iter().find_map(|line| {
            let url = line.strip_prefix("http on ")?;
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))?;
            Some(rest.trim_end_matches('/').to_owned())
        })
    }

    /// A bash process in the session's directory and environment.
    fn bash(&self) -> Command {
        let mut command = Command::new("bash");
        let bin = Path::new(env!("CARGO_BIN_EXE_kv"))
            .parent()
            .expect("the binaries' directory");
        let path = std::env::var("PATH").unwrap_or_default();
        // `kv-rb` too, where an installed gem would put it.
        let ruby = root().join("clients/ruby/exe");
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env(
                "PATH",
                format!("{}:{}:{path}", bin.display(), ruby.display()),
            )
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("KV_ADDR", self.server.addr())
            .stdin(Stdio::null())
            // Its own process group, so that whatever it leaves running
            // (`&`) is stopped with it.
            .process_group(0);
        command
    }

    /// Runs `script` in bash (after the state the last block left, and
    /// saving the state it leaves); returns its exit status and output, or
    /// `None` if it ran past [`BLOCK_PATIENCE`].
    fn run_bash(&self, script: &str) -> Option<(i32, String)> {
        let out = self.dir.path().join(".doc-test-output");
        let mut full = String::new();
        let state = self.state.display();
        writeln!(full, "[ -f '{state}' ] && source '{state}'").unwrap();
        writeln!(full, "export KV_ADDR='{}'", self.server.addr()).unwrap();
        writeln!(
            full,
            "trap '{{ export -p; echo \"cd $(printf %q \"$PWD\")\"; }} > {state}' EXIT"
        )
        .unwrap();
        full.push_str(script);
        let output = std::fs::File::create(&out).expect("output file");
        let mut child = self
            .bash()
            .args(["-c", &full])
            .stdout(output.try_clone().expect("output file"))
            .stderr(output)
            .spawn()
            .expect("run bash");
        let deadline = Instant::now() + BLOCK_PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for bash") {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Whatever the block left running in the background goes too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        status.map(|status| (status.code().unwrap_or(-1), text))
    }

    /// A `sh` block, or a Python or Ruby one: it must succeed.
    fn script(&mut self, block: &Block) {
        let code: String = block.body.iter().map(|(_, l)| format!("{l}\n")).collect();
        let code = self.substitute(&code);
        let script = match block.lang.as_str() {
            "python" => format!("python3 - <<'DOC_TEST_EOF'\n{code}DOC_TEST_EOF\n"),
            "ruby" => format!("ruby -I clients/ruby/lib - <<'DOC_TEST_EOF'\n{code}DOC_TEST_EOF\n"),
            _ => format!("set -euo pipefail\n{code}"),
        };
        // Python runs in the project's venv, as the README sets it up.
        let script = if block.lang == "python" {
            format!("source .venv/bin/activate\n{script}")
        } else {
            script
        };
        match self.run_bash(&script) {
            Some((0, _)) => {}
            Some((status, output)) => self.fail(
                block.line,
                format!(
                    "this {} block exited {status}:\n{}",
                    block.lang,
                    indent(&output)
                ),
            ),
            None => self.fail(
                block.line,
                format!("this {} block ran past {BLOCK_PATIENCE:?}", block.lang),
            ),
        }
    }

    /// A console block: each command's output must be what it shows.
    fn console(&mut self, block: &Block) {
        let steps = match steps(&block.body) {
            Ok(steps) => steps,
            Err(e) => return self.fail(block.line, e),
        };
        let mut script = String::new();
        for step in &steps {
            writeln!(script, "{}", self.substitute(&step.command)).unwrap();
            writeln!(script, "printf '\\n{SEPARATOR}%s\\n' \"$?\"").unwrap();
        }
        let Some((_, output)) = self.run_bash(&script) else {
            return self.fail(
                block.line,
                format!("this block ran past {BLOCK_PATIENCE:?}"),
            );
        };
        let separator = format!("\n{SEPARATOR}");
        let mut outputs = output.split(&separator);
        let mut first = outputs.next().map(str::to_owned);
        for step in &steps {
            // Each command's output ends at the separator after it; the rest
            // of the separator's line is its exit status.
            let Some(text) = first.take() else {
                return self.fail(
                    step.line,
                    format!(
                        "`{}` ended the block's shell early:\n{}",
                        step.command,
                        indent(&output)
                    ),
                );
            };
            let (status, next) = match outputs.next() {
                Some(rest) => {
                    let (status, next) = rest.split_once('\n').unwrap_or((rest, ""));
                    (status.parse::<i32>().unwrap_or(-1), Some(next.to_owned()))
                }
                None => (-1, None),
            };
            first = next;
            let actual: Vec<String> = text.lines().map(str::to_owned).collect();
            let expected: Vec<String> = step
                .expected
                .iter()
                .map(|line| self.substitute(line))
                .collect();
            if status != 0 {
                self.fail(
                    step.line,
                    format!(
                        "`{}` exited {status} (show a failure with `|| echo \"exit $?\"`):\n{}",
                        step.command,
                        indent(&text)
                    ),
                );
            } else if !matches(&expected, &actual) {
                self.fail(step.line, mismatch(step, "printed", &actual, &expected));
            }
        }
    }

    /// A `server` block: its command starts the kvserver that serves the
    /// blocks after it, on free ports whatever `--listen` and
    /// `--http-listen` (or `--metrics-listen`) it names; the lines it shows
    /// must be among those it logs, in that order.
    fn start_server(&mut self, block: &Block) {
        let steps = match steps(&block.body) {
            Ok(steps) if steps.len() == 1 => steps,
            Ok(_) => return self.fail(block.line, "a `server` block has one command".into()),
            Err(e) => return self.fail(block.line, e),
        };
        let step = &steps[0];
        let words: Vec<&str> = step.command.split_whitespace().collect();
        let mut command = String::from("exec");
        let mut words = words.iter().filter(|w| **w != "\\");
        while let Some(word) = words.next() {
            let flag = word.split('=').next().unwrap_or(word);
            if LISTEN_FLAGS.contains(word) {
                words.next();
                write!(command, " {word} 127.0.0.1:0").unwrap();
            } else if LISTEN_FLAGS.contains(&flag) {
                write!(command, " {flag}=127.0.0.1:0").unwrap();
            } else {
                command.push(' ');
                command.push_str(&self.substitute(word));
            }
        }
        let mut bash = self.bash();
        bash.env("KVSERVER_LISTEN", "127.0.0.1:0")
            .args(["-c", &command]);
        let server = match Server::spawn(bash) {
            Ok(server) => server,
            Err(stderr) => {
                return self.fail(
                    step.line,
                    format!("`{}` did not start:\n{}", step.command, indent(&stderr)),
                );
            }
        };
        // The old server goes; the doc's address now means the new one.
        drop(std::mem::replace(&mut self.server, server));
        // Other lines may come before, between and after them (a log line
        // with a timestamp, say).
        let mut expected = vec!["...".to_owned()];
        for line in &step.expected {
            expected.push(self.substitute(line));
            expected.push("...".to_owned());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logged = self.server.stderr_lines();
            if matches(&expected, &logged) {
                break;
            }
            if Instant::now() > deadline {
                return self.fail(step.line, mismatch(step, "logged", &logged, &expected));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The flags of kvserver that name an address to listen on: a `server`
/// block listens on free ports instead.
const LISTEN_FLAGS: [&str; 3] = ["--listen", "--http-listen", "--metrics-listen"];

/// What a command `did` (printed, logged), against what the doc says.
fn mismatch(step: &Step, did: &str, actual: &[String], expected: &[String]) -> String {
    format!(
        "`{}` {did}\n{}\nbut the doc says\n{}",
        step.command,
        indent(&actual.join("\n")),
        indent(&expected.join("\n"))
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The docs that run: README.md and every docs/*.md, by path.
pub(crate) fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn expected_output_matches_with_wildcards() {
        assert!(matches(&lines("a\nb"), &lines("a\nb")));
        assert!(!matches(&lines("a\nb"), &lines("a\nc")));
        assert!(!matches(&lines("a"), &lines("a\nb")));
        assert!(matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
        assert!(matches(&lines("a\n...\nd"), &lines("a\nd")));
        assert!(!matches(&lines("a\n...\nd"), &lines("a\nb")));
        assert!(matches(&lines("lease [..]"), &lines("lease 42")));
        assert!(matches(&lines("x [..] y [..] z"), &lines("x 1 y 2 z")));
        assert!(!matches(&lines("x [..] y"), &lines("x 1 z")));
        assert!(!matches(&lines("ab[..]ba"), &lines("aba")));
    }

    #[test]
    fn markers_and_console_steps_are_parsed_with_their_lines() {
        let doc = "text\n\n<!-- doc-test: skip needs a real host -->\n```sh\nkv --addr h:1 get k\n```\n\
                   <!-- doc-test: server -->\n```console\n$ kvserver\nlistening on 127.0.0.1:50051\n```\n\
                   ```console\n$ kv set a \\\n  b\n$ kv get a\nb\n```\n```text\nnot run\n```\n";
        let blocks = blocks(doc).unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0].marker, Marker::Skip("needs a real host".into()));
        assert_eq!(blocks[0].line, 4);
        assert_eq!(blocks[1].marker, Marker::Server);
        let steps = steps(&blocks[2].body).unwrap();
        assert_eq!(
            steps,
            [
                Step {
                    line: 13,
                    command: "kv set a \\\n  b".into(),
                    expected: vec![],
                },
                Step {
                    line: 15,
                    command: "kv get a".into(),
                    expected: vec!["b".into()],
                },
            ]
        );
        assert_eq!(blocks[3].lang, "text");
    }

    #[test]
    fn a_marker_out_of_place_or_unknown_is_an_error() {
        assert!(blocks("<!-- doc-test: skip -->\n```sh\nx\n```\n").is_err());
        assert!(blocks("<!-- doc-test: run-twice -->\n```sh\nx\n```\n").is_err());
        assert!(blocks("<!-- doc-test: skip why -->\nprose\n```sh\nx\n```\n").is_err());
        assert!(blocks("<!-- doc-test: server -->\n```sh\nkvserver\n```\n").is_err());
        assert!(blocks("```sh\nnever closed\n").is_err());
    }
}
