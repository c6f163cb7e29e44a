//! forcebridge: streams Salesforce Change Data Capture and Platform Events into Kafka, and writes
//! Kafka changes back into Salesforce.
//!
//! # Layout
//! See `ARCHITECTURE.md` for the data flow and the contract of each module.

pub mod auth;
pub mod bench;
pub mod cdc;
pub mod check;
pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod echo;
pub mod fuzzing;
pub mod gap;
pub mod kafka;
pub mod ops;
pub mod pipeline;
pub mod proto;
pub mod pubsub;
pub mod rest;
pub mod retry;
pub mod schema;
pub mod sfid;
pub mod sftime;
pub mod sim;
pub mod sink;
pub mod telemetry;
pub mod tls;
