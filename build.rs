//! Generates the gRPC code for every contract under `proto/`.
//!
//! `protox` parses the `.proto` files in pure Rust, so building needs no system
//! `protoc`; `tonic-prost-build` turns the descriptors into messages, a server
//! trait and a client per service.

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
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
