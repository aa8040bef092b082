//! The record of a clean close ([`CLEAN_FILE`] beside the database): lets
//! the next start skip reading the whole file to verify it, when the file
//! is provably the one kvserver closed.
//!
//! Why: redb's integrity check at open (`set_check_integrity_on_open`)
//! verifies the checksum of every page, so it reads the whole file: 0.2 s
//! for a million keys, 4 to 8 s for ten million (1.7 GiB), before the first
//! answer. etcd checks nothing at open. We keep the check wherever it can
//! find something, and skip it where it provably cannot:
//! - after a crash there is no record, and redb's own recovery verifies the
//!   last commit's pages anyway;
//! - after a clean close, the file is verified again unless its identity
//!   and stamps are those recorded right after the close: the same device,
//!   inode, size, modification and change time. The change time (ctime)
//!   moves on every write to the file, and no tool can set it back, so a
//!   file written, restored or replaced since is checked in full.
//!
//! File timestamps come from a coarse clock (a few milliseconds), so a
//! write in the same tick as the close could keep the ctime. The record is
//! written only once the clock has passed the file's ctime by more than a
//! tick, and only if the file still has the stamps it had at the close:
//! any later write then moves the ctime.
//!
//! What it cannot see: bits that rot on the medium while kvserver is
//! stopped, with no write through the file system. `kvserver check` reads
//! and verifies every page on demand (docs/STORAGE.md).
//!
//! The record is read and removed before the database is opened, so a
//! start uses it at most once. A record that cannot be read, written or
//! parsed only means a full check.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The record's name in the data dir.
pub(super) const CLEAN_FILE: &str = "keyvalue.clean";

/// Its first word: the record's own format.
const MAGIC: &str = "keyvalue-clean/1";

/// More than a tick of the kernel's coarse clock (1 to 10 ms).
const TICK: Duration = Duration::from_millis(20);

/// What identifies one state of the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Stamp> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }

    fn encode(&self) -> String {
        format!(
            "{MAGIC} dev={} ino={} len={} mtime={} ctime={}\n",
            self.dev, self.ino, self.len, self.mtime_ns, self.ctime_ns
        )
    }

    fn decode(text: &str) -> Option<Stamp> {
        let mut words = text.strip_suffix('\n')?.split(' ');
        if words.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| -> Option<i128> {
            words
                .next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        let stamp = Stamp {
            dev: u64::try_from(field("dev")?).ok()?,
            ino: u64::try_from(field("ino")?).ok()?,
            len: u64::try_from(field("len")?).ok()?,
            mtime_ns: field("mtime")?,
            ctime_ns: field("ctime")?,
        };
        words.next().is_none().then_some(stamp)
    }
}

/// Records that the database at `db_path` in `dir` was just closed cleanly.
/// Waits for the clock to pass the file's ctime by a tick first (see the
/// module's doc); writes nothing if the file changed meanwhile.
pub(super) fn record(dir: &Path, db_path: &Path) -> io::Result<()> {
    let closed = Stamp::of(db_path)?;
    let ctime = UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(closed.ctime_ns.max(0)).unwrap_or(u64::MAX));
    if let Ok(ahead) = (ctime + TICK).duration_since(SystemTime::now()) {
        std::thread::sleep(ahead.min(TICK));
    }
    if Stamp::of(db_path)? != closed {
        return Ok(());
    }
    // Not fsynced: a record lost to a power cut means one full check.
    std::fs::write(dir.join(CLEAN_FILE), closed.encode())
}

/// Reads and removes the record of `dir`: whether the database at
/// `db_path` is the file that was closed cleanly, untouched since. Any
/// doubt (no record, unreadable, another file) is `false`.
pub(super) fn take(dir: &Path, db_path: &Path) -> bool {
    let path = dir.join(CLEAN_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    if std::fs::remove_file(&path).is_err() {
        // A record we cannot remove would vouch for the file again after
        // this start writes to it; the ctime would catch that, but don't
        // lean on one safeguard where two are cheap.
        return false;
    }
    let Some(recorded) = Stamp::decode(&text) else {
        return false;
    };
    Stamp::of(db_path).is_ok_and(|now| now == recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, b"pages").unwrap();
        (dir, db)
    }

    #[test]
    fn a_file_untouched_since_its_record_is_vouched_for_once() {
        let (dir, db) = setup();
        record(dir.path(), &db).unwrap();
        assert!(take(dir.path(), &db));
        assert!(!dir.path().join(CLEAN_FILE).exists());
        assert!(!take(dir.path(), &db), "a record is used once");
    }

    #[test]
    fn a_write_after_the_record_even_in_the_same_size_is_seen() {
        let (dir, db) = setup();
        record(dir.path(), &db).unwrap();
        std::fs::write(&db, b"PAGES").unwrap();
        assert!(!take(dir.path(), &db));
    }

    #[test]
    fn a_replaced_file_is_not_vouched_for() {
        let (dir, db) = setup();
        record(dir.path(), &db).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"pages").unwrap();
        std::fs::rename(&other, &db).unwrap();
        assert!(!take(dir.path(), &db));
    }

    #[test]
    fn a_damaged_or_foreign_record_means_a_full_check() {
        let (dir, db) = setup();
        for text in [
            "",
            "keyvalue-clean/1 dev=1",
            "keyvalue-clean/9 dev=1 ino=1 len=5 mtime=1 ctime=1\n",
            "keyvalue-clean/1 dev=1 ino=1 len=5 mtime=1 ctime=1 extra=1\n",
        ] {
            std::fs::write(dir.path().join(CLEAN_FILE), text).unwrap();
            assert!(!take(dir.path(), &db), "{text:?}");
        }
        let stamp = Stamp::of(&db).unwrap();
        assert_eq!(Stamp::decode(&stamp.encode()), Some(stamp));
    }
}
