//! Request validation: the size limits every key and value must respect, and
//! the limits on how much one request of the full API may ask for.
//!
//! Checks run before a request reaches the store, so an invalid request never
//! changes stored data, and each failure names the limit and the flag that sets
//! it, so the caller knows what to change.

use tonic::Status;

/// Request limits, each from the flag of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted key, in bytes (`--max-key-bytes`).
    pub max_key_bytes: usize,
    /// Longest accepted value, in bytes (`--max-value-bytes`).
    pub max_value_bytes: usize,
    /// Most keys in one BatchGet or BatchPut (`--max-batch-keys`).
    pub max_batch_keys: usize,
    /// Most keys in one page of Range (`--max-range-page`); also the page
    /// size when a request asks for none.
    pub max_range_page: usize,
    /// About the most bytes of records in one page of Range
    /// (`--max-range-page-bytes`, counted as `storage::ops::page_bytes`):
    /// a page stops before the record that would pass it, at least one
    /// record per page.
    pub max_range_page_bytes: usize,
    /// Most operations in one branch of a Txn, and most compares
    /// (`--max-txn-ops`).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 1024 * 1024,
            max_batch_keys: 1000,
            max_range_page: 10_000,
            // Half of a gRPC client's default largest answer (4 MiB), so
            // a page of values up to the default 1 MiB always fits in it.
            max_range_page_bytes: 2 << 20,
            max_txn_ops: 128,
        }
    }
}

/// The smallest decoding limit: batches of small values need more room than
/// one key and value.
const MIN_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Room for protobuf framing around the largest key and value in one message.
const MESSAGE_OVERHEAD_BYTES: usize = 1024;

impl Limits {
    /// The most entries one repeated field of a request may have: the
    /// largest count any limit allows (a batch's keys, a Txn's compares or
    /// operations). See `grpc::codec`, which counts only requests.
    pub fn max_repeated(&self) -> usize {
        self.max_batch_keys.max(self.max_txn_ops)
    }

    /// `INVALID_ARGUMENT` unless `key` is non-empty and within `max_key_bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, above the limit of {} bytes (--max-key-bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// `INVALID_ARGUMENT` if `key` is longer than `max_key_bytes` (empty is
    /// allowed: range starts and prefixes may be empty).
    pub fn check_key_length(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Ok(());
        }
        self.check_key(key)
    }

    /// `INVALID_ARGUMENT` unless `value` is within `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes, above the limit of {} bytes (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// The largest request message the server decodes: room for the longest
    /// key and value, and at least 16 MiB for batches.
    ///
    /// tonic refuses larger messages before a handler runs (4 MiB by default);
    /// raising `--max-value-bytes` beyond that must raise this too, or a valid
    /// value would be refused with a confusing transport error.
    pub fn max_message_bytes(&self) -> usize {
        self.max_key_bytes
            .saturating_add(self.max_value_bytes)
            .saturating_add(MESSAGE_OVERHEAD_BYTES)
            .max(MIN_MESSAGE_BYTES)
    }

    /// `INVALID_ARGUMENT` if `count` items are more than `limit` allows.
    pub fn check_count(
        &self,
        what: &str,
        count: usize,
        limit: usize,
        flag: &str,
    ) -> Result<(), Status> {
        if count > limit {
            return Err(Status::invalid_argument(format!(
                "{count} {what}, above the limit of {limit} ({flag})"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const SMALL: Limits = Limits {
        max_key_bytes: 4,
        max_value_bytes: 8,
        max_batch_keys: 2,
        max_range_page: 2,
        max_range_page_bytes: 1024,
        max_txn_ops: 2,
    };

    #[test]
    fn keys_at_the_limit_pass_and_above_fail_naming_the_limit() {
        assert!(SMALL.check_key(b"abcd").is_ok());
        let status = SMALL.check_key(b"abcde").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "key is 5 bytes, above the limit of 4 bytes (--max-key-bytes)"
        );
    }

    #[test]
    fn empty_key_is_invalid() {
        let status = SMALL.check_key(b"").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "key is empty");
    }

    #[test]
    fn values_at_the_limit_pass_and_above_fail_naming_the_limit() {
        assert!(SMALL.check_value(b"").is_ok());
        assert!(SMALL.check_value(b"12345678").is_ok());
        let status = SMALL.check_value(b"123456789").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("limit of 8 bytes (--max-value-bytes)")
        );
    }

    #[test]
    fn message_limit_never_overflows() {
        let huge = Limits {
            max_key_bytes: usize::MAX,
            max_value_bytes: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(huge.max_message_bytes(), usize::MAX);
    }
}
