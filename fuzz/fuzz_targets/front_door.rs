#![no_main]
//! Raw bytes into `serve_connection` over an in-memory pipe.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::front_door::FrontDoor;

/// One runtime and one proxy for the whole run: building them per input would cost more than
/// the input itself. libFuzzer calls the target from a single thread.
fn harness() -> &'static (tokio::runtime::Runtime, FrontDoor) {
    static H: OnceLock<(tokio::runtime::Runtime, FrontDoor)> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Virtual time: the harness's idle and hang timeouts cost no real time.
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let door = rt.block_on(async { FrontDoor::new() });
        (rt, door)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, door) = harness();
    rt.block_on(door.run(data));
});
