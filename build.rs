//! Generates the gRPC code for every contract under `proto/`.
//!
//! `protox` parses the `.proto` files in pure Rust, so building needs no system
//! `protoc`; `tonic-prost-build` turns the descriptors into messages, a server
//! trait and a client per service. etcd's v3 API is both served (`etcd_api`)
//! and called (the etcd storage backend).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/api.proto",
        "proto/keyvalue/v1/kv.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/v3lockpb/v3lock.proto",
        "proto/etcd/v3electionpb/v3election.proto",
    ];
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // The same descriptors, for server reflection (`proto::FILE_DESCRIPTOR_SET`)
    // and the method registry (`grpc::methods`), which is checked against them.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Keys and values arrive as `Bytes`, which the storage layer keeps
        // without copying.
        .bytes(".keyvalue.v1")
        // prost's codec, counting repeated fields of requests before
        // decoding (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::BoundedCodec")
        .bytes(".etcdserverpb")
        .bytes(".mvccpb")
        .bytes(".v3lockpb")
        .bytes(".v3electionpb")
        .compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=proto/etcd/mvccpb/kv.proto");
    println!("cargo:rerun-if-changed=proto/etcd/authpb/auth.proto");
    Ok(())
}
