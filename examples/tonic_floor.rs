//! The floor under kvserver's CPU per request: what tonic itself costs.
//!
//! A tonic server of the tutorial's `simplekeyvalue.KeyValue` service that does
//! no work of its own: `Get` answers the constant value `sunny` (what
//! `h2load-grpc` stores and checks for), `Set` stores nothing. No store, no
//! layers, tonic's default `Server::builder()`, mimalloc like kvserver. Whatever
//! CPU it spends per request is HTTP/2, gRPC framing, protobuf and the runtime:
//! the part of kvserver's cost that no change to kvserver's own code can remove.
//! `scripts/bench-floor` measures it beside kvserver and the grpc-go reference
//! (docs/PERFORMANCE.md, "The floor: tonic itself").
//!
//! ```sh
//! cargo run --release --example tonic_floor -- [--listen ADDR] [--threads N] [--per-core N]
//! ```
//!
//! `--per-core N`: thread-per-core serving instead of tokio's work-stealing
//! runtime: N threads each run a current-thread runtime and serve the
//! connections handed to them (round robin, by an acceptor thread) wholly
//! on that thread. `--window BYTES` (HTTP/2 stream and connection windows),
//! `--adaptive` (BDP-based windows) and `--max-frame BYTES`: HTTP/2
//! settings to try against tonic's defaults.
//!
//! Listens on 127.0.0.1:0 by default (a free port) and prints
//! `listening on ADDR` on stderr, like kvserver.

/// The same allocator as kvserver, so that the comparison is of the request
/// path and not of malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use keyvalue::proto::simplekeyvalue::key_value_server::{KeyValue, KeyValueServer};
use keyvalue::proto::simplekeyvalue::{GetReply, GetRequest, SetReply, SetRequest};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Handlers that do nothing but answer.
struct Floor;

#[tonic::async_trait]
impl KeyValue for Floor {
    async fn set(&self, _request: Request<SetRequest>) -> Result<Response<SetReply>, Status> {
        Ok(Response::new(SetReply {}))
    }

    async fn get(&self, _request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        Ok(Response::new(GetReply {
            value: "sunny".to_owned(),
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut threads = None;
    let mut per_core = None;
    let mut settings = Settings::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            ("--threads", Some(n)) => threads = Some(n.parse::<usize>()?),
            ("--per-core", Some(n)) => per_core = Some(n.parse::<usize>()?),
            ("--window", Some(n)) => settings.window = Some(n.parse::<u32>()?),
            ("--max-frame", Some(n)) => settings.max_frame = Some(n.parse::<u32>()?),
            ("--adaptive", Some(on)) => settings.adaptive = Some(on.parse::<bool>()?),
            _ => {
                return Err(
                    format!("usage: tonic_floor [--listen ADDR] [--threads N] (at {arg})").into(),
                );
            }
        }
    }
    if let Some(cores) = per_core {
        return serve_per_core(&listen, cores, settings);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(async {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        // tonic's own `serve(addr)` sets TCP_NODELAY by default; kvserver does too.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        settings
            .builder()
            .add_service(KeyValueServer::new(Floor))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}

/// Thread-per-core: `cores` threads, each a current-thread runtime serving
/// the connections this thread accepts and hands out in turn.
fn serve_per_core(
    listen: &str,
    cores: usize,
    settings: Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind(listen)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut queues = Vec::new();
    for _ in 0..cores {
        let (send, receive) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        queues.push(send);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let incoming =
                    tokio_stream::wrappers::UnboundedReceiverStream::new(receive).map(|stream| {
                        stream.set_nodelay(true)?;
                        stream.set_nonblocking(true)?;
                        tokio::net::TcpStream::from_std(stream)
                    });
                settings
                    .builder()
                    .add_service(KeyValueServer::new(Floor))
                    .serve_with_incoming(incoming)
                    .await
                    .expect("serve");
            });
        });
    }
    for (n, stream) in listener.incoming().enumerate() {
        queues[n % cores].send(stream?)?;
    }
    Ok(())
}

/// HTTP/2 settings to try; `None`: tonic's default.
#[derive(Clone, Copy, Default)]
struct Settings {
    window: Option<u32>,
    max_frame: Option<u32>,
    adaptive: Option<bool>,
}

impl Settings {
    fn builder(self) -> Server {
        let mut builder = Server::builder();
        if let Some(window) = self.window {
            builder = builder
                .initial_stream_window_size(window)
                .initial_connection_window_size(window);
        }
        builder
            .max_frame_size(self.max_frame)
            .http2_adaptive_window(self.adaptive)
    }
}
