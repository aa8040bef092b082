//! The record of acknowledged revisions ([`ACK_FILE`] beside the database):
//! an independent witness of how far the store got, so that a database that
//! comes back older than what clients were told is refused, not served.
//!
//! redb keeps two commit slots in its header and, at open, falls back to
//! the older one when the newer one's checksum fails. So one damaged bit in
//! the newest slot (a bad sector, a torn header write) rolled the store
//! back to the commit before, with no message: acknowledged writes gone,
//! and their revisions handed out again to different writes. This file
//! notices. It holds two numbers, written by the committer:
//! - `durable`: the last revision fsynced in the database, written (and
//!   fdatasynced) after that fsync and before the writes are acknowledged.
//!   A database below it lost acknowledged writes: [`check`] refuses it,
//!   and `kvserver accept-lost-writes` ([`accept_loss`]) is the explicit
//!   way on (the store then goes on after the lost revisions, never
//!   reusing one).
//! - `handed_out`: the last revision acknowledged at all. Above `durable`
//!   only with `--sync interval`, whose unsynced window a crash may lose by
//!   design: then the store starts after it, with a warning, so that no
//!   revision is given to two different writes. Written without fsync: it
//!   survives a crash of the process, not a power cut (which the interval
//!   policy does not protect anyway).
//!
//! The record is written after the database's commit, never before, so it
//! never claims a revision the database may not hold: a cut between the
//! two leaves it behind the database, which is no error. Each write goes to
//! one of two checksummed slots in turn, so a torn write leaves the other,
//! older one readable.
//!
//! What it cannot see: a database rolled back together with this file (a
//! whole-disk snapshot restored), or a database that is damaged elsewhere
//! (redb checks every page's checksum at open, unless the file is the one
//! kvserver closed cleanly and untouched since: see `clean_close`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::OpenError;
use crate::storage::Revision;

/// The record's file in the data dir.
pub const ACK_FILE: &str = "keyvalue.acked";

const MAGIC: &[u8; 8] = b"kvacked1";
const SLOT: usize = 32;

/// What the record says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Acknowledged {
    /// The last revision made durable in the database and acknowledged.
    pub(super) durable: Revision,
    /// The last revision acknowledged (`--sync interval`: maybe not durable).
    pub(super) handed_out: Revision,
}

/// The open record, written by the committer.
pub(super) struct Record {
    file: File,
    /// The slot the next write goes to.
    next_slot: u64,
    last: Acknowledged,
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to tell a torn or damaged slot from a whole one.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(value: Acknowledged) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&value.durable.to_le_bytes());
    slot[16..24].copy_from_slice(&value.handed_out.to_le_bytes());
    let sum = checksum(&slot[..24]);
    slot[24..].copy_from_slice(&sum.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<Acknowledged> {
    let number = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    (slot.len() == SLOT && &slot[..8] == MAGIC && number(24) == checksum(&slot[..24])).then(|| {
        Acknowledged {
            durable: number(8),
            handed_out: number(16),
        }
    })
}

/// The record in `dir`: `None` if there is no file, or no whole slot in it.
pub(super) fn read(dir: &Path) -> io::Result<Option<Acknowledged>> {
    let bytes = match std::fs::read(dir.join(ACK_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(decode)
        .max_by_key(|value| (value.handed_out, value.durable)))
}

impl Record {
    /// Writes `value` to the next slot; fdatasyncs it if `sync`.
    fn write(&mut self, value: Acknowledged, sync: bool) -> io::Result<()> {
        let offset = (self.next_slot % 2) * SLOT as u64;
        self.file.write_all_at(&encode(value), offset)?;
        if sync {
            self.file.sync_data()?;
        }
        self.next_slot += 1;
        self.last = value;
        Ok(())
    }

    /// Records that every revision up to `revision` is acknowledged: made
    /// durable (`durable`, fdatasynced before it returns), or only handed
    /// out (`--sync interval`, not synced).
    pub(super) fn acknowledge(&mut self, revision: Revision, durable: bool) -> io::Result<()> {
        let value = Acknowledged {
            durable: if durable { revision } else { self.last.durable },
            handed_out: revision.max(self.last.handed_out),
        };
        if value == self.last {
            return Ok(());
        }
        self.write(value, durable)
    }
}

/// Opens the record of `dir`, whose database is at `revision` (its last
/// commit that survived), and checks the database against it. Returns the
/// record and the revision the store goes on from: `revision`, or the last
/// one handed out if a crash lost the unsynced window of `--sync interval`.
/// A database behind its last durable acknowledged revision is refused.
pub(super) fn check(dir: &Path, revision: Revision) -> Result<(Record, Revision), OpenError> {
    let path = dir.join(ACK_FILE);
    let shown = path.display();
    let found = read(dir).map_err(|e| OpenError(format!("cannot read {shown}: {e}")))?;
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| OpenError(format!("cannot open {shown}: {e}")))?;
    if !existed {
        crate::durable_fs::sync_dir(dir)
            .map_err(|e| OpenError(format!("cannot create {shown}: {e}")))?;
    }
    let acknowledged = match found {
        Some(found) => found,
        None => {
            if existed {
                tracing::warn!(
                    "{shown} holds no readable record (damaged?): the database's revision \
                     {revision} is taken as acknowledged"
                );
            }
            Acknowledged::default()
        }
    };
    if revision < acknowledged.durable {
        return Err(OpenError(format!(
            "the database is at revision {revision}, but revision {} was acknowledged to \
             clients after it was made durable ({shown}): its latest commits are lost \
             (damaged by the disk or a copy?). Refusing to start, nothing was changed. \
             Restore a backup into a new data dir, or accept the loss with `kvserver \
             accept-lost-writes --data-dir {}` (the store then goes on after revision {}, \
             never reusing one)",
            acknowledged.durable,
            dir.display(),
            acknowledged.handed_out,
        )));
    }
    let start = if revision < acknowledged.handed_out {
        tracing::warn!(
            "the writes of revisions {}..={} were acknowledged and are lost (with --sync \
             interval, in a crash before their fsync; with --sync always, only if the \
             write-ahead log lost them); the store goes on from revision {}, so that none \
             of them is given to another write",
            revision + 1,
            acknowledged.handed_out,
            acknowledged.handed_out
        );
        acknowledged.handed_out
    } else {
        revision
    };
    let mut record = Record {
        file,
        next_slot: 0,
        last: acknowledged,
    };
    // Both slots agree from here on; the first write makes the file whole
    // if it was new or damaged.
    let now = Acknowledged {
        durable: revision.max(acknowledged.durable),
        handed_out: start,
    };
    for _ in 0..2 {
        record
            .write(now, false)
            .map_err(|e| OpenError(format!("cannot write {shown}: {e}")))?;
    }
    record
        .file
        .sync_data()
        .map_err(|e| OpenError(format!("cannot write {shown}: {e}")))?;
    Ok((record, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_whole_slot_wins_and_a_torn_one_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, start) = check(dir.path(), 0).unwrap();
        assert_eq!(start, 0);
        record.acknowledge(5, true).unwrap();
        record.acknowledge(7, false).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(Acknowledged {
                durable: 5,
                handed_out: 7
            })
        );
        // A torn write of the slot that holds 7: the other still says 5.
        let path = dir.path().join(ACK_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = if decode(&bytes[..SLOT]).unwrap().handed_out == 7 {
            0
        } else {
            SLOT
        };
        bytes[newest + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(Acknowledged {
                durable: 5,
                handed_out: 5
            })
        );
    }

    #[test]
    fn a_database_behind_what_was_made_durable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = check(dir.path(), 0).unwrap();
        record.acknowledge(60, true).unwrap();
        drop(record);
        let error = check(dir.path(), 59).err().expect("refused");
        assert!(error.0.contains("revision 60 was acknowledged"), "{error}");
        assert!(error.0.contains("accept-lost-writes"), "{error}");
        // At or past it, the store opens and goes on from its own revision.
        let (_, start) = check(dir.path(), 61).unwrap();
        assert_eq!(start, 61);
    }

    #[test]
    fn an_unsynced_window_lost_in_a_crash_is_skipped_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = check(dir.path(), 0).unwrap();
        record.acknowledge(10, true).unwrap();
        record.acknowledge(14, false).unwrap();
        drop(record);
        let (_, start) = check(dir.path(), 12).unwrap();
        assert_eq!(start, 14);
    }
}
