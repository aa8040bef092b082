//! Watch on etcd: one etcd watch stream per watch, resumed on another member
//! from the next revision when its member fails.
//!
//! etcd keeps the history itself (until it is compacted), so a watch that
//! starts in the past, or resumes after a member died, misses nothing: it
//! asks for the revision after the last one it delivered. If etcd has
//! compacted past that revision, the consumer gets `Compacted`, as from
//! every backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::cluster::{Cluster, is_member_failure, map_status};
use super::convert::{Keys, revision_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::watch_client::WatchClient;
use crate::storage::ops::{Event, KeyRange};
use crate::storage::watch::WatcherSlot;
use crate::storage::{EventStream, Revision, StoreError};

/// Revisions buffered between the watch task and its consumer.
const STREAM_BUFFER: usize = 64;
/// Pause before resuming on another member, so a cluster that is down is not
/// hammered by every watch at once.
const RESUME_PAUSE: Duration = Duration::from_millis(200);

/// An open etcd watch: the stream of answers, and the request side, which
/// must stay open (etcd ends the watch when it closes).
struct Upstream {
    answers: Streaming<pb::WatchResponse>,
    _requests: mpsc::Sender<pb::WatchRequest>,
}

/// Starts a watch of `range` from `from` (`None`: from the next write).
/// Fails at once if no member takes it; afterwards the watch resumes by
/// itself until its consumer drops the stream.
pub(super) async fn start(
    cluster: Arc<Cluster>,
    keys: Keys,
    range: KeyRange,
    from: Option<Revision>,
    slot: WatcherSlot,
) -> Result<EventStream, StoreError> {
    if from == Some(0) {
        // Revision 0 was never written: it is before any history.
        return Err(StoreError::Compacted {
            requested: 0,
            oldest: 1,
        });
    }
    let (upstream, next) = open(&cluster, &keys, &range, from).await?;
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let _slot = slot;
        forward(cluster, keys, range, upstream, next, sender).await;
    });
    Ok(ReceiverStream::new(receiver))
}

/// Opens an etcd watch from `from` on the current member (failing over
/// until the timeout), and returns it with the first revision it reports.
async fn open(
    cluster: &Cluster,
    keys: &Keys,
    range: &KeyRange,
    from: Option<Revision>,
) -> Result<(Upstream, Revision), StoreError> {
    let (key, range_end) = keys.range(range);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key,
                range_end,
                start_revision: from.unwrap_or(0) as i64,
                ..Default::default()
            },
        )),
    };
    let deadline = tokio::time::Instant::now() + cluster.timeout();
    loop {
        let (index, channel) = cluster.current();
        let attempt = tokio::time::timeout_at(deadline, async {
            let (requests, outgoing) = mpsc::channel(1);
            requests
                .send(create.clone())
                .await
                .expect("the receiver is alive");
            let request = cluster.request(ReceiverStream::new(outgoing)).await?;
            let mut answers = WatchClient::new(channel)
                .watch(request)
                .await
                .map_err(|status| status_error(&status))?
                .into_inner();
            let created = answers
                .message()
                .await
                .map_err(|status| status_error(&status))?
                .ok_or_else(|| StoreError::Unavailable("etcd closed the watch".to_owned()))?;
            if created.compact_revision > 0 {
                return Err(StoreError::Compacted {
                    requested: from.unwrap_or(0),
                    oldest: created.compact_revision as Revision,
                });
            }
            if created.canceled {
                return Err(StoreError::Rejected(format!(
                    "etcd refused the watch: {}",
                    created.cancel_reason
                )));
            }
            let next = from.unwrap_or(revision_of(created.header.as_ref()) + 1);
            Ok((
                Upstream {
                    answers,
                    _requests: requests,
                },
                next,
            ))
        })
        .await;
        match attempt {
            Ok(Err(StoreError::Unavailable(message))) => {
                cluster.fail_over(index);
                if tokio::time::Instant::now() + RESUME_PAUSE >= deadline {
                    return Err(StoreError::Unavailable(format!(
                        "no etcd member took the watch within {:?}: {message}",
                        cluster.timeout()
                    )));
                }
                tokio::time::sleep(RESUME_PAUSE).await;
            }
            Ok(outcome) => return outcome,
            Err(_) => {
                cluster.fail_over(index);
                return Err(StoreError::Unavailable(format!(
                    "no etcd member took the watch within {:?}",
                    cluster.timeout()
                )));
            }
        }
    }
}

fn status_error(status: &tonic::Status) -> StoreError {
    if is_member_failure(status) {
        StoreError::Unavailable(status.message().to_owned())
    } else {
        map_status("Watch", status)
    }
}

/// Forwards events, one revision per message, resuming on failure, until the
/// consumer leaves or the history it needs is compacted.
async fn forward(
    cluster: Arc<Cluster>,
    keys: Keys,
    range: KeyRange,
    mut upstream: Upstream,
    mut next: Revision,
    sender: mpsc::Sender<Result<Vec<Event>, StoreError>>,
) {
    loop {
        let answer = tokio::select! {
            answer = upstream.answers.message() => answer,
            () = sender.closed() => return,
        };
        match answer {
            Ok(Some(answer)) => {
                if answer.compact_revision > 0 || answer.canceled {
                    let _ = sender
                        .send(Err(StoreError::Compacted {
                            requested: next,
                            oldest: answer.compact_revision.max(0) as Revision,
                        }))
                        .await;
                    return;
                }
                for batch in by_revision(answer.events.into_iter().filter_map(|e| keys.event(e))) {
                    next = batch[0].revision() + 1;
                    if sender.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
            }
            // The member failed or closed the stream: resume elsewhere.
            Ok(None) | Err(_) => loop {
                let (index, _) = cluster.current();
                cluster.fail_over(index);
                tokio::select! {
                    () = tokio::time::sleep(RESUME_PAUSE) => {}
                    () = sender.closed() => return,
                }
                match open(&cluster, &keys, &range, Some(next)).await {
                    Ok((resumed, _)) => {
                        tracing::debug!(next, "watch resumed on another etcd member");
                        upstream = resumed;
                        break;
                    }
                    Err(StoreError::Unavailable(_)) => continue,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            },
        }
    }
}

/// Events grouped by revision, in order (etcd may send several revisions in
/// one answer; our streams carry one revision per message).
fn by_revision(events: impl Iterator<Item = Event>) -> Vec<Vec<Event>> {
    let mut batches: Vec<Vec<Event>> = Vec::new();
    for event in events {
        match batches.last_mut() {
            Some(batch) if batch[0].revision() == event.revision() => batch.push(event),
            _ => batches.push(vec![event]),
        }
    }
    batches
}
