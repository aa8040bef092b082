//! Watch on etcd: one etcd watch stream per watch, resumed on another member
//! from the next revision when its member fails.
//!
//! etcd keeps the history itself (until it is compacted), so a watch that
//! starts in the past, or resumes after a member died, misses nothing: it
//! asks for the revision after the last one it knows to be delivered. Events
//! move that revision on, and so do etcd's progress notifications, which a
//! quiet watch gets too, so resuming it never asks for a revision compacted
//! away while nothing happened. If etcd has compacted past the revision a
//! watch needs, the consumer gets `Compacted`, as from every backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::cluster::{Cluster, is_member_failure, kv_client, map_status, watch_client};
use super::convert::{Keys, etcd_number, revision_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::storage::ops::{Event, KeyRange};
use crate::storage::watch::WatcherSlot;
use crate::storage::{EventStream, Revision, StoreError};

/// Revisions buffered between the watch task and its consumer.
const STREAM_BUFFER: usize = 64;
/// Pause before resuming on another member, so a cluster that is down is not
/// hammered by every watch at once.
const RESUME_PAUSE: Duration = Duration::from_millis(200);

/// An open etcd watch: the stream of answers, the member it is on, and the
/// request side, which must stay open (etcd ends the watch when it closes).
struct Upstream {
    answers: Streaming<pb::WatchResponse>,
    member: usize,
    _requests: mpsc::Sender<pb::WatchRequest>,
}

/// Starts a watch of `range` from `from` (`None`: from the next write).
/// Fails at once if no member takes it or the history it needs is
/// compacted; afterwards the watch resumes by itself until its consumer
/// drops the stream.
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
            compacted: 1,
        });
    }
    let (mut upstream, next) = open(&cluster, &keys, &range, from).await?;
    if let Some(from) = from {
        refuse_if_compacted(&cluster, &keys, &range, from, &mut upstream).await?;
    }
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let _slot = slot;
        forward(cluster, keys, range, upstream, next, sender).await;
    });
    Ok(ReceiverStream::new(receiver))
}

/// etcd accepts a watch from a compacted revision and cancels it a moment
/// later. The local backends refuse it at once, so this does too: a read
/// at `from` tells whether etcd still has it, and if not the cancellation
/// (which names the oldest revision left) is awaited.
async fn refuse_if_compacted(
    cluster: &Cluster,
    keys: &Keys,
    range: &KeyRange,
    from: Revision,
    upstream: &mut Upstream,
) -> Result<(), StoreError> {
    let (key, range_end) = keys.range(range);
    let probe = pb::RangeRequest {
        key,
        range_end,
        revision: etcd_number(from),
        limit: 1,
        keys_only: true,
        ..Default::default()
    };
    let deadline = Instant::now() + cluster.timeout();
    let request = cluster.request(probe, deadline).await?;
    let (_, channel) = cluster.current();
    let compacted = match tokio::time::timeout_at(deadline, kv_client(channel).range(request)).await
    {
        Ok(Err(status)) => status.message().contains("compacted"),
        // Answered, or a future revision, or no answer: the stream will say.
        _ => false,
    };
    if !compacted {
        return Ok(());
    }
    let oldest = match tokio::time::timeout_at(deadline, upstream.answers.message()).await {
        Ok(Ok(Some(answer))) if answer.compact_revision > 0 => answer.compact_revision as Revision,
        _ => from + 1,
    };
    Err(StoreError::Compacted {
        requested: from,
        compacted: oldest,
    })
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
                start_revision: etcd_number(from.unwrap_or(0)),
                progress_notify: true,
                ..Default::default()
            },
        )),
    };
    let deadline = Instant::now() + cluster.timeout();
    loop {
        let (member, channel) = cluster.current_for_watch();
        let attempt = tokio::time::timeout_at(deadline, async {
            let (requests, outgoing) = mpsc::channel(1);
            requests
                .send(create.clone())
                .await
                .expect("the receiver is alive");
            let request = cluster
                .request(ReceiverStream::new(outgoing), deadline)
                .await?;
            let mut answers = watch_client(channel)
                .watch(request)
                .await
                .map_err(|status| status_error(&status))?
                .into_inner();
            let created = answers
                .message()
                .await
                .map_err(|status| status_error(&status))?
                .ok_or_else(|| StoreError::Unavailable("etcd closed the watch".to_owned()))?;
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
                    member,
                    _requests: requests,
                },
                next,
            ))
        })
        .await;
        match attempt {
            Ok(Err(StoreError::Unavailable(message))) => {
                cluster.fail_over(member);
                if Instant::now() + RESUME_PAUSE >= deadline {
                    return Err(StoreError::Unavailable(format!(
                        "no etcd member took the watch within {:?}: {message}",
                        cluster.timeout()
                    )));
                }
                tokio::time::sleep(RESUME_PAUSE).await;
            }
            Ok(outcome) => return outcome,
            Err(_) => {
                cluster.fail_over(member);
                return Err(StoreError::Unavailable(format!(
                    "no etcd member took the watch within {:?}",
                    cluster.timeout()
                )));
            }
        }
    }
}

/// A failed member is `Unavailable` (resume elsewhere); anything else ends
/// the watch.
fn status_error(status: &tonic::Status) -> StoreError {
    if is_member_failure(status) {
        StoreError::Unavailable(status.message().to_owned())
    } else {
        map_status("Watch", status)
    }
}

/// Forwards events, one revision per message, resuming on failure, until the
/// consumer leaves, the history it needs is compacted, or etcd refuses it.
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
        let resume = match answer {
            Ok(Some(answer)) if answer.compact_revision > 0 => {
                let _ = sender
                    .send(Err(StoreError::Compacted {
                        requested: next,
                        compacted: answer.compact_revision as Revision,
                    }))
                    .await;
                return;
            }
            // Cancelled for another reason (the member lost its leader):
            // another member can take the watch.
            Ok(Some(answer)) if answer.canceled => true,
            Ok(Some(answer)) if answer.events.is_empty() => {
                // A progress notification: every event up to its revision
                // has been delivered.
                next = next.max(revision_of(answer.header.as_ref()) + 1);
                false
            }
            Ok(Some(answer)) => {
                for batch in by_revision(answer.events.into_iter().filter_map(|e| keys.event(e))) {
                    next = batch[0].revision() + 1;
                    if sender.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
                false
            }
            Ok(None) => true,
            Err(status) if is_member_failure(&status) => true,
            Err(status) => {
                let _ = sender.send(Err(map_status("Watch", &status))).await;
                return;
            }
        };
        if !resume {
            continue;
        }
        cluster.fail_over(upstream.member);
        loop {
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
