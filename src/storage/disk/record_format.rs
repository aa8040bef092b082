//! How a [`Record`] and the store's metadata are laid out in the database file.
//!
//! Kept apart from the engine calls so that the on-disk format is one short,
//! versioned definition: a record is one format byte, three little-endian `u64`
//! counters, the lease id (little-endian `i64`) and the value. A new format
//! gets a new format byte, and [`decode`] keeps reading every format ever
//! written (format 1 had no lease).

use bytes::Bytes;

use crate::storage::{Record, StoreError};

/// Records without a lease: format byte and three counters.
const RECORD_FORMAT_V1: u8 = 1;
const HEADER_LEN_V1: usize = 1 + 3 * 8;
/// The format written by this version: format 1 plus the lease id.
const RECORD_FORMAT_V2: u8 = 2;
const HEADER_LEN_V2: usize = HEADER_LEN_V1 + 8;

/// The marker stored under [`META_FORMAT`]: a database without it was not
/// written by kvserver, and one with another value needs another version.
pub(super) const DATA_FORMAT: &str = "keyvalue-disk/1";
/// Meta key of the format marker.
pub(super) const META_FORMAT: &str = "format";
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

/// The record stored as `bytes`; `key` only names the culprit in the error.
pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    let (mut record, header_len) = decode_header(key, bytes)?;
    record.value = Bytes::copy_from_slice(&bytes[header_len..]);
    Ok(record)
}

/// The record stored as `bytes`, with an empty value: its counters and lease
/// without the copy of the value.
pub(super) fn decode_without_value(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    Ok(decode_header(key, bytes)?.0)
}

/// Everything of the record but its value, and where the value starts.
fn decode_header(key: &[u8], bytes: &[u8]) -> Result<(Record, usize), StoreError> {
    let corrupt = |what: &str| {
        StoreError::Internal(format!(
            "the stored record of key {:?} is unreadable: {what}",
            String::from_utf8_lossy(key)
        ))
    };
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
    }
}
