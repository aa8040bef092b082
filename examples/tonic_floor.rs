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
//! cargo run --release --example tonic_floor -- [--listen ADDR] [--threads N]
//! ```
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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            ("--threads", Some(n)) => threads = Some(n.parse::<usize>()?),
            _ => {
                return Err(
                    format!("usage: tonic_floor [--listen ADDR] [--threads N] (at {arg})").into(),
                );
            }
        }
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
        Server::builder()
            .add_service(KeyValueServer::new(Floor))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
