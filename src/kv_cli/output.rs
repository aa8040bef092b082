//! Everything `kv` writes to stdout goes through here, so that a closed pipe
//! ends it the way a command-line tool in a pipe should.
//!
//! `kv watch | head -1` or `kv ls | head` close stdout while `kv` still has
//! lines to write. Rust's `println!` panics then (the runtime ignores
//! SIGPIPE), and writes whose errors are dropped would leave `kv watch`
//! running forever for nobody. Here a closed pipe ends `kv` at once with
//! status 0 and no message (and [`reader_gone`] lets a `kv watch` waiting
//! for events notice it within a second), as it does ripgrep; any other write error (a full
//! disk under `kv ls > file`) ends it with one line and
//! [`exit::OUTPUT_FAILED`].

use std::fmt::Display;
use std::io::{self, Write};

use serde_json::Value as Json;

use super::exit;

/// Writes `parts` and a newline to stdout as one line.
pub(super) fn line(parts: &[&[u8]]) {
    let mut out = io::stdout().lock();
    let written = parts
        .iter()
        .try_for_each(|part| out.write_all(part))
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    ended_by(written);
}

/// Writes `text` and a newline.
pub(super) fn text(text: impl Display) {
    line(&[text.to_string().as_bytes()]);
}

/// Writes `value` as one line of JSON.
pub(super) fn json(value: &Json) {
    text(value);
}

/// Writes `text` as it is (it brings its own newlines).
pub(super) fn verbatim(text: &str) {
    let mut out = io::stdout().lock();
    ended_by(out.write_all(text.as_bytes()).and_then(|()| out.flush()));
}

/// Resolves once stdout is a pipe whose reader has gone, checked twice a
/// second. `kv watch | head -1` would otherwise learn it only from its next
/// write, which may be hours away, and hold the pipeline open until then.
pub(super) async fn reader_gone() {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        ticks.tick().await;
        let stdout = io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        // POLLERR on the writing end of a pipe: no reader is left.
        if poll(&mut fds, Some(&now)).is_ok() && fds[0].revents().contains(PollFlags::ERR) {
            return;
        }
    }
}

/// Ends the process if `written` failed.
fn ended_by(written: io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("kv: cannot write the output: {error}");
            std::process::exit(i32::from(exit::OUTPUT_FAILED));
        }
    }
}

/// `println!` for `kv`'s output: formats a line and writes it with [`text`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::kv_cli::output::text(format_args!($($arg)*))
    };
}
pub(super) use outln;
