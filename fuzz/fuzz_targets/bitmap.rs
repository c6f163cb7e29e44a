//! cargo fuzz target `bitmap`: the body is `forcebridge::tools::fuzzing::bitmap` (its docs give the input
//! layout and the oracles), the same function `tests/fuzz_short.rs` runs in the tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    forcebridge::tools::fuzzing::bitmap(data);
});
