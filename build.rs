//! Generates the gRPC code for every contract under `proto/`.
//!
//! `protox` parses the `.proto` files in pure Rust, so building needs no system
//! `protoc`; `tonic-prost-build` turns the descriptors into messages, a server
//! trait and a client per service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &["proto/api.proto"];
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
