//! The write-back sink (work in progress).
pub mod message;
pub mod plan;
