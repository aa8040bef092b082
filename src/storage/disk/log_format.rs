//! How a batch of [`Mutation`]s is written in the write-ahead log
//! (`wal.rs`): a record's frame (length, checksum, sequence number) and its
//! payload (the batch, logical, in order).
//!
//! Kept apart from the file's handling so that the log's on-disk format is
//! one short definition with its round-trip tests, as `record_format` is for
//! the database. Hand-rolled, not a serialization crate: the types are few,
//! the encoding is a tag byte per variant, LEB128 integers and
//! length-prefixed bytes, and decoding never panics on any input (a damaged
//! record fails its checksum first; a decoding error is reported as damage).
//!
//! A frame is 16 bytes and the payload, padded with zeros to a multiple of
//! 8 bytes (so that the check for damage in the middle of the log can look
//! for records at every 8th byte, see `wal.rs`):
//! - payload length (`u32`, little-endian),
//! - CRC-32C of the log file's secret key (see `wal.rs`; none in a log
//!   written before it had one), the length, the sequence number and the
//!   payload (`u32`): so that a client's value holding a copy of a record
//!   is never a valid record of this log,
//! - sequence number (`u64`, little-endian; the first is 1),
//! - payload: [`PAYLOAD_FORMAT`], the leases found expired while the batch
//!   was applied (so a replay sees the same leases live as the commit did:
//!   liveness depends on the clock), then the mutations.

use std::time::Duration;

use bytes::Bytes;

use super::committer::Mutation;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, LeaseId, Op, RangeEnd, RangeQuery, Txn,
};

/// Bytes before a record's payload.
pub(super) const FRAME: usize = 16;
/// The first byte of every payload: this encoding's version.
const PAYLOAD_FORMAT: u8 = 1;

/// The logical contents of one record: one committed batch.
#[derive(Debug)]
pub(super) struct Batch {
    /// Leases that the batch's transactions saw as expired (see
    /// `keyspace::Liveness`).
    pub(super) expired: Vec<LeaseId>,
    /// The compacted revision the batch moved to to keep the history
    /// within `--history` revisions, if it did (so a replay does the
    /// same whatever the flag is then).
    pub(super) retained: Option<u64>,
    pub(super) mutations: Vec<Mutation>,
}

/// Appends the record of `seq` to `out`, padded, for the log of `key` (0:
/// a log without one); `payload` writes its payload in place, so that a
/// batch's keys and values are copied once, into the buffer the log writes.
pub(super) fn frame_with(
    key: u64,
    seq: u64,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    payload(out);
    let len = out.len() - start - FRAME;
    let len = u32::try_from(len).expect("a batch is far below 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    let sum = frame_checksum(key, &out[start..]);
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    out.resize(start + padded(len as usize), 0);
}

/// [`frame_with`] of a payload already encoded.
#[cfg(test)]
pub(super) fn frame(key: u64, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    frame_with(key, seq, out, |out| out.extend_from_slice(payload));
}

/// The bytes a record with a payload of `len` bytes takes, frame and padding.
pub(super) fn padded(len: usize) -> usize {
    (FRAME + len).div_ceil(8) * 8
}

/// The checksum of a frame whose checksum field is ignored, in the log
/// of `key`.
fn frame_checksum(key: u64, record: &[u8]) -> u32 {
    // CRC-32C of the key (if any), the length, the sequence number and
    // the payload, in that order: the checksum field itself is skipped.
    let mut sum = 0;
    if key != 0 {
        sum = crc32c::crc32c_append(sum, &key.to_le_bytes());
    }
    let sum = crc32c::crc32c_append(sum, &record[..4]);
    crc32c::crc32c_append(crc32c::crc32c_append(sum, &record[8..16]), &record[16..])
}

/// A whole, valid record of the log of `key` at the start of `bytes`: its
/// sequence number, its payload's range in `bytes`, and the bytes it takes
/// with its padding.
pub(super) fn unframe(key: u64, bytes: &[u8]) -> Option<(u64, std::ops::Range<usize>, usize)> {
    let header = bytes.get(..FRAME)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if seq == 0 {
        return None;
    }
    let record = bytes.get(..FRAME.checked_add(len)?)?;
    (frame_checksum(key, record) == sum).then(|| (seq, FRAME..FRAME + len, padded(len)))
}

/// The sequence number a frame at the start of `bytes` claims, unchecked.
pub(super) fn claimed_seq(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?))
}

/// The payload of a record of `mutations`, applied with `expired` leases.
#[cfg(test)]
pub(super) fn encode<'a>(
    expired: &[LeaseId],
    retained: Option<u64>,
    mutations: impl ExactSizeIterator<Item = &'a Mutation>,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(expired, retained, mutations, &mut out);
    out
}

/// Appends to `out` the payload of a record of `mutations`, applied with
/// `expired` leases.
pub(super) fn encode_into<'a>(
    expired: &[LeaseId],
    retained: Option<u64>,
    mutations: impl ExactSizeIterator<Item = &'a Mutation>,
    out: &mut Vec<u8>,
) {
    out.push(PAYLOAD_FORMAT);
    uint(out, expired.len() as u64);
    for id in expired {
        int(out, *id);
    }
    match retained {
        None => out.push(0),
        Some(revision) => tagged(out, 1, revision),
    }
    uint(out, mutations.len() as u64);
    for mutation in mutations {
        match mutation {
            Mutation::Txn(txn) => {
                out.push(0);
                uint(out, txn.compares.len() as u64);
                for compare in &txn.compares {
                    bytes(out, &compare.key);
                    range_end(out, &compare.range_end);
                    match &compare.target {
                        CompareTarget::Value(value) => {
                            out.push(0);
                            bytes(out, value);
                        }
                        CompareTarget::ModRevision(r) => tagged(out, 1, *r),
                        CompareTarget::CreateRevision(r) => tagged(out, 2, *r),
                        CompareTarget::Version(v) => tagged(out, 3, *v),
                        CompareTarget::Lease(id) => {
                            out.push(4);
                            int(out, *id);
                        }
                    }
                    out.push(match compare.op {
                        CompareOp::Equal => 0,
                        CompareOp::NotEqual => 1,
                        CompareOp::Less => 2,
                        CompareOp::Greater => 3,
                    });
                }
                ops(out, &txn.success);
                ops(out, &txn.failure);
            }
            Mutation::Grant { id, ttl } => {
                out.push(1);
                int(out, *id);
                uint(out, ttl.as_secs());
                uint(out, u64::from(ttl.subsec_nanos()));
            }
            Mutation::Revoke { id, kind } => {
                out.push(2);
                int(out, *id);
                out.push(match kind {
                    EventKind::Put => 0,
                    EventKind::Delete => 1,
                    EventKind::Expire => 2,
                });
            }
            Mutation::Compact(revision) => tagged(out, 3, *revision),
        }
    }
}

fn uint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn int(out: &mut Vec<u8>, value: i64) {
    uint(out, value as u64);
}

fn tagged(out: &mut Vec<u8>, tag: u8, value: u64) {
    out.push(tag);
    uint(out, value);
}

fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    uint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn range_end(out: &mut Vec<u8>, end: &RangeEnd) {
    match end {
        RangeEnd::Single => out.push(0),
        RangeEnd::Before(end) => {
            out.push(1);
            bytes(out, end);
        }
        RangeEnd::Unbounded => out.push(2),
    }
}

fn ops(out: &mut Vec<u8>, ops: &[Op]) {
    uint(out, ops.len() as u64);
    for op in ops {
        match op {
            // Every field by name: one added to RangeQuery must be logged
            // too (it may decide whether a replayed Txn fails), so this
            // stops compiling until it is.
            Op::Get(RangeQuery {
                range,
                limit,
                keys_only,
                count_only,
                count_all,
                revision,
                max_bytes,
                whole_max_bytes,
            }) => {
                out.push(0);
                bytes(out, &range.start);
                range_end(out, &range.end);
                uint(out, *limit as u64);
                out.push(
                    u8::from(*keys_only) | u8::from(*count_only) << 1 | u8::from(*count_all) << 2,
                );
                uint(out, *revision);
                uint(out, *max_bytes as u64);
                uint(out, *whole_max_bytes as u64);
            }
            Op::Put {
                key,
                value,
                lease,
                prev,
            } => {
                out.push(1);
                bytes(out, key);
                bytes(out, value);
                int(out, *lease);
                out.push(u8::from(*prev));
            }
            Op::Delete { range, prev } => {
                out.push(2);
                bytes(out, &range.start);
                range_end(out, &range.end);
                out.push(u8::from(*prev));
            }
        }
    }
}

/// Decodes a payload; keys and values are slices of `payload`.
pub(super) fn decode(payload: Bytes) -> Result<Batch, String> {
    let mut reader = Reader { payload, at: 0 };
    let format = reader.byte()?;
    if format != PAYLOAD_FORMAT {
        return Err(format!("unknown payload format {format}"));
    }
    let count = reader.count()?;
    let mut expired = Vec::with_capacity(count);
    for _ in 0..count {
        expired.push(reader.int()?);
    }
    let retained = match reader.byte()? {
        0 => None,
        1 => Some(reader.uint()?),
        other => return Err(format!("unknown retention tag {other}")),
    };
    let count = reader.count()?;
    let mut mutations = Vec::with_capacity(count);
    for _ in 0..count {
        mutations.push(match reader.byte()? {
            0 => {
                let count = reader.count()?;
                let mut compares = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = reader.bytes()?;
                    let range_end = reader.range_end()?;
                    let target = match reader.byte()? {
                        0 => CompareTarget::Value(reader.bytes()?),
                        1 => CompareTarget::ModRevision(reader.uint()?),
                        2 => CompareTarget::CreateRevision(reader.uint()?),
                        3 => CompareTarget::Version(reader.uint()?),
                        4 => CompareTarget::Lease(reader.int()?),
                        other => return Err(format!("unknown compare target {other}")),
                    };
                    let op = match reader.byte()? {
                        0 => CompareOp::Equal,
                        1 => CompareOp::NotEqual,
                        2 => CompareOp::Less,
                        3 => CompareOp::Greater,
                        other => return Err(format!("unknown compare operator {other}")),
                    };
                    compares.push(Compare {
                        key,
                        range_end,
                        target,
                        op,
                    });
                }
                let success = reader.ops()?;
                let failure = reader.ops()?;
                Mutation::Txn(Txn {
                    compares,
                    success,
                    failure,
                })
            }
            1 => {
                let id = reader.int()?;
                let secs = reader.uint()?;
                let nanos = u32::try_from(reader.uint()?)
                    .ok()
                    .filter(|nanos| *nanos < 1_000_000_000)
                    .ok_or("a TTL's nanoseconds out of range")?;
                Mutation::Grant {
                    id,
                    ttl: Duration::new(secs, nanos),
                }
            }
            2 => Mutation::Revoke {
                id: reader.int()?,
                kind: match reader.byte()? {
                    0 => EventKind::Put,
                    1 => EventKind::Delete,
                    2 => EventKind::Expire,
                    other => return Err(format!("unknown event kind {other}")),
                },
            },
            3 => Mutation::Compact(reader.uint()?),
            other => return Err(format!("unknown mutation {other}")),
        });
    }
    if reader.at != reader.payload.len() {
        return Err("bytes after the last mutation".into());
    }
    Ok(Batch {
        expired,
        retained,
        mutations,
    })
}

struct Reader {
    payload: Bytes,
    at: usize,
}

impl Reader {
    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self.payload.get(self.at).ok_or("the payload ends early")?;
        self.at += 1;
        Ok(byte)
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("an integer longer than 10 bytes".into())
    }

    fn int(&mut self) -> Result<i64, String> {
        Ok(self.uint()? as i64)
    }

    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.uint()?).map_err(|_| "a size out of range".into())
    }

    /// A count of items, each at least a byte: never more than remain.
    fn count(&mut self) -> Result<usize, String> {
        let count = self.usize()?;
        if count > self.payload.len() - self.at {
            return Err("a count beyond the payload".into());
        }
        Ok(count)
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{other} is not a boolean")),
        }
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.usize()?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.payload.len())
            .ok_or("bytes beyond the payload")?;
        let bytes = self.payload.slice(self.at..end);
        self.at = end;
        Ok(bytes)
    }

    fn range_end(&mut self) -> Result<RangeEnd, String> {
        match self.byte()? {
            0 => Ok(RangeEnd::Single),
            1 => Ok(RangeEnd::Before(self.bytes()?)),
            2 => Ok(RangeEnd::Unbounded),
            other => Err(format!("unknown range end {other}")),
        }
    }

    fn ops(&mut self) -> Result<Vec<Op>, String> {
        let count = self.count()?;
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            ops.push(match self.byte()? {
                0 => {
                    let range = KeyRange {
                        start: self.bytes()?,
                        end: self.range_end()?,
                    };
                    let limit = self.usize()?;
                    let flags = self.byte()?;
                    if flags > 7 {
                        return Err(format!("unknown query flags {flags}"));
                    }
                    Op::Get(RangeQuery {
                        range,
                        limit,
                        keys_only: flags & 1 != 0,
                        count_only: flags & 2 != 0,
                        count_all: flags & 4 != 0,
                        revision: self.uint()?,
                        max_bytes: self.usize()?,
                        whole_max_bytes: self.usize()?,
                    })
                }
                1 => Op::Put {
                    key: self.bytes()?,
                    value: self.bytes()?,
                    lease: self.int()?,
                    prev: self.bool()?,
                },
                2 => Op::Delete {
                    range: KeyRange {
                        start: self.bytes()?,
                        end: self.range_end()?,
                    },
                    prev: self.bool()?,
                },
                other => return Err(format!("unknown operation {other}")),
            });
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Mutation> {
        let query = RangeQuery {
            range: KeyRange::between(Bytes::from("a"), Bytes::from("z")),
            limit: 10,
            keys_only: true,
            count_only: false,
            count_all: true,
            revision: 7,
            max_bytes: 1 << 20,
            whole_max_bytes: 3,
        };
        vec![
            Mutation::Txn(Txn {
                compares: vec![
                    Compare::key(
                        Bytes::from("k"),
                        CompareTarget::Value(Bytes::from_static(b"\x00\xff")),
                        CompareOp::Equal,
                    ),
                    Compare {
                        key: Bytes::from("p/"),
                        range_end: RangeEnd::Unbounded,
                        target: CompareTarget::ModRevision(u64::MAX),
                        op: CompareOp::Less,
                    },
                    Compare::key(
                        Bytes::new(),
                        CompareTarget::CreateRevision(0),
                        CompareOp::Greater,
                    ),
                    Compare::key(
                        Bytes::from("v"),
                        CompareTarget::Version(3),
                        CompareOp::NotEqual,
                    ),
                    Compare::key(Bytes::from("l"), CompareTarget::Lease(-5), CompareOp::Equal),
                ],
                success: vec![
                    Op::Put {
                        key: Bytes::from("k"),
                        value: Bytes::from(vec![7u8; 300]),
                        lease: i64::MIN,
                        prev: true,
                    },
                    Op::Get(query),
                    Op::Get(RangeQuery::all(KeyRange::prefix(Bytes::new()))),
                ],
                failure: vec![Op::Delete {
                    range: KeyRange::prefix(Bytes::from("p/")),
                    prev: false,
                }],
            }),
            Mutation::Txn(Txn::default()),
            Mutation::Grant {
                id: i64::MAX,
                ttl: Duration::new(60, 999_999_999),
            },
            Mutation::Revoke {
                id: 42,
                kind: EventKind::Expire,
            },
            Mutation::Revoke {
                id: 0,
                kind: EventKind::Delete,
            },
            Mutation::Compact(12_345_678_901),
        ]
    }

    #[test]
    fn every_mutation_round_trips() {
        let mutations = every_kind();
        let payload = encode(&[3, -1, i64::MAX], Some(77), mutations.iter());
        let batch = decode(Bytes::from(payload)).unwrap();
        assert_eq!(batch.expired, [3, -1, i64::MAX]);
        assert_eq!(batch.retained, Some(77));
        assert_eq!(format!("{:?}", batch.mutations), format!("{mutations:?}"));
        let payload = encode(&[], None, [].iter());
        let batch = decode(Bytes::from(payload)).unwrap();
        assert_eq!((batch.expired.len(), batch.retained), (0, None));
        assert!(batch.mutations.is_empty());
    }

    const KEY: u64 = 0x5eed_1234_abcd_0001;

    #[test]
    fn a_frame_round_trips_and_any_damage_is_seen() {
        let payload = encode(&[], None, every_kind().iter());
        let mut record = Vec::new();
        frame(KEY, 9, &payload, &mut record);
        assert_eq!(record.len() % 8, 0);
        assert_eq!(record.len(), padded(payload.len()));
        let (seq, range, len) = unframe(KEY, &record).unwrap();
        assert_eq!(
            (seq, &record[range], len),
            (9, payload.as_slice(), record.len())
        );
        for at in 0..FRAME + payload.len() {
            let mut damaged = record.clone();
            damaged[at] ^= 0x10;
            assert_eq!(unframe(KEY, &damaged), None, "a flipped bit at {at}");
        }
        // Cut short anywhere, it is no record.
        for len in 0..FRAME + payload.len() {
            assert_eq!(unframe(KEY, &record[..len]), None, "cut at {len}");
        }
        assert_eq!(unframe(KEY, &[0; 64]), None, "zeros are no record");
        // Nor a record of another log, or of one without a key.
        assert_eq!(unframe(KEY + 2, &record), None);
        assert_eq!(unframe(0, &record), None);
    }

    #[test]
    fn the_checksum_is_the_crc32c_of_key_length_sequence_and_payload() {
        // The standard CRC-32C (check value 0xe3069283), over the fields
        // in order: what records written before the crc32c crate hold.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let mut record = Vec::new();
        frame(KEY, 9, b"payload", &mut record);
        let mut covered = KEY.to_le_bytes().to_vec();
        covered.extend_from_slice(&record[..4]);
        covered.extend_from_slice(&record[8..FRAME + 7]);
        let stored = u32::from_le_bytes(record[4..8].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&covered));
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let payload = encode(&[1], Some(3), every_kind().iter());
        for len in 0..payload.len() {
            assert!(decode(Bytes::copy_from_slice(&payload[..len])).is_err());
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut damaged = payload.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % damaged.len() as u64) as usize;
            damaged[at] = (seed >> 32) as u8;
            let _ = decode(Bytes::from(damaged));
        }
        assert!(decode(Bytes::from(vec![PAYLOAD_FORMAT, 0xff, 0xff, 0xff, 0x7f])).is_err());
    }
}
