//! `kv bench --watchers N --api etcd`: the watch fan-out over etcd's v3 API,
//! so that kvserver and a real etcd are measured by one client.
//!
//! etcd's own `etcd-benchmark watch-latency` starts a goroutine per watcher
//! for every put and waits for all of them; at 10,000 watchers on two cores
//! that client, not the server, sets the latency (issue 17's figures). Here
//! each connection carries one Watch stream with all its watchers on it, as
//! etcd's clients multiplex watches, and one task per stream reads the
//! answers and notes each event's arrival for the watch it names: the
//! client's cost per event is a vector push.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::AuthorizedChannel;
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::kv_client::KvClient;
use crate::proto::etcd::etcdserverpb::watch_client::WatchClient;
use crate::storage::ops::prefix_end;

use super::BenchError;
use super::watch::{Receiver, Watched};

/// Starts `watchers` watches of `prefix`, spread over `channels` (one Watch
/// stream each); returns once every watch is created, with one task per
/// stream that answers each of its watchers' events once `done` names the
/// last revision and every watcher has it (or `done` is dropped).
pub(super) async fn start(
    channels: &[AuthorizedChannel],
    watchers: usize,
    prefix: &str,
    done: &watch::Receiver<Option<u64>>,
) -> Result<Vec<Receiver>, BenchError> {
    let key = Bytes::from(prefix.to_owned());
    let range_end = prefix_end(&key).unwrap_or_else(|| Bytes::from_static(b"\0"));
    let mut tasks = Vec::with_capacity(channels.len());
    for (stream, channel) in channels.iter().enumerate() {
        // Watcher n is on stream n % streams, as with the v1 API.
        let count = watchers / channels.len() + usize::from(stream < watchers % channels.len());
        if count == 0 {
            continue;
        }
        let (requests, outgoing) = mpsc::channel(count);
        for _ in 0..count {
            let create = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: key.clone(),
                        range_end: range_end.clone(),
                        ..Default::default()
                    },
                )),
            };
            requests
                .send(create)
                .await
                .expect("the channel holds every create request");
        }
        let mut answers = WatchClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .watch(ReceiverStream::new(outgoing))
            .await
            .map_err(|status| {
                BenchError::Failed(format!(
                    "watch stream {stream} could not start: {:?}: {}",
                    status.code(),
                    status.message()
                ))
            })?
            .into_inner();
        // The server answers the creates in order, each with its watch id.
        let mut ids = HashMap::with_capacity(count);
        while ids.len() < count {
            let answer = answers
                .message()
                .await
                .map_err(|status| {
                    BenchError::Failed(format!(
                        "watch stream {stream}: {:?}: {}",
                        status.code(),
                        status.message()
                    ))
                })?
                .ok_or_else(|| {
                    BenchError::Failed(format!(
                        "watch stream {stream} ended after {} of {count} watches were created",
                        ids.len()
                    ))
                })?;
            if answer.canceled {
                return Err(BenchError::Failed(format!(
                    "a watch on stream {stream} was refused: {}",
                    answer.cancel_reason
                )));
            }
            if answer.created {
                let next = ids.len();
                ids.insert(answer.watch_id, next);
            }
        }
        let mut done = done.clone();
        tasks.push((count, tokio::spawn(async move {
            // The request side stays open while the stream is read: a
            // half-closed stream ends its watches on etcd.
            let _requests = requests;
            let mut seen: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); count];
            let mut errors: Vec<Option<String>> = vec![None; count];
            let mut complete = 0;
            let mut last: Option<u64> = None;
            let has = |seen: &Vec<(u64, Instant)>, last: u64| {
                seen.last().is_some_and(|(revision, _)| *revision >= last)
            };
            loop {
                if complete == count {
                    break;
                }
                tokio::select! {
                    answer = answers.message() => match answer {
                        Ok(Some(answer)) => {
                            let Some(&watcher) = ids.get(&answer.watch_id) else {
                                continue;
                            };
                            if answer.canceled {
                                errors[watcher] = Some(format!("cancelled: {}", answer.cancel_reason));
                                complete += 1;
                                continue;
                            }
                            let now = Instant::now();
                            let before = last.is_some_and(|last| has(&seen[watcher], last));
                            seen[watcher].extend(answer.events.iter().map(|event| {
                                (event.kv.as_ref().map_or(0, |kv| kv.mod_revision as u64), now)
                            }));
                            if !before && last.is_some_and(|last| has(&seen[watcher], last)) {
                                complete += 1;
                            }
                        }
                        Ok(None) => {
                            let error = "the stream ended".to_owned();
                            return finish(seen, errors, &error);
                        }
                        Err(status) => {
                            let error = format!("{:?}: {}", status.code(), status.message());
                            return finish(seen, errors, &error);
                        }
                    },
                    changed = done.changed() => {
                        if changed.is_err() {
                            return finish(seen, errors, "the run was abandoned");
                        }
                        last = *done.borrow();
                        if let Some(last) = last {
                            complete = seen
                                .iter()
                                .zip(&errors)
                                .filter(|(seen, error)| error.is_some() || has(seen, last))
                                .count();
                        }
                    }
                }
            }
            seen.into_iter().zip(errors).collect()
        })));
    }
    Ok(tasks)
}

/// Every watcher's events, those still open failed with `error`.
fn finish(
    seen: Vec<Vec<(u64, Instant)>>,
    errors: Vec<Option<String>>,
    error: &str,
) -> Vec<Watched> {
    seen.into_iter()
        .zip(errors)
        .map(|(seen, own)| (seen, Some(own.unwrap_or_else(|| error.to_owned()))))
        .collect()
}

/// Puts `value` at `key` through etcd's KV service; the revision it made.
pub(super) async fn put(
    writer: &mut KvClient<AuthorizedChannel>,
    key: String,
    value: Bytes,
) -> Result<u64, String> {
    match writer
        .put(pb::PutRequest {
            key: Bytes::from(key),
            value,
            ..Default::default()
        })
        .await
    {
        Ok(reply) => Ok(reply.into_inner().header.map_or(0, |h| h.revision as u64)),
        Err(status) => Err(format!("put: {:?}: {}", status.code(), status.message())),
    }
}
