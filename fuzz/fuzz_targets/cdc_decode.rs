//! cargo fuzz target `cdc_decode`: the body is `forcebridge::tools::fuzzing::cdc_decode` (its docs give the input
//! layout and the oracles), the same function `tests/fuzz_short.rs` runs in the tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    forcebridge::tools::fuzzing::cdc_decode(data);
});
