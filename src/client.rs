//! A typed async client of the full API (`keyvalue.v1.KV`), used by `kv`.
//!
//! Failures come back as [`ClientError`], mapped from gRPC statuses in one place
//! ([`ClientError::from_status`]), so callers match on what happened (the key is
//! missing, the server is unreachable) instead of on status codes. Answers are
//! the generated messages themselves (`proto::keyvalue::v1`): they already say
//! everything, and a second set of types would only copy them.

use std::fmt;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
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
    /// The TLS settings, from files checked here: a file without the
    /// certificate or key it should hold is a mistake of the command line,
    /// which the handshake would only report as an untrusted server.
    fn config(&self) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
        let config_error = |reason| ClientError::Config { reason };
        let certificate = |path: &std::path::Path, what| {
            let pem = crate::tls::read_pem(path, what).map_err(config_error)?;
            crate::tls::pem_certs(&pem, path, what).map_err(config_error)?;
            Ok(pem)
        };
        let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(certificate(&self.ca, "CA certificate")?),
        );
        if let Some((cert, key)) = &self.identity {
            let cert_pem = certificate(cert, "client certificate")?;
            let key_pem = crate::tls::read_pem(key, "private key").map_err(config_error)?;
            crate::tls::pem_key(&key_pem, key).map_err(config_error)?;
            config = config.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        }
        Ok(config)
    }
}

/// A TTL in the whole milliseconds the API takes: at least 1 (0 would mean
/// "no TTL"), at most `u64::MAX`.
pub fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A connection to a kvserver.
#[derive(Clone)]
pub struct Client {
    addr: String,
    /// How it connected: a closed connection is explained by it.
    options: ConnectOptions,
    /// Every call carries the token, if there is one.
    inner: KvClient<AuthorizedChannel>,
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
    /// The server answered, but cannot serve right now (UNAVAILABLE from the
    /// server itself: its etcd cluster is unreachable, a disk error is being
    /// recovered from).
    Unavailable {
        /// The server's address.
        addr: String,
        /// The server's message, e.g. which etcd members it could not reach.
        message: String,
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
            // An Unknown or Cancelled status with a source never came from the
            // server: the connection failed (a TLS client at a plaintext
            // server, or a server that refused the client's certificate after
            // the handshake and closed the connection under the request).
            // A status with a source never came from the server: the
            // connection failed, or the client's own deadline passed.
            Code::Unavailable if std::error::Error::source(&status).is_none() => {
                ClientError::Unavailable {
                    addr: addr.to_owned(),
                    message: status.message().to_owned(),
                }
            }
            Code::Unavailable | Code::DeadlineExceeded => ClientError::Unreachable {
                addr: addr.to_owned(),
                reason: root_cause(&status),
            },
            Code::Unknown | Code::Cancelled if std::error::Error::source(&status).is_some() => {
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

impl ClientError {
    /// An unreachable server's reason, with what a closed connection most
    /// likely means for a client connected as `options` say.
    fn explained(self, options: &ConnectOptions) -> ClientError {
        match self {
            ClientError::Unreachable { addr, reason } => {
                let reason = match closed_connection_hint(&reason, options) {
                    Some(hint) => format!("{reason} ({hint})"),
                    None => reason,
                };
                ClientError::Unreachable { addr, reason }
            }
            other => other,
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
            ClientError::Unavailable { addr, message } => {
                write!(
                    f,
                    "kvserver at {addr} cannot serve now (UNAVAILABLE): {message}"
                )
            }
            ClientError::Rejected { code, message } => {
                let name = status_name(*code);
                write!(f, "server refused the request ({name}): {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`), as the
/// gRPC specification, our docs, `kv-py` and `kv-rb` write it.
pub fn status_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Why a server may have closed the connection under a request, when the
/// only cause the client sees is the closed connection ("broken pipe"): a
/// TLS server refuses a plaintext client, or a client without the
/// certificate it requires, by closing the connection during the handshake.
fn closed_connection_hint(reason: &str, options: &ConnectOptions) -> Option<&'static str> {
    let lower = reason.to_ascii_lowercase();
    // (A plaintext client reads a TLS server's alert as a malformed HTTP/2
    // frame; a client without a certificate gets the alert itself.)
    let closed = [
        "broken pipe",
        "connection reset",
        "closed",
        "unexpected eof",
        "frame with invalid size",
        "certificaterequired",
    ]
    .iter()
    .any(|sign| lower.contains(sign));
    if !closed {
        return None;
    }
    Some(match &options.tls {
        None => "the server closed the connection; if it serves TLS, pass --ca-file",
        Some(ClientTls { identity: None, .. }) => {
            "the server closed the connection; if it requires client certificates \
             (mutual TLS), pass --cert and --key"
        }
        Some(_) => {
            "the server closed the connection; its log says why (was the client \
             certificate signed by its --tls-client-ca?)"
        }
    })
}

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

/// `authorization: Bearer <token>` on every call through a connection, if
/// there is a token.
#[derive(Clone, Debug, Default)]
pub struct Authorization(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Authorization {
    /// The header for `token`; a token that cannot be sent as metadata is a
    /// [`ClientError::Config`].
    pub fn new(token: Option<&str>) -> Result<Authorization, ClientError> {
        let Some(token) = token else {
            return Ok(Authorization(None));
        };
        format!("Bearer {token}")
            .parse()
            .map(|value| Authorization(Some(value)))
            .map_err(|_| ClientError::Config {
                reason: "the token holds characters that cannot be sent as metadata".into(),
            })
    }
}

impl tonic::service::Interceptor for Authorization {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection through which every call carries the token, if any.
pub type AuthorizedChannel = InterceptedService<Channel, Authorization>;

/// Opens a new HTTP/2 connection to `addr` (`host:port`, or a full URI) as
/// `options` say: TLS or not, and `options.timeout` for connecting and for
/// every call until its answer starts. `kv` and `kv bench` both connect here.
pub async fn channel(addr: &str, options: &ConnectOptions) -> Result<Channel, ClientError> {
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
    // Without a port the URI's default (80, 443) would be tried: never a
    // kvserver's, so the mistake would show as a refused connection.
    if !addr.contains("://") && endpoint.uri().port_u16().is_none() {
        return Err(ClientError::InvalidAddress {
            addr: addr.to_owned(),
            reason: "expected host:port, e.g. 127.0.0.1:50051".to_owned(),
        });
    }
    if let Some(tls) = &options.tls {
        endpoint = endpoint
            .tls_config(tls.config()?)
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: root_cause(&e),
            })?;
    }
    endpoint
        .connect_timeout(options.timeout)
        .timeout(options.timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            ClientError::Unreachable {
                addr: addr.to_owned(),
                reason: root_cause(&e),
            }
            .explained(options)
        })
}

/// [`channel`] with the token of `options` on every call.
pub async fn authorized_channel(
    addr: &str,
    options: &ConnectOptions,
) -> Result<AuthorizedChannel, ClientError> {
    // The token first: a bad one is a mistake of the command line, whether or
    // not the server can be reached.
    let authorization = Authorization::new(options.token.as_deref())?;
    Ok(InterceptedService::new(
        channel(addr, options).await?,
        authorization,
    ))
}

impl Client {
    /// Connects to `addr` (`host:port`, or a full `http://` URI). Every call,
    /// the connection attempt included, gives up after `options.timeout`.
    pub async fn connect(addr: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        let channel = authorized_channel(addr, options).await?;
        Ok(Client {
            addr: addr.to_owned(),
            options: options.clone(),
            // The timeout bounds each call until its answer starts, so a
            // watch's stream runs on for as long as the user wants.
            inner: KvClient::new(channel).max_decoding_message_size(usize::MAX),
        })
    }

    fn failed(&self, status: Status) -> ClientError {
        ClientError::from_status(status, &self.addr).explained(&self.options)
    }

    /// `key` with its revisions as it is at `revision` (0: now), or `None`
    /// if it does not exist (then).
    pub async fn get(
        &mut self,
        key: Bytes,
        revision: u64,
    ) -> Result<Option<pb::KeyValue>, ClientError> {
        let request = pb::GetRequest { key, revision };
        self.inner
            .get(request)
            .await
            .map(|reply| reply.into_inner().kv)
            .map_err(|status| self.failed(status))
    }

    /// A put, with whatever options `request` carries.
    pub async fn put(&mut self, request: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.inner
            .put(request)
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
            .delete(request)
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
            .range(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A transaction.
    pub async fn txn(&mut self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.inner
            .txn(request)
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
            .watch(request)
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
            ttl_ms: ttl_ms(ttl),
        };
        self.inner
            .lease_grant(request)
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
            .lease_keep_alive(pb::LeaseKeepAliveRequest { id })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A lease's TTL and time left.
    pub async fn lease_info(&mut self, id: i64) -> Result<pb::LeaseInfoResponse, ClientError> {
        self.inner
            .lease_info(pb::LeaseInfoRequest {
                id,
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// A lease's TTL, time left and its keys after `after` (empty: from
    /// the first), a page of the server's size; `more_keys` says there are
    /// more.
    pub async fn lease_keys(
        &mut self,
        id: i64,
        after: Bytes,
    ) -> Result<pb::LeaseInfoResponse, ClientError> {
        self.inner
            .lease_info(pb::LeaseInfoRequest {
                id,
                // The server's page size caps it.
                keys_limit: u32::MAX,
                keys_after: after,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// The live leases with ids above `after` (from the lowest without
    /// one), a page of the server's size; `more` says there are more.
    pub async fn lease_list(
        &mut self,
        after: Option<i64>,
    ) -> Result<pb::LeaseListResponse, ClientError> {
        self.inner
            .lease_list(pb::LeaseListRequest {
                after,
                limit: 0,
                keys_limit: 0,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Revokes a lease and deletes its keys.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.inner
            .lease_revoke(pb::LeaseRevokeRequest { id })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.failed(status))
    }

    /// Compacts the history before `revision`; answers the store's revision.
    pub async fn compact(&mut self, revision: u64) -> Result<u64, ClientError> {
        self.inner
            .compact(pb::CompactRequest { revision })
            .await
            .map(|reply| reply.into_inner().header.map_or(0, |h| h.revision))
            .map_err(|status| self.failed(status))
    }

    /// A consistent copy of everything, as a stream of chunks.
    pub async fn snapshot(&mut self) -> Result<tonic::Streaming<pb::SnapshotChunk>, ClientError> {
        self.inner
            .snapshot(pb::SnapshotRequest {})
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

    #[test]
    fn a_ttl_is_whole_milliseconds_never_zero() {
        assert_eq!(ttl_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_cancelled_connection_is_unreachable_but_a_cancelled_answer_is_not() {
        let mut local = Status::new(Code::Cancelled, "operation was canceled");
        local.set_source(std::sync::Arc::new(std::io::Error::other("closed")));
        assert!(matches!(
            ClientError::from_status(local, "a:1"),
            ClientError::Unreachable { .. }
        ));
        let answered = Status::new(Code::Cancelled, "the server gave up");
        assert!(matches!(
            ClientError::from_status(answered, "a:1"),
            ClientError::Rejected {
                code: Code::Cancelled,
                ..
            }
        ));
    }

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
