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
//!
//! # What is public, and for whom
//! Every module is `pub` because something outside the library uses it: the binary (`main.rs`:
//! [`config`], [`tools`], [`sim`]); the integration tests in `tests/` (each stage's entry point
//! and the simulator: [`source::run`], [`sink::run`], [`kafka`], [`salesforce`], [`ops`],
//! [`retry::Directive`]); the criterion benchmarks in `benches/` ([`source::cdc`],
//! [`sim::org`], [`sink::message`], [`sink::plan`]); the cargo-fuzz targets in `fuzz/`
//! ([`tools::fuzzing`]). Inside the modules, items are `pub(crate)` unless one of those uses
//! them.

// The module docs are the team's map of the code and name private files and items on purpose
// (`cargo doc --document-private-items` renders them).
#![allow(rustdoc::private_intra_doc_links)]

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
