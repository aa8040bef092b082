//! The ceiling over durable Set on this machine: what acknowledging only after
//! fsync costs when nothing else does.
//!
//! A tonic server of the tutorial's `simplekeyvalue.KeyValue` service whose
//! store is a `HashMap` behind a mutex, the cheapest store there is. With
//! `--journal FILE`, a `Set` is answered only after its key and value are
//! appended to `FILE` and `fdatasync`ed, with perfect group commit: one
//! journal thread writes everything that queued while its last fsync ran,
//! syncs once and answers them all, while requests go on being served. There
//! is no storage engine, no page, no index on disk, no checkpoint and no
//! recovery: it is not a store, only the bound that every durable store pays
//! (one fsync in every write's latency, on the cores the load generator
//! shares). `scripts/bench-storage` runs it beside kvserver's memory and disk
//! backends (docs/STORAGE.md, "The ceiling").
//!
//! ```sh
//! cargo run --release --example durable_ceiling -- [--listen ADDR] [--journal FILE]
//! ```
//!
//! Listens on 127.0.0.1:0 by default (a free port) and prints
//! `listening on ADDR` on stderr, like kvserver. The journal is emptied
//! whenever it passes 64 MiB, so a long run does not fill the disk.

/// The same allocator as kvserver, so that the comparison is of the request
/// path and not of malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use keyvalue::proto::simplekeyvalue::key_value_server::{KeyValue, KeyValueServer};
use keyvalue::proto::simplekeyvalue::{GetReply, GetRequest, SetReply, SetRequest};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Size past which the journal is emptied.
const JOURNAL_LIMIT: u64 = 64 << 20;

/// One write for the journal, and whom to tell once it is on disk.
type Entry = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

struct Ceiling {
    map: Mutex<HashMap<String, String>>,
    /// `None` without `--journal`: then a Set is answered at once. (A
    /// `Sender` is shared by reference: no lock on the way to the journal.)
    journal: Option<Sender<Entry>>,
}

#[tonic::async_trait]
impl KeyValue for Ceiling {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetReply>, Status> {
        let SetRequest { key, value } = request.into_inner();
        let mut entry = Vec::with_capacity(8 + key.len() + value.len());
        if self.journal.is_some() {
            for part in [&key, &value] {
                entry.extend_from_slice(&(part.len() as u32).to_le_bytes());
                entry.extend_from_slice(part.as_bytes());
            }
        }
        self.map.lock().unwrap().insert(key, value);
        if let Some(journal) = &self.journal {
            let (done, synced) = oneshot::channel();
            journal
                .send((entry, done))
                .map_err(|_| Status::unavailable("the journal thread stopped"))?;
            synced
                .await
                .map_err(|_| Status::unavailable("the journal thread stopped"))?
                .map_err(|e| Status::unavailable(format!("journal: {e}")))?;
        }
        Ok(Response::new(SetReply {}))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let key = request.into_inner().key;
        let value = self.map.lock().unwrap().get(&key).cloned();
        value
            .map(|value| Response::new(GetReply { value }))
            .ok_or_else(|| Status::not_found(format!("key {key:?} not found")))
    }
}

/// Group commit: everything that queued while the last fsync ran goes out in
/// one write and one fsync, then every writer in it is answered.
fn journal_thread(mut file: File, entries: Receiver<Entry>) {
    let mut buffer = Vec::new();
    let mut waiting = Vec::new();
    while let Ok(first) = entries.recv() {
        waiting.push(first);
        waiting.extend(entries.try_iter());
        buffer.clear();
        for (entry, _) in &waiting {
            buffer.extend_from_slice(entry);
        }
        let written = append_and_sync(&mut file, &buffer);
        for (_, done) in waiting.drain(..) {
            let _ = done.send(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn append_and_sync(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    if file.metadata()?.len() > JOURNAL_LIMIT {
        file.set_len(0)?;
    }
    file.write_all(bytes)?;
    file.sync_data()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut journal = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            ("--journal", Some(path)) => journal = Some(path),
            _ => {
                return Err(format!(
                    "usage: durable_ceiling [--listen ADDR] [--journal FILE] (at {arg})"
                )
                .into());
            }
        }
    }
    let journal = match journal {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let (sender, entries) = mpsc::channel();
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || journal_thread(file, entries))?;
            Some(sender)
        }
        None => None,
    };
    let service = Ceiling {
        map: Mutex::new(HashMap::new()),
        journal,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        Server::builder()
            .add_service(KeyValueServer::new(service))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
