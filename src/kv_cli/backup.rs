//! `kv backup`: the server's snapshot written to a file that is either the
//! previous backup or the whole new one, whenever the power goes
//! (`crate::backup::BackupFile`).

use serde_json::json;
use tokio_stream::StreamExt;

use super::output::{self, outln};
use super::{Context, Failure, Outcome, exit};

pub(super) async fn backup(cx: &mut Context, file: &std::path::Path) -> Outcome {
    // Next to the file, named after all of it: x.kv and x.db have their own.
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    for path in [file, &partial] {
        refuse_unless_regular_file(path)?;
    }
    let written = write_backup(cx, file, &partial).await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let (keys, revision) = written?;
    if cx.json {
        output::json(&json!({"keys": keys, "revision": revision}));
    } else {
        outln!(
            "backed up {keys} keys at revision {revision} to {}",
            file.display()
        );
    }
    Ok(())
}

/// Refuses a `path` that exists and is not a regular file. The backup is
/// renamed over its file, so a device, FIFO or directory there would be
/// replaced (or the rename fail after the whole backup), and a symbolic link
/// replaced instead of the file it points to; the partial file is opened
/// for writing, which would follow a link, and wait for a FIFO's reader.
fn refuse_unless_regular_file(path: &std::path::Path) -> Outcome {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_file() => Err(Failure::usage(format!(
            "{} exists and is not a regular file; kv backup writes a new file or replaces \
             a regular one",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Writes the backup to `partial`, then renames it to `file`; returns how
/// many keys it holds and their revision.
async fn write_backup(
    cx: &mut Context,
    file: &std::path::Path,
    partial: &std::path::Path,
) -> Result<(u64, u64), Failure> {
    use crate::backup::{BackupFile, RealFs};
    // The command line was fine: the file could not be written (a missing
    // directory, a full disk, no permission).
    let io = |e: std::io::Error| Failure {
        code: exit::OUTPUT_FAILED,
        message: format!("cannot write {}: {e}", file.display()),
    };
    let mut writer = BackupFile::create(RealFs, file, partial).map_err(io)?;
    let mut stream = cx.client.snapshot().await?;
    let (mut keys, mut revision) = (0u64, 0u64);
    loop {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(status)) => return Err(cx.client.stream_error(status).into()),
            None => {
                return Err(Failure {
                    code: exit::UNREACHABLE,
                    message: "the server ended the backup before it was complete".into(),
                });
            }
        };
        keys += chunk.kvs.len() as u64;
        revision = chunk.header.map_or(revision, |h| h.revision);
        writer.write(&chunk).map_err(io)?;
        if chunk.done {
            break;
        }
    }
    writer.finish().map_err(io)?;
    Ok((keys, revision))
}
