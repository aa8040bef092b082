//! Watch: the stream of changes, live and from a past revision.
//!
//! Backends publish the events of each write, in revision order, to their
//! [`WatchHub`]. The hub keeps the last `history` events, so a client that
//! reconnects with the revision after the last one it saw misses nothing; a
//! revision older than the history is refused with [`StoreError::Compacted`],
//! which tells the client to re-read and watch from there.
//!
//! Each watch runs as a task that replays history, then forwards live events
//! from a broadcast channel, filtered by key range. A watcher too slow for
//! the broadcast buffer is not dropped: it catches up from the history, and
//! only if the history has moved past it does it get `Compacted`. Nothing is
//! ever skipped silently.
//!
//! A watcher that stops reading is cut off once the revision it is stuck on
//! is more than `max_lag` revisions behind the newest: its task gives back
//! its place and its catch-up buffer, and the stream ends with
//! [`StoreError::LimitReached`] (RESOURCE_EXHAUSTED) naming `--watch-max-lag`.
//! So a slow consumer holds at most its stream buffer and HTTP/2 window,
//! never the others' progress or an unbounded backlog.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::ops::{Event, KeyRange};
use super::{Revision, StoreError};

/// The events of one watch, one revision's worth at a time, in revision
/// order. Ends with an error if the watcher fell behind the history.
pub type EventStream = ReceiverStream<Result<Vec<Event>, StoreError>>;

/// Live events buffered per watcher before it must catch up from history.
const BROADCAST_BUFFER: usize = 1024;
/// Revisions buffered between a watch task and its consumer.
const STREAM_BUFFER: usize = 64;

/// Limits of a [`WatchHub`].
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Events kept for watches that start in the past.
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

struct History {
    events: VecDeque<Event>,
    /// The oldest revision a watch may start from.
    oldest: Revision,
    /// The newest revision published.
    latest: Revision,
    live: broadcast::Sender<Arc<[Event]>>,
    /// `latest`, for watch tasks blocked on a slow consumer.
    newest: tokio::sync::watch::Sender<Revision>,
}

/// Where a store's changes go, and where watches come from.
pub(crate) struct WatchHub {
    history: Arc<Mutex<History>>,
    limits: WatchLimits,
    watchers: Arc<AtomicUsize>,
}

fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    // Every change to the history is completed before the lock is released.
    history.lock().unwrap_or_else(|p| p.into_inner())
}

impl WatchHub {
    /// A hub for a store whose revision is `current`: watches may start from
    /// `current + 1` on.
    pub(crate) fn new(current: Revision, limits: WatchLimits) -> WatchHub {
        let (live, _) = broadcast::channel(BROADCAST_BUFFER);
        let (newest, _) = tokio::sync::watch::channel(current);
        WatchHub {
            history: Arc::new(Mutex::new(History {
                events: VecDeque::new(),
                oldest: current + 1,
                latest: current,
                live,
                newest,
            })),
            limits,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes the events of one write at `revision`. Callers publish in
    /// revision order, after the write is visible to readers.
    pub(crate) fn publish(&self, revision: Revision, events: Vec<Event>) {
        let mut history = lock(&self.history);
        history.latest = history.latest.max(revision);
        if events.is_empty() {
            return;
        }
        history.newest.send_replace(history.latest);
        let events: Arc<[Event]> = events.into();
        history.events.extend(events.iter().cloned());
        // Trim whole revisions, so a watch never starts halfway through one.
        while history.events.len() > self.limits.history {
            let dropped = history.events.pop_front().map_or(0, |e| e.revision());
            while history
                .events
                .front()
                .is_some_and(|e| e.revision() == dropped)
            {
                history.events.pop_front();
            }
            history.oldest = dropped + 1;
        }
        // An error only means that nobody watches.
        let _ = history.live.send(events);
    }

    /// The newest revision published.
    pub(crate) fn latest(&self) -> Revision {
        lock(&self.history).latest
    }

    /// Watches `range` from revision `from` (`None`: from the next write on).
    /// Must be called within a tokio runtime: the watch runs as a task.
    pub(crate) fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        let slot = WatcherSlot::take(&self.watchers, self.limits.max_watchers)?;
        let (mut cursor, mut newest) = {
            let history = lock(&self.history);
            let from = from.unwrap_or(history.latest + 1);
            (Cursor::at(&history, from)?, history.newest.subscribe())
        };
        // A watch from the past may be as far behind as it started, plus
        // the bound: replaying history is not falling behind.
        let allowed = self
            .limits
            .max_lag
            .saturating_add((history_latest(&self.history) + 1).saturating_sub(cursor.next));
        // Weak: a finished store drops its history, which closes the live
        // channel and ends every watch task.
        let shared = Arc::downgrade(&self.history);
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let slot = slot;
            loop {
                let next = tokio::select! {
                    next = cursor.next(&shared) => next,
                    // The consumer left: free the slot now, not at the next event.
                    () = sender.closed() => return,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let wanted: Vec<Event> = batch
                    .into_iter()
                    .filter(|event| range.contains(&event.key))
                    .collect();
                let Some(revision) = wanted.last().map(Event::revision) else {
                    continue;
                };
                let permit = tokio::select! {
                    biased;
                    permit = sender.reserve() => permit,
                    () = fallen_behind(&mut newest, revision, allowed) => {
                        // Give back the place and the catch-up buffer now;
                        // the reason waits for the consumer, if it ever reads.
                        drop((slot, cursor, wanted));
                        let _ = sender.send(Err(cut_off(revision, allowed))).await;
                        return;
                    }
                };
                let Ok(permit) = permit else {
                    return; // the consumer is gone
                };
                permit.send(Ok(wanted));
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}

/// Returns once the newest revision is more than `max_lag` past `revision`
/// (at once if it already is); never if the store is gone.
async fn fallen_behind(
    newest: &mut tokio::sync::watch::Receiver<Revision>,
    revision: Revision,
    max_lag: u64,
) {
    if newest
        .wait_for(|newest| newest.saturating_sub(revision) > max_lag)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

fn history_latest(history: &Mutex<History>) -> Revision {
    lock(history).latest
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

/// Where a watch is: the next revision it reports, what it still has to
/// replay from history, and its subscription to live events.
struct Cursor {
    next: Revision,
    backlog: VecDeque<Event>,
    live: broadcast::Receiver<Arc<[Event]>>,
}

impl Cursor {
    /// A cursor at `from`, taken under the history lock so that history and
    /// live events join without a gap.
    fn at(history: &History, from: Revision) -> Result<Cursor, StoreError> {
        if from < history.oldest {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: history.oldest,
            });
        }
        // Events are kept in revision order: the first at or after `from` is
        // found by bisection, not by a scan of the whole history (which
        // holds the lock every writer needs).
        let first = history
            .events
            .partition_point(|event| event.revision() < from);
        Ok(Cursor {
            next: from,
            backlog: history.events.range(first..).cloned().collect(),
            live: history.live.subscribe(),
        })
    }

    /// The events of the next revision; `None` once the store is gone.
    async fn next(
        &mut self,
        shared: &std::sync::Weak<Mutex<History>>,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        loop {
            if let Some(revision) = self.backlog.front().map(Event::revision) {
                let mut batch = Vec::new();
                while self
                    .backlog
                    .front()
                    .is_some_and(|event| event.revision() == revision)
                {
                    batch.extend(self.backlog.pop_front());
                }
                self.next = revision + 1;
                return Ok(Some(batch));
            }
            match self.live.recv().await {
                Ok(events) => {
                    let batch: Vec<Event> = events
                        .iter()
                        .filter(|event| event.revision() >= self.next)
                        .cloned()
                        .collect();
                    if let Some(last) = batch.last() {
                        self.next = last.revision() + 1;
                        return Ok(Some(batch));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live buffer: catch up from history.
                    let Some(history) = shared.upgrade() else {
                        return Ok(None);
                    };
                    let history = lock(&history);
                    *self = Cursor::at(&history, self.next)?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
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

    fn hub(history: usize, max_watchers: usize) -> WatchHub {
        WatchHub::new(
            0,
            WatchLimits {
                history,
                max_watchers,
                max_lag: 10_000,
            },
        )
    }

    async fn next(stream: &mut EventStream) -> Result<Vec<Event>, StoreError> {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an answer within 10 s")
            .expect("the stream goes on")
    }

    #[tokio::test]
    async fn history_is_trimmed_by_whole_revisions() {
        let hub = hub(3, 10);
        hub.publish(1, vec![put(1, "a"), put(1, "b")]);
        hub.publish(2, vec![put(2, "a"), put(2, "b")]);
        // Four events are above the limit of three: revision 1 goes whole.
        let error = hub
            .watch(KeyRange::prefix(Bytes::new()), Some(1))
            .unwrap_err();
        assert_eq!(
            error,
            StoreError::Compacted {
                requested: 1,
                oldest: 2
            }
        );
        let mut stream = hub.watch(KeyRange::prefix(Bytes::new()), Some(2)).unwrap();
        assert_eq!(next(&mut stream).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_watcher_that_lags_catches_up_from_history() {
        let hub = hub(100_000, 10);
        let mut stream = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        // Far more than the broadcast buffer, published before any is read.
        for revision in 1..=3 * BROADCAST_BUFFER as Revision {
            hub.publish(revision, vec![put(revision, "k")]);
        }
        for expected in 1..=3 * BROADCAST_BUFFER as Revision {
            let batch = next(&mut stream).await.unwrap();
            assert_eq!(batch[0].revision(), expected);
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_history_gets_compacted() {
        let hub = hub(10, 10);
        let mut stream = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        for revision in 1..=3 * BROADCAST_BUFFER as Revision {
            hub.publish(revision, vec![put(revision, "k")]);
        }
        let mut delivered = 0;
        let error = loop {
            match next(&mut stream).await {
                Ok(_) => delivered += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::Compacted { .. }), "{error:?}");
        assert!(
            delivered < 3 * BROADCAST_BUFFER,
            "it could not have seen everything"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_cut_off_without_holding_back_others() {
        let hub = WatchHub::new(
            0,
            WatchLimits {
                history: 100_000,
                max_watchers: 2,
                max_lag: 100,
            },
        );
        let mut idle = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        let mut reader = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        let total = 10 * STREAM_BUFFER as Revision;
        for revision in 1..=total {
            hub.publish(revision, vec![put(revision, "k")]);
            // The reader keeps up, in order, while the idle one reads nothing.
            let batch = next(&mut reader).await.unwrap();
            assert_eq!(batch[0].revision(), revision);
        }
        // The idle watcher's place is given back without it reading.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while hub.watch(KeyRange::prefix(Bytes::new()), None).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the idle watcher was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // When it reads at last: what was queued, in order, then the reason.
        let mut expected = 1;
        let error = loop {
            match next(&mut idle).await {
                Ok(batch) => {
                    assert_eq!(batch[0].revision(), expected);
                    expected += 1;
                }
                Err(error) => break error,
            }
        };
        assert!(
            expected <= STREAM_BUFFER as Revision + 2,
            "at most the stream buffer was kept for it, got {expected}"
        );
        let StoreError::LimitReached(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("--watch-max-lag"), "{message}");
    }

    #[tokio::test]
    async fn a_watch_replaying_a_long_history_is_not_cut_off() {
        let hub = WatchHub::new(
            0,
            WatchLimits {
                history: 100_000,
                max_watchers: 2,
                max_lag: 10,
            },
        );
        for revision in 1..=500 {
            hub.publish(revision, vec![put(revision, "k")]);
        }
        let mut stream = hub.watch(KeyRange::prefix(Bytes::new()), Some(1)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for expected in 1..=500 {
            assert_eq!(next(&mut stream).await.unwrap()[0].revision(), expected);
        }
    }

    #[tokio::test]
    async fn watchers_are_limited_and_a_closed_watch_frees_its_place() {
        let hub = hub(10, 2);
        let first = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        let _second = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap();
        let error = hub.watch(KeyRange::prefix(Bytes::new()), None).unwrap_err();
        assert!(matches!(error, StoreError::LimitReached(_)), "{error:?}");
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while hub.watch(KeyRange::prefix(Bytes::new()), None).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
