//! `Watches`: the many watches of one consumer, followed in one place.
//!
//! etcd's clients put many watches on one stream (an informer per resource,
//! a watch per key of a lock), and a busy server has thousands of them. A
//! task and a channel per watch meant, for each event and each watcher, a
//! broadcast receive, a wake-up and two channel hops: the cost was in the
//! machinery, not in the events (`docs/PERFORMANCE.md`, watch fan-out).
//! Here a consumer (one etcd Watch stream, or one watch of our own API) owns
//! a `Watches`: one subscription to the hub, and for each revision published
//! one [`Delivery`] naming every watch of the set that takes it, which the
//! consumer turns into its answers in the same task. Like etcd's
//! `watchStream`, one task hands an event to every watcher of a stream.
//!
//! A watch from the past replays the store's history (a read at a time, on a
//! blocking thread) while the others go on live; the live revisions that
//! come meanwhile only move the end of its replay on, so it joins the live
//! ones without a gap and without a buffer of its own. When the set falls
//! behind the broadcast buffer, all its watches catch up from the store the
//! same way. Backends without a hub (etcd) give a stream per watch, which a
//! set polls too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::{StreamExt, StreamMap};

use super::{EventStream, History, Live, REPLAY_WRITES, WatcherSlot, lock};
use crate::storage::ops::{Event, KeyRange};
use crate::storage::{Revision, StoreError};

/// The consumer's name for one of its watches (etcd's watch ids).
pub type WatchId = i64;

/// What a set of watches has next.
#[derive(Debug)]
pub enum Item {
    /// Events for some of the watches.
    Events(Delivery),
    /// A watch that cannot go on (its history was compacted, its store
    /// failed); it is no longer in the set.
    Ended(WatchId, StoreError),
}

/// The events of one revision and the watches of a set that take them,
/// each with the ones in its range.
#[derive(Debug)]
pub struct Delivery {
    events: Arc<[Event]>,
    to: Vec<(WatchId, Pick)>,
    patience: Patience,
}

/// Which events of a delivery a watch takes.
#[derive(Debug)]
enum Pick {
    All,
    Some(Vec<u32>),
}

/// The indices of the events a watch takes in a [`Delivery`].
pub enum Indices<'a> {
    /// Every event of the delivery.
    All(std::ops::Range<usize>),
    /// Those listed.
    Some(std::slice::Iter<'a, u32>),
}

impl Iterator for Indices<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Indices::All(range) => range.next(),
            Indices::Some(indices) => indices.next().map(|&i| i as usize),
        }
    }
}

/// How long a consumer may be stuck on a delivery before its set is cut
/// off: until the newest revision runs `allowed` past `revision`.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    revision: Revision,
    allowed: u64,
}

impl Patience {
    /// The error a consumer cut off while stuck here ends its watches with.
    pub fn cut_off(&self) -> StoreError {
        super::cut_off(self.revision, self.allowed)
    }
}

impl Delivery {
    /// The revision of the delivery's events.
    pub fn revision(&self) -> Revision {
        self.events.last().map_or(0, Event::revision)
    }

    /// Every event of the revision, whichever watch takes it.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// How long the consumer may take to pass this on.
    pub fn patience(&self) -> Patience {
        self.patience
    }

    /// Each watch that takes events, with the indices (in `events()`) of
    /// the ones it takes, in order.
    pub fn watches(&self) -> impl Iterator<Item = (WatchId, Indices<'_>)> + Send {
        self.to.iter().map(|(id, pick)| {
            let indices = match pick {
                Pick::All => Indices::All(0..self.events.len()),
                Pick::Some(indices) => Indices::Some(indices.iter()),
            };
            (*id, indices)
        })
    }

    /// The events `id` takes, as its own list.
    pub fn events_of(&self, id: WatchId) -> Vec<Event> {
        match self.to.iter().find(|(watch, _)| *watch == id) {
            Some((_, Pick::All)) => self.events.to_vec(),
            Some((_, Pick::Some(indices))) => indices
                .iter()
                .map(|&i| self.events[i as usize].clone())
                .collect(),
            None => Vec::new(),
        }
    }
}

/// The watches of one consumer. Empty at first; a store adds watches with
/// `Store::watch_into`.
#[derive(Default)]
pub struct Watches {
    local: Option<Local>,
    remote: StreamMap<WatchId, EventStream>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("local", &self.local.as_ref().map_or(0, |l| l.members.len()))
            .field("remote", &self.remote.len())
            .finish()
    }
}

impl Watches {
    /// What comes next for some watch of the set; `None` once the store is
    /// gone. Waits while the set is empty. Cancel-safe.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(local) = &mut self.local {
                if let Some(item) = local.ready.pop_front() {
                    return Some(item);
                }
                local.start_reading();
            }
            let Watches { local, remote } = self;
            let local = async {
                match local {
                    Some(local) => local.step().await,
                    None => std::future::pending().await,
                }
            };
            let remote = async {
                if remote.is_empty() {
                    std::future::pending().await
                } else {
                    remote.next().await
                }
            };
            let (id, batch) = tokio::select! {
                going = local => {
                    if !going {
                        return None;
                    }
                    continue;
                }
                Some(answer) = remote => answer,
            };
            return Some(match batch {
                Ok(events) => {
                    let revision = events.last().map_or(0, Event::revision);
                    Item::Events(Delivery {
                        events: events.into(),
                        to: vec![(id, Pick::All)],
                        patience: Patience {
                            revision,
                            allowed: u64::MAX,
                        },
                    })
                }
                Err(error) => {
                    self.remote.remove(&id);
                    Item::Ended(id, error)
                }
            });
        }
    }

    /// Stops watch `id`: nothing of it comes after this returns. `false`
    /// if the set has no such watch.
    pub fn remove(&mut self, id: WatchId) -> bool {
        let local = self.local.as_mut().is_some_and(|local| local.remove(id));
        self.remote.remove(&id).is_some() || local
    }

    /// Whether the set has watch `id`.
    pub fn contains(&self, id: WatchId) -> bool {
        self.remote.contains_key(&id)
            || self
                .local
                .as_ref()
                .is_some_and(|local| local.members.iter().any(|m| m.id == id))
    }

    /// Returns once a consumer still stuck on a delivery with `patience`
    /// has fallen so far behind that it must be cut off; never for
    /// watches that are not behind a local hub, or if the store is gone.
    pub async fn fallen_behind(&mut self, patience: Patience) {
        match &mut self.local {
            Some(local) if patience.allowed != u64::MAX => {
                let Patience { revision, allowed } = patience;
                if local
                    .newest
                    .wait_for(|newest| newest.saturating_sub(revision) > allowed)
                    .await
                    .is_ok()
                {
                    return;
                }
                std::future::pending::<()>().await
            }
            _ => std::future::pending::<()>().await,
        }
    }

    /// How long a consumer may be stuck on an answer of its own (not a
    /// delivery): as if on the oldest revision some watch still waits for.
    pub fn patience(&self) -> Patience {
        let never = Patience {
            revision: 0,
            allowed: u64::MAX,
        };
        let Some(local) = &self.local else {
            return never;
        };
        local
            .members
            .iter()
            .fold(never, |patience, member| Patience {
                revision: if patience.allowed == u64::MAX {
                    member.next.saturating_sub(1)
                } else {
                    patience.revision.min(member.next.saturating_sub(1))
                },
                allowed: if patience.allowed == u64::MAX {
                    member.allowed
                } else {
                    patience.allowed.max(member.allowed)
                },
            })
    }

    /// Ends every watch of the set at once, freeing their places and what
    /// was queued for them; returns their ids.
    pub fn cut_off(&mut self) -> Vec<WatchId> {
        let mut ids: Vec<WatchId> = self.remote.keys().copied().collect();
        self.remote.clear();
        if let Some(local) = self.local.take() {
            ids.extend(local.members.iter().map(|m| m.id));
        }
        ids
    }

    /// Adds a stream of one watch's events (a backend without a hub).
    pub(crate) fn insert_stream(&mut self, id: WatchId, events: EventStream) {
        self.remote.insert(id, events);
    }

    /// The set's subscription to `live`, made at its first local watch.
    pub(super) fn local(
        &mut self,
        live: &Live,
        shared: &Arc<Mutex<Live>>,
        history: &Arc<dyn History>,
    ) -> &mut Local {
        self.local.get_or_insert_with(|| {
            // `publish` leaves `newest` behind while nobody follows it.
            live.newest.send_if_modified(|newest| {
                let behind = *newest != live.latest;
                *newest = live.latest;
                behind
            });
            Local {
                live: live.sender.subscribe(),
                newest: live.newest.subscribe(),
                shared: Arc::downgrade(shared),
                history: Arc::clone(history),
                members: Vec::new(),
                serial: 0,
                turn: 0,
                reading: None,
                ready: VecDeque::new(),
            }
        })
    }
}

/// One watch of a set behind a hub.
struct Member {
    id: WatchId,
    /// Unique within the set, unlike ids, which a consumer may reuse.
    serial: u64,
    range: KeyRange,
    /// The next revision it reports.
    next: Revision,
    /// Revisions up to this one come from the store, later ones live.
    replayed_to: Revision,
    /// How far behind the newest its consumer may fall.
    allowed: u64,
    _slot: WatcherSlot,
}

impl Member {
    fn replaying(&self) -> bool {
        self.next <= self.replayed_to
    }
}

type Read = Result<(Vec<Event>, Revision), StoreError>;

/// A history read in flight, for the member with `serial`.
struct Reading {
    serial: u64,
    task: JoinHandle<Read>,
}

/// The watches of a set behind a local hub: one broadcast subscription.
pub(super) struct Local {
    live: broadcast::Receiver<Arc<[Event]>>,
    newest: tokio::sync::watch::Receiver<Revision>,
    /// Weak: a finished store drops the hub, which closes the live channel.
    shared: Weak<Mutex<Live>>,
    history: Arc<dyn History>,
    members: Vec<Member>,
    serial: u64,
    /// Where the search for a member to replay starts, so each gets a turn.
    turn: usize,
    reading: Option<Reading>,
    /// What the consumer gets next, in order; refilled only when empty.
    ready: VecDeque<Item>,
}

enum Step {
    Read(u64, Result<Read, tokio::task::JoinError>),
    Live(Result<Arc<[Event]>, broadcast::error::RecvError>),
}

impl Local {
    /// Adds a member; `latest` is the newest revision published, read under
    /// the hub's lock, so every later one comes through `live`.
    pub(super) fn add(
        &mut self,
        id: WatchId,
        range: KeyRange,
        next: Revision,
        latest: Revision,
        allowed: u64,
        slot: WatcherSlot,
    ) {
        self.serial += 1;
        self.members.push(Member {
            id,
            serial: self.serial,
            range,
            next,
            replayed_to: latest,
            allowed,
            _slot: slot,
        });
    }

    fn remove(&mut self, id: WatchId) -> bool {
        let Some(at) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        self.members.swap_remove(at);
        self.ready.retain_mut(|item| match item {
            Item::Events(delivery) => {
                delivery.to.retain(|(watch, _)| *watch != id);
                !delivery.to.is_empty()
            }
            Item::Ended(watch, _) => *watch != id,
        });
        true
    }

    /// Starts a history read for a member that replays, if none is running.
    fn start_reading(&mut self) {
        if self.reading.is_some() || self.members.is_empty() {
            return;
        }
        let count = self.members.len();
        let Some(at) = (0..count)
            .map(|i| (self.turn + i) % count)
            .find(|&i| self.members[i].replaying())
        else {
            return;
        };
        self.turn = at + 1;
        let member = &self.members[at];
        let history = Arc::clone(&self.history);
        let (range, from, to) = (member.range.clone(), member.next, member.replayed_to);
        let task =
            tokio::task::spawn_blocking(move || history.events(&range, from, to, REPLAY_WRITES));
        self.reading = Some(Reading {
            serial: member.serial,
            task,
        });
    }

    /// Waits for a live revision or a history read and queues what it
    /// brings; `false` once the hub is gone.
    async fn step(&mut self) -> bool {
        let step = match &mut self.reading {
            Some(reading) => tokio::select! {
                biased;
                read = &mut reading.task => Step::Read(reading.serial, read),
                received = self.live.recv() => Step::Live(received),
            },
            None => Step::Live(self.live.recv().await),
        };
        match step {
            Step::Read(serial, read) => {
                self.reading = None;
                self.replayed(serial, read);
            }
            Step::Live(Ok(events)) => self.publish(events),
            Step::Live(Err(broadcast::error::RecvError::Lagged(_))) => {
                // Too slow for the live buffer: every watch catches up from
                // the store, up to the newest revision published by now.
                let Some(shared) = self.shared.upgrade() else {
                    return false;
                };
                let latest = lock(&shared).latest;
                for member in &mut self.members {
                    member.replayed_to = member.replayed_to.max(latest);
                }
            }
            Step::Live(Err(broadcast::error::RecvError::Closed)) => return false,
        }
        true
    }

    /// One live revision: to every member that follows live and whose
    /// range it touches.
    fn publish(&mut self, events: Arc<[Event]>) {
        let Some(first) = events.first() else {
            return;
        };
        let revision = first.revision();
        let mut to = Vec::with_capacity(self.members.len());
        let mut allowed = 0;
        for member in &mut self.members {
            if member.replaying() {
                // It reads this one from the store, after what it replays.
                member.replayed_to = member.replayed_to.max(revision);
                continue;
            }
            if revision < member.next {
                continue;
            }
            member.next = revision + 1;
            let pick = if events.len() == 1 {
                if !member.range.contains(&first.key) {
                    continue;
                }
                Pick::All
            } else {
                let indices: Vec<u32> = (0..events.len() as u32)
                    .filter(|&i| member.range.contains(&events[i as usize].key))
                    .collect();
                if indices.is_empty() {
                    continue;
                }
                if indices.len() == events.len() {
                    Pick::All
                } else {
                    Pick::Some(indices)
                }
            };
            allowed = allowed.max(member.allowed);
            to.push((member.id, pick));
        }
        if !to.is_empty() {
            self.ready.push_back(Item::Events(Delivery {
                events,
                to,
                patience: Patience { revision, allowed },
            }));
        }
    }

    /// A history read for the member with `serial` is done: its events, a
    /// revision at a time, or its end.
    fn replayed(&mut self, serial: u64, read: Result<Read, tokio::task::JoinError>) {
        let Some(at) = self.members.iter().position(|m| m.serial == serial) else {
            // Removed while it read.
            return;
        };
        let read = read
            .map_err(|_| StoreError::Internal("a watch's history read failed".into()))
            .and_then(|read| read);
        let member = &mut self.members[at];
        let (events, next) = match read {
            Ok(read) => read,
            Err(error) => {
                let id = member.id;
                self.members.swap_remove(at);
                self.ready.push_back(Item::Ended(id, error));
                return;
            }
        };
        member.next = member.next.max(next);
        let mut events = events.into_iter().peekable();
        while let Some(first) = events.next() {
            let revision = first.revision();
            let mut batch = vec![first];
            while let Some(event) = events.next_if(|event| event.revision() == revision) {
                batch.push(event);
            }
            self.ready.push_back(Item::Events(Delivery {
                events: batch.into(),
                to: vec![(member.id, Pick::All)],
                patience: Patience {
                    revision,
                    allowed: member.allowed,
                },
            }));
        }
    }
}
