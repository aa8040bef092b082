//! The HTTP listener (`--http-listen`): metrics, probes, the JSON API and
//! the browser console, on hyper (through `hyper-util`, already compiled in
//! for tonic) with axum's router.
//!
//! - `/metrics`: [`Metrics::render`], for Prometheus.
//! - `/healthz`, `/readyz`: the answer of `grpc.health.v1.Health` (see
//!   [`health`]).
//! - `/v1/...`: the JSON API ([`api`], [`leases`], [`watch`]), documented in
//!   `docs/API.md`. Every route stands for one gRPC method and is served by
//!   calling that method of the gRPC service in-process, after the same
//!   token check (`grpc::authorize`) and in-flight limit; so limits, scopes
//!   and errors are the gRPC API's, and [`error`] only maps the status.
//! - `/`: the console ([`console`]), static files embedded in the binary.
//!
//! Connections come through `transport` (the connection limit and counting
//! shared with the gRPC listener) and TLS (the same certificate), then are
//! served HTTP/1.1 or HTTP/2, whichever the client speaks.

mod admit;
mod api;
mod console;
pub(crate) mod error;
pub mod json;
mod leases;
mod query;
mod watch;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_health::server::HealthService;
use tower::util::MapRequest;

use crate::grpc::{BudgetLayer, KvService, Limits, Role, ShedLayer, Tokens, authorize, identify};
use crate::metrics::Metrics;
use crate::shutdown::Stopping;
use crate::storage::Store;
use error::ApiError;

/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP handlers share: the gRPC service they call, and what
/// guards it.
pub(crate) struct Shared<S> {
    pub(crate) kv: KvService<S>,
    pub(crate) limits: Limits,
    pub(crate) tokens: Option<Arc<Tokens>>,
    pub(crate) shed: Option<ShedLayer>,
    /// The byte budget gRPC requests share (`--max-request-bytes-in-flight`).
    pub(crate) budget: Option<BudgetLayer>,
    /// `--request-timeout`.
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: HealthService,
    /// Says when shutdown starts: watches end, probes say so.
    pub(crate) stopping: Stopping,
}

/// A place under `--max-in-flight`, held while a request is worked on.
pub(crate) type Place = Option<crate::grpc::Place>;

impl<S: Store> Shared<S> {
    /// `message` as a request to the gRPC method `method`, if the token in
    /// `headers` may call it, with the token's scope attached; and a place
    /// under the in-flight limit.
    pub(crate) fn call<T>(
        &self,
        method: &str,
        headers: &HeaderMap,
        message: T,
    ) -> Result<(tonic::Request<T>, Place), ApiError> {
        let place = match &self.shed {
            Some(shed) => Some(shed.enter()?),
            None => None,
        };
        let mut request = tonic::Request::new(message);
        if let Some(tokens) = &self.tokens {
            let authorization = headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if let Some(scope) = authorize(tokens, method, authorization)? {
                request.extensions_mut().insert(scope);
            }
        }
        Ok((request, place))
    }
}

/// `value` as a JSON response with `status`.
pub(crate) fn respond(status: StatusCode, value: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The router of every route, over `shared`.
pub(crate) fn router<S: Store>(shared: Arc<Shared<S>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz::<S>))
        .route("/readyz", get(readyz::<S>))
        .route("/v1/whoami", get(whoami::<S>))
        .merge(api::routes::<S>())
        .merge(leases::routes::<S>())
        .route("/v1/watch", get(watch::watch::<S>))
        .merge(console::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            admit::admit::<S>,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count::<S>,
        ))
        .layer(middleware::from_fn(count_activity))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        "no such route: see docs/API.md",
    )
}

/// Counts every request open on its connection until its response ends (a
/// Server-Sent Events watch, until it is closed), so that the connection's
/// deadlines (`--first-request-timeout`, `--idle-timeout`) close only
/// connections that carry no request; see `connection`.
async fn count_activity(request: Request, next: Next) -> Response {
    let guard = crate::connection::request_opened(&request);
    let response = next.run(request).await;
    match guard {
        Some(guard) => response.map(|body| axum::body::Body::new(guard.until_end_of(body))),
        None => response,
    }
}

/// Counts every request by its route (the pattern, so keys never become
/// labels) and status.
async fn count<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    shared.metrics.record_http(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn metrics<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

/// The `service` a probe asks about (`""`: the whole server).
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(default)]
    service: String,
}

/// `/readyz`: 200 exactly when `grpc.health.v1.Health/Check` answers
/// SERVING for `?service=` (default: the whole server): the store can serve
/// and shutdown has not started.
async fn readyz<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Query(probe): Query<Probe>,
) -> Response {
    let checked = shared
        .health
        .check(tonic::Request::new(HealthCheckRequest {
            service: probe.service,
        }))
        .await;
    match checked {
        Ok(answer) => {
            let serving = answer.get_ref().status() == ServingStatus::Serving;
            let status = if serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(
                status,
                &json!({"status": answer.get_ref().status().as_str_name()}),
            )
        }
        Err(status) => ApiError::from(status).into_response(),
    }
}

/// `/healthz`: the process is alive and answering: 200 until shutdown
/// starts (then 503, as grpc.health.v1 turns NOT_SERVING), whether or not
/// the store is available (`/readyz` tells that), so a liveness probe does
/// not restart a server whose etcd cluster is away.
async fn healthz<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    if shared.stopping.is_stopping() {
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "NOT_SERVING"}),
        )
    } else {
        respond(StatusCode::OK, &json!({"status": "SERVING"}))
    }
}

/// `/v1/whoami`: what the caller's token may do, for the console: whether
/// a token is needed at all, its role and its prefix.
async fn whoami<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(tokens) = &shared.tokens else {
        return Ok(respond(
            StatusCode::OK,
            &json!({"auth": false, "role": "readwrite", "prefix": ""}),
        ));
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let (role, scope) = identify(tokens, authorization)?;
    let role = match role {
        Role::Read => "read",
        Role::ReadWrite => "readwrite",
    };
    let (prefix, encoding) = json::BytesAs::TextOrBase64.encode(&scope.prefix);
    Ok(respond(
        StatusCode::OK,
        &json!({"auth": true, "role": role, "prefix": prefix, "prefix_encoding": encoding}),
    ))
}

/// HTTP/2 keepalive pings (`--keepalive-interval`, `--keepalive-timeout`),
/// as the gRPC listener sends them: a peer that answers none is closed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pings {
    /// How often; `None`: never.
    pub(crate) interval: Option<Duration>,
    /// How long one may go unanswered.
    pub(crate) timeout: Duration,
}

/// Serves `router` on `connections` until `stopping` says the server
/// stops; then stops accepting, lets each connection finish its requests
/// (watches end on their own then) and returns once every connection has
/// closed. Each request carries its connection's connect info (as tonic's
/// do), where `count_activity` finds the connection's activity.
pub(crate) async fn serve<IO>(
    connections: impl Stream<Item = io::Result<IO>> + Send + 'static,
    router: Router,
    pings: Pings,
    stopping: Stopping,
) where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Sync,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(pings.interval)
        .keep_alive_timeout(pings.timeout);
    let mut connections = std::pin::pin!(connections);
    loop {
        let io = tokio::select! {
            next = connections.next() => match next {
                Some(Ok(io)) => io,
                // Already reported by the transport, after a pause.
                Some(Err(_)) => continue,
                None => break,
            },
            () = stopping.stopped() => break,
        };
        let service = MapRequest::new(router.clone(), carrying(io.connect_info()));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("HTTP connection ended: {error}");
            }
        });
    }
    graceful.shutdown().await;
}

/// Puts `info` (a connection's connect info) into each request's
/// extensions.
fn carrying<B, I: Clone + Send + Sync + 'static>(
    info: I,
) -> impl FnMut(http::Request<B>) -> http::Request<B> + Clone {
    move |mut request| {
        request.extensions_mut().insert(info.clone());
        request
    }
}
