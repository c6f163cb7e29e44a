//! `forcebridge capture`: a recording of a real org's Pub/Sub traffic, for `forcebridge sim
//! --replay`.
//!
//! Contract: [`format`] is the only place that knows the on-disk layout of a capture (written by
//! [`format::CaptureWriter`], read back whole by [`format::read_capture`]); the command that
//! subscribes to an org and the simulator's replay loader both go through it.

pub mod command;
pub mod format;
