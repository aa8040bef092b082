//! The backup file: what `kv backup` writes and `kvserver restore` reads.
//!
//! A magic line, then the server's `SnapshotChunk` messages as they came,
//! each prefixed by its length (4 bytes, little-endian). The last chunk says
//! `done`: a file without it was cut short and is refused, as is one whose
//! chunks disagree on the revision. Reusing the wire messages keeps the
//! format as stable as the API, with nothing to translate.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::keyvalue::v1 as pb;
use crate::storage::ops::KeyValue;
use crate::storage::{DiskStore, Record};

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"keyvalue-backup/1\n";

/// Writes a backup chunk by chunk.
pub struct BackupWriter<W: Write> {
    out: W,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup on `out`.
    pub fn new(mut out: W) -> io::Result<BackupWriter<W>> {
        out.write_all(MAGIC)?;
        Ok(BackupWriter { out })
    }

    /// Appends one chunk.
    pub fn write(&mut self, chunk: &pb::SnapshotChunk) -> io::Result<()> {
        let bytes = chunk.encode_to_vec();
        let length = u32::try_from(bytes.len())
            .map_err(|_| io::Error::other("a snapshot chunk above 4 GiB"))?;
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(&bytes)
    }

    /// The underlying writer, for flushing and syncing.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The file operations a backup file is written with: the real file
/// system ([`RealFs`]), or in tests one that loses, at a simulated power
/// cut, whatever was not synced (`backup_power_loss.rs`).
pub trait BackupFs {
    /// A file open for writing.
    type File: Write;
    /// Creates (or truncates) the file at `path`.
    fn create(&mut self, path: &Path) -> io::Result<Self::File>;
    /// fsyncs `file`'s contents.
    fn sync(&mut self, file: &mut Self::File) -> io::Result<()>;
    /// Renames `from` over `to`.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs the directory holding `path`.
    fn sync_parent(&mut self, path: &Path) -> io::Result<()>;
}

/// The real file system.
pub struct RealFs;

impl BackupFs for RealFs {
    type File = std::fs::File;

    fn create(&mut self, path: &Path) -> io::Result<std::fs::File> {
        std::fs::File::create(path)
    }

    fn sync(&mut self, file: &mut std::fs::File) -> io::Result<()> {
        file.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_parent(&mut self, path: &Path) -> io::Result<()> {
        crate::durable_fs::sync_parent(path)
    }
}

/// A backup file being written so that a power cut at any moment leaves
/// its target as it was (absent, or the previous backup) or the whole new
/// backup, never a part of one: written to `partial`, fsynced, renamed over
/// the target, and the directory fsynced before [`BackupFile::finish`]
/// returns (after which the new backup survives any cut).
pub struct BackupFile<F: BackupFs> {
    fs: F,
    writer: BackupWriter<io::BufWriter<F::File>>,
    partial: PathBuf,
    target: PathBuf,
}

impl<F: BackupFs> BackupFile<F> {
    /// Starts a backup of `target`, written to `partial` until finished.
    pub fn create(mut fs: F, target: &Path, partial: &Path) -> io::Result<BackupFile<F>> {
        let file = fs.create(partial)?;
        Ok(BackupFile {
            writer: BackupWriter::new(io::BufWriter::new(file))?,
            fs,
            partial: partial.to_owned(),
            target: target.to_owned(),
        })
    }

    /// Appends one chunk.
    pub fn write(&mut self, chunk: &pb::SnapshotChunk) -> io::Result<()> {
        self.writer.write(chunk)
    }

    /// Makes the backup durable under its target's name.
    pub fn finish(self) -> io::Result<()> {
        let BackupFile {
            mut fs,
            writer,
            partial,
            target,
        } = self;
        let mut file = writer
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())?;
        fs.sync(&mut file)?;
        drop(file);
        fs.rename(&partial, &target)?;
        // The new name survives a power cut only once its directory is
        // synced.
        fs.sync_parent(&target)
    }
}

/// A backup read whole: its revision, leases and keys.
#[derive(Debug, Default)]
pub struct Backup {
    /// The revision the copy is at.
    pub revision: u64,
    /// Every lease of the copy.
    pub leases: Vec<pb::SnapshotLease>,
    /// Every key, in order.
    pub kvs: Vec<pb::KeyValue>,
}

impl Backup {
    /// Builds a new data dir in `dir` holding exactly this backup; returns
    /// how many keys it restored.
    pub fn restore_into(self, dir: &std::path::Path) -> Result<u64, String> {
        let leases: Vec<_> = self
            .leases
            .iter()
            .map(|lease| (lease.id, std::time::Duration::from_millis(lease.ttl_ms)))
            .collect();
        let kvs = self.kvs.into_iter().map(|kv| KeyValue {
            key: kv.key,
            record: Record {
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            },
        });
        DiskStore::restore(dir, self.revision, &leases, kvs).map_err(|e| e.to_string())
    }
}

/// Reads a backup, refusing anything incomplete or inconsistent.
pub fn read(mut input: impl Read) -> Result<Backup, String> {
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| "not a keyvalue backup (too short)".to_owned())?;
    if magic != MAGIC {
        return Err("not a keyvalue backup (wrong header)".into());
    }
    let mut backup = Backup::default();
    let mut revision = None;
    loop {
        let mut length = [0u8; 4];
        if input.read_exact(&mut length).is_err() {
            return Err("the backup is cut short: its last chunk is missing".into());
        }
        // Read what is there, up to the length the file claims, rather than
        // allocate that length up front: a damaged length may claim 4 GiB.
        let length = u64::from(u32::from_le_bytes(length));
        let mut bytes = Vec::new();
        input
            .by_ref()
            .take(length)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the backup: {e}"))?;
        if bytes.len() as u64 != length {
            return Err("the backup is cut short inside a chunk".into());
        }
        let chunk = pb::SnapshotChunk::decode(bytes.as_slice())
            .map_err(|e| format!("a chunk of the backup is damaged: {e}"))?;
        let at = chunk.header.map_or(0, |h| h.revision);
        if *revision.get_or_insert(at) != at {
            return Err("the backup's chunks are at different revisions".into());
        }
        backup.leases.extend(chunk.leases);
        backup.kvs.extend(chunk.kvs);
        if chunk.done {
            backup.revision = at;
            return Ok(backup);
        }
    }
}

#[cfg(test)]
#[path = "backup_power_loss.rs"]
mod power_loss;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn chunk(revision: u64, keys: &[&str], done: bool) -> pb::SnapshotChunk {
        pb::SnapshotChunk {
            header: Some(pb::Header { revision }),
            leases: Vec::new(),
            kvs: keys
                .iter()
                .map(|key| pb::KeyValue {
                    key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                    ..Default::default()
                })
                .collect(),
            done,
        }
    }

    pub(super) fn file(chunks: &[pb::SnapshotChunk]) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new()).unwrap();
        for c in chunks {
            writer.write(c).unwrap();
        }
        writer.into_inner()
    }

    #[test]
    fn a_complete_backup_reads_back() {
        let bytes = file(&[
            chunk(7, &["a", "b"], false),
            chunk(7, &["c"], false),
            chunk(7, &[], true),
        ]);
        let backup = read(bytes.as_slice()).unwrap();
        assert_eq!(backup.revision, 7);
        assert_eq!(backup.kvs.len(), 3);
    }

    #[test]
    fn incomplete_or_inconsistent_backups_are_refused() {
        let cut = file(&[chunk(7, &["a"], false)]);
        assert!(read(cut.as_slice()).unwrap_err().contains("cut short"));
        let mut truncated = file(&[chunk(7, &["a"], false), chunk(7, &[], true)]);
        truncated.truncate(truncated.len() - 3);
        assert!(read(truncated.as_slice()).is_err());
        let mixed = file(&[chunk(7, &["a"], false), chunk(8, &[], true)]);
        assert!(read(mixed.as_slice()).unwrap_err().contains("revisions"));
        assert!(read(&b"hello"[..]).is_err());
    }

    #[test]
    fn a_damaged_length_is_refused_without_allocating_it() {
        let mut damaged = file(&[]);
        damaged.extend_from_slice(&u32::MAX.to_le_bytes());
        damaged.extend_from_slice(b"a few bytes");
        assert_eq!(
            read(damaged.as_slice()).unwrap_err(),
            "the backup is cut short inside a chunk"
        );
    }
}
