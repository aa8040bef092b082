//! The connection to an etcd cluster: one lazily connected channel per
//! member, failover between them, authentication, and the mapping of etcd's
//! statuses to [`StoreError`]s.
//!
//! Every call has a deadline (`--etcd-timeout`), so an unreachable cluster
//! gives `Unavailable` instead of a hang. A call whose member cannot be
//! reached moves to the next member. It is retried there only when that
//! cannot apply a change twice: reads and lease queries always, writes only
//! when the request never left this process (the connection was refused).
//! A write whose outcome is unknown is reported as `Unavailable`; etcd
//! clients do the same, since repeating it could overwrite a later write.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

use crate::proto::etcd::etcdserverpb::AuthenticateRequest;
use crate::proto::etcd::etcdserverpb::auth_client::AuthClient;
use crate::proto::etcd::etcdserverpb::kv_client::KvClient;
use crate::proto::etcd::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcd::etcdserverpb::watch_client::WatchClient;
use crate::storage::StoreError;

/// How the etcd backend reaches its cluster (`--etcd-*` flags).
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Prepended to every key, so several users can share one cluster; empty
    /// for none.
    pub prefix: Vec<u8>,
    /// Longest any one call to etcd may take, retries included.
    pub timeout: Duration,
    /// User name and password, when the cluster has authentication enabled.
    pub credentials: Option<(String, String)>,
    /// PEM CA that signed the members' certificates (for `https://` endpoints).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, when the members require them.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdConfig {
    /// A configuration for plaintext `endpoints`, without prefix or
    /// credentials, with a 5 s timeout.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: Vec::new(),
            timeout: Duration::from_secs(5),
            credentials: None,
            ca_file: None,
            client_identity: None,
        }
    }
}

/// Whether a call may be sent again after its member failed mid-call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads: sending one twice changes nothing.
    Always,
    /// Writes: only if the first attempt never reached a member.
    IfNeverSent,
}

/// The members of one etcd cluster and which of them calls go to.
pub(super) struct Cluster {
    members: Vec<Member>,
    /// Index of the member calls go to first; moves on when it fails.
    current: AtomicUsize,
    timeout: Duration,
    credentials: Option<(String, String)>,
    /// The token from etcd's Authenticate, sent with every call.
    token: Mutex<Option<MetadataValue<tonic::metadata::Ascii>>>,
}

struct Member {
    url: String,
    /// Calls (Range, Txn, leases, ...).
    channel: Channel,
    /// Watches, on a connection of their own: a watch whose consumer does
    /// not read stops being read here, and its unread answers hold flow
    /// control credit (up to [`STREAM_WINDOW`]) of the connection it is
    /// on; with calls on that connection, enough such watches once stalled
    /// every other client's writes.
    watch_channel: Channel,
}

/// Pause after every member failed once, before the next round.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// The least time one attempt gets (see [`attempt_deadline`]).
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// HTTP/2 flow control towards etcd: what one stream may hold unread, and
/// what a connection's streams may together. The connection's is many
/// streams' worth, so that one stream not read (a watch whose client does
/// not read) cannot hold the whole connection's credit, as h2's default
/// (64 KiB for both) let it.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// Largest answer accepted from etcd (tonic's default of 4 MiB is less than
/// a page of large values).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Why one attempt failed.
enum Failure {
    /// Member `.0` failed (unreachable, no leader, too slow): another may
    /// answer.
    Member(usize, String),
    /// The answer stands, whichever member is asked.
    Final(StoreError),
}

/// When one attempt must end: half of what is left of `deadline` (at least
/// [`MIN_ATTEMPT`]), so a member that hangs leaves time to ask another.
fn attempt_deadline(deadline: Instant) -> Instant {
    let now = Instant::now();
    let half = deadline.saturating_duration_since(now) / 2;
    (now + half.max(MIN_ATTEMPT)).min(deadline)
}

/// etcd's clients, accepting answers up to [`MAX_ANSWER_BYTES`].
pub(super) fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

/// See [`kv_client`].
pub(super) fn lease_client(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

/// See [`kv_client`].
pub(super) fn watch_client(channel: Channel) -> WatchClient<Channel> {
    WatchClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

/// See [`kv_client`].
pub(super) fn maintenance_client(channel: Channel) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

fn auth_client(channel: Channel) -> AuthClient<Channel> {
    AuthClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

impl Cluster {
    /// Channels to every member of `config`; nothing connects until the first
    /// call, so a cluster that is down now does not stop the server starting.
    pub(super) fn new(config: &EtcdConfig) -> Result<Cluster, String> {
        if config.endpoints.is_empty() {
            return Err("--etcd-endpoints names no etcd member".to_owned());
        }
        let tls = client_tls(config)?;
        let members = config
            .endpoints
            .iter()
            .map(|url| {
                let mut endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("bad etcd endpoint {url:?}: {e}"))?
                    .connect_timeout(config.timeout.min(Duration::from_secs(2)))
                    .tcp_nodelay(true)
                    // A member that vanishes without closing the connection
                    // (power loss, partition) is noticed by a watch within
                    // 15 s (calls have their own deadlines). Not more often,
                    // nor while no call is open: etcd closes connections
                    // that ping more often than every 5 s or while idle
                    // (--grpc-keepalive-min-time, permit-without-stream).
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(false)
                    .initial_stream_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONNECTION_WINDOW);
                if url.starts_with("https://") {
                    // No system roots are built in: etcd clusters sign their
                    // members with a CA of their own.
                    let Some(tls) = tls.clone().filter(|_| config.ca_file.is_some()) else {
                        return Err(format!(
                            "etcd endpoint {url} is https://: give the CA that signed the \
                             members' certificates with --etcd-ca-file"
                        ));
                    };
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| format!("TLS setup for {url}: {e}"))?;
                } else if !url.starts_with("http://") {
                    return Err(format!(
                        "etcd endpoint {url:?} must start with http:// or https://"
                    ));
                }
                Ok(Member {
                    url: url.clone(),
                    channel: endpoint.connect_lazy(),
                    watch_channel: endpoint.connect_lazy(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Cluster {
            members,
            current: AtomicUsize::new(0),
            timeout: config.timeout,
            credentials: config.credentials.clone(),
            token: Mutex::new(None),
        })
    }

    /// The longest a call may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The member calls go to now, and its index.
    pub(super) fn current(&self) -> (usize, Channel) {
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        (index, self.members[index].channel.clone())
    }

    /// The member watches go to now, and its index: the same member as
    /// [`Cluster::current`], on the connection kept for watches.
    pub(super) fn current_for_watch(&self) -> (usize, Channel) {
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        (index, self.members[index].watch_channel.clone())
    }

    /// The URL of member `index`.
    pub(super) fn url(&self, index: usize) -> &str {
        &self.members[index].url
    }

    /// Moves calls off member `index` (if they are still on it) to the next.
    pub(super) fn fail_over(&self, index: usize) {
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.members.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A request for `message` with what every etcd call carries:
    /// `hasleader`, so that a member cut off from its leader refuses at once
    /// instead of waiting, and the authentication token (signed in for, by
    /// `deadline`, if there is none yet).
    pub(super) async fn request<M>(
        &self,
        message: M,
        deadline: Instant,
    ) -> Result<Request<M>, StoreError> {
        self.signed_request(message, deadline)
            .await
            .map_err(|failure| match failure {
                Failure::Member(index, reason) => StoreError::Unavailable(format!(
                    "etcd member {} failed: {reason}",
                    self.url(index)
                )),
                Failure::Final(error) => error,
            })
    }

    async fn signed_request<M>(
        &self,
        message: M,
        deadline: Instant,
    ) -> Result<Request<M>, Failure> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("hasleader", MetadataValue::from_static("true"));
        if let Some(token) = self.token(deadline).await? {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }

    /// Calls `call` on the current member, failing over and retrying as
    /// `retry` allows, within the timeout; `what` names the call in errors.
    pub(super) async fn unary<M, T, F, Fut>(
        &self,
        what: &str,
        retry: Retry,
        message: M,
        call: F,
    ) -> Result<T, StoreError>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut failures = 0;
        let mut signed_in_again = false;
        loop {
            let (index, channel) = self.current();
            let attempt_deadline = attempt_deadline(deadline);
            let request = match self.signed_request(message.clone(), attempt_deadline).await {
                Ok(request) => request,
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Member(_, reason)) => {
                    self.next_member(index, &mut failures, deadline, what, &reason)
                        .await?;
                    continue;
                }
            };
            let reason =
                match tokio::time::timeout_at(attempt_deadline, call(channel, request)).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) => {
                        if needs_new_token(&status) && !signed_in_again {
                            signed_in_again = true;
                            self.forget_token();
                            continue;
                        }
                        if !is_member_failure(&status) {
                            return Err(map_status(what, &status));
                        }
                        if retry == Retry::IfNeverSent && !never_sent(&status) {
                            self.fail_over(index);
                            return Err(StoreError::Unavailable(format!(
                                "etcd member {} failed during {what}, which may or may not have \
                             been applied: {}",
                                self.url(index),
                                status.message()
                            )));
                        }
                        status.message().to_owned()
                    }
                    Err(_) => {
                        if retry == Retry::IfNeverSent {
                            self.fail_over(index);
                            return Err(StoreError::Unavailable(format!(
                                "etcd member {} did not answer {what} in time; it may or may not \
                             have been applied",
                                self.url(index)
                            )));
                        }
                        "no answer in time".to_owned()
                    }
                };
            self.next_member(index, &mut failures, deadline, what, &reason)
                .await?;
        }
    }

    /// After member `index` failed: moves calls to the next member, pausing
    /// after each round of them, or gives up when the deadline is near.
    async fn next_member(
        &self,
        index: usize,
        failures: &mut usize,
        deadline: Instant,
        what: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.fail_over(index);
        *failures += 1;
        let pause = if failures.is_multiple_of(self.members.len()) {
            ROUND_PAUSE
        } else {
            Duration::ZERO
        };
        if Instant::now() + pause >= deadline {
            return Err(StoreError::Unavailable(format!(
                "no etcd member answered {what} within {:?}; the last, {}: {reason}",
                self.timeout,
                self.url(index)
            )));
        }
        tokio::time::sleep(pause).await;
        Ok(())
    }

    async fn token(
        &self,
        deadline: Instant,
    ) -> Result<Option<MetadataValue<tonic::metadata::Ascii>>, Failure> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().expect("token lock").clone() {
            return Ok(Some(token));
        }
        let (index, channel) = self.current();
        let request = AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        let answer = tokio::time::timeout_at(deadline, auth_client(channel).authenticate(request))
            .await
            .map_err(|_| Failure::Member(index, "no answer to Authenticate in time".to_owned()))?;
        let answer = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status) if is_member_failure(&status) => {
                return Err(Failure::Member(index, status.message().to_owned()));
            }
            // Not the request's fault, but kvserver's configuration: the
            // client gets UNAVAILABLE and the operator a message to act on.
            Err(status) => {
                return Err(Failure::Final(StoreError::Unavailable(format!(
                    "kvserver cannot sign in to etcd as {name:?} (check --etcd-user and \
                     --etcd-password-file): {}",
                    status.message()
                ))));
            }
        };
        let token = MetadataValue::try_from(answer.token.as_str()).map_err(|_| {
            Failure::Final(StoreError::Internal(
                "etcd sent a token that is not ASCII".to_owned(),
            ))
        })?;
        *self.token.lock().expect("token lock") = Some(token.clone());
        Ok(Some(token))
    }

    fn forget_token(&self) {
        *self.token.lock().expect("token lock") = None;
    }
}

fn client_tls(config: &EtcdConfig) -> Result<Option<ClientTlsConfig>, String> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    if config.ca_file.is_none() && config.client_identity.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &config.client_identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// Whether the member (or the connection to it) failed, rather than the
/// request: another member may answer.
pub(super) fn is_member_failure(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        // etcd reports "no leader", "leader changed" and timeouts of its
        // own proposals as Unavailable or Unknown; transport errors that
        // tonic cannot classify are Unknown too.
        Code::Unknown => {
            let message = status.message();
            message.contains("leader")
                || message.contains("timed out")
                || message.contains("proposal dropped")
                || message.contains("transport")
                || message.contains("connection")
        }
        _ => false,
    }
}

/// Whether the request surely never reached a member (the connection could
/// not be made), so that sending it elsewhere cannot apply it twice.
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        let text = error.to_string();
        if text.contains("tcp connect error") || text.contains("error trying to connect") {
            return true;
        }
        source = error.source();
    }
    // etcd itself refused before proposing: nothing was applied.
    status.message().contains("no leader")
}

/// Whether etcd refused the token (expired, or issued before a change of
/// users or roles) before doing anything: sign in again and resend.
fn needs_new_token(status: &Status) -> bool {
    let message = status.message();
    message.contains("invalid auth token") || message.contains("revision of auth store is old")
}

/// The storage error for an etcd status that is not the member's failure.
pub(super) fn map_status(what: &str, status: &Status) -> StoreError {
    let message = status.message();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::Unavailable(format!("etcd failed {what}: {message}"))
        }
        // etcd's gRPC limit on what it receives (its --max-request-bytes plus
        // 512 KiB) answers RESOURCE_EXHAUSTED, which for us means a full
        // disk; a request too large is the client's to change.
        Code::ResourceExhausted | Code::InvalidArgument
            if message.contains("larger than max") || message.contains("request is too large") =>
        {
            StoreError::Rejected(format!(
                "etcd refused {what} as too large ({message}); send less in one request, or \
                 start etcd with a larger --max-request-bytes"
            ))
        }
        Code::ResourceExhausted => {
            StoreError::ResourceExhausted(format!("etcd refused {what}: {message}"))
        }
        Code::InvalidArgument if message.contains("too many operations") => {
            StoreError::LimitReached(format!(
                "etcd refused {what}: {message} (start etcd with a --max-txn-ops at least \
                 kvserver's --max-batch-keys and --max-txn-ops)"
            ))
        }
        // A read at a revision etcd has compacted (etcd does not say which
        // revision it compacted at; the caller fills in what it asked for).
        Code::OutOfRange | Code::FailedPrecondition if message.contains("compacted") => {
            StoreError::Compacted {
                requested: 0,
                compacted: 0,
            }
        }
        // The caller knows which lease it asked for.
        Code::FailedPrecondition if message.contains("lease already exists") => {
            StoreError::LeaseExists(0)
        }
        Code::OutOfRange if message.contains("future revision") => StoreError::FutureRevision {
            requested: 0,
            current: 0,
        },
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StoreError::Rejected(format!("etcd refused {what}: {message}"))
        }
        // The caller knows which lease it asked about.
        Code::NotFound if message.contains("lease not found") => StoreError::LeaseNotFound(0),
        Code::Unauthenticated | Code::PermissionDenied => StoreError::Unavailable(format!(
            "etcd refused kvserver's credentials for {what} (check --etcd-user and the \
             user's roles): {message}"
        )),
        _ => StoreError::Internal(format!("etcd failed {what}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_statuses_become_the_storage_errors_clients_can_act_on() {
        let map = |code, message: &str| map_status("Txn", &Status::new(code, message));
        assert_eq!(
            map(Code::NotFound, "etcdserver: requested lease not found"),
            StoreError::LeaseNotFound(0)
        );
        assert!(matches!(
            map(Code::InvalidArgument, "etcdserver: too many operations in txn request"),
            StoreError::LimitReached(message) if message.contains("--max-txn-ops")
        ));
        assert!(matches!(
            map(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            ),
            StoreError::Rejected(_)
        ));
        for (code, message) in [
            (
                Code::ResourceExhausted,
                "grpc: received message larger than max (2400060 vs. 2097152)",
            ),
            (Code::InvalidArgument, "etcdserver: request is too large"),
        ] {
            assert!(matches!(
                map(code, message),
                StoreError::Rejected(why) if why.contains("--max-request-bytes")
            ));
        }
        assert!(matches!(
            map(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            ),
            StoreError::ResourceExhausted(_)
        ));
        assert!(matches!(
            map(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            ),
            StoreError::Compacted { .. }
        ));
        assert!(matches!(
            map(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            ),
            StoreError::FutureRevision { .. }
        ));
        assert!(matches!(
            map(Code::Unavailable, "etcdserver: no leader"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map(Code::PermissionDenied, "etcdserver: permission denied"),
            StoreError::Unavailable(message) if message.contains("--etcd-user")
        ));
    }

    #[test]
    fn only_failures_of_the_member_move_calls_to_another() {
        assert!(is_member_failure(&Status::unavailable(
            "connection refused"
        )));
        assert!(is_member_failure(&Status::unknown(
            "etcdserver: leader changed"
        )));
        assert!(!is_member_failure(&Status::invalid_argument("bad")));
        assert!(!is_member_failure(&Status::not_found("lease not found")));
    }

    #[test]
    fn a_write_is_sent_again_only_if_it_never_left() {
        assert!(never_sent(&Status::unavailable("etcdserver: no leader")));
        assert!(!never_sent(&Status::unavailable(
            "etcdserver: request timed out"
        )));
    }
}
