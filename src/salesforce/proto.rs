//! Code generated from `proto/pubsub_api.proto`, the Salesforce Pub/Sub API (package
//! `eventbus.v1`), carried verbatim from Salesforce. `build.rs` compiles it with `protox` and
//! `tonic-prost-build`: client and server.

#![allow(clippy::all, clippy::too_many_lines, missing_docs, rustdoc::bare_urls)]

tonic::include_proto!("eventbus.v1");
