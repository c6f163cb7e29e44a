//! `forcebridge capture`: a recording of a real org's Pub/Sub traffic, for `forcebridge sim
//! --replay`.
//!
//! Contract: [`command`] subscribes and writes through the capture format of
//! [`crate::sim::replay::format`], the only place that knows the on-disk layout (the simulator's
//! replay loader reads it back through the same module).

pub mod command;
