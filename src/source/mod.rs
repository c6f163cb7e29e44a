//! The source: Salesforce Pub/Sub channels → Kafka, one task group per channel.
//!
//! The data flow, stage by stage (ARCHITECTURE.md has the diagram):
//! [`crate::salesforce::pubsub`] stream → [`cdc`] (schema cache, Avro, header, bitmaps, envelope)
//! → [`echo`] (drop or mark our own writes) → [`gap`] (re-reads for gap and overflow events) →
//! [`crate::kafka`] producer → [`checkpoint`] (the replay id, durable only after Kafka holds
//! every record before it). [`pipeline`] wires them per channel and supervises each.

pub mod cdc;
pub mod checkpoint;
pub mod echo;
pub mod gap;
pub mod pipeline;
