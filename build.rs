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
        // Event payloads and replay ids as `Bytes`: decoded as slices of the received buffer
        // (no copy per event), and shared instead of copied by whoever keeps them.
        .bytes(".eventbus.v1.ProducerEvent.payload")
        .bytes(".eventbus.v1.ConsumerEvent.replay_id")
        .compile_fds(descriptors)?;
    Ok(())
}
