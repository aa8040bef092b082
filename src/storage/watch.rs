//! Watch: the stream of changes, live and from a past revision.
//!
//! Backends publish the events of each write, in revision order, to their
//! [`WatchHub`], which hands them to the watches running at that moment and
//! keeps nothing: the history is the store's own multi-version history
//! (`storage::apply`), so a watch may start at any revision not compacted,
//! after a restart too, and memory does not grow with the values written.
//!
//! Watches are followed in sets ([`Watches`], `set.rs`): each consumer (an
//! etcd Watch stream with all its watches, or one watch of our own API)
//! subscribes to the live events once, replays the history of a watch from
//! the past from the store ([`History`]), a few revisions at a time, and
//! takes each live revision for all its watches at once, filtered by key
//! range. A set too slow for the broadcast buffer is not dropped: its
//! watches catch up from the store again, and only if compaction has passed
//! one does it get `Compacted`. Nothing is ever skipped silently.
//!
//! A consumer that stops reading is cut off once the revision it is stuck on
//! is more than `max_lag` revisions behind the newest: its set gives back
//! its places and what was queued, and its watches end with
//! [`StoreError::LimitReached`] (RESOURCE_EXHAUSTED) naming `--watch-max-lag`.
//! So a slow consumer holds at most its stream buffer and HTTP/2 window,
//! never the others' progress or an unbounded backlog.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::ops::{Event, KeyRange};
use super::{Revision, StoreError};

mod set;

pub use set::{Delivery, Indices, Item, Patience, WatchId, Watches};

/// The events of one watch, one revision's worth at a time, in revision
/// order. Ends with an error if the watcher fell behind the history.
pub type EventStream = ReceiverStream<Result<Vec<Event>, StoreError>>;

/// Live revisions buffered per watcher before it must catch up from the
/// store. Small: a buffered revision holds its values.
const BROADCAST_BUFFER: usize = 256;
/// Revisions buffered between a watch task and its consumer.
const STREAM_BUFFER: usize = 64;
/// Writes read from the store at a time while a watch replays history.
const REPLAY_WRITES: usize = 64;

/// Limits of a [`WatchHub`], and of the history watches replay.
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Revisions of history kept (`--watch-history`): once the history
    /// holds twice this many, the store compacts it to this many. 0: kept
    /// until compacted otherwise.
    pub history: usize,
    /// Watches open at once.
    pub max_watchers: usize,
    /// Revisions a watcher may fall behind the newest before it is cut off.
    pub max_lag: u64,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            history: 100_000,
            max_watchers: 10_000,
            max_lag: 10_000,
        }
    }
}

/// Where a watch reads the history it replays: the store.
pub(crate) trait History: Send + Sync + 'static {
    /// The events of `range` from `from` to `to` (inclusive), about `max`
    /// writes' worth of whole revisions, and the revision to go on from
    /// (see `apply::events`). May block (a disk read): watch tasks call it
    /// on a blocking thread.
    fn events(
        &self,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError>;
}

struct Live {
    /// The newest revision published.
    latest: Revision,
    sender: broadcast::Sender<Arc<[Event]>>,
    /// `latest`, for watch tasks blocked on a slow consumer.
    newest: tokio::sync::watch::Sender<Revision>,
}

/// Where a store's changes go, and where watches come from.
pub(crate) struct WatchHub {
    live: Arc<Mutex<Live>>,
    /// The compacted revision, as the store last said.
    compacted: AtomicU64,
    limits: WatchLimits,
    watchers: Arc<AtomicUsize>,
    /// Bytes of keys and values written since the store opened: an upper
    /// bound of what the history grew by (`--history-max-bytes`).
    written: AtomicU64,
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // Every change is completed before the lock is released.
    live.lock().unwrap_or_else(|p| p.into_inner())
}

impl WatchHub {
    /// A hub for a store whose revision is `current` and compacted revision
    /// `compacted`.
    pub(crate) fn new(current: Revision, compacted: Revision, limits: WatchLimits) -> WatchHub {
        let (sender, _) = broadcast::channel(BROADCAST_BUFFER);
        let (newest, _) = tokio::sync::watch::channel(current);
        WatchHub {
            live: Arc::new(Mutex::new(Live {
                latest: current,
                sender,
                newest,
            })),
            compacted: AtomicU64::new(compacted),
            written: AtomicU64::new(0),
            limits,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes the events of one write at `revision`. Callers publish in
    /// revision order, after the write is visible to readers.
    pub(crate) fn publish(&self, revision: Revision, events: Vec<Event>) {
        let mut live = lock(&self.live);
        live.latest = live.latest.max(revision);
        if events.is_empty() {
            return;
        }
        let bytes: usize = events
            .iter()
            .map(|event| event.key.len() + event.record.value.len())
            .sum();
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
        // Watch sets subscribe under this lock (`Watches::local`, which
        // brings `newest` up to `latest` first), so with nobody subscribed
        // nobody can miss these: skip the copy into a shared slice, the
        // broadcast's lock and the wake-ups of `newest`'s notifiers.
        if live.newest.receiver_count() > 0 {
            live.newest.send_replace(live.latest);
        }
        if live.sender.receiver_count() > 0 {
            // An error only means that the last watcher just left.
            let _ = live.sender.send(events.into());
        }
    }

    /// Bytes of keys and values published since the hub was made.
    pub(crate) fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The newest revision published.
    pub(crate) fn latest(&self) -> Revision {
        lock(&self.live).latest
    }

    /// Notes the store's new compacted revision (watches from below it are
    /// refused at once).
    pub(crate) fn compacted_to(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::SeqCst);
    }

    /// Adds to `watches` a watch of `range` from revision `from` (`None`:
    /// from the next write on), named `id`, replaying from `history` what
    /// was written before.
    pub(crate) fn add(
        &self,
        watches: &mut Watches,
        id: WatchId,
        range: KeyRange,
        from: Option<Revision>,
        history: Arc<dyn History>,
    ) -> Result<(), StoreError> {
        let compacted = self.compacted.load(Ordering::SeqCst);
        if let Some(from) = from
            && from < compacted.max(1)
        {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: compacted.max(1),
            });
        }
        let slot = WatcherSlot::take(&self.watchers, self.limits.max_watchers)?;
        // Under the lock: every revision above `latest` comes live.
        let live = lock(&self.live);
        let latest = live.latest;
        let next = from.unwrap_or(latest + 1);
        // A watch from the past may be as far behind as it started, plus
        // the bound: replaying history is not falling behind.
        let allowed = self
            .limits
            .max_lag
            .saturating_add((latest + 1).saturating_sub(next));
        watches
            .local(&live, &self.live, &history)
            .add(id, range, next, latest, allowed, slot);
        Ok(())
    }

    /// Watches `range` from revision `from` (`None`: from the next write on),
    /// replaying from `history` what was written before: a set of one
    /// watch, followed by a task of its own. Must be called within a tokio
    /// runtime.
    pub(crate) fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
        history: Arc<dyn History>,
    ) -> Result<EventStream, StoreError> {
        let mut watches = Watches::default();
        self.add(&mut watches, 0, range, from, history)?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(forward(watches, sender));
        Ok(ReceiverStream::new(receiver))
    }
}

type Sender = mpsc::Sender<Result<Vec<Event>, StoreError>>;

/// Follows a set of one watch into `sender`, until the consumer or the
/// store is gone, or the consumer falls too far behind.
async fn forward(mut watches: Watches, sender: Sender) {
    loop {
        let item = tokio::select! {
            item = watches.next() => item,
            // The consumer left: free the place now, not at the next event.
            () = sender.closed() => return,
        };
        let error = match item {
            None => return,
            Some(Item::Ended(_, error)) => error,
            Some(Item::Events(delivery)) => {
                let patience = delivery.patience();
                let batch = delivery.events_of(0);
                // Room at once, the usual case: no waiting to set up.
                let batch = match sender.try_reserve() {
                    Ok(permit) => {
                        permit.send(Ok(batch));
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                    Err(mpsc::error::TrySendError::Full(())) => batch,
                };
                let permit = tokio::select! {
                    biased;
                    permit = sender.reserve() => permit,
                    () = watches.fallen_behind(patience) => Err(mpsc::error::SendError(())),
                };
                match permit {
                    Ok(permit) => {
                        permit.send(Ok(batch));
                        continue;
                    }
                    Err(_) if sender.is_closed() => return,
                    Err(_) => patience.cut_off(),
                }
            }
        };
        // Give back the place and what was queued now; the reason waits
        // for the consumer, if it ever reads.
        drop(watches);
        let _ = sender.send(Err(error)).await;
        return;
    }
}

/// Why a watcher that fell behind was cut off, and how to go on.
fn cut_off(revision: Revision, max_lag: u64) -> StoreError {
    StoreError::LimitReached(format!(
        "watcher cut off: it fell more than {max_lag} revisions behind the newest \
         (--watch-max-lag) while not reading; events up to revision {} were \
         queued for it, watch again from the revision after the last one received",
        revision.saturating_sub(1)
    ))
}

/// One of the `max_watchers` places; given back when dropped. The etcd
/// backend counts its watches with it too.
pub(super) struct WatcherSlot(Arc<AtomicUsize>);

impl WatcherSlot {
    /// A place among `max` counted by `count`, or `LimitReached`.
    pub(super) fn take(count: &Arc<AtomicUsize>, max: usize) -> Result<WatcherSlot, StoreError> {
        let slot = WatcherSlot(Arc::clone(count));
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            return Err(StoreError::LimitReached(format!(
                "{max} watches are open, the limit (--max-watchers); close one and retry"
            )));
        }
        Ok(slot)
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::storage::Record;
    use crate::storage::ops::EventKind;

    fn put(revision: Revision, key: &'static str) -> Event {
        Event {
            kind: EventKind::Put,
            key: Bytes::from_static(key.as_bytes()),
            record: Record {
                value: Bytes::new(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
        }
    }

    /// A store's history, as a list: what the hub replays from.
    #[derive(Default)]
    struct Log(Mutex<Vec<Event>>);

    impl History for Log {
        fn events(
            &self,
            range: &KeyRange,
            from: Revision,
            to: Revision,
            max: usize,
        ) -> Result<(Vec<Event>, Revision), StoreError> {
            let log = self.0.lock().unwrap();
            let found: Vec<Event> = log
                .iter()
                .filter(|e| (from..=to).contains(&e.revision()) && range.contains(&e.key))
                .take(max)
                .cloned()
                .collect();
            let next = match found.last() {
                Some(last) if found.len() == max => last.revision() + 1,
                _ => to + 1,
            };
            Ok((found, next))
        }
    }

    /// A hub and its store's log: `write` is a store's write.
    struct Store {
        hub: WatchHub,
        log: Arc<Log>,
    }

    impl Store {
        fn new(max_watchers: usize) -> Store {
            let limits = WatchLimits {
                history: 0,
                max_watchers,
                max_lag: 10_000,
            };
            Store {
                hub: WatchHub::new(1, 0, limits),
                log: Arc::default(),
            }
        }

        fn write(&self, revision: Revision, events: Vec<Event>) {
            self.log.0.lock().unwrap().extend(events.iter().cloned());
            self.hub.publish(revision, events);
        }

        fn watch(&self, from: Option<Revision>) -> Result<EventStream, StoreError> {
            let history: Arc<dyn History> = Arc::clone(&self.log) as _;
            self.hub
                .watch(KeyRange::prefix(Bytes::new()), from, history)
        }
    }

    async fn next(stream: &mut EventStream) -> Result<Vec<Event>, StoreError> {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an answer within 10 s")
            .expect("the stream goes on")
    }

    #[tokio::test]
    async fn a_watch_from_the_past_replays_the_store_then_goes_live_without_a_gap() {
        let store = Store::new(10);
        for revision in 2..=200 {
            store.write(revision, vec![put(revision, "a"), put(revision, "b")]);
        }
        let mut stream = store.watch(Some(2)).unwrap();
        store.write(201, vec![put(201, "a")]);
        for expected in 2..=201 {
            let batch = next(&mut stream).await.unwrap();
            assert!(batch.iter().all(|e| e.revision() == expected), "{batch:?}");
            assert_eq!(batch.len(), if expected == 201 { 1 } else { 2 });
        }
    }

    #[tokio::test]
    async fn a_watch_below_the_compacted_revision_is_refused_naming_it() {
        let store = Store::new(10);
        store.hub.compacted_to(5);
        let error = store.watch(Some(4)).unwrap_err();
        assert_eq!(
            error,
            StoreError::Compacted {
                requested: 4,
                compacted: 5
            }
        );
        assert!(
            error.to_string().contains("compacted revision is 5"),
            "{error}"
        );
        assert!(
            store.watch(Some(5)).is_ok(),
            "the compacted revision itself is kept"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_lags_catches_up_from_the_store() {
        let store = Store::new(10);
        let mut stream = store.watch(None).unwrap();
        // Far more than the broadcast buffer, published before any is read.
        let last = 3 * BROADCAST_BUFFER as Revision;
        for revision in 2..=last {
            store.write(revision, vec![put(revision, "k")]);
        }
        for expected in 2..=last {
            let batch = next(&mut stream).await.unwrap();
            assert_eq!(batch[0].revision(), expected);
        }
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_cut_off_without_holding_back_others() {
        let mut store = Store::new(2);
        store.hub.limits.max_lag = 100;
        let mut idle = store.watch(None).unwrap();
        let mut reader = store.watch(None).unwrap();
        let total = 10 * STREAM_BUFFER as Revision;
        for revision in 2..=total {
            store.write(revision, vec![put(revision, "k")]);
            // The reader keeps up, in order, while the idle one reads nothing.
            let batch = next(&mut reader).await.unwrap();
            assert_eq!(batch[0].revision(), revision);
        }
        // The idle watcher's place is given back without it reading.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.watch(None).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the idle watcher was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // When it reads at last: what was queued, in order, then the reason.
        let mut expected = 2;
        let error = loop {
            match next(&mut idle).await {
                Ok(batch) => {
                    assert_eq!(batch[0].revision(), expected);
                    expected += 1;
                }
                Err(error) => break error,
            }
        };
        assert!(expected <= STREAM_BUFFER as Revision + 3, "got {expected}");
        let StoreError::LimitReached(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("--watch-max-lag"), "{message}");
    }

    #[tokio::test]
    async fn watchers_are_limited_and_a_closed_watch_frees_its_place() {
        let store = Store::new(2);
        let first = store.watch(None).unwrap();
        let _second = store.watch(None).unwrap();
        let error = store.watch(None).unwrap_err();
        assert!(matches!(error, StoreError::LimitReached(_)), "{error:?}");
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.watch(None).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
