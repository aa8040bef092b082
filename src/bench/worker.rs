//! One closed-loop worker: keeps one request in flight on its own keys and
//! verifies every answer against what its own writes imply.

use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;
use tonic::{Code, Status};

use crate::client::AuthorizedChannel;
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_client::KvClient;
use crate::proto::simplekeyvalue::key_value_client::KeyValueClient;
use crate::proto::simplekeyvalue::{GetRequest, SetRequest};

use super::mix::{Mix, OpKind, RANGE_WINDOW};
use super::report::WorkerResult;
use super::seed;

/// A worker's connection, to the service under load.
pub(super) enum Conn {
    Tutorial(KeyValueClient<AuthorizedChannel>),
    V1(KvClient<AuthorizedChannel>),
}

/// What one worker does.
pub(super) struct WorkerSpec {
    pub(super) id: usize,
    pub(super) workers: usize,
    /// The keys this worker owns: global index `id + slot * workers`.
    pub(super) keys: Vec<String>,
    /// The same keys as the full API sends them (a clone is a reference
    /// count, not a copy: a batch names a thousand keys per request).
    pub(super) wire_keys: Vec<Bytes>,
    /// Every key of the run, in order (for Range windows).
    pub(super) all_keys: std::sync::Arc<Vec<String>>,
    pub(super) value_size: usize,
    pub(super) mix: Mix,
    pub(super) batch_size: usize,
    pub(super) preload: bool,
    pub(super) limit: Option<u64>,
    pub(super) deadline: Option<Duration>,
}

/// What a worker knows of its keys.
struct Expected {
    /// The value each owned key must hold: `None` until set in this run.
    values: Vec<Option<String>>,
    /// The mod_revision of each owned key (v1 only; 0: never set).
    revisions: Vec<u64>,
}

impl WorkerSpec {
    pub(super) async fn run(
        self,
        mut conn: Conn,
        start_line: std::sync::Arc<tokio::sync::Barrier>,
        progress: ProgressBar,
    ) -> WorkerResult {
        let mut result = WorkerResult::new();
        let mut expected = Expected {
            values: vec![None; self.keys.len()],
            revisions: vec![0; self.keys.len()],
        };
        let mut counter = 0u64;
        if self.preload {
            for slot in 0..self.keys.len() {
                let value = self.value(&mut counter);
                self.set(&mut conn, slot, value, &mut expected, &mut result)
                    .await;
            }
            result = WorkerResult {
                errors: result.errors,
                problems: result.problems,
                ..WorkerResult::new()
            };
        }
        start_line.wait().await;
        let started = Instant::now();
        let mut rng = seed() ^ (self.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut done = 0u64;
        while self.limit.is_none_or(|limit| done < limit)
            && self.deadline.is_none_or(|d| started.elapsed() < d)
            && !self.keys.is_empty()
        {
            let roll = next();
            let slot = (roll % self.keys.len() as u64) as usize;
            let kind = self.mix.pick(((roll >> 32) % 100) as u32);
            let began = Instant::now();
            match kind {
                OpKind::Get => self.get(&mut conn, slot, &expected, &mut result).await,
                OpKind::Set => {
                    let value = self.value(&mut counter);
                    self.set(&mut conn, slot, value, &mut expected, &mut result)
                        .await;
                }
                OpKind::Range => {
                    let start = (next() % self.all_keys.len() as u64) as usize;
                    self.range(&mut conn, start, &expected, &mut result).await;
                }
                OpKind::Batch => {
                    let slots: Vec<usize> = (0..self.batch_size)
                        .map(|_| (next() % self.keys.len() as u64) as usize)
                        .collect();
                    self.batch(&mut conn, &slots, &expected, &mut result).await;
                }
                OpKind::Txn => {
                    let value = self.value(&mut counter);
                    self.txn(&mut conn, slot, value, &mut expected, &mut result)
                        .await;
                }
            }
            result.by_kind[kind.index()] += 1;
            let micros = began.elapsed().as_micros() as u64;
            let _ = result.latency_us.record(micros.max(1));
            done += 1;
            match self.deadline {
                Some(_) if self.id == 0 => {
                    progress.set_position(started.elapsed().as_millis() as u64)
                }
                Some(_) => {}
                None => progress.inc(1),
            }
        }
        result
    }

    /// A value unique to this worker and moment, padded to `value_size`.
    fn value(&self, counter: &mut u64) -> String {
        *counter += 1;
        let mut value = format!("{}:{}:", self.id, counter);
        if value.len() < self.value_size {
            value.extend(std::iter::repeat_n('v', self.value_size - value.len()));
        }
        value
    }

    /// The owned slot of global key index `index`, if this worker owns it.
    fn slot_of(&self, index: usize) -> Option<usize> {
        (index % self.workers == self.id).then(|| index / self.workers)
    }

    async fn set(
        &self,
        conn: &mut Conn,
        slot: usize,
        value: String,
        expected: &mut Expected,
        result: &mut WorkerResult,
    ) {
        let answer = match conn {
            Conn::Tutorial(client) => client
                .set(SetRequest {
                    key: self.keys[slot].clone(),
                    value: value.clone(),
                })
                .await
                .map(|_| 0),
            Conn::V1(client) => client
                .put(pb::PutRequest {
                    key: self.wire_keys[slot].clone(),
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                })
                .await
                .map(|reply| reply.into_inner().header.map_or(0, |h| h.revision)),
        };
        match answer {
            Ok(revision) => {
                expected.values[slot] = Some(value);
                expected.revisions[slot] = revision;
            }
            Err(status) => self.failed(status, "set", &self.keys[slot], result),
        }
    }

    async fn get(
        &self,
        conn: &mut Conn,
        slot: usize,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let answer = match conn {
            Conn::Tutorial(client) => match client
                .get(GetRequest {
                    key: self.keys[slot].clone(),
                })
                .await
            {
                Ok(reply) => Ok(Some(reply.into_inner().value.into_bytes())),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(status),
            },
            Conn::V1(client) => client
                .get(pb::GetRequest {
                    key: self.wire_keys[slot].clone(),
                    revision: 0,
                })
                .await
                .map(|reply| reply.into_inner().kv.map(|kv| kv.value.to_vec())),
        };
        match answer {
            Ok(got) => self.check(slot, got.as_deref(), expected, result),
            Err(status) => self.failed(status, "get", &self.keys[slot], result),
        }
    }

    async fn range(
        &self,
        conn: &mut Conn,
        start: usize,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let end = (start + RANGE_WINDOW).min(self.all_keys.len());
        let range_end = match self.all_keys.get(end) {
            Some(key) => Bytes::from(key.clone()),
            None => Bytes::from(format!("{}\0", self.all_keys[end - 1])),
        };
        let request = pb::RangeRequest {
            key: Bytes::from(self.all_keys[start].clone()),
            range_end,
            ..Default::default()
        };
        let reply = match client.range(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return self.failed(status, "range", &self.all_keys[start], result),
        };
        for index in start..end {
            let Some(slot) = self.slot_of(index) else {
                continue;
            };
            let got = reply
                .kvs
                .iter()
                .find(|kv| kv.key.as_ref() == self.keys[slot].as_bytes())
                .map(|kv| kv.value.as_ref());
            self.check(slot, got, expected, result);
        }
    }

    async fn batch(
        &self,
        conn: &mut Conn,
        slots: &[usize],
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let keys = slots
            .iter()
            .map(|&slot| self.wire_keys[slot].clone())
            .collect();
        match client
            .batch_get(pb::BatchGetRequest { keys, revision: 0 })
            .await
        {
            Ok(reply) => {
                for (&slot, got) in slots.iter().zip(reply.into_inner().results) {
                    self.check(
                        slot,
                        got.kv.as_ref().map(|kv| kv.value.as_ref()),
                        expected,
                        result,
                    );
                }
            }
            Err(status) => self.failed(status, "batch", &self.keys[slots[0]], result),
        }
    }

    async fn txn(
        &self,
        conn: &mut Conn,
        slot: usize,
        value: String,
        expected: &mut Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let key = self.wire_keys[slot].clone();
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: key.clone(),
                op: pb::compare::Op::Equal.into(),
                target: Some(pb::compare::Target::ModRevision(expected.revisions[slot])),
            }],
            success: vec![pb::Op {
                op: Some(pb::op::Op::Put(pb::PutRequest {
                    key,
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        match client.txn(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.succeeded {
                    expected.values[slot] = Some(value);
                    expected.revisions[slot] = reply.header.map_or(0, |h| h.revision);
                } else {
                    // Only this worker writes the key: its revision cannot move.
                    result.mismatches += 1;
                    result.problem(format!(
                        "txn {}: compare on mod_revision {} failed",
                        self.keys[slot], expected.revisions[slot]
                    ));
                }
            }
            Err(status) => self.failed(status, "txn", &self.keys[slot], result),
        }
    }

    /// Compares what a read returned for an owned key with what it must hold.
    fn check(
        &self,
        slot: usize,
        got: Option<&[u8]>,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let want = expected.values[slot].as_deref().map(str::as_bytes);
        if got != want {
            result.mismatches += 1;
            result.problem(format!(
                "read {}: got {:?}, expected {:?}",
                self.keys[slot],
                got.map(|g| shorten(&String::from_utf8_lossy(g)).to_owned()),
                want.map(|w| shorten(&String::from_utf8_lossy(w)).to_owned()),
            ));
        }
    }

    /// Counts a failed request; `key` is the (first) key it named.
    fn failed(&self, status: Status, op: &str, key: &str, result: &mut WorkerResult) {
        result.errors += 1;
        result.problem(format!(
            "{op} {key}: {}: {}",
            crate::client::status_name(status.code()),
            status.message()
        ));
    }
}

fn shorten(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
