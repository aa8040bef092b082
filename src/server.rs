//! Building and running kvserver.
//!
//! [`run`] is the one entry point: `kvserver`'s `main` and the tests both bind a
//! listener first (so port 0 works and the caller knows the real address), then
//! hand it over together with a store and a shutdown future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Server;
use tracing::{info, warn};

use tonic_health::ServingStatus;

use crate::connection::{ActivityLayer, Deadlines};
use crate::etcd_api::{Api as EtcdApi, Identity};
use crate::grpc::{
    AuthLayer, BudgetLayer, KvService, Limits, ShedLayer, Tokens, TutorialService, oversize_layer,
    request_log_layer,
};
use crate::metrics::{Listener, Metrics};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::serving::{Connections, ServeThreads, Served, Signal};
use crate::storage::{AutoCompaction, Store};
use crate::tls::{self, TlsSetup};
use crate::transport::Admission;
use tower::util::option_layer;

/// Where the server listens: gRPC, and optionally HTTP.
pub struct Listeners {
    /// The gRPC services.
    pub grpc: TcpListener,
    /// Metrics, probes, the JSON API and the console (`--http-listen`, or
    /// its alias `--metrics-listen`); `None`: no metrics are kept.
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Listeners {
        Listeners { grpc, http: None }
    }
}

/// The descriptors of every service the gRPC listener serves: reflection
/// answers from them (metrics label requests by the method registry,
/// `grpc::methods`, which a test checks against them).
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// How the server behaves, independent of where it listens and what it stores.
#[derive(Clone, Debug)]
pub struct Config {
    /// Key and value size limits.
    pub limits: Limits,
    /// Log one line per request: the tutorial's service with its wording
    /// (key and value), every other one by its method.
    pub log_requests: bool,
    /// The tokens of `--auth-token-file`; `None`: no authentication.
    pub auth: Option<Arc<Tokens>>,
    /// TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`); `None`: plaintext.
    pub tls: Option<Arc<TlsSetup>>,
    /// Requests worked on at once; more are shed (`--max-in-flight`).
    pub max_in_flight: Option<usize>,
    /// Client connections open at once; more are closed at accept
    /// (`--max-connections`).
    pub max_connections: Option<usize>,
    /// Requests worked on at once on one connection, counted before
    /// `max_in_flight` (`--max-in-flight-per-connection`).
    pub max_in_flight_per_connection: usize,
    /// Bytes of gRPC requests held at once, over all of them
    /// (`--max-request-bytes-in-flight`); `None`: no limit.
    pub max_request_bytes_in_flight: Option<usize>,
    /// Concurrent streams per HTTP/2 connection (`--max-concurrent-streams`).
    pub max_concurrent_streams: u32,
    /// Threads that serve the gRPC listener's connections, each with a
    /// current-thread runtime of its own (`--serve-threads`, `serving`);
    /// 0: served on the runtime `run` is called on, as the HTTP listener is.
    pub serve_threads: usize,
    /// How long a connection may carry no request before it is closed
    /// (`--first-request-timeout`, `--idle-timeout`); `None`: never.
    pub deadlines: Option<Deadlines>,
    /// Longest a request may take from its headers to its response's
    /// headers, its body's arrival included (`--request-timeout`); `None`:
    /// no limit. Streams (watches) are bounded only until they are set up.
    pub request_timeout: Option<Duration>,
    /// Interval of HTTP/2 pings on a connection (`--keepalive-interval`);
    /// a peer that does not answer one within `keepalive_timeout` is
    /// dropped. `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered (`--keepalive-timeout`).
    pub keepalive_timeout: Duration,
    /// How long a snapshot waits for a client that stopped reading
    /// (`--snapshot-stall-timeout`).
    pub snapshot_stall: Duration,
    /// After shutdown starts, how long in-flight requests and idle connections
    /// get to finish before the server stops anyway.
    pub shutdown_grace: Duration,
    /// What names this server's data (its data dir, or the etcd cluster and
    /// prefix it serves), from which its etcd member id is derived, so that
    /// the id survives restarts; `None`: the listening address.
    pub member_seed: Option<String>,
    /// Origins whose pages may call the gRPC port with gRPC-Web
    /// (`--grpc-web-allow-origin`, checked by `cors::parse_origin`); empty:
    /// no CORS headers, same-origin only.
    pub grpc_web_origins: Vec<String>,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// `--history-max-bytes` (0: no bound).
    pub history_max_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            log_requests: false,
            auth: None,
            tls: None,
            max_in_flight: None,
            max_connections: None,
            max_in_flight_per_connection: 256,
            max_request_bytes_in_flight: Some(crate::grpc::DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT),
            max_concurrent_streams: 1024,
            serve_threads: default_serve_threads(),
            deadlines: Some(Deadlines {
                first_request: Duration::from_secs(20),
                idle: Duration::from_secs(300),
                answer_stall: Duration::from_secs(60),
            }),
            request_timeout: Some(Duration::from_secs(30)),
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            snapshot_stall: crate::grpc::DEFAULT_SNAPSHOT_STALL,
            shutdown_grace: Duration::from_secs(10),
            member_seed: None,
            grpc_web_origins: Vec::new(),
            auto_compaction: AutoCompaction::DEFAULT,
            history_max_bytes: crate::storage::DEFAULT_HISTORY_MAX_BYTES,
        }
    }
}

/// Serves every gRPC service over `store` on `listener` until `shutdown`
/// resolves, then stops accepting connections, lets in-flight requests finish
/// (for at most `config.shutdown_grace`), and returns.
pub async fn run<S: Store>(
    listeners: impl Into<Listeners>,
    store: S,
    config: Config,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), Error> {
    let Listeners {
        grpc: listener,
        http: http_listener,
    } = listeners.into();
    let store = Arc::new(store);
    crate::grpc::codec::allow_repeated(config.limits.max_repeated());
    // Metrics are kept when there is an HTTP listener to serve them.
    let metrics = http_listener.as_ref().map(|_| {
        let stats_of = Arc::clone(&store);
        Arc::new(Metrics::new(crate::grpc::methods::paths(), move || {
            stats_of.stats()
        }))
    });
    let tutorial = TutorialService::new(Arc::clone(&store), config.limits, config.log_requests);
    // Watches have no end of their own: they are ended when shutdown
    // starts, or they would hold it for the whole grace.
    // The HTTP listener stops accepting then too.
    let (stop_streams, stopping) = crate::shutdown::stopping();
    let kv = KvService::new(Arc::clone(&store), config.limits)
        .with_stopping(stopping.clone())
        .with_snapshot_stall(config.snapshot_stall);
    let etcd = etcd_api(Arc::clone(&store), &config, &listener).with_stopping(stopping.clone());
    // The store's own background work: lease expiry, automatic compaction.
    let expiry = tokio::spawn(crate::storage::maintain(
        Arc::clone(&store),
        config.auto_compaction,
        config.history_max_bytes,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    // The first status is set before serving starts, so a probe never sees
    // an unknown service; later changes follow the store.
    let mut available = store.availability();
    report_health(&health, *available.borrow_and_update()).await;
    let availability = tokio::spawn(follow_availability(available, health.clone()));
    let availability_after_serving = availability.abort_handle();
    // Both versions list every service served, health and both reflection
    // versions included, as grpc-go servers do (`grpcurl list`).
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        DESCRIPTOR_SETS.iter().fold(builder, |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .expect("the descriptors compiled by build.rs are valid");
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .expect("the descriptors compiled by build.rs are valid");

    // tonic's graceful shutdown waits for every connection to close, and a
    // client that never answers the server's GOAWAY would hold it forever; the
    // grace timer starts when shutdown does and bounds that wait.
    let (shutdown_started, grace_starts) = oneshot::channel::<()>();
    // Layers that are off are left out (not passed through), so they cost
    // a request nothing.
    let counting = option_layer(metrics.as_ref().map(|metrics| metrics.layer()));
    let authenticating = option_layer(config.auth.clone().map(AuthLayer::new));
    // One in-flight limit for gRPC and the JSON API together (a request
    // counts first against its connection's own limit).
    let shed = config
        .max_in_flight
        .map(|limit| ShedLayer::new(limit, config.max_in_flight_per_connection));
    // One byte budget for gRPC and the JSON API together.
    let budget = config.max_request_bytes_in_flight.map(BudgetLayer::new);
    let mut builder = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(Some(config.keepalive_timeout));
    if let Some(timeout) = config.request_timeout {
        builder = builder.timeout(timeout);
    }
    let router = builder
        // gRPC-Web (HTTP/1.1 or 2, `application/grpc-web*`) for browser
        // applications: translated to gRPC before any other layer, so it is
        // counted, shed, limited and authorized as gRPC is.
        // CORS (only with --grpc-web-allow-origin) answers browsers'
        // preflights before anything else sees them.
        .accept_http1(true)
        .layer(option_layer(crate::cors::layer(&config.grpc_web_origins)))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(ActivityLayer)
        .layer(counting)
        .layer(option_layer(config.log_requests.then(request_log_layer)))
        .layer(option_layer(shed.clone()))
        .layer(option_layer(budget.clone()))
        .layer(oversize_layer(config.limits))
        .layer(authenticating)
        .add_service(tutorial.into_server())
        .add_service(kv.into_server())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let router = etcd.add_to(router);
    // One server of the router over some connections until its signal,
    // TLS handshakes included: on each serving thread, or on this runtime
    // (`--serve-threads 0`).
    let tls = config.tls.clone();
    let serve_on =
        move |connections: Connections, signal: Signal| -> Served<'static> {
            let router = router.clone();
            match &tls {
                Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                    tls::incoming(connections, Arc::clone(tls)),
                    signal,
                )),
                None => Box::pin(router.serve_with_incoming_shutdown(connections, signal)),
            }
        };
    // Started before the HTTP listener, so that its first scrape sees
    // every serving thread.
    let mut threads = match config.serve_threads {
        0 => None,
        count => Some(
            ServeThreads::start(count, config.deadlines, metrics.as_ref(), serve_on.clone())
                .map_err(Error::ServeThreads)?,
        ),
    };
    // One connection limit for every listener.
    let admission = Admission::new(config.max_connections, metrics.clone());
    let http = match (http_listener, metrics.clone()) {
        (Some(listener), Some(metrics)) => {
            let shared = Arc::new(crate::http::Shared {
                kv: KvService::new(Arc::clone(&store), config.limits),
                limits: config.limits,
                tokens: config.auth.clone(),
                shed,
                budget,
                request_timeout: config.request_timeout,
                metrics,
                health: tonic_health::server::HealthService::from_health_reporter(health.clone()),
                stopping: stopping.clone(),
            });
            let router = crate::http::router(shared);
            // The same deadlines as gRPC's: a silent peer must not hold
            // one of --max-connections's places.
            let connections =
                admission
                    .clone()
                    .connections(listener, Listener::Http, config.deadlines);
            // And the same pings for HTTP/2 clients: a peer that is gone
            // holding a watch open would otherwise stay for good.
            let pings = crate::http::Pings {
                interval: config.keepalive_interval,
                timeout: config.keepalive_timeout,
            };
            Some(match &config.tls {
                Some(tls) => tokio::spawn(crate::http::serve(
                    tls::incoming(connections, Arc::clone(tls)),
                    router,
                    pings,
                    stopping,
                )),
                None => tokio::spawn(crate::http::serve(connections, router, pings, stopping)),
            })
        }
        _ => None,
    };
    let shutdown = async move {
        shutdown.await;
        stop_streams.stop();
        // Stopped for good before NOT_SERVING goes out, so that a change of
        // the store's availability cannot report SERVING after it.
        availability.abort();
        let _ = availability.await;
        // Load balancers and probes stop sending new work while the
        // in-flight requests finish.
        report_health(&health, false).await;
        let _ = shutdown_started.send(());
    };
    // SIGHUP is taken whether or not there is anything to reload: its
    // default action would end the server on the spot, with no graceful
    // shutdown (`systemctl reload` sends it).
    let reload = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(tokio::spawn(reload_on_sighup(hangups, config.tls.clone()))),
        Err(error) => {
            warn!("cannot listen for SIGHUP ({error}): a SIGHUP will end the server");
            None
        }
    };
    // The connection limit applies at accept, before any TLS handshake
    // (which runs where the connection is served).
    let admitted = admission.admitted(listener, Listener::Grpc);
    let serve: Served<'_> = match threads.as_mut() {
        None => {
            let deadlines = config.deadlines;
            let connections =
                admitted.map(move |admitted| admitted.map(|admitted| admitted.track(deadlines)));
            serve_on(Box::pin(connections), Box::pin(shutdown))
        }
        Some(threads) => Box::pin(async move {
            threads.hand_out(admitted, shutdown).await;
            threads.drain().await
        }),
    };
    let grace_over = async move {
        if grace_starts.await.is_ok() {
            tokio::time::sleep(config.shutdown_grace).await;
        } else {
            // The server ended without a shutdown (an error): nothing to time.
            std::future::pending::<()>().await;
        }
    };
    let http_stopped = http.as_ref().map(|task| task.abort_handle());
    // Done when both listeners are: the HTTP one finishes its requests
    // after shutdown starts, as gRPC does.
    let serve = async move {
        let served = serve.await;
        if let (Ok(()), Some(http)) = (&served, http) {
            let _ = http.await;
        }
        served
    };
    let served = tokio::select! {
        result = serve => {
            result.map(|()| info!("all connections closed")).map_err(Error::Serving)
        }
        () = grace_over => {
            warn!(
                "shutdown grace of {:?} is over: closing the remaining connections",
                config.shutdown_grace
            );
            Ok(())
        }
    };
    // What the grace left open is closed now, before the flush, so that no
    // request writes after it.
    if let Some(threads) = threads {
        threads.stop().await;
    }
    expiry.abort();
    availability_after_serving.abort();
    if let Some(http) = http_stopped {
        http.abort();
    }
    if let Some(reload) = reload {
        reload.abort();
    }
    // Whatever ended the serving, acknowledged writes must reach the disk
    // before the process exits.
    if let Err(error) = store.flush().await {
        warn!("flushing the store at shutdown failed: {error}");
    }
    served
}

/// Why [`run`] failed.
#[derive(Debug)]
pub enum Error {
    /// Serving the gRPC listener failed.
    Serving(tonic::transport::Error),
    /// The serving threads (`--serve-threads`) could not be started.
    ServeThreads(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Serving(error) => error.fmt(f),
            Error::ServeThreads(error) => write!(f, "cannot start the serving threads: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Serving(error) => Some(error),
            Error::ServeThreads(error) => Some(error),
        }
    }
}

/// The default of `--serve-threads`: one per core the process may use.
pub fn default_serve_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// etcd's API over `store`, as the member reachable at `listener`.
fn etcd_api<S: Store>(store: Arc<S>, config: &Config, listener: &TcpListener) -> EtcdApi<S> {
    let address = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string());
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let seed = config
        .member_seed
        .clone()
        .unwrap_or_else(|| format!("kvserver at {address}"));
    let identity = Identity::new(&seed, vec![format!("{scheme}://{address}")]);
    EtcdApi::new(store, config.limits, identity, config.auth.clone())
}

/// Reports the store's availability through the health service: SERVING
/// while the store can serve, NOT_SERVING while it cannot (an etcd cluster
/// that is unreachable), until shutdown aborts it.
async fn follow_availability(
    mut available: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
) {
    // An error means a store whose availability never changes.
    while available.changed().await.is_ok() {
        let now = *available.borrow_and_update();
        report_health(&health, now).await;
    }
}

/// Sets every service SERVING or NOT_SERVING.
async fn report_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    // The whole server (""), and each service of the registry.
    health.set_service_status("", status).await;
    for service in crate::grpc::methods::health_services() {
        health.set_service_status(service, status).await;
    }
}

/// Reloads the TLS certificate and key on every SIGHUP, forever (the server
/// aborts it). A failed reload keeps the certificate in use. Without TLS
/// there is nothing to reload, and a SIGHUP is only logged.
async fn reload_on_sighup(mut hangups: tokio::signal::unix::Signal, tls: Option<Arc<TlsSetup>>) {
    while hangups.recv().await.is_some() {
        match tls.as_ref().map(|tls| tls.reload()) {
            Some(Ok(())) => info!("SIGHUP: reloaded the TLS certificate and key"),
            Some(Err(error)) => warn!("SIGHUP: kept the old TLS certificate: {error}"),
            None => info!("SIGHUP: nothing to reload (no --tls-cert); the server goes on"),
        }
    }
}
