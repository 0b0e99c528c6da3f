//! Istio duration strings (`timeout: 1.5s`, `baseEjectionTime: 3m`).
//!
//! Istio's legacy jsonpb decoder hands these strings to Go's `time.ParseDuration`, so that is
//! the grammar users have been writing against: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`. This is a
//! port of Go's parser, including its overflow limits and its float arithmetic for fractions,
//! so a value Istio accepts decodes to the same nanosecond count here.

use std::time::Duration;

/// Go's `Duration` is an `int64` of nanoseconds; anything above this cannot be written.
const MAX_NANOS: u64 = i64::MAX as u64;
/// Go's overflow checks compare against `1<<63` (the magnitude of `i64::MIN`).
const LIMIT: u64 = 1 << 63;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error(
        "invalid duration {input:?}: expected a number followed by a unit such as 500ms, 1.5s or 1h30m"
    )]
    Invalid { input: String },
    #[error("invalid duration {input:?}: missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit { input: String },
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {input:?}: too large (at most 2562047h47m16.854775807s)")]
    Overflow { input: String },
    #[error("invalid duration {input:?}: must not be negative")]
    Negative { input: String },
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU both appear in the wild; Go takes both.
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a duration exactly as Go's `time.ParseDuration` does, except that a negative result is
/// an error: no Istio duration field gives meaning to a negative value.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid {
        input: s.to_string(),
    };
    let overflow = || DurationError::Overflow {
        input: s.to_string(),
    };

    let mut rest = s;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    // Go's special case: a bare zero needs no unit (and "-0" is zero, not negative).
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }

    let mut total: u64 = 0;
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }

        let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let whole = leading_int(&bytes[..int_len]).ok_or_else(overflow)?;
        rest = &rest[int_len..];

        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(r) = rest.strip_prefix('.') {
            frac_len = r.bytes().take_while(|b| b.is_ascii_digit()).count();
            (frac, scale) = leading_fraction(&r.as_bytes()[..frac_len]);
            rest = &r[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            // ".s" or "-.s": Go rejects a number with no digits at all.
            return Err(invalid());
        }

        // The unit runs up to the next digit or '.', both ASCII, so the slice stays on a char boundary.
        let unit_len = rest
            .bytes()
            .take_while(|&b| b != b'.' && !b.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit {
                input: s.to_string(),
            });
        }
        let unit_text = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = unit_nanos(unit_text).ok_or_else(|| DurationError::UnknownUnit {
            input: s.to_string(),
            unit: unit_text.to_string(),
        })?;

        if whole > LIMIT / unit {
            return Err(overflow());
        }
        let mut v = whole * unit;
        if frac > 0 {
            // Go computes the fractional part in float64 and truncates; doing the same keeps
            // results bit-identical (e.g. "1.0000000001s" rounds the same way in both).
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(overflow());
            }
        }
        total = total.checked_add(v).ok_or_else(overflow)?;
        if total > LIMIT {
            return Err(overflow());
        }
    }

    if negative {
        return if total == 0 {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::Negative {
                input: s.to_string(),
            })
        };
    }
    if total > MAX_NANOS {
        return Err(overflow());
    }
    Ok(Duration::from_nanos(total))
}

/// Go's `leadingInt`: `None` on overflow past `1<<63`.
fn leading_int(digits: &[u8]) -> Option<u64> {
    let mut x: u64 = 0;
    for &c in digits {
        if x > LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > LIMIT {
            return None;
        }
    }
    Some(x)
}

/// Go's `leadingFraction`: digits past what fits are ignored rather than rejected, because they
/// are below nanosecond precision anyway.
fn leading_fraction(digits: &[u8]) -> (u64, f64) {
    let mut x: u64 = 0;
    let mut scale = 1.0;
    let mut overflow = false;
    for &c in digits {
        if overflow {
            continue;
        }
        if x > MAX_NANOS / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale)
}

/// Istio's `ValidateDuration`: Envoy is configured in whole milliseconds, and a zero timeout
/// would mean "disabled" to Envoy while the user clearly asked for something else, so Istio
/// rejects both rather than guess.
pub fn check_istio_duration(d: Duration) -> Result<(), String> {
    if d < Duration::from_millis(1) {
        return Err("duration must be at least 1ms".to_string());
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err("only durations to ms precision are supported".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_go_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_the_forms_istio_users_write() {
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0.5s"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m10s"), Duration::from_secs(2 * 3600 + 45 * 60 + 10));
        assert_eq!(ok("180.000s"), Duration::from_secs(180));
        assert_eq!(ok("3m"), Duration::from_secs(180));
    }

    #[test]
    fn all_units_including_both_micro_signs() {
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7\u{b5}s"), Duration::from_micros(7));
        assert_eq!(ok("7\u{3bc}s"), Duration::from_micros(7));
        assert_eq!(ok("1h1m1s1ms1us1ns"), Duration::new(3661, 1_001_001));
    }

    #[test]
    fn decimals_edge_forms() {
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("1.5m30s"), Duration::from_secs(120));
        // Go truncates below a nanosecond.
        assert_eq!(ok("1.9ns"), Duration::from_nanos(1));
        assert_eq!(ok("0.0000000019s"), Duration::from_nanos(1));
        // Digits beyond u64 precision in the fraction are ignored, not an error.
        assert_eq!(ok("1.000000000000000000000000001s"), Duration::from_secs(1));
    }

    #[test]
    fn zero_and_signs() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(
            parse_go_duration("-5s"),
            Err(DurationError::Negative {
                input: "-5s".into()
            })
        );
    }

    #[test]
    fn rejects_malformed_input_with_the_text_in_the_message() {
        let err = parse_go_duration("5 s").unwrap_err();
        assert_eq!(
            err,
            DurationError::UnknownUnit {
                input: "5 s".into(),
                unit: " s".into()
            }
        );
        assert!(
            err.to_string().starts_with("invalid duration \"5 s\": "),
            "{err}"
        );

        assert_eq!(
            parse_go_duration("5"),
            Err(DurationError::MissingUnit { input: "5".into() })
        );
        assert_eq!(
            parse_go_duration("1h5"),
            Err(DurationError::MissingUnit {
                input: "1h5".into()
            })
        );
        for bad in [
            "", "+", "-", "s", ".s", "-.s", "1s ", " 1s", "1.2.3s", "1e3s", "١s",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            parse_go_duration("5sec"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "sec"
        ));
        assert!(matches!(
            parse_go_duration("5S"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "S"
        ));
    }

    #[test]
    fn overflow_limits_match_go() {
        // The largest Go duration, in two spellings.
        assert_eq!(
            ok("9223372036854775807ns"),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert_eq!(
            ok("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
        for bad in [
            "9223372036854775808ns",
            "2562048h",
            "2562047h47m16.854775808s",
            "99999999999999999999s",
            "9223372036854775807ns1ns",
        ] {
            assert_eq!(
                parse_go_duration(bad),
                Err(DurationError::Overflow { input: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn istio_duration_validation() {
        assert_eq!(check_istio_duration(Duration::from_millis(1)), Ok(()));
        assert_eq!(check_istio_duration(Duration::from_secs(3600)), Ok(()));
        assert_eq!(
            check_istio_duration(Duration::ZERO),
            Err("duration must be at least 1ms".to_string())
        );
        assert_eq!(
            check_istio_duration(Duration::from_micros(999)),
            Err("duration must be at least 1ms".to_string())
        );
        assert_eq!(
            check_istio_duration(Duration::from_micros(1500)),
            Err("only durations to ms precision are supported".to_string())
        );
        assert_eq!(
            check_istio_duration(ok("1.0001s")),
            Err("only durations to ms precision are supported".to_string())
        );
    }
}
