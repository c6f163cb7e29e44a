//! Compiles `proto/pubsub_api.proto` (the Salesforce Pub/Sub API, carried verbatim) into tonic
//! client and server code. The proto is parsed by `protox`, a pure-Rust protobuf compiler, so the
//! build needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pubsub_api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
