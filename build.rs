//! Generates the gRPC code for every contract under `proto/`.
//!
//! `protox` parses the `.proto` files in pure Rust, so building needs no system
//! `protoc`; `tonic-prost-build` turns the descriptors into messages, a server
//! trait and a client per service (a client only for etcd's API, which the
//! etcd storage backend calls).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &["proto/api.proto", "proto/keyvalue/v1/kv.proto"];
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // The same descriptors, for server reflection (`proto::FILE_DESCRIPTOR_SET`).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Keys and values of the full API arrive as `Bytes`, which the
        // storage layer keeps without copying.
        .bytes(".keyvalue.v1")
        .compile_fds(descriptors)?;
    // etcd's API, for the etcd storage backend: a client only, and kept out
    // of the reflection descriptors (we call etcd; we do not serve its API).
    const ETCD_PROTOS: &[&str] = &["proto/etcd/etcdserverpb/rpc.proto"];
    tonic_prost_build::configure()
        .build_server(false)
        .bytes(".etcdserverpb")
        .bytes(".mvccpb")
        .compile_fds(protox::compile(ETCD_PROTOS, ["proto"])?)?;
    for proto in PROTOS.iter().chain(ETCD_PROTOS) {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=proto/etcd/mvccpb/kv.proto");
    Ok(())
}
