//! A typed async client of the tutorial API, used by `kv`.
//!
//! Failures come back as [`ClientError`], mapped from gRPC statuses in one place
//! ([`ClientError::from_status`]), so callers match on what happened (the key is
//! missing, the server is unreachable) instead of on status codes.

use std::fmt;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto::simplekeyvalue::key_value_client::KeyValueClient;
use crate::proto::simplekeyvalue::{GetRequest, SetRequest};

/// A connection to a kvserver.
#[derive(Clone)]
pub struct Client {
    addr: String,
    inner: KeyValueClient<Channel>,
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The address is not a valid `host:port` or URI.
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not exist.
    KeyNotFound {
        /// The key asked for.
        key: String,
    },
    /// The server could not be reached, or did not answer in time.
    Unreachable {
        /// The server's address.
        addr: String,
        /// The underlying cause, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
    /// The server refused the request (invalid key, value too large, ...).
    Rejected {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    /// The one mapping from a gRPC status to a client error.
    pub fn from_status(status: Status, addr: &str, key: &str) -> ClientError {
        match status.code() {
            Code::NotFound => ClientError::KeyNotFound {
                key: key.to_owned(),
            },
            Code::Unavailable | Code::DeadlineExceeded => ClientError::Unreachable {
                addr: addr.to_owned(),
                reason: root_cause(&status),
            },
            code => ClientError::Rejected {
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidAddress { addr, reason } => {
                write!(f, "invalid server address {addr:?}: {reason}")
            }
            ClientError::KeyNotFound { key } => write!(f, "key {key:?} not found"),
            ClientError::Unreachable { addr, reason } => {
                write!(f, "cannot reach kvserver at {addr}: {reason}")
            }
            ClientError::Rejected { code, message } => {
                write!(f, "server refused the request ({code:?}): {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The innermost cause of an error, which is the one a person can act on
/// (`Connection refused`), rather than the outermost (`transport error`).
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    if text.is_empty() {
        error.to_string()
    } else {
        text
    }
}

impl Client {
    /// Connects to `addr` (`host:port`, or a full `http://` URI). Every call,
    /// the connection attempt included, gives up after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
            addr: addr.to_owned(),
            reason: root_cause(&e),
        })?;
        let channel = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable {
                addr: addr.to_owned(),
                reason: root_cause(&e),
            })?;
        Ok(Client {
            addr: addr.to_owned(),
            inner: KeyValueClient::new(channel),
        })
    }

    /// The value of `key`.
    pub async fn get(&mut self, key: &str) -> Result<String, ClientError> {
        let request = GetRequest {
            key: key.to_owned(),
        };
        match self.inner.get(request).await {
            Ok(reply) => Ok(reply.into_inner().value),
            Err(status) => Err(ClientError::from_status(status, &self.addr, key)),
        }
    }

    /// Stores `value` under `key`.
    pub async fn set(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        let request = SetRequest {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match self.inner.set(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(ClientError::from_status(status, &self.addr, key)),
        }
    }
}
