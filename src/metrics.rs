//! Prometheus metrics (`--metrics-listen ADDR`, off by default).
//!
//! [`Metrics`] is a fixed table of atomic counters: requests by method and
//! status code, latency histograms by method, connections, and what the store
//! reports (keys, bytes, commits, fsync time). The tower layer from
//! [`Metrics::layer`] counts every request without a lock; [`serve`] answers
//! `GET /metrics` in Prometheus' text format over plain HTTP/1.1 (a scrape
//! needs nothing more, so no HTTP framework is compiled in for it).
//!
//! A request's code is the one at the start of its response: for unary
//! calls that is their final status; a stream that fails later counts as OK.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;
use tower::{Layer, Service};

use crate::grpc::LayerFuture;
use crate::storage::StoreStats;

/// The methods counted one by one; anything else counts as "other".
const METHODS: [&str; 17] = [
    "/simplekeyvalue.KeyValue/Set",
    "/simplekeyvalue.KeyValue/Get",
    "/keyvalue.v1.KV/Get",
    "/keyvalue.v1.KV/Put",
    "/keyvalue.v1.KV/Delete",
    "/keyvalue.v1.KV/Range",
    "/keyvalue.v1.KV/Txn",
    "/keyvalue.v1.KV/BatchGet",
    "/keyvalue.v1.KV/BatchPut",
    "/keyvalue.v1.KV/Watch",
    "/keyvalue.v1.KV/LeaseGrant",
    "/keyvalue.v1.KV/LeaseKeepAlive",
    "/keyvalue.v1.KV/LeaseRevoke",
    "/keyvalue.v1.KV/LeaseInfo",
    "/keyvalue.v1.KV/Snapshot",
    "/grpc.health.v1.Health/Check",
    "other",
];
/// gRPC status codes 0 to 16.
const CODES: usize = 17;
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

fn method_index(path: &str) -> usize {
    METHODS
        .iter()
        .position(|method| *method == path)
        .unwrap_or(METHODS.len() - 1)
}

/// A latency histogram with fixed buckets.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, seconds: f64) {
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Every counter of the server.
pub struct Metrics {
    requests: Vec<[AtomicU64; CODES]>,
    latency: Vec<Histogram>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    /// Asked at each scrape.
    store_stats: Box<dyn Fn() -> StoreStats + Send + Sync>,
}

impl Metrics {
    /// Counters at zero; `store_stats` is asked at each scrape.
    pub fn new(store_stats: impl Fn() -> StoreStats + Send + Sync + 'static) -> Metrics {
        Metrics {
            requests: METHODS
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency: METHODS.iter().map(|_| Histogram::new()).collect(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            store_stats: Box::new(store_stats),
        }
    }

    /// A connection opened; the guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }

    fn record(&self, method: usize, code: Code, seconds: f64) {
        let code = (code as usize).min(CODES - 1);
        self.requests[method][code].fetch_add(1, Ordering::Relaxed);
        self.latency[method].record(seconds);
    }

    /// The metrics page, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP kv_requests_total gRPC requests by method and status code.\n");
        out.push_str("# TYPE kv_requests_total counter\n");
        for (method, codes) in METHODS.iter().zip(&self.requests) {
            for (code, count) in codes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let code = format!("{:?}", Code::from_i32(code as i32));
                    let _ = writeln!(
                        out,
                        "kv_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}"
                    );
                }
            }
        }
        out.push_str("# HELP kv_request_duration_seconds Time to the start of the response.\n");
        out.push_str("# TYPE kv_request_duration_seconds histogram\n");
        for (method, histogram) in METHODS.iter().zip(&self.latency) {
            if histogram.count.load(Ordering::Relaxed) > 0 {
                histogram.render(
                    &mut out,
                    "kv_request_duration_seconds",
                    &format!("method=\"{method}\""),
                );
            }
        }
        let stats = (self.store_stats)();
        let gauges = [
            (
                "kv_connections_open",
                "gauge",
                "Client connections open.",
                self.connections_open.load(Ordering::Relaxed) as f64,
            ),
            (
                "kv_connections_total",
                "counter",
                "Client connections accepted.",
                self.connections_total.load(Ordering::Relaxed) as f64,
            ),
            ("kv_keys", "gauge", "Keys stored.", stats.keys as f64),
            (
                "kv_store_disk_bytes",
                "gauge",
                "Bytes the data file takes (disk backend).",
                stats.disk_bytes as f64,
            ),
            (
                "kv_store_revision",
                "gauge",
                "The store's revision.",
                stats.revision as f64,
            ),
            (
                "kv_store_commits_total",
                "counter",
                "Group commits (disk backend).",
                stats.commits as f64,
            ),
            (
                "kv_store_commit_seconds_total",
                "counter",
                "Time in commits, fsync included (disk backend).",
                stats.commit_nanos as f64 / 1e9,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    /// The tower layer that counts requests.
    pub fn layer(self: &Arc<Self>) -> MetricsLayer {
        MetricsLayer(Arc::clone(self))
    }
}

/// Counts a connection as closed when dropped.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The layer (present only with `--metrics-listen`).
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
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = LayerFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let metrics = Arc::clone(&self.metrics);
        let method = method_index(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let code =
                tonic::Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
            metrics.record(method, code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// Answers `GET /metrics` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: pause rather than spin.
            tokio::time::sleep(crate::server::ACCEPT_PAUSE).await;
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let read = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut request),
            )
            .await
            {
                Ok(Ok(read)) => read,
                _ => return,
            };
            let head = String::from_utf8_lossy(&request[..read]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "only GET /metrics is here\n".to_owned())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// A connection counted open for as long as it lives (when metrics are on),
/// holding its place under the connection limit (when there is one).
pub struct Tracked<T> {
    inner: T,
    _guard: Option<ConnectionGuard>,
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<T> Tracked<T> {
    /// `inner`, counted in `metrics` if there are any, holding `place`.
    pub fn new(
        inner: T,
        metrics: Option<&Arc<Metrics>>,
        place: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Tracked<T> {
        Tracked {
            inner,
            _guard: metrics.map(Metrics::connection),
            _place: place,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Tracked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::METHODS;

    #[test]
    fn every_method_of_our_services_is_counted_by_name() {
        let descriptors =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in descriptors.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(METHODS.contains(&path.as_str()), "{path} is not in METHODS");
                }
            }
        }
    }
}
