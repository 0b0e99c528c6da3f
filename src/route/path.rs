//! Request path normalisation before route matching.
//!
//! Istio's default `pathNormalization: BASE` sets Envoy's `normalize_path: true` and nothing
//! else (no slash merging, escaped slashes kept). Envoy then runs `PathUtil::canonicalPath`,
//! which is its snapshot of Chromium's URL path canonicaliser
//! (`envoy:source/common/chromium_url/url_canon_path.cc`; the newer UHV normaliser is off by
//! default). This module reproduces that canonicaliser on the path (the query is never
//! touched), because a route that matches a different path than Envoy would is a silent
//! routing difference. What it does, byte by byte:
//!
//! - `.` and `..` segments are resolved; `..` never climbs above the root (`/..` is `/`).
//!   A `%2e`/`%2E` counts as a dot, so `/%2e%2e/x` is `/x`.
//! - Backslash becomes `/`, and counts as a separator when classifying dot segments
//!   (`/a\..\b` is `/b`). Chromium does this for IE compatibility and Envoy inherits it.
//! - Escapes of unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are decoded: `/%41` is `/A`.
//! - Other valid escapes are kept byte for byte. Envoy does NOT upper-case their hex
//!   ("copy exactly in case the server is sensitive to changing the case"), and even its UHV
//!   normaliser keeps the case by default (`envoy.uhv.preserve_url_encoded_case`), so `%2f`
//!   stays `%2f`.
//! - A `%` not followed by two hex digits passes through unchanged (Chromium's permissive
//!   mode), with its guard against nested escapes: `%%341` becomes `%2541`, never `%A`.
//! - Bytes that may not appear raw in a path (controls, space, `"` `#` `<` `>` `?` `` ` ``
//!   `^` `{` `|` `}`, DEL, non-ASCII) are percent-encoded with upper-case hex.
//! - A NUL byte, raw or as `%00`, makes normalisation fail; Envoy answers 400.
//! - Repeated slashes are kept.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} does not start with '/'")]
    NotAbsolute(String),
    #[error("path {0:?} contains a NUL character")]
    Nul(String),
}

// Character classes from Chromium's `kPathCharLookup`.
const PASS: u8 = 0;
const SPECIAL: u8 = 1;
const ESCAPE: u8 = 2 | SPECIAL;
const UNESCAPE: u8 = 4;
const INVALID: u8 = 8 | SPECIAL;

const fn path_char_class(b: u8) -> u8 {
    match b {
        0 => INVALID,
        0x01..=0x20 => ESCAPE,
        b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => {
            ESCAPE
        }
        0x7f..=0xff => ESCAPE,
        b'.' => SPECIAL,
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'_' | b'~' => UNESCAPE,
        _ => PASS,
    }
}

const PATH_CHAR: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = path_char_class(i as u8);
        i += 1;
    }
    t
};

fn flags(b: u8) -> u8 {
    PATH_CHAR[usize::from(b)]
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Chromium's `DecodeEscaped`: the two bytes after `at` as a hex octet. Like Chromium it does
/// not check that `s[at]` is `%`; callers only pass positions where it was.
fn decode_escaped(s: &[u8], at: usize) -> Option<u8> {
    let hi = hex_val(*s.get(at + 1)?)?;
    let lo = hex_val(*s.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// Length of the dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, 0 otherwise.
fn dot_len(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(b'.') => 1,
        Some(b'%') if s.get(i + 1) == Some(&b'2') && matches!(s.get(i + 2), Some(b'e' | b'E')) => 3,
        _ => 0,
    }
}

enum Dot {
    NotADirectory,
    /// `.`: skip this many input bytes after the dot.
    Current(usize),
    /// `..`: skip this many input bytes after the first dot.
    Up(usize),
}

fn classify_after_dot(s: &[u8], after: usize) -> Dot {
    if after == s.len() {
        return Dot::Current(0);
    }
    if is_slash(s[after]) {
        return Dot::Current(1);
    }
    let second = dot_len(s, after);
    if second > 0 {
        let after_second = after + second;
        if after_second == s.len() {
            return Dot::Up(second);
        }
        if is_slash(s[after_second]) {
            return Dot::Up(second + 1);
        }
    }
    Dot::NotADirectory
}

/// True when canonicalisation would change `p`; the common clean path is checked without
/// building anything.
fn needs_work(p: &[u8]) -> bool {
    p.iter().enumerate().any(|(i, &b)| {
        if b == b'.' {
            // Output equals input up to here, so the previous input byte is the previous output byte.
            i > 0 && p[i - 1] == b'/' && !matches!(classify_after_dot(p, i + 1), Dot::NotADirectory)
        } else {
            flags(b) & SPECIAL != 0
        }
    })
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// `BackUpToPreviousSlash`: drop the last segment; the output always starts with `/`, and we
/// never go above it.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    if out.len() <= 1 {
        return;
    }
    let before_trailing = &out[..out.len() - 1];
    let keep = before_trailing
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(1, |i| i + 1);
    out.truncate(keep);
}

/// Chromium's `CheckForNestedEscapes`, called right after an unescape that landed within two
/// output bytes of a `%` that did not start a valid escape. If those bytes now read as a valid
/// escape (`%%34` + `1` would read `%41`), the `%` is itself escaped to `%25` so a second
/// decoding upstream cannot turn the path into something else.
fn check_nested_escapes(spec: &[u8], next: usize, last_invalid: usize, out: &mut Vec<u8>) {
    let length = out.len();
    let Some(&last_unescaped) = out.last() else {
        return;
    };
    let append_next = last_invalid + 2 == length;
    if append_next {
        match spec.get(next) {
            Some(&c) if c < 0x80 => out.push(c),
            _ => return,
        }
    }
    if decode_escaped(out, last_invalid).is_some() {
        if !append_next {
            let c = out[last_invalid + 1];
            out.push(c);
        }
        out[last_invalid + 1] = b'2';
        out[last_invalid + 2] = b'5';
        out.push(last_unescaped);
    } else if append_next {
        out.truncate(length);
    }
}

/// Normalises a request path (without its query) as Envoy does with `normalize_path: true`.
/// Returns the input unchanged, without allocating, when it is already canonical.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    // The asterisk-form request target (`OPTIONS *`) has no path to normalise.
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    let spec = path.as_bytes();
    if spec.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    if !needs_work(spec) {
        return Ok(Cow::Borrowed(path));
    }

    let mut out: Vec<u8> = Vec::with_capacity(spec.len() + 8);
    let mut last_invalid_percent: Option<usize> = None;
    let mut failed = false;
    let mut i = 0;
    while i < spec.len() {
        let b = spec[i];
        let f = flags(b);
        if f & SPECIAL == 0 {
            out.push(b);
            i += 1;
            continue;
        }
        let dot = dot_len(spec, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify_after_dot(spec, i + dot) {
                    Dot::NotADirectory => out.push(b'.'),
                    Dot::Current(skip) => i += skip,
                    Dot::Up(skip) => {
                        back_up_to_previous_slash(&mut out);
                        i += skip;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot;
        } else if b == b'\\' {
            out.push(b'/');
            i += 1;
        } else if b == b'%' {
            match decode_escaped(spec, i) {
                Some(v) if flags(v) & UNESCAPE != 0 => {
                    out.push(v);
                    i += 3;
                    if let Some(li) = last_invalid_percent
                        && li + 3 >= out.len()
                    {
                        check_nested_escapes(spec, i, li, &mut out);
                    }
                }
                Some(v) => {
                    out.extend_from_slice(&spec[i..i + 3]);
                    if flags(v) == INVALID {
                        failed = true;
                    }
                    i += 3;
                }
                None => {
                    last_invalid_percent = Some(out.len());
                    out.push(b'%');
                    i += 1;
                }
            }
        } else if f == INVALID {
            push_escaped(&mut out, b);
            failed = true;
            i += 1;
        } else {
            push_escaped(&mut out, b);
            i += 1;
        }
    }

    if failed {
        return Err(PathError::Nul(path.to_string()));
    }
    if out == spec {
        return Ok(Cow::Borrowed(path));
    }
    // Every byte written is ASCII: raw non-ASCII input is escaped and only ASCII is unescaped.
    match String::from_utf8(out) {
        Ok(s) => Ok(Cow::Owned(s)),
        Err(_) => Err(PathError::Nul(path.to_string())),
    }
}

/// Splits a request target into path and query, dropping any `#fragment` (clients should not
/// send one; Envoy strips it before routing).
pub fn split_path_query(path_and_query: &str) -> (&str, Option<&str>) {
    let without_fragment = path_and_query
        .split_once('#')
        .map_or(path_and_query, |(before, _)| before);
    match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        match normalize_path(p) {
            Ok(c) => c.into_owned(),
            Err(e) => panic!("{p:?}: {e}"),
        }
    }

    fn is_borrowed(p: &str) -> bool {
        matches!(normalize_path(p), Ok(Cow::Borrowed(_)))
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in [
            "/",
            "/api/v1/users",
            "/a//b",
            "/file.txt",
            "/a./b",
            "/.hidden",
            "/...",
            "/a/..b",
            "/~user/_x-y",
            "/a:b@c!$&'()*+,;=[]",
            "*",
            "/%2F",
            "/%2f/x",
        ] {
            assert!(is_borrowed(p), "{p}");
            assert_eq!(norm(p), p);
        }
    }

    #[test]
    fn dot_segments() {
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/a/../b"), "/b");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/a/b/../../c"), "/c");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/../../x"), "/x");
        assert_eq!(norm("/."), "/");
        assert_eq!(norm("/./"), "/");
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        assert_eq!(norm("/api/../admin"), "/admin");
        // Slashes are not merged, so an empty segment is a segment.
        assert_eq!(norm("/a//../b"), "/a/b");
    }

    #[test]
    fn encoded_dots_count_as_dots() {
        assert_eq!(norm("/a/%2e/b"), "/a/b");
        assert_eq!(norm("/a/%2E%2e/b"), "/b");
        assert_eq!(norm("/a/.%2E/b"), "/b");
        assert_eq!(norm("/%2e%2e"), "/");
        assert_eq!(norm("/x%2ey"), "/x.y");
        assert_eq!(norm("/%2e%2e%2fetc"), "/..%2fetc");
    }

    #[test]
    fn backslash_is_a_separator() {
        assert_eq!(norm("/a\\b"), "/a/b");
        assert_eq!(norm("/a\\..\\b"), "/b");
        assert_eq!(norm("/a/..\\b"), "/b");
        assert_eq!(norm("/a/%5c"), "/a/%5c");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept_verbatim() {
        assert_eq!(norm("/%41%62%7e%5F%2D%30"), "/Ab~_-0");
        assert_eq!(norm("/%7E"), "/~");
        assert_eq!(norm("/a%2fb"), "/a%2fb");
        assert_eq!(norm("/a%2Fb%3a"), "/a%2Fb%3a");
        assert_eq!(norm("/caf%c3%a9"), "/caf%c3%a9");
        assert_eq!(norm("/%25"), "/%25");
        assert!(is_borrowed("/caf%C3%A9"));
    }

    #[test]
    fn raw_unsafe_bytes_are_escaped_upper_case() {
        assert_eq!(norm("/a b"), "/a%20b");
        assert_eq!(norm("/café"), "/caf%C3%A9");
        assert_eq!(norm("/{x}|^`\"<>"), "/%7Bx%7D%7C%5E%60%22%3C%3E");
        assert_eq!(norm("/a\tb\x7f"), "/a%09b%7F");
    }

    #[test]
    fn malformed_escapes_pass_through_permissively() {
        assert_eq!(norm("/%"), "/%");
        assert_eq!(norm("/%zz"), "/%zz");
        assert_eq!(norm("/100%"), "/100%");
        assert_eq!(norm("/%4"), "/%4");
        assert!(is_borrowed("/%zz"));
    }

    #[test]
    fn nested_escapes_cannot_smuggle_a_second_decode() {
        assert_eq!(norm("/%%341"), "/%2541");
        assert_eq!(norm("/%4%31"), "/%2541");
        assert_eq!(norm("/%%34%31"), "/%2541");
        // Not a valid escape after unescaping: left alone.
        assert_eq!(norm("/%%34z"), "/%4z");
    }

    #[test]
    fn nul_fails_like_envoy() {
        assert_eq!(
            normalize_path("/a%00b"),
            Err(PathError::Nul("/a%00b".into()))
        );
        assert_eq!(normalize_path("/a\0b"), Err(PathError::Nul("/a\0b".into())));
    }

    #[test]
    fn must_be_origin_form() {
        for p in ["", "a/b", "http://x/y", "\\a", "**"] {
            assert_eq!(
                normalize_path(p),
                Err(PathError::NotAbsolute(p.into())),
                "{p}"
            );
        }
    }

    #[test]
    fn splitting_query_and_fragment() {
        assert_eq!(split_path_query("/a/b"), ("/a/b", None));
        assert_eq!(split_path_query("/a?x=1&y"), ("/a", Some("x=1&y")));
        assert_eq!(split_path_query("/a?"), ("/a", Some("")));
        assert_eq!(split_path_query("/a?x=1#frag"), ("/a", Some("x=1")));
        assert_eq!(split_path_query("/a#frag?x=1"), ("/a", None));
        assert_eq!(split_path_query("/a?x=?y"), ("/a", Some("x=?y")));
        assert_eq!(split_path_query(""), ("", None));
    }
}
