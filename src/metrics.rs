//! Prometheus metrics: counters, and their rendering; no sockets.
//!
//! [`Metrics`] keeps, through the `prometheus-client` crate (the Prometheus
//! project's own Rust client, which writes the OpenMetrics text format so
//! nothing of the format is written by hand here): gRPC requests by method
//! and status code, their latency by method, the JSON API's requests by
//! route and HTTP status, connections, and, asked at each scrape, what the
//! store reports (keys, bytes, revision, commits and a histogram of commit
//! latency). The tower layer from [`Metrics::layer`] counts every gRPC
//! request; the HTTP listener (`crate::http`) serves [`Metrics::render`] at
//! `/metrics`.
//!
//! Method labels are the services' own method names: the server passes
//! the method registry's paths (`grpc::methods`, which a test checks
//! against the descriptors [`served_methods`] reads); a path that names
//! none of them counts as `other`, so a client cannot grow
//! the label set. A method's series appear once it has been called.
//!
//! A request's code is the one at the start of its response: for unary
//! calls that is their final status; a stream that fails later counts as OK.
//! Codes are spelled as the gRPC specification does (`OK`, `NOT_FOUND`), as
//! go-grpc-prometheus's `grpc_code` and our JSON errors spell them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;
use tower::{Layer, Service};

use crate::storage::{COMMIT_LATENCY_BOUNDS, StoreStats};

/// The label of a request to a path that is none of the served methods.
const OTHER: &str = "other";
/// gRPC status codes 0 to 16.
const CODES: usize = 17;
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The Content-Type of [`Metrics::render`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every method path (`/package.Service/Method`) of the services described
/// in the encoded `FileDescriptorSet`s.
pub fn served_methods(descriptor_sets: &[&[u8]]) -> Vec<String> {
    use prost::Message;
    let mut methods = Vec::new();
    for encoded in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    methods
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The series of one method, made when first used (so a request finds them
/// with one map lookup and no lock or allocation).
#[derive(Default)]
struct MethodSeries {
    by_code: [OnceLock<Counter>; CODES],
    latency: OnceLock<Histogram>,
}

/// Every counter of the server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<MethodLabels>,
    methods: HashMap<String, MethodSeries>,
    other: MethodSeries,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<RouteLabels>,
    connections: [Connections; 2],
    serve_threads: Family<ThreadLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    thread: String,
}

/// The connections of one listener.
#[derive(Default)]
struct Connections {
    open: Gauge,
    total: Counter,
}

/// Which listener a connection came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The gRPC listener (`--listen`).
    Grpc = 0,
    /// The HTTP listener (`--http-listen`).
    Http = 1,
}

impl Metrics {
    /// Counters at zero for requests to `methods` (paths as
    /// [`served_methods`] gives them); `store_stats` is asked at each scrape.
    pub fn new(
        methods: Vec<String>,
        store_stats: impl Fn() -> StoreStats + Send + Sync + 'static,
    ) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kv_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        let latency: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "kv_request_duration_seconds",
            "Time to the start of the response, by gRPC method",
            latency.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "kv_http_requests",
            "HTTP requests (JSON API, console, probes) by route and status",
            http_requests.clone(),
        );
        let http_latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "kv_http_request_duration_seconds",
            "Time to the start of the response, by HTTP route",
            http_latency.clone(),
        );
        let connections = [Connections::default(), Connections::default()];
        for (prefix, listener, of) in [
            ("kv", "gRPC", &connections[Listener::Grpc as usize]),
            ("kv_http", "HTTP", &connections[Listener::Http as usize]),
        ] {
            registry.register(
                format!("{prefix}_connections_open"),
                format!("{listener} client connections open"),
                of.open.clone(),
            );
            registry.register(
                format!("{prefix}_connections"),
                format!("{listener} client connections accepted"),
                of.total.clone(),
            );
        }
        let serve_threads = Family::<ThreadLabels, Gauge>::default();
        registry.register(
            "kv_serve_thread_connections_open",
            "gRPC client connections open on each serving thread (--serve-threads)",
            serve_threads.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(Box::new(store_stats))));
        Metrics {
            registry,
            requests,
            latency,
            methods: methods
                .into_iter()
                .map(|method| (method, MethodSeries::default()))
                .collect(),
            other: MethodSeries::default(),
            http_requests,
            http_latency,
            connections,
            serve_threads,
        }
    }

    /// The count of the connections open on serving thread `thread`
    /// (`serving`), at zero until its first.
    pub(crate) fn serve_thread(&self, thread: usize) -> Gauge {
        self.serve_threads
            .get_or_create(&ThreadLabels {
                thread: thread.to_string(),
            })
            .clone()
    }

    /// A connection to `listener` opened; the guard counts it closed when
    /// dropped.
    pub fn connection(self: &Arc<Self>, listener: Listener) -> ConnectionGuard {
        let connections = &self.connections[listener as usize];
        connections.open.inc();
        connections.total.inc();
        ConnectionGuard(Arc::clone(self), listener)
    }

    fn record(&self, path: &str, code: Code, seconds: f64) {
        let (method, series) = match self.methods.get_key_value(path) {
            Some((method, series)) => (method.as_str(), series),
            None => (OTHER, &self.other),
        };
        let code = (code as usize).min(CODES - 1);
        series.by_code[code]
            .get_or_init(|| {
                let labels = RequestLabels {
                    method: method.to_owned(),
                    code: crate::client::status_name(Code::from_i32(code as i32)).to_owned(),
                };
                self.requests.get_or_create(&labels).clone()
            })
            .inc();
        series
            .latency
            .get_or_init(|| {
                let labels = MethodLabels {
                    method: method.to_owned(),
                };
                self.latency.get_or_create(&labels).clone()
            })
            .observe(seconds);
    }

    /// Counts an HTTP request to `route` (the router's pattern, not the
    /// path, so keys never become labels) answered with `status`.
    pub fn record_http(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The metrics page, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a metric that could not be
        // encoded would leave the page short rather than end the server.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The tower layer that counts requests.
    pub fn layer(self: &Arc<Self>) -> MetricsLayer {
        MetricsLayer(Arc::clone(self))
    }
}

/// The store's own figures, asked at each scrape.
struct StoreCollector(Box<dyn Fn() -> StoreStats + Send + Sync>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = (self.0)();
        let gauges = [
            ("kv_keys", "Keys stored", stats.keys as i64),
            (
                "kv_store_disk_bytes",
                "Bytes the data file takes (disk backend)",
                stats.disk_bytes as i64,
            ),
            (
                "kv_store_revision",
                "The store's revision",
                stats.revision as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let commits = ConstCounter::new(stats.commits);
        commits.encode(encoder.encode_descriptor(
            "kv_store_commits",
            "Group commits acknowledged; under --sync always each is one fdatasync of the write-ahead log (disk backend; checkpoints not counted)",
            None,
            commits.metric_type(),
        )?)?;
        let commit_seconds = ConstCounter::new(stats.commit_nanos as f64 / 1e9);
        commit_seconds.encode(encoder.encode_descriptor(
            "kv_store_commit_seconds",
            "Time in group commits: the database's commit (without fsync) and, under --sync always, the write-ahead log's write and fdatasync (disk backend; checkpoints not counted)",
            None,
            commit_seconds.metric_type(),
        )?)?;
        let buckets: Vec<(f64, u64)> = COMMIT_LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(stats.commit_latency)
            .collect();
        let mut histogram = encoder.encode_descriptor(
            "kv_store_commit_duration_seconds",
            "Time of each group commit, the write-ahead log's fdatasync included (disk backend)",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            stats.commit_nanos as f64 / 1e9,
            stats.commits,
            &buckets,
            None,
        )
    }
}

/// Counts a connection as closed when dropped.
pub struct ConnectionGuard(Arc<Metrics>, Listener);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections[self.1 as usize].open.dec();
    }
}

/// The layer (present only when metrics are kept).
#[derive(Clone)]
pub struct MetricsLayer(Arc<Metrics>);

impl<S> Layer<S> for MetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose requests are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Counting<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        // The path is kept only until the response: a map lookup then finds
        // the method's series.
        let path = request.uri().clone();
        Counting {
            response: self.inner.call(request),
            metrics: Arc::clone(&self.metrics),
            path,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response, counted when it starts: a future of its own
    /// rather than a boxed one, since every request passes here.
    pub struct Counting<F> {
        #[pin]
        response: F,
        metrics: Arc<Metrics>,
        path: http::Uri,
        started: Instant,
    }
}

impl<F, RB, E> std::future::Future for Counting<F>
where
    F: std::future::Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<RB>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx))?;
        let code =
            tonic::Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
        this.metrics
            .record(this.path.path(), code, this.started.elapsed().as_secs_f64());
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreStats;

    #[test]
    fn methods_are_labelled_by_their_own_names_and_strangers_as_other() {
        let methods = served_methods(&[crate::proto::FILE_DESCRIPTOR_SET]);
        assert!(methods.contains(&"/keyvalue.v1.KV/Put".to_owned()));
        assert!(methods.contains(&"/simplekeyvalue.KeyValue/Get".to_owned()));
        let metrics = Metrics::new(methods, StoreStats::default);
        metrics.record("/keyvalue.v1.KV/Put", Code::Ok, 0.001);
        metrics.record("/keyvalue.v1.KV/Put", Code::Ok, 0.001);
        metrics.record("/no.such/Method", Code::Unimplemented, 0.001);
        metrics.record_http("/v1/kv/{*key}", 404, 0.002);
        let page = metrics.render();
        for expected in [
            "kv_requests_total{method=\"/keyvalue.v1.KV/Put\",code=\"OK\"} 2",
            "kv_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1",
            "kv_request_duration_seconds_count{method=\"/keyvalue.v1.KV/Put\"} 2",
            "kv_http_requests_total{route=\"/v1/kv/{*key}\",status=\"404\"} 1",
            "kv_store_commit_duration_seconds_count 0",
            "# EOF",
        ] {
            assert!(page.contains(expected), "{expected} in:\n{page}");
        }
        assert!(!page.contains("no.such"), "{page}");
    }
}
