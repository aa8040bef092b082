//! A typed async client of the full API (`keyvalue.v1.KV`), used by `kv`.
//!
//! Failures come back as [`ClientError`], mapped from gRPC statuses in one place
//! ([`ClientError::from_status`]), so callers match on what happened (the key is
//! missing, the server is unreachable) instead of on status codes. Answers are
//! the generated messages themselves (`proto::keyvalue::v1`): they already say
//! everything, and a second set of types would only copy them.

use std::fmt;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use bytes::Bytes;

use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_client::KvClient;

/// How to reach a server.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Every call, connecting included, gives up after this long.
    pub timeout: Duration,
    /// Sent as `authorization: Bearer <token>` with every call.
    pub token: Option<String>,
    /// Speak TLS, trusting this CA, optionally with a client certificate.
    pub tls: Option<ClientTls>,
}

/// The files of a TLS connection (PEM).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The CA that signed the server's certificate.
    pub ca: std::path::PathBuf,
    /// A client certificate and its key, for servers that require one.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ClientTls {
    fn config(&self) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| ClientError::Config {
                reason: format!("cannot read {}: {e}", path.display()),
            })
        };
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)?));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        Ok(config)
    }
}

/// A connection to a kvserver.
#[derive(Clone)]
pub struct Client {
    addr: String,
    inner: KvClient<Channel>,
    /// `Bearer <token>`, sent with every call, if the server wants a token.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
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
    /// A local file or setting the connection needs is unusable.
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The key does not exist.
    KeyNotFound {
        /// The key asked for, as the user wrote it.
        key: String,
    },
    /// The lease does not exist (expired, revoked, or never granted).
    LeaseNotFound {
        /// The server's message.
        message: String,
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
    /// The one mapping from a gRPC status to a client error. The full API
    /// answers NOT_FOUND only for leases (a missing key is an empty answer).
    pub fn from_status(status: Status, addr: &str) -> ClientError {
        match status.code() {
            Code::NotFound => ClientError::LeaseNotFound {
                message: status.message().to_owned(),
            },
            // An Unknown status with a source never came from the server: the
            // connection failed (a TLS client at a plaintext server, say).
            Code::Unavailable | Code::DeadlineExceeded => ClientError::Unreachable {
                addr: addr.to_owned(),
                reason: root_cause(&status),
            },
            Code::Unknown if std::error::Error::source(&status).is_some() => {
                ClientError::Unreachable {
                    addr: addr.to_owned(),
                    reason: root_cause(&status),
                }
            }
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
            ClientError::Config { reason } => f.write_str(reason),
            ClientError::KeyNotFound { key } => write!(f, "key {key:?} not found"),
            ClientError::LeaseNotFound { message } => f.write_str(message),
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
    pub async fn connect(addr: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        let timeout = options.timeout;
        let token = options.token.as_deref();
        let authorization = match token {
            Some(token) => {
                Some(
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| ClientError::Config {
                            reason: "the token holds characters that cannot be sent as metadata"
                                .into(),
                        })?,
                )
            }
            None => None,
        };
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("{scheme}://{addr}")
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
            addr: addr.to_owned(),
            reason: root_cause(&e),
        })?;
        if let Some(tls) = &options.tls {
            endpoint =
                endpoint
                    .tls_config(tls.config()?)
                    .map_err(|e| ClientError::InvalidAddress {
                        addr: addr.to_owned(),
                        reason: root_cause(&e),
                    })?;
        }
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
            // The timeout bounds each call until its answer starts, so a
            // watch's stream runs on for as long as the user wants.
            inner: KvClient::new(channel).max_decoding_message_size(usize::MAX),
            authorization,
        })
    }

    /// `message` as a request, with the token if there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }

    fn failed(&self, status: Status) -> ClientError {
        ClientError::from_status(status, &self.addr)
    }

    /// `key` with its revisions, or `None` if it does not exist.
    pub async fn get(&mut self, key: Bytes) -> Result<Option<pb::KeyValue>, ClientError> {
        let request = pb::GetRequest { key };
        self.inner
            .get(self.request(request))
            .await
            .map(|reply| reply.into_inner().kv)
            .map_err(|status| self.failed(status))
    }

    /// A put, with whatever options `request` carries.
    pub async fn put(&mut self, request: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.inner
            .put(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A delete of a key, range or prefix.
    pub async fn delete(
        &mut self,
        request: pb::DeleteRequest,
    ) -> Result<pb::DeleteResponse, ClientError> {
        self.inner
            .delete(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// One page of a range.
    pub async fn range(
        &mut self,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, ClientError> {
        self.inner
            .range(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A transaction.
    pub async fn txn(&mut self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.inner
            .txn(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A stream of changes. Each item is the events of one revision.
    pub async fn watch(
        &mut self,
        request: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, ClientError> {
        self.inner
            .watch(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Grants a lease.
    pub async fn lease_grant(
        &mut self,
        ttl: Duration,
    ) -> Result<pb::LeaseGrantResponse, ClientError> {
        let request = pb::LeaseGrantRequest {
            ttl_ms: ttl.as_millis().max(1) as u64,
        };
        self.inner
            .lease_grant(self.request(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Restarts a lease's TTL.
    pub async fn lease_keep_alive(
        &mut self,
        id: i64,
    ) -> Result<pb::LeaseKeepAliveResponse, ClientError> {
        self.inner
            .lease_keep_alive(self.request(pb::LeaseKeepAliveRequest { id }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A lease's TTL and time left.
    pub async fn lease_info(&mut self, id: i64) -> Result<pb::LeaseInfoResponse, ClientError> {
        self.inner
            .lease_info(self.request(pb::LeaseInfoRequest { id }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Revokes a lease and deletes its keys.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.inner
            .lease_revoke(self.request(pb::LeaseRevokeRequest { id }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A consistent copy of everything, as a stream of chunks.
    pub async fn snapshot(&mut self) -> Result<tonic::Streaming<pb::SnapshotChunk>, ClientError> {
        self.inner
            .snapshot(self.request(pb::SnapshotRequest {}))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Maps a status that ended a watch stream.
    pub fn stream_error(&self, status: Status) -> ClientError {
        self.failed(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_that_cannot_be_sent_is_a_config_error() {
        let options = ConnectOptions {
            timeout: Duration::from_secs(1),
            token: Some("line\nbreak".to_owned()),
            tls: None,
        };
        let Err(error) = Client::connect("127.0.0.1:1", &options).await else {
            panic!("connected with a token holding a newline");
        };
        assert!(matches!(error, ClientError::Config { .. }), "{error:?}");
    }
}
