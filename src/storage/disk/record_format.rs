//! How a [`Record`], a tombstone, a history entry and the store's metadata
//! are laid out in the database file.
//!
//! Kept apart from the engine calls so that the on-disk format is one short,
//! versioned definition: a record is one format byte, three little-endian `u64`
//! counters, the lease id (little-endian `i64`) and the value; a tombstone
//! is a format byte (deleted or expired) and the revision of the deletion. A
//! new format gets a new format byte, and [`decode`] keeps reading every
//! format ever written (format 1 had no lease).
//!
//! The data dir as a whole has a format too, the marker [`DATA_FORMAT`]:
//! `keyvalue-disk/1` kept only latest records, `keyvalue-disk/2` adds
//! tombstones, the `history` table and the compacted revision (a key's
//! first write kept an empty entry there), `keyvalue-disk/3` keeps the keys
//! each revision created in the `created` table instead (a version 2 dir
//! reads as it is: its empty entries mean what they meant), and
//! `keyvalue-disk/4` has the write-ahead log beside it (`wal.rs`) and the
//! last record applied in `meta`: a version 3 binary would not replay the
//! log after a crash and would lose acknowledged writes, so it must refuse
//! the dir (the tables are unchanged: a version 3 dir is upgraded by its
//! marker alone). An earlier
//! version's dir is upgraded at open (version 1's records read as they are;
//! it gets an empty history); a dir of a later version is refused, so no
//! binary misreads a layout it does not know (a version 2 binary would miss
//! the created keys).

use bytes::Bytes;

use crate::storage::apply::{Slot, Values};
use crate::storage::{Record, Revision, StoreError};

/// Records without a lease: format byte and three counters.
const RECORD_FORMAT_V1: u8 = 1;
const HEADER_LEN_V1: usize = 1 + 3 * 8;
/// The format written by this version: format 1 plus the lease id.
const RECORD_FORMAT_V2: u8 = 2;
const HEADER_LEN_V2: usize = HEADER_LEN_V1 + 8;
/// A tombstone: the key was deleted at the revision that follows.
const DELETED: u8 = 3;
/// A tombstone: the key's lease expired, deleting it at the revision.
const EXPIRED: u8 = 4;
const TOMBSTONE_LEN: usize = 1 + 8;

/// The marker stored under [`META_FORMAT`]: a database without it was not
/// written by kvserver, and one with another value needs another version.
pub(super) const DATA_FORMAT: &str = "keyvalue-disk/4";
/// The marker of the layout before multi-version storage, which this
/// version upgrades at open.
pub(super) const DATA_FORMAT_V1: &str = "keyvalue-disk/1";
/// The marker of the first multi-version layout (created keys in the
/// history, one entry each), which this version upgrades at open.
pub(super) const DATA_FORMAT_V2: &str = "keyvalue-disk/2";
/// The marker of the layout before the write-ahead log, which this version
/// upgrades at open (the tables are the same).
pub(super) const DATA_FORMAT_V3: &str = "keyvalue-disk/3";
/// Meta key of the compacted revision (a little-endian `u64`; absent: 0).
pub(super) const META_COMPACTED: &str = "compacted";
/// Meta key of the format marker.
pub(super) const META_FORMAT: &str = "format";
/// Meta key of the sequence number of the last write-ahead log record
/// applied (a little-endian `u64`; absent: 0), written in the same
/// transaction as the batch it holds (see `wal`).
pub(super) const META_LOG_SEQ: &str = "log_seq";
/// Meta key of the store-wide revision (a little-endian `u64`), written in the
/// same transaction as every batch of records, so it never lags their revisions.
pub(super) const META_REVISION: &str = "revision";

/// The bytes stored for `record`.
pub(super) fn encode(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN_V2 + record.value.len());
    bytes.push(RECORD_FORMAT_V2);
    bytes.extend_from_slice(&record.create_revision.to_le_bytes());
    bytes.extend_from_slice(&record.mod_revision.to_le_bytes());
    bytes.extend_from_slice(&record.version.to_le_bytes());
    bytes.extend_from_slice(&record.lease.to_le_bytes());
    bytes.extend_from_slice(&record.value);
    bytes
}

/// The bytes stored for `slot`.
pub(super) fn encode_slot(slot: &Slot) -> Vec<u8> {
    match slot {
        Slot::Live(record) => encode(record),
        Slot::Gone { revision, expired } => {
            let mut bytes = Vec::with_capacity(TOMBSTONE_LEN);
            bytes.push(if *expired { EXPIRED } else { DELETED });
            bytes.extend_from_slice(&revision.to_le_bytes());
            bytes
        }
    }
}

/// The slot stored as `bytes`; `key` only names the culprit in the error.
pub(super) fn decode_slot(key: &[u8], bytes: &[u8], values: Values) -> Result<Slot, StoreError> {
    match bytes.first() {
        Some(&(DELETED | EXPIRED)) if bytes.len() == TOMBSTONE_LEN => Ok(Slot::Gone {
            revision: u64::from_le_bytes(bytes[1..].try_into().unwrap_or_default()),
            expired: bytes[0] == EXPIRED,
        }),
        Some(&(DELETED | EXPIRED)) => Err(corrupt(key, "a tombstone of the wrong length")),
        _ => {
            let (mut record, header_len) = decode_header(key, bytes)?;
            if values == Values::Decoded {
                record.value = Bytes::copy_from_slice(&bytes[header_len..]);
            }
            Ok(Slot::Live(record))
        }
    }
}

/// The key of a history entry: the revision of the write (big-endian, so
/// that entries sort by revision), then the key.
pub(super) fn history_key(revision: Revision, key: &[u8]) -> Vec<u8> {
    let mut composite = Vec::with_capacity(8 + key.len());
    composite.extend_from_slice(&revision.to_be_bytes());
    composite.extend_from_slice(key);
    composite
}

/// The revision and key of a history entry's key.
pub(super) fn split_history_key(composite: &[u8]) -> Result<(Revision, &[u8]), StoreError> {
    let (revision, key) = composite
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Internal("a history entry's key is too short".into()))?;
    Ok((u64::from_be_bytes(*revision), key))
}

/// A history entry, as [`write_history_entry`] lays it out.
#[cfg(test)]
pub(super) fn history_entry(seq: u32, replaced: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = vec![0; history_entry_len(replaced)];
    write_history_entry(&mut bytes, seq, replaced);
    bytes
}

/// The length of the history entry of a write that replaced `replaced`.
pub(super) fn history_entry_len(replaced: Option<&[u8]>) -> usize {
    4 + replaced.map_or(0, <[u8]>::len)
}

/// Writes a history entry into `bytes` ([`history_entry_len`] long: redb's
/// space reserved in place): the write's place in its transaction, then the
/// stored bytes of what it replaced (nothing for [`Slot::ABSENT`]).
pub(super) fn write_history_entry(bytes: &mut [u8], seq: u32, replaced: Option<&[u8]>) {
    let (head, rest) = bytes.split_at_mut(4);
    head.copy_from_slice(&seq.to_le_bytes());
    rest.copy_from_slice(replaced.unwrap_or_default());
}

/// The place of a history entry's write in its transaction.
pub(super) fn history_seq(bytes: &[u8]) -> u32 {
    bytes
        .first_chunk::<4>()
        .map_or(0, |seq| u32::from_le_bytes(*seq))
}

/// What a history entry says the write replaced.
pub(super) fn decode_history(key: &[u8], bytes: &[u8]) -> Result<Slot, StoreError> {
    match bytes.get(4..) {
        Some([]) => Ok(Slot::ABSENT),
        Some(slot) => decode_slot(key, slot, Values::Decoded),
        None => Err(corrupt(key, "a history entry is too short")),
    }
}

fn corrupt(key: &[u8], what: &str) -> StoreError {
    StoreError::Internal(format!(
        "the stored record of key {:?} is unreadable: {what}",
        String::from_utf8_lossy(key)
    ))
}

/// The record stored as `bytes` by a format-1 or format-2 encoder.
#[cfg(test)]
fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    match decode_slot(key, bytes, Values::Decoded)? {
        Slot::Live(record) => Ok(record),
        Slot::Gone { .. } => Err(corrupt(key, "a tombstone")),
    }
}

/// Everything of the record but its value, and where the value starts.
fn decode_header(key: &[u8], bytes: &[u8]) -> Result<(Record, usize), StoreError> {
    let corrupt = |what: &str| corrupt(key, what);
    let header_len = match bytes.first() {
        Some(&RECORD_FORMAT_V1) => HEADER_LEN_V1,
        Some(&RECORD_FORMAT_V2) => HEADER_LEN_V2,
        Some(other) => return Err(corrupt(&format!("unknown record format {other}"))),
        None => return Err(corrupt("empty")),
    };
    if bytes.len() < header_len {
        return Err(corrupt("too short"));
    }
    let counter = |at: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&bytes[at..at + 8]);
        le
    };
    let record = Record {
        create_revision: u64::from_le_bytes(counter(1)),
        mod_revision: u64::from_le_bytes(counter(9)),
        version: u64::from_le_bytes(counter(17)),
        lease: if header_len == HEADER_LEN_V2 {
            i64::from_le_bytes(counter(25))
        } else {
            0
        },
        value: Bytes::new(),
    };
    Ok((record, header_len))
}

/// The revision stored as `bytes` under [`META_REVISION`].
pub(super) fn decode_revision(bytes: &[u8]) -> Result<u64, StoreError> {
    let le: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Internal(format!(
            "the stored revision is {} bytes, not 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = Record {
            value: Bytes::from_static(b"\0sunny\xff"),
            create_revision: 3,
            mod_revision: u64::MAX,
            version: 42,
            lease: 7,
        };
        assert_eq!(decode(b"k", &encode(&record)).unwrap(), record);
    }

    #[test]
    fn format_1_records_still_read_with_no_lease() {
        let mut v1 = vec![1];
        for counter in [3u64, 5, 2] {
            v1.extend_from_slice(&counter.to_le_bytes());
        }
        v1.extend_from_slice(b"old");
        let record = decode(b"k", &v1).unwrap();
        assert_eq!(
            (
                record.create_revision,
                record.mod_revision,
                record.version,
                record.lease
            ),
            (3, 5, 2, 0)
        );
        assert_eq!(record.value, Bytes::from_static(b"old"));
    }

    #[test]
    fn damaged_records_are_errors_naming_the_key() {
        let error = decode(b"weather", &[1, 2, 3]).unwrap_err();
        assert!(error.to_string().contains("\"weather\""), "{error}");
        let mut unknown = encode(&Record {
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        });
        unknown[0] = 99;
        assert!(decode(b"k", &unknown).is_err());
        assert!(decode_slot(b"k", &[DELETED, 1], Values::Decoded).is_err());
    }

    #[test]
    fn tombstones_and_history_entries_round_trip() {
        for slot in [
            Slot::ABSENT,
            Slot::Gone {
                revision: 7,
                expired: false,
            },
            Slot::Gone {
                revision: u64::MAX,
                expired: true,
            },
            Slot::Live(Record::after_put(None, Bytes::from_static(b"v"), 9, 3)),
        ] {
            let stored = (slot != Slot::ABSENT).then(|| encode_slot(&slot));
            let history = history_entry(42, stored.as_deref());
            assert_eq!(history_seq(&history), 42);
            assert_eq!(decode_history(b"k", &history).unwrap(), slot);
        }
        let composite = history_key(258, b"key");
        assert_eq!(split_history_key(&composite).unwrap(), (258, &b"key"[..]));
        assert!(
            history_key(255, b"zzz") < history_key(256, b"a"),
            "revision order first"
        );
    }
}
