//! The fuzz corpora as a quick regression test under plain `cargo test` (Envoy's rule: "the
//! corpus is also a quick regression test"). Every committed seed and every minimised crasher
//! in fuzz/corpus/<target>/ and fuzz/regressions/<target>/ goes through the same logic the
//! cargo-fuzz targets run (fuzz/src/*.rs, included by path so no libFuzzer is needed here).

// Shared with the fuzz crate, which uses every item; this file uses most.
#[allow(dead_code)]
#[path = "../fuzz/src/config_load.rs"]
mod config_load;
#[allow(dead_code)]
#[path = "../fuzz/src/front_door.rs"]
mod front_door;
#[allow(dead_code)]
#[path = "../fuzz/src/table.rs"]
mod table;

use std::path::{Path, PathBuf};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// Every file under fuzz/corpus/<target> and fuzz/regressions/<target>, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = Path::new(FUZZ_DIR).join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn config_load_corpus_replays_clean() {
    let files = inputs("config_load");
    assert!(
        files.len() >= 40,
        "seed corpus missing: {} files",
        files.len()
    );
    let mut served = 0;
    for f in &files {
        if config_load::run(&read(f)) {
            served += 1;
        }
    }
    // Most seeds are real Istio samples that a sidecar serves; if none were, the target would
    // only ever exercise the refusal paths.
    assert!(
        served >= 10,
        "only {served} of {} seeds served",
        files.len()
    );
}

#[tokio::test(start_paused = true)]
async fn front_door_corpus_replays_clean() {
    let files = inputs("front_door");
    assert!(
        files.len() >= 40,
        "seed corpus missing: {} files",
        files.len()
    );
    let door = front_door::FrontDoor::new();
    let mut answered = 0;
    for f in &files {
        let out = door.run(&read(f)).await;
        if out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 ") {
            answered += 1;
        }
    }
    assert!(
        answered >= 20,
        "only {answered} of {} seeds got an HTTP/1 answer",
        files.len()
    );
}

/// Pins what the front door answers to a few seeds, so the harness is known to reach the
/// routes it was built for (a harness that only ever saw 400s would fuzz nothing).
#[tokio::test(start_paused = true)]
async fn front_door_harness_reaches_every_kind_of_answer() {
    let door = front_door::FrontDoor::new();
    let status = |out: Vec<u8>| -> String {
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let cases: [(&[u8], &str); 5] = [
        (
            b"\0GET /direct HTTP/1.1\r\nHost: web\r\n\r\n",
            "HTTP/1.1 418",
        ),
        (
            b"\0GET /old/x HTTP/1.1\r\nHost: web\r\n\r\n",
            "HTTP/1.1 301",
        ),
        (
            b"\0GET /abort HTTP/1.1\r\nHost: web\r\n\r\n",
            "HTTP/1.1 503",
        ),
        // The upstream (127.0.0.1:1) refuses: 503 UF after the retries.
        (b"\0GET / HTTP/1.1\r\nHost: web\r\n\r\n", "HTTP/1.1 503"),
        (b"\0GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n", "HTTP/1.1 502"),
    ];
    for (input, want) in cases {
        let got = status(door.run(input).await);
        assert!(
            got.starts_with(want),
            "{:?}: got {got:?}, want {want}",
            String::from_utf8_lossy(input)
        );
    }
}
