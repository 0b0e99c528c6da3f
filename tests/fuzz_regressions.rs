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

/// The HTTP/2 seeds, mutated past their connection preface (bytes flipped, frames of random
/// type, flags, stream and length spliced in, ranges repeated or cut) with a fixed seed:
/// our HTTP/2 codec must neither panic nor hang on any of them. The cargo-fuzz target
/// explores further; this keeps 6,000 known-shaped cases in every `cargo test`.
#[tokio::test(start_paused = true)]
async fn front_door_h2_seeds_mutated_never_panic_or_hang() {
    const PREFACE_END: usize = 1 + 24;
    const ROUNDS: usize = 6000;
    let seeds: Vec<Vec<u8>> = inputs("front_door")
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("h2"))
        })
        .map(|p| read(p))
        .filter(|s| s.len() > PREFACE_END)
        .collect();
    assert!(seeds.len() >= 5, "h2 seeds missing: {}", seeds.len());
    let door = front_door::FrontDoor::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    let mut ended_with_goaway = 0;
    for round in 0..ROUNDS {
        let mut input = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next(4) {
            let body = input.len() - PREFACE_END;
            let at = PREFACE_END + next(body + 1);
            match next(5) {
                0 if body > 0 => {
                    let i = PREFACE_END + next(body);
                    input[i] ^= 1 << next(8);
                }
                1 => {
                    // A frame of any type with a plausible or absurd length.
                    let len = [0, 1, 4, 5, 6, 8, 9, 300, 16_384][next(9)];
                    let mut f = vec![
                        0,
                        (len >> 8) as u8,
                        len as u8,
                        next(12) as u8,
                        next(256) as u8,
                        0,
                        0,
                        0,
                        [0, 1, 2, 3, 5, 0xff][next(6)],
                    ];
                    f.extend((0..len).map(|_| next(256) as u8));
                    input.splice(at..at, f);
                }
                2 if body > 0 => {
                    let end = (at + next(64)).min(input.len());
                    let copy = input[at..end].to_vec();
                    input.splice(at..at, copy);
                }
                3 => input.truncate(at),
                _ if body > 0 => {
                    let i = PREFACE_END + next(body);
                    input[i] = next(256) as u8;
                }
                _ => {}
            }
        }
        let out = door.run(&input).await;
        // A GOAWAY frame (type 7 on stream 0) somewhere in the answer: errors were reported
        // as errors, not only by closing.
        if out
            .windows(9)
            .any(|w| w[3] == 7 && w[5..9] == [0, 0, 0, 0] && w[0] == 0)
        {
            ended_with_goaway += 1;
        }
    }
    eprintln!("{ended_with_goaway} of {ROUNDS} mutated connections got a GOAWAY");
    assert!(
        ended_with_goaway >= ROUNDS / 20,
        "only {ended_with_goaway} of {ROUNDS} mutated connections got a GOAWAY"
    );
}
