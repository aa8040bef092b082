//! Integration tests: every behaviour of `kvserver` and `kv`, through the real
//! binaries on 127.0.0.1 with ephemeral ports.
//!
//! `harness` starts and stops servers; each other module covers one area.

mod auth;
mod backup;
mod bench;
mod cli;
mod concurrency;
mod config;
mod contract;
mod crash;
mod disk;
mod doc_runner;
mod docs;
mod etcd;
mod etcd_api;
mod etcd_clients;
#[path = "../support/etcd.rs"]
mod etcd_process;
mod grpc_web;
mod harness;
mod hostile;
mod http;
mod http_binary;
mod http_limits;
mod http_tls;
mod kv_api;
mod lifecycle;
mod limits;
#[path = "../support/linearizability.rs"]
mod linearizability;
mod linearizability_faults;
mod load;
mod mvcc;
mod operations;
mod tls;
mod tutorial_api;
