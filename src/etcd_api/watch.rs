//! `etcdserverpb.Watch`: one bidirectional stream carries many watches.
//!
//! A session task reads the client's requests; each watch is a task of its
//! own that turns the store's event stream into responses. Every response
//! goes through one channel, so the order etcd promises holds: a watch's
//! `created` answer goes out before its first event (the session sends it
//! before starting the task), and its `canceled` answer after its last (the
//! task is stopped first). Ids are assigned by the server, from 0, as
//! etcd's are; a watch from a revision the store no longer has is created
//! and then cancelled with `compact_revision`, never a stream error, which
//! is how etcd's clients learn to re-read.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, key_range};
use super::{Api, errors};
use crate::grpc::{Checks, Scope, scope_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::watch_server::Watch;
use crate::proto::etcd::mvccpb;
use crate::storage::ops::{Event, EventKind, KeyValue};
use crate::storage::{Revision, Store, StoreError};

/// The handlers of `etcdserverpb.Watch`.
pub(crate) struct WatchApi<S>(pub(crate) Api<S>);

/// Responses waiting to be sent on one stream.
const OUT_BUFFER: usize = 64;

/// Above this size a response whose watch asked for `fragment` is split,
/// as etcd splits at its default `--max-request-bytes`.
const FRAGMENT_BYTES: usize = 1536 * 1024;

/// How often a watch with `progress_notify` and no events hears the
/// revision: etcd's default interval.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// The id etcd gives answers that belong to no watch.
const NO_WATCH: i64 = -1;

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Watch for WatchApi<S> {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let scope = scope_of(&request);
        let (out, responses) = mpsc::channel(OUT_BUFFER);
        let session = Session {
            api: self.0.clone(),
            scope,
            out,
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        // When the server stops, the stream ends at once (its session sees
        // the receiver gone and ends too); clientv3 watches again elsewhere.
        let responses = self
            .0
            .stopping
            .interrupt(ReceiverStream::new(responses), || {
                Err(errors::server_stopped())
            });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// One Watch stream: its watches, by id.
struct Session<S> {
    api: Api<S>,
    scope: Option<Scope>,
    out: Out,
    watches: HashMap<i64, AbortHandle>,
    next_id: i64,
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        for watch in self.watches.values() {
            watch.abort();
        }
    }
}

impl<S: Store> Session<S> {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        use pb::watch_request::RequestUnion;
        loop {
            let request = tokio::select! {
                request = requests.next() => request,
                () = self.out.closed() => return,
            };
            let Some(Ok(request)) = request else {
                // The client closed its side or the stream broke: the
                // watches end with it.
                return;
            };
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                None => true,
            };
            if !sent {
                return;
            }
        }
    }

    fn header(&self, revision: Revision) -> Option<pb::ResponseHeader> {
        self.api.identity.header(revision)
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    /// Answers a create request that failed as etcd does: created and
    /// cancelled at once, with the reason.
    async fn refuse(&self, watch_id: i64, reason: String) -> bool {
        let header = self.header(self.api.store.stats().revision);
        self.send(pb::WatchResponse {
            header,
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        })
        .await
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        let checks = Checks::new(&self.api.limits, self.scope.as_ref());
        let range = match key_range(&checks, create.key.clone(), create.range_end.clone(), true) {
            Ok(range) => range,
            Err(status) => return self.refuse(NO_WATCH, status.message().to_owned()).await,
        };
        let id = if create.watch_id != 0 {
            if self.watches.contains_key(&create.watch_id) {
                return self
                    .refuse(
                        create.watch_id,
                        "mvcc: duplicate watch ID provided on the WatchStream".to_owned(),
                    )
                    .await;
            }
            create.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let from = (create.start_revision > 0).then_some(create.start_revision as Revision);
        let current = match self.api.current_revision().await {
            Ok(revision) => revision,
            Err(status) => return self.refuse(id, status.message().to_owned()).await,
        };
        let created = pb::WatchResponse {
            header: self.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        let events = match self.api.store.watch(range, from).await {
            Ok(events) => events,
            Err(StoreError::Compacted {
                compacted: oldest, ..
            }) => {
                return self.send(created).await
                    && self.send(compacted(self.header(current), id, oldest)).await;
            }
            Err(error) => {
                let reason = errors::from_store_error(error);
                return self.refuse(id, reason.message().to_owned()).await;
            }
        };
        if !self.send(created).await {
            return false;
        }
        let wants = Wants {
            filters: Filters::of(&create.filters),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            fragment: create.fragment,
        };
        let task = tokio::spawn(forward(
            self.api.clone(),
            id,
            events,
            wants,
            self.out.clone(),
        ));
        self.watches.insert(id, task.abort_handle());
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(watch) = self.watches.remove(&id) else {
            // etcd answers nothing for a watch it does not have.
            return true;
        };
        watch.abort();
        let header = self.header(self.api.store.stats().revision);
        self.send(pb::WatchResponse {
            header,
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// A progress request: the store's revision, for every watch of the
    /// stream at once (etcd's answer carries no watch id).
    async fn progress(&mut self) -> bool {
        let revision = match self.api.current_revision().await {
            Ok(revision) => revision,
            Err(_) => return true,
        };
        let header = self.header(revision);
        self.send(pb::WatchResponse {
            header,
            watch_id: NO_WATCH,
            ..Default::default()
        })
        .await
    }
}

fn compacted(header: Option<pb::ResponseHeader>, id: i64, oldest: Revision) -> pb::WatchResponse {
    pb::WatchResponse {
        header,
        watch_id: id,
        canceled: true,
        compact_revision: i64::try_from(oldest).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Which kinds of events a watch leaves out.
#[derive(Clone, Copy, Debug, Default)]
struct Filters {
    no_put: bool,
    no_delete: bool,
}

impl Filters {
    fn of(filters: &[i32]) -> Filters {
        use pb::watch_create_request::FilterType;
        let mut result = Filters::default();
        for filter in filters {
            match FilterType::try_from(*filter) {
                Ok(FilterType::Noput) => result.no_put = true,
                Ok(FilterType::Nodelete) => result.no_delete = true,
                Err(_) => {}
            }
        }
        result
    }

    fn keeps(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete | EventKind::Expire => !self.no_delete,
        }
    }
}

/// What a watch asked for besides its range and start.
#[derive(Clone, Copy, Debug)]
struct Wants {
    filters: Filters,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
}

/// One watch: the store's events as responses, until the client cancels
/// it, the stream ends, or the store cannot go on (then cancelled, with
/// the reason).
async fn forward<S: Store>(
    api: Api<S>,
    id: i64,
    mut events: crate::storage::EventStream,
    wants: Wants,
    out: Out,
) {
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.reset();
    let mut quiet = true;
    loop {
        let batch = tokio::select! {
            batch = events.next() => batch,
            _ = progress.tick(), if wants.progress_notify => {
                if quiet {
                    let revision = api.current_revision().await.unwrap_or(0);
                    let notice = pb::WatchResponse {
                        header: api.identity.header(revision),
                        watch_id: id,
                        ..Default::default()
                    };
                    if out.send(Ok(notice)).await.is_err() {
                        return;
                    }
                }
                quiet = true;
                continue;
            }
        };
        let response = match batch {
            None => return,
            Some(Ok(batch)) => {
                let revision = batch.last().map_or(0, Event::revision);
                let mut events = Vec::with_capacity(batch.len());
                for event in batch.into_iter().filter(|event| wants.filters.keeps(event)) {
                    let previous = if wants.prev_kv {
                        previous(&*api.store, &event).await
                    } else {
                        None
                    };
                    let mut event = convert::event(event);
                    event.prev_kv = previous;
                    events.push(event);
                }
                if events.is_empty() {
                    continue;
                }
                quiet = false;
                pb::WatchResponse {
                    header: api.identity.header(revision),
                    watch_id: id,
                    events,
                    ..Default::default()
                }
            }
            Some(Err(StoreError::Compacted {
                compacted: oldest, ..
            })) => {
                let header = api.identity.header(api.store.stats().revision);
                let _ = out.send(Ok(compacted(header, id, oldest))).await;
                return;
            }
            Some(Err(error)) => {
                let reason = errors::from_store_error(error).message().to_owned();
                let _ = out
                    .send(Ok(pb::WatchResponse {
                        header: api.identity.header(api.store.stats().revision),
                        watch_id: id,
                        canceled: true,
                        cancel_reason: reason,
                        ..Default::default()
                    }))
                    .await;
                return;
            }
        };
        let responses = if wants.fragment {
            fragments(response, FRAGMENT_BYTES)
        } else {
            vec![response]
        };
        for response in responses {
            if out.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// What `event`'s key held just before it (etcd's `prev_kv`): the key at
/// the revision before the event's, read from the history. Nothing for
/// the first put of a key, and nothing once that revision is compacted
/// (etcd leaves it out then too).
async fn previous<S: Store>(store: &S, event: &Event) -> Option<mvccpb::KeyValue> {
    if event.kind == EventKind::Put && event.record.version == 1 {
        return None;
    }
    let before = event.revision().checked_sub(1).filter(|&r| r > 0)?;
    let record = store.get(&event.key, before).await.ok()??;
    Some(convert::key_value(KeyValue {
        key: event.key.clone(),
        record,
    }))
}

/// `response` in pieces of at most `limit` bytes (but at least one event
/// each), every piece but the last marked `fragment`, as etcd splits them.
fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut template = response.clone();
    template.events = Vec::new();
    template.fragment = true;
    let mut pieces = Vec::new();
    let mut current = template.clone();
    for event in response.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let last = current.events.pop();
            pieces.push(std::mem::replace(&mut current, template.clone()));
            current.events.extend(last);
        }
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_large_response_is_split_into_fragments_in_order() {
        let event = |n: u8| crate::proto::etcd::mvccpb::Event {
            kv: Some(crate::proto::etcd::mvccpb::KeyValue {
                key: Bytes::from(vec![n]),
                value: Bytes::from(vec![0; 100]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = pb::WatchResponse {
            watch_id: 3,
            events: (0..10).map(event).collect(),
            ..Default::default()
        };
        let pieces = fragments(response.clone(), 350);
        assert!(pieces.len() > 2, "{}", pieces.len());
        let (last, rest) = pieces.split_last().unwrap();
        assert!(
            rest.iter()
                .all(|piece| piece.fragment && piece.watch_id == 3)
        );
        assert!(!last.fragment);
        let joined: Vec<_> = pieces.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(joined, response.events);
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response]);
    }
}
