//! `etcdserverpb.Watch`: one bidirectional stream carries many watches.
//!
//! One session task per stream reads the client's requests and follows all
//! the stream's watches as one set (`storage::Watches`): for each revision
//! it takes every watch's events at once, converts each event once, and
//! sends the answers for all the watches of the stream as one batch into
//! one output channel, as etcd's `serverWatchStream` sends from one
//! goroutine. So the order etcd promises holds: a watch's `created` answer
//! goes out before its first event, its `canceled` answer after its last.
//! Ids are assigned by the server, from 0, as etcd's are; a watch from a
//! revision the store no longer has is created and then cancelled with
//! `compact_revision`, never a stream error, which is how etcd's clients
//! learn to re-read. A stream whose client stops reading while the newest
//! revision runs `--watch-max-lag` past what it waits to send has all its
//! watches cancelled with that reason (their places and queues freed).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, key_range};
use super::{Api, errors};
use crate::grpc::{Checks, Scope, scope_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::watch_server::Watch;
use crate::proto::etcd::mvccpb;
use crate::storage::ops::{Event, EventKind, KeyValue};
use crate::storage::{Delivery, Patience, Revision, Store, StoreError, WatchItem, Watches};

/// The handlers of `etcdserverpb.Watch`.
pub(crate) struct WatchApi<S>(pub(crate) Api<S>);

/// Batches of responses waiting to be sent on one stream (a batch: the
/// answers to one request, or one revision's events for its watches).
const OUT_BUFFER: usize = 16;

/// Above this size a response whose watch asked for `fragment` is split,
/// as etcd splits at its default `--max-request-bytes`.
const FRAGMENT_BYTES: usize = 1536 * 1024;

/// How often a watch with `progress_notify` and no events hears the
/// revision: etcd's default interval.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// The id etcd gives answers that belong to no watch.
const NO_WATCH: i64 = -1;

type Out = mpsc::Sender<Vec<pb::WatchResponse>>;
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
            watches: Watches::default(),
            open: HashMap::new(),
            notified: 0,
            progress: progress_interval(),
            next_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        // When the server stops, the stream ends at once (its session sees
        // the receiver gone and ends too); clientv3 watches again elsewhere.
        let responses = self.0.stopping.interrupt(
            Batches {
                receiver: responses,
                current: Vec::new().into_iter(),
            },
            || Err(errors::server_stopped()),
        );
        Ok(Response::new(Box::pin(responses)))
    }
}

/// The session's batches, one response at a time.
struct Batches {
    receiver: mpsc::Receiver<Vec<pb::WatchResponse>>,
    current: std::vec::IntoIter<pb::WatchResponse>,
}

impl Stream for Batches {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(response) = self.current.next() {
                return Poll::Ready(Some(Ok(response)));
            }
            match ready!(self.receiver.poll_recv(cx)) {
                Some(batch) => self.current = batch.into_iter(),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// One open watch of a session: what it asked for, and whether it had no
/// events since the last progress notice.
struct Open {
    wants: Wants,
    quiet: bool,
}

/// One Watch stream: its watches, as one set, and what each asked for.
struct Session<S> {
    api: Api<S>,
    scope: Option<Scope>,
    out: Out,
    watches: Watches,
    open: HashMap<i64, Open>,
    /// How many of them asked for `progress_notify`.
    notified: usize,
    /// Ticks every `PROGRESS_INTERVAL` while `notified` > 0, counted from
    /// when the first of them came.
    progress: tokio::time::Interval,
    next_id: i64,
}

/// The progress interval, its first tick one interval from now.
fn progress_interval() -> tokio::time::Interval {
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress.reset();
    progress
}

/// What a session does next.
enum Next {
    Request(Option<Result<pb::WatchRequest, Status>>),
    Watch(Option<WatchItem>),
    Progress,
}

impl<S: Store> Session<S> {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        use pb::watch_request::RequestUnion;
        loop {
            let next = tokio::select! {
                request = requests.next() => Next::Request(request),
                item = self.watches.next() => Next::Watch(item),
                _ = self.progress.tick(), if self.notified > 0 => Next::Progress,
                () = self.out.closed() => return,
            };
            let sent = match next {
                // The client closed its side or the stream broke, or the
                // store is gone: the watches end with it.
                Next::Request(None | Some(Err(_))) | Next::Watch(None) => return,
                Next::Request(Some(Ok(request))) => match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                    Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                    Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                    None => true,
                },
                Next::Watch(Some(WatchItem::Events(delivery))) => {
                    let patience = delivery.patience();
                    let responses = self.respond(delivery).await;
                    responses.is_empty() || self.send_all(responses, patience).await
                }
                Next::Watch(Some(WatchItem::Ended(id, error))) => self.ended(id, error).await,
                Next::Progress => self.notify().await,
            };
            if !sent {
                return;
            }
        }
    }

    fn header(&self, revision: Revision) -> Option<pb::ResponseHeader> {
        self.api.identity.header(revision)
    }

    async fn send(&mut self, response: pb::WatchResponse) -> bool {
        let patience = self.watches.patience();
        self.send_all(vec![response], patience).await
    }

    /// Queues `responses` for the client. While it does not read, waits
    /// until the newest revision runs past `patience`: then every watch of
    /// the stream is cut off, and the reason follows what was waiting.
    async fn send_all(&mut self, responses: Vec<pb::WatchResponse>, patience: Patience) -> bool {
        let fallen_behind = match self.out.try_reserve() {
            Ok(permit) => {
                permit.send(responses);
                return true;
            }
            Err(TrySendError::Closed(())) => return false,
            Err(TrySendError::Full(())) => tokio::select! {
                biased;
                permit = self.out.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(responses);
                        return true;
                    }
                    Err(_) => return false,
                },
                () = self.watches.fallen_behind(patience) => responses,
            },
        };
        let ids = self.watches.cut_off();
        self.open.clear();
        self.notified = 0;
        let reason = errors::from_store_error(patience.cut_off())
            .message()
            .to_owned();
        let header = self.header(self.api.store.stats().revision);
        let cancels = ids
            .into_iter()
            .map(|watch_id| pb::WatchResponse {
                header,
                watch_id,
                canceled: true,
                cancel_reason: reason.clone(),
                ..Default::default()
            })
            .collect();
        self.out.send(fallen_behind).await.is_ok() && self.out.send(cancels).await.is_ok()
    }

    /// Answers a create request that failed as etcd does: created and
    /// cancelled at once, with the reason.
    async fn refuse(&mut self, watch_id: i64, reason: String) -> bool {
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
            if self.open.contains_key(&create.watch_id) {
                return self
                    .refuse(
                        create.watch_id,
                        "mvcc: duplicate watch ID provided on the WatchStream".to_owned(),
                    )
                    .await;
            }
            create.watch_id
        } else {
            while self.open.contains_key(&self.next_id) {
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
        // A watch from now starts right after the revision its created
        // answer names, as etcd's does (clientv3 resumes from there): left
        // to the store, it would start from the store's own latest, which
        // writes may have moved on meanwhile.
        let from = from.unwrap_or(current + 1);
        let added = self
            .api
            .store
            .watch_into(&mut self.watches, id, range, Some(from))
            .await;
        match added {
            Ok(()) => {}
            Err(StoreError::Compacted {
                compacted: oldest, ..
            }) => {
                let header = self.header(current);
                return self.send(created).await && self.send(compacted(header, id, oldest)).await;
            }
            Err(error) => {
                let reason = errors::from_store_error(error);
                return self.refuse(id, reason.message().to_owned()).await;
            }
        }
        let wants = Wants {
            filters: Filters::of(&create.filters),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            fragment: create.fragment,
        };
        if wants.progress_notify && self.notified == 0 {
            // Not a burst of the ticks missed while no watch wanted them.
            self.progress.reset();
        }
        self.notified += usize::from(wants.progress_notify);
        self.open.insert(id, Open { wants, quiet: true });
        self.send(created).await
    }

    /// Forgets watch `id`, which the client or the store ended.
    fn close(&mut self, id: i64) -> bool {
        let Some(open) = self.open.remove(&id) else {
            return false;
        };
        self.notified -= usize::from(open.wants.progress_notify);
        self.watches.remove(id);
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        if !self.close(id) {
            // etcd answers nothing for a watch it does not have.
            return true;
        }
        let header = self.header(self.api.store.stats().revision);
        self.send(pb::WatchResponse {
            header,
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// The store cannot go on with watch `id`: cancelled, with the reason.
    async fn ended(&mut self, id: i64, error: StoreError) -> bool {
        if !self.close(id) {
            return true;
        }
        let header = self.header(self.api.store.stats().revision);
        let response = match error {
            StoreError::Compacted {
                compacted: oldest, ..
            } => compacted(header, id, oldest),
            error => pb::WatchResponse {
                header,
                watch_id: id,
                canceled: true,
                cancel_reason: errors::from_store_error(error).message().to_owned(),
                ..Default::default()
            },
        };
        self.send(response).await
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

    /// The progress interval passed: each watch with `progress_notify` that
    /// had no events since the last one hears the revision.
    async fn notify(&mut self) -> bool {
        let revision = self.api.current_revision().await.unwrap_or(0);
        let header = self.header(revision);
        let mut notices = Vec::new();
        for (&watch_id, open) in &mut self.open {
            if open.wants.progress_notify && open.quiet {
                notices.push(pb::WatchResponse {
                    header,
                    watch_id,
                    ..Default::default()
                });
            }
            open.quiet = true;
        }
        if notices.is_empty() {
            return true;
        }
        let patience = self.watches.patience();
        self.send_all(notices, patience).await
    }

    /// One revision's events as the answers of the watches that take them:
    /// each event converted (and its `prev_kv` read) once, whatever the
    /// number of watches.
    async fn respond(&mut self, delivery: Delivery) -> Vec<pb::WatchResponse> {
        let events = delivery.events();
        let header = self.api.identity.header(delivery.revision());
        let mut converted: Vec<Option<mvccpb::Event>> = vec![None; events.len()];
        let mut previous_kvs: Vec<Option<Option<mvccpb::KeyValue>>> = vec![None; events.len()];
        let mut responses = Vec::new();
        for (watch_id, indices) in delivery.watches() {
            let Some(wants) = self.open.get(&watch_id).map(|open| open.wants) else {
                continue;
            };
            let mut taken = Vec::new();
            for i in indices {
                let event = &events[i];
                if !wants.filters.keeps(event) {
                    continue;
                }
                let mut answer = converted[i]
                    .get_or_insert_with(|| convert::event(event.clone()))
                    .clone();
                if wants.prev_kv {
                    if previous_kvs[i].is_none() {
                        previous_kvs[i] = Some(previous(&*self.api.store, event).await);
                    }
                    answer.prev_kv = previous_kvs[i].clone().flatten();
                }
                taken.push(answer);
            }
            if taken.is_empty() {
                continue;
            }
            let Some(open) = self.open.get_mut(&watch_id) else {
                continue;
            };
            open.quiet = false;
            let response = pb::WatchResponse {
                header,
                watch_id,
                events: taken,
                ..Default::default()
            };
            if wants.fragment {
                responses.extend(fragments(response, FRAGMENT_BYTES));
            } else {
                responses.push(response);
            }
        }
        responses
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
    use std::sync::Arc;

    use crate::grpc::Limits;
    use crate::proto::etcd::etcdserverpb::watch_client::WatchClient;
    use crate::proto::etcd::etcdserverpb::watch_server::WatchServer;
    use crate::storage::{MemoryStore, WatchLimits};
    use pb::watch_request::RequestUnion;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::{Channel, Endpoint, Server};

    /// The real Watch service over `store`, on a port of its own, and a
    /// client of it whose stream window is small, so a client that stops
    /// reading soon holds the server back.
    async fn serve(store: Arc<MemoryStore>) -> WatchClient<Channel> {
        let api = Api::new(
            store,
            Limits::default(),
            crate::etcd_api::identity::Identity::new("test", Vec::new()),
            None,
        );
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = incoming.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(WatchServer::new(WatchApi(api)))
                .serve_with_incoming(incoming),
        );
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .initial_stream_window_size(65_535)
            .connect()
            .await
            .unwrap();
        WatchClient::new(channel)
    }

    fn create(
        key: &str,
        prefix: bool,
        tune: impl FnOnce(&mut pb::WatchCreateRequest),
    ) -> pb::WatchRequest {
        let mut create = pb::WatchCreateRequest {
            key: Bytes::from(key.to_owned()),
            range_end: if prefix {
                crate::storage::ops::prefix_end(key.as_bytes()).unwrap()
            } else {
                Bytes::new()
            },
            ..Default::default()
        };
        tune(&mut create);
        pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        }
    }

    /// A stream of watch requests the test writes to, and its answers.
    async fn open(
        client: &mut WatchClient<Channel>,
    ) -> (mpsc::Sender<pb::WatchRequest>, Streaming<pb::WatchResponse>) {
        let (requests, outgoing) = mpsc::channel(16);
        let answers = client
            .watch(ReceiverStream::new(outgoing))
            .await
            .unwrap()
            .into_inner();
        (requests, answers)
    }

    async fn answer(answers: &mut Streaming<pb::WatchResponse>) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("an answer within 10 s")
            .unwrap()
            .expect("the stream goes on")
    }

    /// What an answer says, in one line: `id kind key[=value][ prev=value]`
    /// per event, or `id created`/`id canceled`.
    fn said(answer: &pb::WatchResponse) -> Vec<String> {
        if answer.created {
            return vec![format!("{} created", answer.watch_id)];
        }
        if answer.canceled {
            return vec![format!(
                "{} canceled {}",
                answer.watch_id, answer.cancel_reason
            )];
        }
        answer
            .events
            .iter()
            .map(|event| {
                let kv = event.kv.clone().unwrap_or_default();
                let key = String::from_utf8_lossy(&kv.key);
                let mut line = if event.r#type == mvccpb::event::EventType::Put as i32 {
                    format!(
                        "{} put {key}={}",
                        answer.watch_id,
                        String::from_utf8_lossy(&kv.value)
                    )
                } else {
                    format!("{} delete {key}", answer.watch_id)
                };
                if let Some(prev) = &event.prev_kv {
                    line += &format!(" prev={}", String::from_utf8_lossy(&prev.value));
                }
                line
            })
            .collect()
    }

    #[tokio::test]
    async fn the_watches_of_one_stream_each_get_their_own_events_in_order() {
        let store = Arc::new(MemoryStore::new());
        let first = store
            .put(Bytes::from("k/a"), Bytes::from("0"))
            .await
            .unwrap();
        let mut client = serve(Arc::clone(&store)).await;
        let (requests, mut answers) = open(&mut client).await;
        // 0: every change under k/; 1: deletes only, with the value before;
        // 2: k/a from the first write on (history, then live).
        requests.send(create("k/", true, |_| {})).await.unwrap();
        requests
            .send(create("k/", true, |c| {
                c.filters = vec![pb::watch_create_request::FilterType::Noput as i32];
                c.prev_kv = true;
            }))
            .await
            .unwrap();
        requests
            .send(create("k/a", false, |c| c.start_revision = first as i64))
            .await
            .unwrap();
        let mut lines = Vec::new();
        for _ in 0..3 {
            lines.extend(said(&answer(&mut answers).await));
        }
        assert_eq!(lines, ["0 created", "1 created", "2 created"]);
        // Watch 2's replay of k/a=0 comes before anything live for it.
        assert_eq!(said(&answer(&mut answers).await), ["2 put k/a=0"]);
        store
            .put(Bytes::from("k/a"), Bytes::from("1"))
            .await
            .unwrap();
        store
            .put(Bytes::from("k/b"), Bytes::from("2"))
            .await
            .unwrap();
        let mut lines = Vec::new();
        while lines.len() < 3 {
            lines.extend(said(&answer(&mut answers).await));
        }
        assert_eq!(lines, ["0 put k/a=1", "2 put k/a=1", "0 put k/b=2"]);
        // Watch 2 cancelled: its answer, and nothing more for it.
        requests
            .send(pb::WatchRequest {
                request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                    watch_id: 2,
                })),
            })
            .await
            .unwrap();
        assert_eq!(said(&answer(&mut answers).await), ["2 canceled "]);
        store
            .txn(crate::storage::ops::Txn::of(vec![
                crate::storage::ops::Op::Delete {
                    range: crate::storage::ops::KeyRange::prefix(Bytes::from("k/")),
                    prev: false,
                },
            ]))
            .await
            .unwrap();
        let mut lines = Vec::new();
        while lines.len() < 4 {
            lines.extend(said(&answer(&mut answers).await));
        }
        assert_eq!(
            lines,
            [
                "0 delete k/a",
                "0 delete k/b",
                "1 delete k/a prev=1",
                "1 delete k/b prev=2"
            ]
        );
    }

    #[tokio::test]
    async fn a_stream_not_read_is_cut_off_freeing_its_watches_places() {
        let store = Arc::new(MemoryStore::with_watch_limits(WatchLimits {
            history: 0,
            max_watchers: 2,
            max_lag: 50,
        }));
        let mut client = serve(Arc::clone(&store)).await;
        let (stalled_requests, mut stalled) = open(&mut client).await;
        for _ in 0..2 {
            stalled_requests
                .send(create("k/", true, |_| {}))
                .await
                .unwrap();
        }
        assert_eq!(said(&answer(&mut stalled).await), ["0 created"]);
        assert_eq!(said(&answer(&mut stalled).await), ["1 created"]);
        // Values of 16 KiB: the stream's window and buffers fill after a
        // few dozen, while the stream is not read.
        let value = Bytes::from(vec![b'v'; 16 << 10]);
        for _ in 0..400 {
            store.put(Bytes::from("k/x"), value.clone()).await.unwrap();
        }
        // Both places are given back without the stalled stream reading:
        // another stream may watch again.
        let (requests, mut answers) = open(&mut client).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            requests.send(create("k/", true, |_| {})).await.unwrap();
            let answer = answer(&mut answers).await;
            if !answer.canceled {
                break;
            }
            assert!(
                answer.cancel_reason.contains("--max-watchers"),
                "{answer:?}"
            );
            assert!(tokio::time::Instant::now() < deadline, "never cut off");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // When it reads at last: events in order, then both watches
        // cancelled with the reason.
        let mut revisions = [0i64; 2];
        let mut canceled = Vec::new();
        while canceled.len() < 2 {
            let answer = answer(&mut stalled).await;
            if answer.canceled {
                assert!(
                    answer.cancel_reason.contains("--watch-max-lag"),
                    "{answer:?}"
                );
                canceled.push(answer.watch_id);
                continue;
            }
            let last = &mut revisions[answer.watch_id as usize];
            for event in &answer.events {
                let revision = event.kv.as_ref().unwrap().mod_revision;
                assert!(
                    *last == 0 || revision == *last + 1,
                    "{revision} after {last}"
                );
                *last = revision;
            }
        }
        canceled.sort();
        assert_eq!(canceled, [0, 1]);
        assert!(revisions.iter().all(|&r| r < 400), "{revisions:?}");
    }

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
