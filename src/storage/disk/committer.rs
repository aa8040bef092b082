//! Group commit: the one thread that writes to the database.
//!
//! Every write becomes a [`Command`] on a channel. The committer thread takes
//! the first waiting command, then everything else that queued up behind it
//! (up to [`MAX_BATCH`]), applies the whole batch in one write transaction and
//! commits it once. While one commit waits for its fsync, new writes queue, and
//! the next commit takes them all: under 64 concurrent clients one fsync serves
//! dozens of writes, with 1 client it serves one, and no write waits for a timer.
//!
//! A write is acknowledged (its reply sent) only after its transaction commits,
//! so with [`SyncPolicy::Always`] every acknowledged write is on stable storage.
//! With [`SyncPolicy::Interval`] commits skip the fsync and an fsync follows at
//! most `interval` later, which bounds what a crash can lose.
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

use redb::{Durability, WriteTransaction};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::database::DbHandle;
use super::keyspace::WriteView;
use super::{SyncPolicy, storage_error};
use crate::storage::apply;
use crate::storage::apply::Keyspace as _;
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

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

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
    /// Time spent in them, in nanoseconds: the database's commit and fsync,
    /// and the record of the acknowledged revision with its own fsync.
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
    /// are kept (0: no limit).
    pub(super) fn start(
        db: Arc<DbHandle>,
        (revision, compacted): (Revision, Revision),
        keep: u64,
        policy: SyncPolicy,
        leases: Arc<Leases>,
        hub: Arc<WatchHub>,
    ) -> Committer {
        let (commands, queue) = mpsc::channel();
        let counters = Arc::new(CommitCounters::default());
        let worker = Worker {
            counters: Arc::clone(&counters),
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
        };
        let thread = std::thread::Builder::new()
            .name("kv-committer".into())
            .spawn(move || worker.run(queue))
            .expect("the OS refused to start the committer thread");
        Committer {
            commands: Some(commands),
            thread: Some(thread),
            counters,
        }
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
        let (reply, answer) = oneshot::channel();
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
    /// When the oldest commit not yet fsynced happened (interval policy only).
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
}

impl Worker {
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
    /// fsynced: a chunk lost in a crash is dropped again after the restart).
    fn compact_step(&mut self) {
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
            self.db.committed();
            Ok(done)
        });
        self.note_failure(&result);
        match result {
            Ok(done) => {
                if self.unsynced_since.is_none() && self.policy != SyncPolicy::Always {
                    self.unsynced_since = Some(Instant::now());
                }
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

    /// When the pending unsynced commits must be fsynced, if any are pending.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.policy {
            SyncPolicy::Always => None,
            SyncPolicy::Interval(interval) => self.unsynced_since.map(|since| since + interval),
        }
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
        {
            self.sync_logged();
        }
    }

    /// Applies and commits `writes` as one transaction, then replies to each
    /// and publishes the events.
    fn commit(&mut self, writes: Vec<(Mutation, Reply)>) {
        let start = self.revision;
        let fsync = self.policy == SyncPolicy::Always;
        let began = Instant::now();
        match self.apply(writes.iter().map(|(mutation, _)| mutation), fsync) {
            Ok(applied) => {
                debug!(writes = writes.len(), "committed a batch");
                if !fsync && self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
                // Before any reply: see `acknowledged`.
                self.db.acknowledge(self.revision, fsync);
                // Its fsync is the commit's second: counted in its time.
                self.counters.record(began.elapsed());
                if let Some(compacted) = self.retained.take() {
                    self.compacted_to(compacted);
                }
                for ((_, reply), result) in writes.into_iter().zip(applied) {
                    let answer = result.map(|(outcome, revision, events)| {
                        self.hub.publish(revision, events);
                        match outcome {
                            Pending::Txn(result) => Outcome::Txn(result),
                            Pending::Granted(Some((id, ttl))) => {
                                Outcome::Granted(Some(self.leases.insert(id, ttl)))
                            }
                            Pending::Granted(None) => Outcome::Granted(None),
                            Pending::Revoked(id, deleted) => {
                                self.leases.remove(id);
                                Outcome::Revoked(deleted, revision)
                            }
                            Pending::Compacted(compacted) => {
                                self.compacted_to(compacted);
                                Outcome::Compacted(revision)
                            }
                        }
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                warn!("a commit of {} writes failed: {error}", writes.len());
                self.revision = start;
                self.retained = None;
                for (_, reply) in writes {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies `mutations` in one write transaction and commits it. Returns
    /// one result per mutation: its outcome, revision and events, or the
    /// error that made it (alone) fail.
    #[allow(clippy::type_complexity)]
    fn apply<'a>(
        &mut self,
        mutations: impl Iterator<Item = &'a Mutation> + Clone,
        fsync: bool,
    ) -> Result<Vec<Result<(Pending, Revision, Vec<Event>), StoreError>>, StoreError> {
        self.recover()?;
        self.check_free_space(mutations.clone())?;
        let result = self.db.current().and_then(|db| {
            let mut txn = db.begin_write().map_err(storage_error)?;
            if !fsync {
                txn.set_durability(Durability::None)
                    .map_err(storage_error)?;
            }
            let results = self.apply_in(&txn, mutations)?;
            txn.commit().map_err(storage_error)?;
            // Before the replies: reads from now on see this commit.
            self.db.committed();
            Ok(results)
        });
        self.note_failure(&result);
        result
    }

    #[allow(clippy::type_complexity)]
    fn apply_in<'a>(
        &mut self,
        txn: &WriteTransaction,
        mutations: impl Iterator<Item = &'a Mutation>,
    ) -> Result<Vec<Result<(Pending, Revision, Vec<Event>), StoreError>>, StoreError> {
        let leases = Arc::clone(&self.leases);
        let mut view = WriteView::open(txn, &leases)?;
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
        let compacted = self.retained.unwrap_or(self.compacted);
        if let Some(target) = apply::retention_target(self.revision, compacted, self.keep) {
            view.set_compacted(target)?;
            self.retained = Some(target);
        }
        Ok(results)
    }

    /// After a commit that moved the compacted revision: watches learn it,
    /// and the history below it starts to go.
    fn compacted_to(&mut self, compacted: Revision) {
        self.compacted = self.compacted.max(compacted);
        self.hub.compacted_to(compacted);
        self.compacting = true;
    }

    /// Reopens the database if an earlier commit left it refusing writes.
    fn recover(&mut self) -> Result<(), StoreError> {
        if self.needs_reopen {
            self.db.reopen()?;
            self.needs_reopen = false;
            warn!("the data dir was reopened after a disk error");
        }
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

    /// Makes every commit so far durable (a no-op when all already are).
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        // An empty transaction committed with fsync persists every earlier
        // commit made without one.
        self.recover()?;
        let result = self.db.current().and_then(|db| {
            let txn = db.begin_write().map_err(storage_error)?;
            txn.commit().map_err(storage_error)
        });
        self.note_failure(&result);
        result?;
        self.unsynced_since = None;
        self.db.acknowledge(self.revision, true);
        Ok(())
    }

    fn sync_logged(&mut self) {
        if let Err(error) = self.sync() {
            warn!("fsync of the data dir failed: {error}");
        }
    }
}
