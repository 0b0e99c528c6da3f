#![no_main]
//! Arbitrary VirtualService/DestinationRule/ServiceEntry set + request + random → route().

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::route::{Input, run};

fuzz_target!(|input: Input| {
    run(&input);
});
