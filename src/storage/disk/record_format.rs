//! How a [`Record`] and the store's metadata are laid out in the database file.
//!
//! Kept apart from the engine calls so that the on-disk format is one short,
//! versioned definition: a record is one format byte, three little-endian `u64`
//! counters and the value. A later format (a lease, say) gets a new format byte,
//! and [`decode`] keeps reading every format ever written.

use bytes::Bytes;

use crate::storage::{Record, StoreError};

/// The format byte of records written by this version.
const RECORD_FORMAT_V1: u8 = 1;
/// Format byte plus `create_revision`, `mod_revision` and `version`.
const HEADER_LEN: usize = 1 + 3 * 8;

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
    let mut bytes = Vec::with_capacity(HEADER_LEN + record.value.len());
    bytes.push(RECORD_FORMAT_V1);
    bytes.extend_from_slice(&record.create_revision.to_le_bytes());
    bytes.extend_from_slice(&record.mod_revision.to_le_bytes());
    bytes.extend_from_slice(&record.version.to_le_bytes());
    bytes.extend_from_slice(&record.value);
    bytes
}

/// The record stored as `bytes`; `key` only names the culprit in the error.
pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Internal(format!(
            "the stored record of key {:?} is unreadable: {what}",
            String::from_utf8_lossy(key)
        ))
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("too short"));
    }
    if bytes[0] != RECORD_FORMAT_V1 {
        return Err(corrupt(&format!("unknown record format {}", bytes[0])));
    }
    let counter = |at: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(le)
    };
    Ok(Record {
        create_revision: counter(1),
        mod_revision: counter(9),
        version: counter(17),
        value: Bytes::copy_from_slice(&bytes[HEADER_LEN..]),
    })
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
        };
        assert_eq!(decode(b"k", &encode(&record)).unwrap(), record);
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
        });
        unknown[0] = 99;
        assert!(decode(b"k", &unknown).is_err());
    }
}
