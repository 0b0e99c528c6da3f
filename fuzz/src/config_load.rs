//! Arbitrary bytes through the YAML loader and the validator, as `run` and every reload see them.
//!
//! Oracle: no panic; loading and validating are deterministic; a config the validator serves
//! also compiles (validation promises `compile` never meets an error it let through).

use std::sync::Arc;

use switchyard::upstream::PoolRegistry;

use crate::table::{compile_served, load_and_validate};

/// Libfuzzer's `-max_len` bounds the input already; this keeps a replayed file just as cheap.
pub const MAX_INPUT: usize = 64 * 1024;

/// Runs one input. Returns true when the config was served (valid and compiled).
pub fn run(data: &[u8]) -> bool {
    if data.len() > MAX_INPUT {
        return false;
    }
    // The loader refuses non-UTF-8 files before parsing; lossy decoding still lets the
    // fuzzer's byte mutations reach the YAML parser.
    let text = String::from_utf8_lossy(data);
    let (res, diags) = load_and_validate("fuzz.yaml", &text);
    let (res2, diags2) = load_and_validate("fuzz.yaml", &text);
    assert_eq!(diags, diags2, "loading and validation are deterministic");
    assert_eq!(res.content_hash, res2.content_hash);
    if diags.iter().any(|d| d.is_error()) {
        return false;
    }
    compile_served(
        &res,
        &Arc::new(PoolRegistry::default()),
        &Arc::new(switchyard::metrics::Registry::default()),
    );
    true
}
