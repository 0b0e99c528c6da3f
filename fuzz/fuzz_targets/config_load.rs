#![no_main]
//! Arbitrary bytes → YAML loader → validator (→ compile when served).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::config_load::run(data);
});
