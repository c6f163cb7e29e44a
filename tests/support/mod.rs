//! Helpers shared by the integration tests (`mod support;` from a test file).
//!
//! Each test binary uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod kafka;
pub mod process;
pub mod replica;
pub mod source;
