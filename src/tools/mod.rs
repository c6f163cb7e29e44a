//! The commands around the daemon: `forcebridge demo` ([`demo`]), `forcebridge bench`
//! ([`bench`](mod@bench)), `forcebridge check` ([`check`]), and the fuzz targets' bodies ([`fuzzing`]); and
//! `forcebridge run`, the daemon itself ([`daemon`]), so that `main.rs` only parses and dispatches.
//!
//! Contract: tools use the stages as a user would (config in, records out); no stage imports a
//! tool.

pub mod bench;
pub mod capture;
pub mod check;
pub mod daemon;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
