//! The database file of a data dir: opening it safely, and the handle that
//! readers and the committer share.
//!
//! [`DbHandle`] exists for one failure: after an I/O error in a commit (the
//! disk filled up, say), redb refuses every later write until the database is
//! closed and opened again. The committer then calls [`DbHandle::reopen`],
//! which waits for in-flight reads, closes the file and opens it again. In
//! between, and while a reopen fails, reads answer `UNAVAILABLE`; what was
//! committed before the error is intact, since redb's commits are atomic.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{Database, DatabaseError, ReadableDatabase};

use super::acknowledged::{self, ACK_FILE};
use super::clean_close::{self, CLEAN_FILE};
use super::keyspace::Snapshot;
use super::record_format::{
    self, DATA_FORMAT, DATA_FORMAT_V1, DATA_FORMAT_V2, DATA_FORMAT_V3, META_COMPACTED, META_FORMAT,
    META_REVISION,
};
use super::wal::{self, LOG_FILE};
use super::{DB_FILE, META, OpenError, keyspace, storage_error};
use crate::storage::{FIRST_REVISION, Revision, StoreError};

/// The open database of one data dir.
pub(super) struct DbHandle {
    dir: PathBuf,
    path: PathBuf,
    /// `None` only while a reopen is in progress or has failed.
    current: RwLock<Option<Arc<Database>>>,
    /// What was acknowledged (see `acknowledged`); the committer writes it.
    /// `None` until the log is replayed at open.
    record: Mutex<Option<acknowledged::Record>>,
    /// The snapshot of the latest commit the committer published, shared
    /// by the reads until it publishes the next.
    snapshots: Mutex<Snapshots>,
}

/// The published snapshot ([`DbHandle::snapshot`]).
#[derive(Default)]
struct Snapshots {
    latest: Option<Arc<Snapshot>>,
}

impl DbHandle {
    /// Opens (or creates) the database in `dir`; returns it and its revision.
    pub(super) fn open(dir: &Path) -> Result<(DbHandle, Revision), OpenError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            create(dir, |_| Ok(()))?;
        }
        // Read whole and verified, unless closed cleanly and untouched since.
        let verify = !clean_close::take(dir, &path);
        if !verify {
            tracing::debug!(
                "{} was closed cleanly and is unchanged since: not verifying every page",
                path.display()
            );
        }
        let db = open_database(&path, verify)?;
        let (revision, format) = check_format(&db, &path)?;
        let revision = upgrade(&db, format, revision)
            .map_err(|e| OpenError(format!("cannot update {}: {e}", path.display())))?;
        let handle = DbHandle {
            dir: dir.to_owned(),
            path,
            current: RwLock::new(Some(Arc::new(db))),
            record: Mutex::new(None),
            snapshots: Mutex::default(),
        };
        Ok((handle, revision))
    }

    /// The data dir.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks the database, at `revision` once the log is replayed, against
    /// the record of acknowledged revisions (never older than what clients
    /// were told, see `acknowledged`), and opens the record for the
    /// committer. Returns the revision the store goes on from.
    pub(super) fn check_acknowledged(&self, revision: Revision) -> Result<Revision, OpenError> {
        let db = self
            .current()
            .map_err(|e| OpenError(format!("cannot open {}: {e}", self.path.display())))?;
        let (record, revision) = checked_against_record(&db, &self.dir, revision)?;
        *self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(record);
        Ok(revision)
    }

    /// Records that every revision up to `revision` was acknowledged:
    /// made durable (`durable`), or committed without fsync (`--sync
    /// interval`). Called by the committer, after the commit or fsync and
    /// before the replies. A failure is logged: the writes are committed,
    /// only the check at the next start is weaker.
    pub(super) fn acknowledge(&self, revision: Revision, durable: bool) {
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(record) = record.as_mut() else {
            return;
        };
        if let Err(error) = record.acknowledge(revision, durable) {
            tracing::warn!(
                "cannot record revision {revision} as acknowledged in {}: {error}",
                self.dir.join(ACK_FILE).display()
            );
        }
    }

    /// The database, for one read or one commit. Hold it no longer than that:
    /// a reopen waits until every holder has let go.
    pub(super) fn current(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "the data dir is being reopened after a disk error; retry shortly".into(),
                )
            })
    }

    /// The snapshot of the latest commit the committer published: shared
    /// by every read until it publishes the next (opening a read
    /// transaction and its tables costs more than a point read). Reads never
    /// open a transaction of their own: under `--sync always` redb shows a
    /// commit to new transactions before its log record is fsynced, and a
    /// read must never see a write that a power cut could still take back.
    /// `UNAVAILABLE` while none is published (a reopen after a disk error).
    pub(super) fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        lock(&self.snapshots).latest.clone().ok_or_else(|| {
            StoreError::Unavailable(
                "the data dir is being reopened after a disk error; retry shortly".into(),
            )
        })
    }

    /// A snapshot of the database as it is now, for the committer to
    /// publish once what it holds is durable.
    pub(super) fn fresh_snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let db = self.current()?;
        let txn = db.begin_read().map_err(storage_error)?;
        Ok(Arc::new(Snapshot::open(txn, Some(db))?))
    }

    /// Makes `snapshot` the one reads see from now on (before the replies
    /// of the commits it holds), and lets go of the one before, so that no
    /// snapshot outlives the next commit (it would keep the pages that
    /// commit freed from reuse).
    pub(super) fn publish(&self, snapshot: Arc<Snapshot>) {
        let stale = lock(&self.snapshots).latest.replace(snapshot);
        drop(stale);
    }

    /// Drops the published snapshot (a reopen and the close wait for it).
    fn unpublish(&self) {
        let stale = lock(&self.snapshots).latest.take();
        drop(stale);
    }

    /// Closes the database and opens it again, to clear a failed commit's
    /// I/O error. Called by the committer only, which holds no handle then.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The shared snapshot holds the database too. Reads answer
        // UNAVAILABLE until the committer publishes one again, after it
        // replayed the log (the reopen drops redb's unsynced commits).
        self.unpublish();
        if let Some(db) = current.take() {
            // New readers wait on the lock; the ones that already hold a clone
            // finish one read each. The file lock goes with the last clone.
            drop(sole(db, None));
        }
        let db = open_file(&self.path, true).map_err(storage_error)?;
        *current = Some(Arc::new(db));
        Ok(())
    }

    /// Bytes the database file takes (0 if it cannot be read).
    pub(super) fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |meta| meta.len())
    }

    /// Bytes the file system of the data dir still has for us.
    pub(super) fn free_bytes(&self) -> Result<u64, StoreError> {
        let stats = rustix::fs::statvfs(&self.dir).map_err(|errno| {
            StoreError::Unavailable(format!(
                "cannot read the free space of {}: {}",
                self.dir.display(),
                io::Error::from(errno)
            ))
        })?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

impl Drop for DbHandle {
    /// Closes the database and, if the close was clean, records it (see
    /// `clean_close`) so that the next start need not read the whole file.
    fn drop(&mut self) {
        self.unpublish();
        let current = self
            .current
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // A reader still holding the database after a second (a stuck
        // scan) keeps it open: then it closes with the last clone, and the
        // next start verifies it whole.
        let Some(Ok(db)) = current.map(|db| sole(db, Some(Duration::from_secs(1)))) else {
            return;
        };
        if db.close().is_ok()
            && let Err(error) = clean_close::record(&self.dir, &self.path)
        {
            tracing::debug!(
                "cannot write {}: {error}; the next start verifies the whole database",
                self.dir.join(CLEAN_FILE).display()
            );
        }
    }
}

fn lock(snapshots: &Mutex<Snapshots>) -> std::sync::MutexGuard<'_, Snapshots> {
    // Every change is completed before the lock is released.
    snapshots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits (at most `patience`, if given) until `db` is its only holder, and
/// returns it, or gives back the shared handle.
fn sole(mut db: Arc<Database>, patience: Option<Duration>) -> Result<Database, Arc<Database>> {
    let began = std::time::Instant::now();
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(shared) => db = shared,
        }
        if patience.is_some_and(|patience| began.elapsed() >= patience) {
            return Err(db);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where a new database is built before it is renamed to [`DB_FILE`].
pub(super) const CREATING_FILE: &str = "keyvalue.redb.creating";

/// Creates the database of a new data dir in `dir` (created if missing):
/// builds it aside in [`CREATING_FILE`], initializes it, lets `fill` write
/// to it (a restore does), commits durably, then renames it to [`DB_FILE`]
/// and fsyncs the directory.
///
/// So a power cut at any moment leaves either no database (a leftover
/// [`CREATING_FILE`] at most, which held nothing acknowledged and is removed
/// by the next creation) or a whole one: never a half-created file that
/// every later start refuses.
pub(super) fn create(
    dir: &Path,
    fill: impl FnOnce(&Database) -> Result<(), OpenError>,
) -> Result<(), OpenError> {
    let shown = dir.display();
    crate::durable_fs::create_dir_all(dir)
        .map_err(|e| OpenError(format!("cannot create data dir {shown}: {}", io_reason(&e))))?;
    for witness in [ACK_FILE, LOG_FILE] {
        if dir.join(witness).exists() {
            return Err(OpenError(format!(
                "data dir {shown} holds {witness} (writes were acknowledged here) but no \
                 {DB_FILE}: the database is gone; refusing to start an empty one in its place \
                 (restore a backup into a new data dir)"
            )));
        }
    }
    refuse_foreign_files(dir)?;
    let aside = dir.join(CREATING_FILE);
    if aside.exists() {
        tracing::info!(
            "removing {}, left by a first start or a restore that did not finish \
             (it never held an acknowledged write)",
            aside.display()
        );
        std::fs::remove_file(&aside)
            .map_err(|e| OpenError(format!("cannot remove {}: {e}", aside.display())))?;
    }
    let failed =
        |e: &dyn std::fmt::Display| OpenError(format!("cannot create a database in {shown}: {e}"));
    let db = create_file(&aside).map_err(|e| match e {
        DatabaseError::Storage(redb::StorageError::Io(io)) => {
            failed(&format!("{}: {}", aside.display(), io_reason(&io)))
        }
        other => failed(&other),
    })?;
    initialize(&db).map_err(|e| failed(&e))?;
    fill(&db)?;
    // Every commit above ended with a durable one (initialize's, or the
    // last of `fill`'s), so the file's contents are on disk: only its name
    // is left to make durable.
    drop(db);
    let path = dir.join(DB_FILE);
    std::fs::rename(&aside, &path).map_err(|e| failed(&e))?;
    crate::durable_fs::sync_dir(dir).map_err(|e| failed(&e))?;
    Ok(())
}

/// A new data dir must be empty: anything in it is someone else's, and
/// creating our file beside it could mix two programs' data. A leftover
/// [`CREATING_FILE`] is ours.
fn refuse_foreign_files(dir: &Path) -> Result<(), OpenError> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| OpenError(format!("cannot read data dir {shown}: {e}")))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != CREATING_FILE && name != CLEAN_FILE && name != LOG_FILE)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.truncate(5);
    Err(OpenError(format!(
        "data dir {shown} is not empty and holds no {DB_FILE} (found: {}): refusing to \
         use a directory that is not ours; pass an empty or new directory to --data-dir",
        names.join(", ")
    )))
}

/// An I/O error in words that say what to do, for the errors that are not
/// about the data: a read-only file system, missing permissions.
fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "the file system is read-only ({error}); kvserver needs to write to its data \
             dir: remount it read-write or pick another --data-dir"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied ({error}); the user kvserver runs as needs read and write \
             access to the data dir"
        ),
        _ => error.to_string(),
    }
}

/// The engine's settings; `verify` checks every page at open.
fn builder(verify: bool) -> redb::Builder {
    let mut builder = Database::builder();
    // Verify every page's checksum at open: a file damaged since it was
    // written is refused with a message, where a plain open could trust it
    // and fail (or panic inside redb) at the first read of a bad page. It reads
    // the whole file once: about 0.2 s for a million keys, 4 to 8 s for ten
    // million, so a file closed cleanly and untouched since skips it
    // (`clean_close`).
    builder.set_check_integrity_on_open(verify);
    builder.set_cache_size(CACHE_BYTES);
    builder
}

/// redb's own page cache. Its default, 1 GiB, fills with every page written
/// (300 overwrites of a 1 MiB value took the server's memory up by 700 MiB);
/// pages outside it are read again through the OS's page cache, which the
/// kernel sizes to the machine and gives back under pressure.
const CACHE_BYTES: usize = 64 << 20;

/// Opens the database file at `path` (with the power-loss simulation's
/// file under test, when it has armed one for this data dir).
fn open_file(path: &Path, verify: bool) -> Result<Database, DatabaseError> {
    #[cfg(test)]
    if let Some(backend) = super::power_loss::backend(path, false) {
        return builder(verify).create_with_backend(backend?);
    }
    builder(verify).open(path)
}

/// Creates a database file at `path`; see [`open_file`].
fn create_file(path: &Path) -> Result<Database, DatabaseError> {
    #[cfg(test)]
    if let Some(backend) = super::power_loss::backend(path, true) {
        return builder(true).create_with_backend(backend?);
    }
    builder(true).create(path)
}

fn open_database(path: &Path, verify: bool) -> Result<Database, OpenError> {
    open_file(path, verify).map_err(|error| {
        let shown = path.display();
        OpenError(match error {
            DatabaseError::DatabaseAlreadyOpen => format!(
                "{shown} is in use by another process (another kvserver on this data dir?); \
                 a data dir serves one kvserver at a time"
            ),
            DatabaseError::Storage(redb::StorageError::Io(io))
                if matches!(
                    io.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                format!("cannot open {shown}: {}", io_reason(&io))
            }
            DatabaseError::Storage(redb::StorageError::Io(io)) => format!(
                "{shown} is not a readable kvserver database ({io}); refusing to start, \
                 the file was left untouched"
            ),
            DatabaseError::Storage(redb::StorageError::Corrupted(what)) => format!(
                "{shown} is corrupt ({what}); refusing to start, the file was left untouched \
                 (restore it from a backup)"
            ),
            other => format!("cannot open {shown}: {other}"),
        })
    })
}

/// Writes the format marker and creates the tables of a new database.
fn initialize(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(storage_error)?;
    {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        meta.insert(META_FORMAT, DATA_FORMAT.as_bytes())
            .map_err(storage_error)?;
        meta.insert(META_REVISION, FIRST_REVISION.to_le_bytes().as_slice())
            .map_err(storage_error)?;
    }
    keyspace::create_tables(&txn)?;
    txn.commit().map_err(storage_error)
}

/// The data formats a database may be in (see `record_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Latest records only; revisions counted from 0.
    V1,
    /// Versions, with created keys in the history (which reads as it is).
    V2,
    /// The current tables, without the write-ahead log.
    V3,
    /// The current one.
    Current,
}

/// Brings a database of an earlier version up to the current layout, in
/// one transaction, and returns its revision (writes nothing to one that is
/// current). Format 1 records read as they are; such a store gets an empty
/// history compacted at its revision (it kept none), and a store that was
/// never written moves to etcd's revision 1; format 2 gets the `created`
/// table, its history reads as it is; format 3 gets its marker only.
fn upgrade(db: &Database, format: Format, revision: Revision) -> Result<Revision, StoreError> {
    let missing = keyspace::tables_missing(&db.begin_read().map_err(storage_error)?);
    if !missing && format == Format::Current {
        return Ok(revision);
    }
    let revision = revision.max(FIRST_REVISION);
    let txn = db.begin_write().map_err(storage_error)?;
    keyspace::create_tables(&txn)?;
    {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        meta.insert(META_FORMAT, DATA_FORMAT.as_bytes())
            .map_err(storage_error)?;
        meta.insert(META_REVISION, revision.to_le_bytes().as_slice())
            .map_err(storage_error)?;
        if format == Format::V1 {
            // Format 1 kept no history: nothing before now can be read.
            meta.insert(META_COMPACTED, revision.to_le_bytes().as_slice())
                .map_err(storage_error)?;
        }
    }
    txn.commit().map_err(storage_error)?;
    match format {
        Format::V1 => {
            tracing::info!("upgraded the data dir from {DATA_FORMAT_V1} to {DATA_FORMAT}")
        }
        Format::V2 => {
            tracing::info!("upgraded the data dir from {DATA_FORMAT_V2} to {DATA_FORMAT}")
        }
        Format::V3 => {
            tracing::info!("upgraded the data dir from {DATA_FORMAT_V3} to {DATA_FORMAT}")
        }
        Format::Current => {}
    }
    Ok(revision)
}

/// Checks that `db` was written by kvserver in a format we read, and returns
/// its revision and format.
fn check_format(db: &Database, path: &Path) -> Result<(Revision, Format), OpenError> {
    let shown = path.display();
    let not_ours = |why: &str| {
        OpenError(format!(
            "{shown} is not a kvserver database ({why}); refusing to start, the file was \
             left untouched"
        ))
    };
    let txn = db.begin_read().map_err(|e| not_ours(&e.to_string()))?;
    let meta = txn
        .open_table(META)
        .map_err(|_| not_ours("it has no meta table"))?;
    let format = meta
        .get(META_FORMAT)
        .map_err(|e| not_ours(&e.to_string()))?
        .ok_or_else(|| not_ours("it has no format marker"))?;
    let format = match format.value() {
        found if found == DATA_FORMAT.as_bytes() => Format::Current,
        found if found == DATA_FORMAT_V1.as_bytes() => Format::V1,
        found if found == DATA_FORMAT_V2.as_bytes() => Format::V2,
        found if found == DATA_FORMAT_V3.as_bytes() => Format::V3,
        found => {
            return Err(OpenError(format!(
                "{shown} holds data in format {:?}, and this kvserver reads {DATA_FORMAT:?} \
                 (and upgrades {DATA_FORMAT_V1:?}, {DATA_FORMAT_V2:?} and {DATA_FORMAT_V3:?}); refusing to start, the file was left \
                 untouched (a newer kvserver wrote it: run that one)",
                String::from_utf8_lossy(found)
            )));
        }
    };
    let revision = meta
        .get(META_REVISION)
        .map_err(|e| not_ours(&e.to_string()))?
        .ok_or_else(|| not_ours("it has no revision"))?;
    let revision =
        record_format::decode_revision(revision.value()).map_err(|e| not_ours(&e.to_string()))?;
    Ok((revision, format))
}

/// Checks `db` (at `revision`) against the record of acknowledged
/// revisions of `dir`; raises its stored revision past revisions that were
/// handed out and lost (`--sync interval` and a crash), so that none is
/// given twice. Returns the record and the store's revision.
fn checked_against_record(
    db: &Database,
    dir: &Path,
    revision: Revision,
) -> Result<(acknowledged::Record, Revision), OpenError> {
    let (record, start) = acknowledged::check(dir, revision)?;
    if start > revision {
        raise_revision(db, start).map_err(|e| {
            OpenError(format!(
                "cannot move {} to revision {start}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok((record, start))
}

/// Stores `revision` as the store's revision (durably), for a store that
/// goes on after revisions it lost.
fn raise_revision(db: &Database, revision: Revision) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(storage_error)?;
    {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        meta.insert(META_REVISION, revision.to_le_bytes().as_slice())
            .map_err(storage_error)?;
    }
    txn.commit().map_err(storage_error)
}

/// `kvserver accept-lost-writes`: a database behind the revisions its
/// record says were acknowledged is moved past the last of them (the writes
/// stay lost; their revisions are never given again), so it starts. Returns
/// the lost revisions, or `None` if none were lost.
pub(super) fn accept_lost_writes(dir: &Path) -> Result<Option<(Revision, Revision)>, OpenError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(OpenError(format!("{} holds no {DB_FILE}", dir.display())));
    }
    let db = open_database(&path, true)?;
    let (revision, format) = check_format(&db, &path)?;
    let revision = upgrade(&db, format, revision)
        .map_err(|e| OpenError(format!("cannot update {}: {e}", path.display())))?;
    let found = acknowledged::read(dir)
        .map_err(|e| OpenError(format!("cannot read {}: {e}", dir.join(ACK_FILE).display())))?
        .unwrap_or_default();
    let last = found.handed_out.max(found.durable);
    if revision >= last {
        return Ok(None);
    }
    raise_revision(&db, last).map_err(|e| {
        OpenError(format!(
            "cannot move {} to revision {last}: {e}",
            path.display()
        ))
    })?;
    acknowledged::check(dir, last)?;
    Ok(Some((revision + 1, last)))
}

/// `kvserver check`: verifies every page of the database in `dir`, its
/// format, and that it holds every revision its record says was made
/// durable. Writes nothing but what redb's check itself commits, and, once
/// the file is verified, the record of a clean close (so the next start
/// need not verify it again). Returns what it found, in one line.
pub(super) fn check(dir: &Path) -> Result<String, OpenError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(OpenError(format!("{} holds no {DB_FILE}", dir.display())));
    }
    // This open writes to the file, which outdates any record.
    clean_close::take(dir, &path);
    let db = open_database(&path, true)?;
    let (revision, format) = check_format(&db, &path)?;
    let found = acknowledged::read(dir)
        .map_err(|e| OpenError(format!("cannot read {}: {e}", dir.join(ACK_FILE).display())))?
        .unwrap_or_default();
    if found.durable > revision {
        return Err(OpenError(format!(
            "{} is at revision {revision}, but revisions up to {} were acknowledged as \
             durable: writes were lost (see `kvserver accept-lost-writes`)",
            path.display(),
            found.durable
        )));
    }
    let logged = check_log(dir, &db)?;
    db.close()
        .map_err(|e| OpenError(format!("cannot close {}: {e}", path.display())))?;
    if let Err(error) = clean_close::record(dir, &path) {
        tracing::debug!("cannot write {}: {error}", dir.join(CLEAN_FILE).display());
    }
    let format = match format {
        Format::Current => DATA_FORMAT.to_owned(),
        Format::V1 => format!("{DATA_FORMAT_V1} (the next start upgrades it)"),
        Format::V2 => format!("{DATA_FORMAT_V2} (the next start upgrades it)"),
        Format::V3 => format!("{DATA_FORMAT_V3} (the next start upgrades it)"),
    };
    Ok(format!(
        "{}: every page verified, format {format}, revision {revision}{logged}",
        path.display()
    ))
}

/// `kvserver check`'s look at the write-ahead log (see `wal`): refuses
/// damage in the middle of it, and says how many records the next start
/// replays. Reads only.
fn check_log(dir: &Path, db: &Database) -> Result<String, OpenError> {
    let path = dir.join(LOG_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(OpenError(format!("cannot read {}: {e}", path.display()))),
    };
    let durable = db
        .begin_read()
        .map_err(storage_error)
        .and_then(|txn| keyspace::log_seq(&txn))
        .map_err(|e| OpenError(format!("cannot read {}: {e}", dir.join(DB_FILE).display())))?;
    let live = wal::scan(&data, durable).map_err(|damage| {
        OpenError(format!(
            "{} is damaged: {damage}; the next start refuses it",
            path.display()
        ))
    })?;
    Ok(match live.len() {
        0 => ", log empty".to_owned(),
        n => format!(", log: {n} batches of writes the next start applies"),
    })
}
