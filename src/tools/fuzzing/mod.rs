//! Fuzz target bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the short
//! fuzz run of the tests (`tests/fuzz_short.rs`). Not part of forcebridge's API.
//!
//! Contract of every target function: it takes arbitrary bytes, drives the same public functions
//! the pipeline uses, and returns [`Outcome::Accepted`] when the input was taken as valid and
//! [`Outcome::Rejected`] when it was refused with an error. It **panics** (a fuzzer finding)
//! when the code under test panics or when an oracle disagrees with what it returned:
//!
//! * [`cdc_decode`]: first byte = schema ([`fixture`]: Account, Contact change events,
//!   `Order_Event__e`; bit 7: tombstones on), the rest = the Avro payload. What
//!   [`cdc::decode`] accepts must be a datum `apache_avro` reads to the last byte with the same
//!   values, header fields and bitmap expansions (checked against `reference_expand`, written
//!   from the simulator's schema catalog rather than the decoder's tables); the records of
//!   [`cdc::to_records`] must be JSON with the decoded record and one key per record id. What it
//!   refuses must not be a canonical datum (one that `apache_avro` reads and re-encodes to the
//!   same bytes) unless the header or a bitmap is at fault, and a bitmap refusal must be one the
//!   reference refuses too.
//! * [`bitmap`]: first byte = schema, the rest = bitmap elements separated by `,` (lossy
//!   UTF-8). [`cdc::expand_bitmaps`] must agree with `reference_expand`, and its errors must
//!   name the offending element.
//! * [`writeback_message`]: first byte = flags, then optional headers, then the value (layout on
//!   the function). [`sink::message::parse`] runs with a realistic sink config; an accepted
//!   message must satisfy the documented contract of `WriteOp`.
//!
//! The files: `fixtures.rs` (what a target returns, the bundled schemas), `cdc.rs` (target
//! `cdc_decode` and its checks against apache-avro), `bitmap.rs` (target `bitmap` and the
//! reference expansion), `writeback.rs` (target `writeback_message`), `seeds.rs` (the seed
//! corpus).
//!
//! [`cdc::decode`]: crate::source::cdc::decode
//! [`cdc::to_records`]: crate::source::cdc::to_records
//! [`cdc::expand_bitmaps`]: crate::source::cdc::expand_bitmaps
//! [`sink::message::parse`]: crate::sink::message::parse
//! [`bitmap`]: fn@bitmap

#![doc(hidden)]

mod bitmap;
mod cdc;
mod fixtures;
mod seeds;
mod writeback;

pub use bitmap::bitmap;
pub use cdc::cdc_decode;
pub use fixtures::{Fixture, Outcome, fixture};
pub use seeds::{Seed, seeds};
pub use writeback::{SINK_OBJECTS_YAML, WB_HEADERS, writeback_input, writeback_message};

/// The fuzz targets by name (the `fuzz/fuzz_targets/<name>.rs` files).
pub const TARGETS: [&str; 3] = ["cdc_decode", "bitmap", "writeback_message"];

/// Runs target `name` on `data`; `None` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> Option<Outcome> {
    Some(match name {
        "cdc_decode" => cdc_decode(data),
        "bitmap" => bitmap(data),
        "writeback_message" => writeback_message(data),
        _ => return None,
    })
}
