//! Group commit: the one thread that writes to the database.
//!
//! Every write becomes a [`Command`] on a channel. The committer thread takes
//! the first waiting command, then everything else that queued up behind it
//! (up to [`MAX_BATCH`]), applies the whole batch in one write transaction and
//! commits it once. While one commit waits for its fsync, new writes queue, and
//! the next commit takes them all: under 64 concurrent clients one fsync serves
//! dozens of writes, with 1 client it serves one, and no write waits for a timer.
//!
//! Every commit skips redb's fsync (`Durability::None`). With
//! [`SyncPolicy::Always`] the batch's mutations are then appended to the
//! write-ahead log as one record and fdatasynced (see `wal`), and only then
//! is the snapshot holding the commit published to readers and the writes
//! acknowledged: every acknowledged write is on stable storage. A
//! checkpoint (a durable redb commit) follows within [`CHECKPOINT_INTERVAL`]
//! and the log starts again. With [`SyncPolicy::Interval`] there is no log:
//! a commit is acknowledged at once and a durable one follows at most
//! `interval` later, which bounds what a crash can lose.
//!
//! Being the only writer also makes the thread the owner of the store-wide
//! revision: it numbers writes in the order it applies them, so revisions are
//! gapless and follow commit order. A batch that fails to commit has no effect
//! at all, and its revisions are handed out again. After a commit it publishes
//! the batch's events to the watch hub, in order, and updates lease deadlines.
//!
//! A command that fails on its own (a put with an unknown lease) changes
//! nothing and fails alone (`storage::apply` checks before it writes); a
//! storage failure fails the whole batch.
//!
//! Compaction is the committer's too, as in etcd: the compacted revision is
//! committed first (from then on reads below it fail), then the history
//! below it goes in chunks of [`COMPACT_CHUNK`] entries, one small commit
//! after each batch of writes or whenever no write waits, so that a large
//! compaction never holds writers back. A restart resumes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::database::DbHandle;
use super::keyspace::{self, WriteView};
use super::relay::{Answers, Reply};
use super::wal::{self, Log};
use super::{OpenError, SyncPolicy, log_format, storage_error};
use crate::storage::apply;
use crate::storage::apply::Keyspace as _;
use crate::storage::apply::KeyspaceRead as _;
use crate::storage::lease::{LeaseInfo, Leases};
use crate::storage::ops::{Event, EventKind, LeaseId, Op, Txn, TxnResult};
use crate::storage::watch::WatchHub;
use crate::storage::{COMMIT_LATENCY_BOUNDS, Revision, StoreError};

/// A mutation applied but not yet committed: what to do once it is.
enum Pending {
    Txn(TxnResult),
    Granted(Option<(LeaseId, Duration)>),
    Revoked(LeaseId, u64),
    Compacted(Revision),
}

/// History entries dropped per commit while compacting (etcd's batch).
const COMPACT_CHUNK: usize = 1000;

/// Free space kept in reserve on the data dir's file system: a batch is
/// refused with `RESOURCE_EXHAUSTED` before redb runs out of room mid-commit
/// (which would force a reopen of the database, see `database.rs`).
const RESERVE_BYTES: u64 = 1024 * 1024;
/// Room a commit may need per write beyond its key and value: copied B-tree
/// pages on the way to its leaf.
const PAGE_BYTES_PER_WRITE: u64 = 8 * 1024;

/// Longest the writes of `--sync always` stay only in the log: a
/// checkpoint (a durable commit of the database) follows within this.
///
/// A second, not etcd's 100 ms: a checkpoint writes every B-tree page the
/// commits since the last one dirtied, and random keys dirty about one
/// leaf each, so the longer the interval, the more writes share a leaf's
/// write. Measured under etcd-benchmark's `put` (100,000 keys): at 100 ms
/// the checkpoints were a tenth of the server's CPU; at a second the
/// server's CPU per Put fell 11 % and its p99 from 16 to 6.5 ms (fewer
/// stalls of the committer). The price is replay after a crash: at most a
/// second of writes (or [`wal::CHECKPOINT_BYTES`] of log), a fraction of a
/// second to apply again (`docs/PERFORMANCE.md`, "Checkpoints every
/// second").
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a commit waits for more writes to join it (see `Worker::gather`).
const MAX_GATHER: Duration = Duration::from_millis(1);

/// Most writes one commit takes. Large enough that a full batch amortizes its
/// fsync well; small enough that one commit never holds many replies long.
const MAX_BATCH: usize = 1024;

/// A change to stored data, applied by the committer in order.
#[derive(Debug)]
pub(super) enum Mutation {
    /// Run a transaction.
    Txn(Txn),
    /// Store a new lease.
    Grant {
        /// Its id, chosen by the caller.
        id: LeaseId,
        /// Its TTL.
        ttl: Duration,
    },
    /// Delete a lease's keys, reported to watchers as `kind`, and the lease.
    Revoke {
        /// The lease.
        id: LeaseId,
        /// `Expire` or `Delete`.
        kind: EventKind,
    },
    /// Compact the history below a revision.
    Compact(Revision),
}

/// What a committed [`Mutation`] answers.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The transaction's answer.
    Txn(TxnResult),
    /// The lease was stored; `None` if its id was taken.
    Granted(Option<LeaseInfo>),
    /// The lease is gone, with this many keys, at this revision.
    Revoked(u64, Revision),
    /// The compacted revision is stored; the store is at this revision.
    Compacted(Revision),
}

/// What the committer thread is asked to do.
enum Command {
    /// Apply a mutation and reply once it is committed.
    Write(Mutation, Reply),
    /// Reply once everything acknowledged so far is on stable storage.
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// The handle of the committer thread. Dropping it lets the thread finish the
/// commands already queued, make them durable, and exit; it is joined then.
pub(super) struct Committer {
    commands: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<CommitCounters>,
}

/// What the committer has done, for metrics.
#[derive(Debug, Default)]
pub(super) struct CommitCounters {
    /// Commits that succeeded.
    pub(super) commits: AtomicU64,
    /// Time spent in them, in nanoseconds: the database's commit (without
    /// fsync) and, under `--sync always`, the log's write and fdatasync.
    /// Checkpoints are not counted.
    pub(super) nanos: AtomicU64,
    /// Commits by time taken (`StoreStats::commit_latency`).
    pub(super) latency: [AtomicU64; COMMIT_LATENCY_BOUNDS.len() + 1],
}

impl CommitCounters {
    /// Counts a commit that took `took`.
    fn record(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = COMMIT_LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(COMMIT_LATENCY_BOUNDS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The commits by time taken, as counted so far.
    pub(super) fn latency(&self) -> [u64; COMMIT_LATENCY_BOUNDS.len() + 1] {
        std::array::from_fn(|bucket| self.latency[bucket].load(Ordering::Relaxed))
    }
}

impl Committer {
    /// Starts the thread over `db`, whose stored revision is `revision` and
    /// compacted revision `compacted`; at most `keep` revisions of history
    /// are kept (0: no limit). First replays the write-ahead log (see
    /// `wal`) through the committer's own code path, makes the database
    /// durable, checks it against the record of acknowledged revisions and
    /// publishes the snapshot reads start from; refuses a damaged log.
    pub(super) fn start(
        db: Arc<DbHandle>,
        (revision, compacted): (Revision, Revision),
        keep: u64,
        policy: SyncPolicy,
        leases: Arc<Leases>,
        hub: Arc<WatchHub>,
    ) -> Result<Committer, OpenError> {
        let (commands, queue) = mpsc::channel();
        let counters = Arc::new(CommitCounters::default());
        let mut worker = Worker::new(
            Arc::clone(&db),
            (revision, compacted),
            keep,
            policy,
            leases,
            hub,
            Arc::clone(&counters),
        )?;
        worker.open_replay(true)?;
        let start = db.check_acknowledged(worker.revision)?;
        if start > worker.revision {
            // Revisions handed out and lost (`--sync interval`): never reused.
            worker.revision = start;
            worker.hub.publish(start, Vec::new());
        }
        let snapshot = db
            .fresh_snapshot()
            .map_err(|e| OpenError(format!("cannot read {}: {e}", db.dir().display())))?;
        db.publish(snapshot);
        let thread = std::thread::Builder::new()
            .name("kv-committer".into())
            .spawn(move || worker.run(queue))
            .expect("the OS refused to start the committer thread");
        Ok(Committer {
            commands: Some(commands),
            thread: Some(thread),
            counters,
        })
    }

    /// `kvserver accept-lost-writes`: replays what the log of `db` holds
    /// and makes the database durable; a damaged log gives what comes
    /// before the damage and is emptied (the loss accepted). Returns the
    /// damage, if any.
    pub(super) fn replay_accepting_loss(
        db: Arc<DbHandle>,
        (revision, compacted): (Revision, Revision),
    ) -> Result<Option<String>, OpenError> {
        let mut worker = Worker::new(
            db,
            (revision, compacted),
            0,
            SyncPolicy::Always,
            Arc::new(Leases::default()),
            Arc::new(WatchHub::new(revision, compacted, Default::default())),
            Arc::default(),
        )?;
        let shown = worker.log.path().display().to_string();
        let damage = worker
            .replay(false, true)
            .map_err(|e| OpenError(format!("cannot replay {shown}: {e}")))?;
        worker
            .checkpoint()
            .map_err(|e| OpenError(format!("cannot make the replay of {shown} durable: {e}")))?;
        if damage.is_some() {
            worker
                .log
                .clear()
                .map_err(|e| OpenError(format!("cannot empty {shown}: {e}")))?;
        }
        Ok(damage)
    }

    /// What the thread has done so far.
    pub(super) fn counters(&self) -> &CommitCounters {
        &self.counters
    }

    /// Applies `mutation`; answers once it is committed.
    pub(super) async fn write(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        self.submit(mutation).await
    }

    /// Queues `mutation` now, before the returned future is first polled, so
    /// that mutations submitted one after another join one commit; the
    /// future answers once it is committed.
    pub(super) fn submit(
        &self,
        mutation: Mutation,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + use<> {
        let (reply, answer) = Reply::here();
        let sent = self.send(Command::Write(mutation, reply));
        async move {
            sent?;
            answer.await.map_err(|_| stopped())?
        }
    }

    /// Returns once every write acknowledged so far is on stable storage.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        answer.await.map_err(|_| stopped())?
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .as_ref()
            .ok_or_else(stopped)?
            .send(command)
            .map_err(|_| stopped())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel is the thread's signal to drain and stop.
        self.commands = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the committer thread panicked");
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the disk store's committer has stopped".into())
}

/// The state owned by the committer thread.
struct Worker {
    counters: Arc<CommitCounters>,
    db: Arc<DbHandle>,
    leases: Arc<Leases>,
    hub: Arc<WatchHub>,
    /// The last revision handed out and committed.
    revision: Revision,
    policy: SyncPolicy,
    /// When the oldest commit not yet made durable happened.
    unsynced_since: Option<Instant>,
    /// A commit failed with an I/O error, after which redb takes no more
    /// writes until the database is opened again.
    needs_reopen: bool,
    /// Commands the last batch held, and how long processing it took: the
    /// measure of how many writes the next batch can expect (see `gather`).
    last_batch: usize,
    last_cycle: Duration,
    /// History below the compacted revision may be left to drop.
    compacting: bool,
    /// The compacted revision committed.
    compacted: Revision,
    /// Revisions of history kept (0: no limit).
    keep: u64,
    /// The compacted revision the transaction being built moves to, to keep
    /// the history within `keep`.
    retained: Option<Revision>,
    /// The write-ahead log (written under `--sync always` only).
    log: Log,
    /// The last log record applied to the database.
    log_seq: u64,
    /// Why writes stopped for good: the log could not be written or
    /// synced, so the database may hold a batch the log does not (see
    /// [`Worker::log_failed`]).
    broken: Option<String>,
}

/// One mutation applied: what to answer once committed, its revision and
/// its events; or the error that made it (alone) fail.
type MutationResult = Result<(Pending, Revision, Vec<Event>), StoreError>;

/// What applying one batch gave: each mutation's result, the leases it
/// found expired, and the compacted revision it moved to for retention.
struct Applied {
    results: Vec<MutationResult>,
    expired: Vec<LeaseId>,
    retained: Option<Revision>,
}

/// Why a replay stopped.
enum ReplayError {
    /// The log is damaged: what it held cannot be had again.
    Damaged(String),
    /// The database failed (a disk error): a later replay may succeed.
    Store(StoreError),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Damaged(damage) => f.write_str(damage),
            ReplayError::Store(error) => write!(f, "{error}"),
        }
    }
}

/// What a replayed batch follows in the log (see `Worker::apply`).
struct Replayed<'a> {
    expired: &'a [LeaseId],
    retained: Option<Revision>,
}

impl Worker {
    fn new(
        db: Arc<DbHandle>,
        (revision, compacted): (Revision, Revision),
        keep: u64,
        policy: SyncPolicy,
        leases: Arc<Leases>,
        hub: Arc<WatchHub>,
        counters: Arc<CommitCounters>,
    ) -> Result<Worker, OpenError> {
        let log = Log::open(db.dir()).map_err(|e| {
            OpenError(format!(
                "cannot open {}: {e}",
                db.dir().join(wal::LOG_FILE).display()
            ))
        })?;
        Ok(Worker {
            counters,
            db,
            leases,
            hub,
            revision,
            policy,
            unsynced_since: None,
            needs_reopen: false,
            last_batch: 0,
            last_cycle: Duration::ZERO,
            // A compaction a restart interrupted goes on.
            compacting: true,
            compacted,
            keep,
            retained: None,
            log,
            log_seq: 0,
            broken: None,
        })
    }

    /// At open: replays the log (`bookkeeping`: with the leases and the
    /// watch hub told, as after a live commit) and makes it all durable,
    /// or refuses a damaged log.
    fn open_replay(&mut self, bookkeeping: bool) -> Result<(), OpenError> {
        let shown = self.log.path().display().to_string();
        self.replay(bookkeeping, false).map_err(|e| {
            OpenError(format!(
                "cannot replay {shown}: {e}. Refusing to start, nothing was changed. \
                 Restore a backup into a new data dir, or accept the loss with `kvserver \
                 accept-lost-writes --data-dir {}` (it applies what comes before the \
                 damage)",
                self.db.dir().display()
            ))
        })?;
        self.checkpoint()
            .map_err(|e| OpenError(format!("cannot make the replay of {shown} durable: {e}")))?;
        // Every record is in the database durably now.
        self.log
            .upgrade()
            .map_err(|e| OpenError(format!("cannot rewrite {shown} with a header: {e}")))
    }

    /// Applies the log's records that the database does not hold durably,
    /// one commit each, through [`Worker::apply`] as live batches are; with
    /// `bookkeeping`, also what follows a live commit but the replies
    /// (watch events, lease deadlines). The database must hold only its
    /// durable state (just opened). An error says what is damaged.
    /// With `accept_damage`, a damaged log gives the records before the
    /// damage, which is returned.
    fn replay(
        &mut self,
        bookkeeping: bool,
        accept_damage: bool,
    ) -> Result<Option<String>, ReplayError> {
        let durable = self
            .db
            .current()
            .and_then(|db| keyspace::log_seq(&db.begin_read().map_err(storage_error)?))
            .map_err(ReplayError::Store)?;
        self.log_seq = durable;
        let (records, damage) = if accept_damage {
            self.log
                .live_before_damage(durable)
                .map_err(ReplayError::Damaged)?
        } else {
            (self.log.live(durable).map_err(ReplayError::Damaged)?, None)
        };
        if !records.is_empty() {
            tracing::info!(
                "replaying {} batches of acknowledged writes from {}",
                records.len(),
                self.log.path().display()
            );
        }
        for (seq, payload) in records {
            let batch = log_format::decode(payload)
                .map_err(|e| ReplayError::Damaged(format!("record {seq} cannot be read: {e}")))?;
            let replayed = Replayed {
                expired: &batch.expired,
                retained: batch.retained,
            };
            let applied = self
                .apply(batch.mutations.iter(), Some(seq), Some(replayed))
                .map_err(ReplayError::Store)?;
            self.log_seq = seq;
            let results = self.after_commit(applied.results, bookkeeping);
            debug!(seq, batch = results.len(), "replayed a log record");
        }
        Ok(damage)
    }

    fn run(mut self, queue: Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = match self.sync_deadline() {
                // Compaction goes on while no write waits.
                _ if self.compacting => match queue.try_recv() {
                    Ok(command) => Ok(command),
                    Err(TryRecvError::Empty) => {
                        self.compact_step();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                },
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => {
                    queue.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match first {
                Ok(command) => batch.push(command),
                Err(RecvTimeoutError::Timeout) => {
                    self.sync_logged();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_logged();
                    return;
                }
            }
            self.gather(&queue, &mut batch);
            let started = Instant::now();
            self.process(&mut batch);
            self.last_cycle = started.elapsed();
            // And between batches, so that a steady load cannot starve it.
            if self.compacting {
                self.compact_step();
            }
        }
    }

    /// Drops one chunk of compacted history, in a commit of its own (not
    /// durable, and not logged: a chunk lost in a crash is dropped again
    /// after the restart).
    fn compact_step(&mut self) {
        if self.broken.is_some() {
            self.compacting = false;
            return;
        }
        let result = self.recover().and_then(|()| {
            let db = self.db.current()?;
            let mut txn = db.begin_write().map_err(storage_error)?;
            txn.set_durability(Durability::None)
                .map_err(storage_error)?;
            let done = {
                let mut view = WriteView::open(&txn, &self.leases)?;
                apply::compact_chunk(&mut view, COMPACT_CHUNK)?
            };
            txn.commit().map_err(storage_error)?;
            // Every write before it is logged: reads may see it at once.
            self.db.publish(self.db.fresh_snapshot()?);
            Ok(done)
        });
        self.note_failure(&result);
        match result {
            Ok(done) => {
                self.unsynced_since.get_or_insert_with(Instant::now);
                self.compacting = !done;
            }
            Err(error) => {
                warn!("compacting the history failed (retried at the next compaction): {error}");
                self.compacting = false;
            }
        }
    }

    /// Adds to `batch` what is queued, and, when fewer writes are waiting
    /// than the last commit took, waits a little for the rest.
    ///
    /// Without the wait, group commit under steady load splits into small
    /// and large batches: the clients a commit acknowledges answer with their
    /// next writes one by one, and the committer starts its next commit with
    /// the first few, making the others wait a whole commit longer (measured:
    /// a fifth of all commits held one write, at 64 clients). Waiting until as
    /// many writes queue as the last commit carried, for at most half a commit
    /// (and never more than [`MAX_GATHER`]), keeps batches whole. A lone client
    /// never waits: its last commit carried one write, which is already here.
    fn gather(&mut self, queue: &Receiver<Command>, batch: &mut Vec<Command>) {
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let wanted = self.last_batch.min(MAX_BATCH);
        if batch.len() >= wanted {
            return;
        }
        let deadline = Instant::now() + (self.last_cycle / 2).min(MAX_GATHER);
        while batch.len() < wanted {
            match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
    }

    /// When the commits not yet durable must be made so (a checkpoint, under
    /// `--sync always`), if any are pending.
    fn sync_deadline(&self) -> Option<Instant> {
        let interval = match self.policy {
            SyncPolicy::Always => CHECKPOINT_INTERVAL,
            SyncPolicy::Interval(interval) => interval,
        };
        self.unsynced_since.map(|since| since + interval)
    }

    fn process(&mut self, batch: &mut Vec<Command>) {
        // A slowly decaying peak: one small batch must not lower the next
        // batch's target (otherwise small batches beget small batches).
        self.last_batch = batch.len().max(self.last_batch * 7 / 8);
        let mut writes = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Write(mutation, reply) => writes.push((mutation, reply)),
                Command::Flush(reply) => flushes.push(reply),
            }
        }
        if !writes.is_empty() {
            self.commit(writes);
        }
        if !flushes.is_empty() {
            let result = self.sync();
            for reply in flushes {
                let _ = reply.send(result.clone());
            }
        }
        if self
            .sync_deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
            || self.log.written() > wal::CHECKPOINT_BYTES
        {
            self.sync_logged();
        }
    }

    /// Applies and commits `writes` as one transaction (without fsync),
    /// logs it (`--sync always`: appended to the log and fdatasynced), then
    /// publishes the snapshot that holds it, replies to each write and
    /// publishes the events.
    fn commit(&mut self, writes: Vec<(Mutation, Reply)>) {
        if let Some(broken) = &self.broken {
            let error = StoreError::Unavailable(broken.clone());
            for (_, reply) in writes {
                reply.send(Err(error.clone()));
            }
            return;
        }
        let start = self.revision;
        let logged = self.policy == SyncPolicy::Always;
        let seq = logged.then_some(self.log_seq + 1);
        let began = Instant::now();
        let applied = match self.apply(writes.iter().map(|(mutation, _)| mutation), seq, None) {
            Ok(applied) => applied,
            Err(error) => {
                warn!("a commit of {} writes failed: {error}", writes.len());
                self.revision = start;
                self.retained = None;
                for (_, reply) in writes {
                    reply.send(Err(error.clone()));
                }
                return;
            }
        };
        if let Some(seq) = seq {
            let mutations = writes.iter().map(|(mutation, _)| mutation);
            let written = self.log.append(seq, |out| {
                log_format::encode_into(&applied.expired, applied.retained, mutations, out)
            });
            if let Err(error) = written {
                let error = self.log_failed(error);
                for (_, reply) in writes {
                    reply.send(Err(error.clone()));
                }
                return;
            }
            self.log_seq = seq;
        }
        // Before any reply: reads from now on see this commit.
        match self.db.fresh_snapshot() {
            Ok(snapshot) => self.db.publish(snapshot),
            Err(error) => {
                // Logged, so durable; but unseen: the outcome is unknown
                // to the writer, and a reopen publishes it (after a replay).
                warn!("cannot read the database after a commit: {error}");
                self.needs_reopen = true;
                let error = StoreError::Unavailable(format!(
                    "the write's outcome is unknown: the database cannot be read after \
                     its commit ({error})"
                ));
                for (_, reply) in writes {
                    reply.send(Err(error.clone()));
                }
                return;
            }
        }
        debug!(writes = writes.len(), "committed a batch");
        // Before any reply: see `acknowledged` (not synced: the log is
        // what makes the writes durable).
        self.db.acknowledge(self.revision, false);
        self.counters.record(began.elapsed());
        let answers = self.after_commit(applied.results, true);
        let mut relayed = Answers::default();
        for ((_, reply), answer) in writes.into_iter().zip(answers) {
            relayed.add(reply, answer);
        }
        relayed.deliver();
    }

    /// What follows a commit, live or replayed, but the replies: the
    /// compacted revision moved on; with `bookkeeping`, the events
    /// published and the leases' deadlines set or dropped (a replay after
    /// a reopen skips these: they are already done). Returns each
    /// mutation's answer.
    fn after_commit(
        &mut self,
        results: Vec<MutationResult>,
        bookkeeping: bool,
    ) -> Vec<Result<Outcome, StoreError>> {
        if let Some(compacted) = self.retained.take() {
            self.compacted_to(compacted);
        }
        results
            .into_iter()
            .map(|result| {
                result.map(|(outcome, revision, events)| {
                    if bookkeeping {
                        self.hub.publish(revision, events);
                    }
                    match outcome {
                        Pending::Txn(result) => Outcome::Txn(result),
                        Pending::Granted(Some((id, ttl))) if bookkeeping => {
                            Outcome::Granted(Some(self.leases.insert(id, ttl)))
                        }
                        Pending::Granted(Some((id, ttl))) => Outcome::Granted(Some(LeaseInfo {
                            id,
                            ttl,
                            remaining: ttl,
                        })),
                        Pending::Granted(None) => Outcome::Granted(None),
                        Pending::Revoked(id, deleted) => {
                            if bookkeeping {
                                self.leases.remove(id);
                            }
                            Outcome::Revoked(deleted, revision)
                        }
                        Pending::Compacted(compacted) => {
                            self.compacted_to(compacted);
                            Outcome::Compacted(revision)
                        }
                    }
                })
            })
            .collect()
    }

    /// The log could not be written or synced: the database now holds a
    /// batch the log may not, so no later write may be acknowledged on top
    /// of it (a power cut would take the batch back from under them), and
    /// no checkpoint may make it durable behind the log's back. Writes
    /// stop until a restart, which replays what the log holds; reads go on
    /// from the last snapshot published (every write in it is logged), as
    /// etcd does when its WAL fails. Returns the batch's answer.
    fn log_failed(&mut self, error: std::io::Error) -> StoreError {
        let message = format!(
            "the write-ahead log {} could not be written ({error}): writes are refused \
             until kvserver restarts (reads go on)",
            self.log.path().display()
        );
        tracing::error!("{message}");
        self.broken = Some(message);
        StoreError::Unavailable(format!(
            "the write's outcome is unknown: the write-ahead log failed ({error}); writes \
             are refused until kvserver restarts"
        ))
    }

    /// Applies `mutations` in one write transaction and commits it without
    /// fsync, with `seq` as the last log record applied if given; as the
    /// log says for a `replayed` batch. Returns one result per mutation:
    /// its outcome, revision and events, or the error that made it (alone)
    /// fail.
    fn apply<'a>(
        &mut self,
        mutations: impl Iterator<Item = &'a Mutation> + Clone,
        seq: Option<u64>,
        replayed: Option<Replayed<'_>>,
    ) -> Result<Applied, StoreError> {
        let replaying = replayed.is_some();
        if !replaying {
            self.recover()?;
            self.check_free_space(mutations.clone())?;
        }
        let start = self.revision;
        let result = self.db.current().and_then(|db| {
            let mut txn = db.begin_write().map_err(storage_error)?;
            txn.set_durability(Durability::None)
                .map_err(storage_error)?;
            let applied = self.apply_in(&txn, mutations, seq, replayed)?;
            txn.commit().map_err(storage_error)?;
            Ok(applied)
        });
        if result.is_ok() {
            self.unsynced_since.get_or_insert_with(Instant::now);
        } else {
            // A batch that fails to commit has no effect at all.
            self.revision = start;
            self.retained = None;
        }
        // A replay's failure is its caller's to handle (see `recover`).
        if !replaying {
            self.note_failure(&result);
        }
        result
    }

    fn apply_in<'a>(
        &mut self,
        txn: &WriteTransaction,
        mutations: impl Iterator<Item = &'a Mutation>,
        seq: Option<u64>,
        replayed: Option<Replayed<'_>>,
    ) -> Result<Applied, StoreError> {
        let leases = Arc::clone(&self.leases);
        let mut view = WriteView::open(txn, &leases)?;
        if let Some(replayed) = &replayed {
            view = view.replaying(replayed.expired);
        }
        let mut results = Vec::new();
        for mutation in mutations {
            let current = self.revision;
            let result = match mutation {
                Mutation::Txn(txn) => apply::apply(&mut view, txn, current).map(|applied| {
                    let revision = applied.result.revision;
                    (Pending::Txn(applied.result), revision, applied.events)
                }),
                Mutation::Grant { id, ttl } => view.grant(*id, *ttl).map(|stored| {
                    (
                        Pending::Granted(stored.then_some((*id, *ttl))),
                        current,
                        Vec::new(),
                    )
                }),
                Mutation::Revoke { id, kind } => apply::revoke(&mut view, *id, *kind, current).map(
                    |(deleted, revision, events)| {
                        (Pending::Revoked(*id, deleted), revision, events)
                    },
                ),
                Mutation::Compact(revision) => apply::compact(&mut view, *revision, current)
                    .map(|()| (Pending::Compacted(*revision), current, Vec::new())),
            };
            match result {
                Ok(done) => {
                    self.revision = done.1;
                    results.push(Ok(done));
                }
                // Nothing was changed: only this mutation fails.
                Err(
                    error @ (StoreError::LeaseNotFound(_)
                    | StoreError::Compacted { .. }
                    | StoreError::FutureRevision { .. }
                    | StoreError::WholeReadTooLarge(_)),
                ) => {
                    results.push(Err(error));
                }
                Err(error) => return Err(error),
            }
        }
        view.set_revision(self.revision)?;
        if let Some(seq) = seq {
            view.set_log_seq(seq)?;
        }
        let target = match &replayed {
            Some(replayed) => replayed.retained,
            None => {
                let compacted = self.retained.unwrap_or(self.compacted);
                apply::retention_target(self.revision, compacted, self.keep)
            }
        };
        if let Some(target) = target {
            view.set_compacted(target)?;
            self.retained = Some(target);
        }
        Ok(Applied {
            results,
            expired: view.expired(),
            retained: target,
        })
    }

    /// After a commit that moved the compacted revision: watches learn it,
    /// and the history below it starts to go.
    fn compacted_to(&mut self, compacted: Revision) {
        self.compacted = self.compacted.max(compacted);
        self.hub.compacted_to(compacted);
        self.compacting = true;
    }

    /// Reopens the database if an earlier commit left it refusing writes;
    /// the reopen drops the commits not yet durable, which the log holds:
    /// replays them (without telling the leases and watches again), makes
    /// them durable, and publishes the snapshot reads go on from.
    fn recover(&mut self) -> Result<(), StoreError> {
        if !self.needs_reopen {
            return Ok(());
        }
        if let Some(broken) = &self.broken {
            return Err(StoreError::Unavailable(broken.clone()));
        }
        self.db.reopen()?;
        warn!("the data dir was reopened after a disk error");
        let before = self.revision;
        let (revision, compacted) = self.db.current().and_then(|db| {
            let txn = db.begin_read().map_err(storage_error)?;
            let view = super::keyspace::ReadView::new(txn, &self.leases)?;
            Ok((view.revision()?, view.compacted()?))
        })?;
        self.revision = revision;
        self.compacted = self.compacted.max(compacted);
        self.retained = None;
        self.unsynced_since = None;
        match self.replay(false, false) {
            Ok(_) => {}
            Err(ReplayError::Store(error)) => return Err(error),
            Err(ReplayError::Damaged(damage)) => {
                // The log no longer holds what was acknowledged: nothing
                // more may be, nor served from a database missing it.
                let message = format!(
                    "after a disk error, {} cannot be replayed ({damage}): writes are \
                     refused until kvserver restarts",
                    self.log.path().display()
                );
                tracing::error!("{message}");
                self.broken = Some(message.clone());
                return Err(StoreError::Unavailable(message));
            }
        }
        if self.revision != before {
            let message = format!(
                "after a disk error, the replay of {} ended at revision {} where the store \
                 was at {before}: writes are refused until kvserver restarts",
                self.log.path().display(),
                self.revision
            );
            tracing::error!("{message}");
            self.broken = Some(message.clone());
            return Err(StoreError::Unavailable(message));
        }
        // Everything in it is logged: reads may go on from it at once.
        self.db.publish(self.db.fresh_snapshot()?);
        self.checkpoint()?;
        self.needs_reopen = false;
        Ok(())
    }

    /// `RESOURCE_EXHAUSTED` unless the file system has room for the batch
    /// and the reserve, so a full disk refuses writes before redb fails.
    fn check_free_space<'a>(
        &self,
        mutations: impl Iterator<Item = &'a Mutation>,
    ) -> Result<(), StoreError> {
        let needed = mutations.fold(RESERVE_BYTES, |needed, mutation| {
            let written: u64 = match mutation {
                Mutation::Txn(txn) => txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .map(|op| match op {
                        Op::Put { key, value, .. } => {
                            2 * (key.len() + value.len()) as u64 + PAGE_BYTES_PER_WRITE
                        }
                        Op::Delete { .. } | Op::Get(_) => PAGE_BYTES_PER_WRITE,
                    })
                    .sum(),
                Mutation::Grant { .. } | Mutation::Revoke { .. } | Mutation::Compact(_) => {
                    PAGE_BYTES_PER_WRITE
                }
            };
            needed + written
        });
        let free = self.db.free_bytes()?;
        if free < needed {
            return Err(StoreError::ResourceExhausted(format!(
                "the disk of the data dir is full: {free} bytes free, and writes stop \
                 while fewer than {needed} are (a reserve of {RESERVE_BYTES} plus this \
                 write); free some space and retry"
            )));
        }
        Ok(())
    }

    /// After an I/O error redb refuses reads and writes until the database
    /// is reopened: reopen it now, so reads go on, or at the next write if
    /// that fails too.
    fn note_failure<T>(&mut self, result: &Result<T, StoreError>) {
        if matches!(
            result,
            Err(StoreError::ResourceExhausted(_) | StoreError::Unavailable(_))
        ) {
            self.needs_reopen = true;
            if let Err(error) = self.recover() {
                warn!("reopening the data dir after a disk error failed: {error}");
            }
        }
    }

    /// Makes every commit so far durable (a no-op when all already are):
    /// the checkpoint of `--sync always`, the fsync of `--sync interval`.
    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(broken) = &self.broken {
            return Err(StoreError::Unavailable(broken.clone()));
        }
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        self.recover()?;
        self.checkpoint()
    }

    /// A durable commit of the database, which makes every earlier commit
    /// durable; then the log starts again (never before that commit's
    /// fsync returned: until then its records are all there is).
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        let result = self.db.current().and_then(|db| {
            let txn = db.begin_write().map_err(storage_error)?;
            txn.commit().map_err(storage_error)
        });
        if result.is_err() {
            self.needs_reopen = true;
        }
        result?;
        self.unsynced_since = None;
        self.log.restart();
        self.db.acknowledge(self.revision, true);
        Ok(())
    }

    fn sync_logged(&mut self) {
        if let Err(error) = self.sync() {
            warn!("fsync of the data dir failed: {error}");
        }
    }
}
