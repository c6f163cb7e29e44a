//! forcebridge: streams Salesforce Change Data Capture and Platform Events into Kafka, and writes
//! Kafka changes back into Salesforce.
//!
//! # Layout
//! The folders are the data flow (`ARCHITECTURE.md` has the contract of every file):
//! [`salesforce`] (the clients of Salesforce) → [`source`] (Pub/Sub → Kafka) → [`kafka`] →
//! [`sink`] (Kafka → Salesforce REST); [`config`], [`retry`] (what to do after an error) and
//! [`ops`] (metrics, health) serve them all; [`sim`] is the simulated org and [`tools`] the demo,
//! the benchmarks, `check` and the fuzz targets. `settings` loads a config: config's own checks
//! and those that need a stage's knowledge, so that config imports no stage.

pub mod config;
pub mod kafka;
pub mod ops;
pub mod retry;
pub mod salesforce;
mod settings;
pub mod sim;
pub mod sink;
pub mod source;
pub mod tools;
