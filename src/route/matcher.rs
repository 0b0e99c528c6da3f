//! Request matching with Envoy's semantics for what Istio's `HTTPMatchRequest` becomes.
//!
//! Sources: `envoy:source/common/http/header_utility.cc` (`matchHeaders`,
//! `getAllOfHeaderAsString`), `envoy:source/common/router/config_utility.cc`
//! (`QueryParameterMatcher`), `envoy:source/common/common/matchers.cc` (`PathMatcher`, which
//! strips the query before exact, prefix and regex path matches) and Istio's `route.go`
//! (`translateHeaderMatch`, `translateQueryParamMatch`).

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use memchr::memmem::Finder;
use regex::bytes::RegexBuilder;

/// Istio's `validateStringRegexp` limit (Go `len`, so bytes).
pub const MAX_REGEX_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex {pattern:?}: {message}")]
pub struct RegexError {
    pub pattern: String,
    pub message: String,
}

impl RegexError {
    fn new(pattern: &str, message: impl Into<String>) -> Self {
        Self {
            pattern: pattern.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid header name {name:?}: must be an RFC 7230 token")]
pub struct InvalidHeaderName {
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// RE2 dialect
// ---------------------------------------------------------------------------------------------

/// A compiled full-match RE2 pattern and the longest literal every match must contain.
///
/// A full match is an anchored search, and anchored searches skip the regex crate's literal
/// prefilters: `^(.*?;)?(user=dev\d+)(;.*)?$` would run its automaton over every cookie. A
/// memmem scan for `user=dev` first answers most non-matches in a few nanoseconds.
#[derive(Debug, Clone)]
pub struct Re2 {
    regex: regex::bytes::Regex,
    /// A literal every match starts with: `/api/v2/[a-z]+` rejects `/api/v5/...` with one
    /// comparison.
    prefix: Option<Box<[u8]>>,
    /// A literal every match contains, when it is not the prefix itself.
    required: Option<Box<Finder<'static>>>,
    /// The bytes a match can end with: `/api/v2/[a-z]+/\d+` rejects `/api/v2/items/42x` by
    /// its last byte.
    last: Option<ByteSet>,
}

/// A set of bytes, as a 256-bit map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert_range(&mut self, from: u8, to: u8) {
        for b in from..=to {
            self.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn union(mut self, other: ByteSet) -> ByteSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }
}

impl Re2 {
    pub fn is_match(&self, hay: &[u8]) -> bool {
        if let Some(p) = &self.prefix
            && !hay.starts_with(p)
        {
            return false;
        }
        if let Some(last) = &self.last
            && !hay.last().is_some_and(|&b| last.contains(b))
        {
            return false;
        }
        if let Some(lit) = &self.required
            && !contains(lit, hay)
        {
            return false;
        }
        self.regex.is_match(hay)
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// Whether `hay` contains the finder's needle. Header values and paths are mostly short, and
/// for those a scan for the needle's first byte beats setting up the vectorised search.
fn contains(finder: &Finder<'_>, hay: &[u8]) -> bool {
    let needle = finder.needle();
    if hay.len() >= 64 {
        return finder.find(hay).is_some();
    }
    let (&head, tail) = match needle.split_first() {
        Some(split) => split,
        None => return true,
    };
    let last_start = match hay.len().checked_sub(needle.len()) {
        Some(n) => n,
        None => return false,
    };
    memchr::memchr_iter(head, &hay[..=last_start]).any(|i| hay[i + 1..].starts_with(tail))
}

/// The longest literal on the mandatory spine of the pattern (concatenations and groups, not
/// alternations or optional parts). Case-insensitive literals are classes in the HIR, so they
/// never qualify.
fn required_literal(pattern: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::{Hir, HirKind};
    fn walk(h: &Hir, best: &mut Vec<u8>) {
        match h.kind() {
            HirKind::Literal(lit) if lit.0.len() > best.len() => *best = lit.0.to_vec(),
            HirKind::Capture(c) => walk(&c.sub, best),
            HirKind::Concat(parts) => parts.iter().for_each(|p| walk(p, best)),
            HirKind::Repetition(r) if r.min >= 1 => walk(&r.sub, best),
            _ => {}
        }
    }
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let mut best = Vec::new();
    walk(&hir, &mut best);
    // One byte is no cheaper to find than to run the automaton.
    (best.len() >= 2).then_some(best)
}

/// The literal the pattern's mandatory spine starts with, after the start anchor.
fn required_prefix(pattern: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::{Hir, HirKind};
    fn first(h: &Hir) -> Option<Vec<u8>> {
        match h.kind() {
            HirKind::Literal(lit) => Some(lit.0.to_vec()),
            HirKind::Capture(c) => first(&c.sub),
            HirKind::Concat(parts) => parts
                .iter()
                .find(|p| !matches!(p.kind(), HirKind::Look(_)))
                .and_then(first),
            HirKind::Repetition(r) if r.min >= 1 => first(&r.sub),
            _ => None,
        }
    }
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    first(&hir).filter(|p| !p.is_empty())
}

/// The bytes every match of the pattern can end with, when the end is not optional. A
/// Unicode class that reaches past ASCII adds every UTF-8 continuation byte, since a
/// multi-byte character ends with one.
fn last_bytes(pattern: &str) -> Option<ByteSet> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn last(h: &Hir) -> Option<ByteSet> {
        let mut set = ByteSet::default();
        match h.kind() {
            HirKind::Literal(lit) => set.insert_range(*lit.0.last()?, *lit.0.last()?),
            HirKind::Class(Class::Bytes(c)) => {
                for r in c.ranges() {
                    set.insert_range(r.start(), r.end());
                }
            }
            HirKind::Class(Class::Unicode(c)) => {
                for r in c.ranges() {
                    let ascii_end = u32::from(r.end()).min(0x7F);
                    if let (Ok(from), Ok(to)) = (u8::try_from(r.start()), u8::try_from(ascii_end))
                        && from <= to
                    {
                        set.insert_range(from, to);
                    }
                    if u32::from(r.end()) > 0x7F {
                        set.insert_range(0x80, 0xBF);
                    }
                }
            }
            HirKind::Capture(c) => return last(&c.sub),
            HirKind::Repetition(r) if r.min >= 1 => return last(&r.sub),
            HirKind::Concat(parts) => {
                let tail = parts
                    .iter()
                    .rev()
                    .find(|p| !matches!(p.kind(), HirKind::Look(_)))?;
                // An end that can be empty leaves the last byte to the parts before it.
                if tail.properties().minimum_len() == Some(0) {
                    return None;
                }
                return last(tail);
            }
            HirKind::Alternation(alts) => {
                return alts
                    .iter()
                    .try_fold(ByteSet::default(), |acc, a| Some(acc.union(last(a)?)));
            }
            _ => return None,
        }
        Some(set)
    }
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    if hir.properties().minimum_len() == Some(0) {
        return None;
    }
    last(&hir).filter(|set| *set != ByteSet([u64::MAX; 4]))
}

/// Compiles an RE2 pattern for a full match, as Envoy's `safe_regex` (RE2::FullMatch) does.
pub fn compile_re2(pattern: &str) -> Result<Re2, RegexError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(RegexError::new(
            pattern,
            format!(
                "pattern is {} bytes; at most {MAX_REGEX_LEN} are allowed",
                pattern.len()
            ),
        ));
    }
    let translated = translate_re2(pattern).map_err(|m| RegexError::new(pattern, m))?;
    let full = format!("^(?:{translated})$");
    let prefix = required_prefix(&full);
    let required = required_literal(&full)
        .filter(|lit| prefix.as_deref() != Some(lit.as_slice()))
        .map(|lit| Box::new(Finder::new(&lit).into_owned()));
    RegexBuilder::new(&full)
        .build()
        .map_err(|e| RegexError::new(pattern, e.to_string()))
        .map(|regex| Re2 {
            regex,
            prefix: prefix.map(Vec::into_boxed_slice),
            required,
            last: last_bytes(&full),
        })
}

const ASCII_DIGIT: &str = "0-9";
const ASCII_WORD: &str = "0-9A-Za-z_";
// RE2's \s is [\t\n\f\r ] — no \v, unlike the regex crate's ASCII \s.
const ASCII_SPACE: &str = r"\t\n\x0C\r ";

/// Rewrites the places where RE2 and the regex crate disagree on the same text:
/// - `\d \w \s \b` (and negations) are ASCII-only in RE2 but Unicode in the regex crate,
///   which is kept in Unicode mode so `.` still matches one UTF-8 character like RE2;
/// - `\Q...\E` literal quoting and octal escapes (`\0`, `\012`) exist only in RE2;
/// - inside `[...]`, the regex crate reads `[`, `&&`, `--` and `~~` as nested classes and set
///   operations, where RE2 sees plain characters;
/// - a `{` that does not start a valid repetition is a literal in RE2 and an error here.
///
/// Syntax RE2 rejects but the regex crate would accept (`\<`, `\>`, `\u`, the `x`, `u` and
/// `R` flags) is rejected, so config that Istio refuses is refused here too.
fn translate_re2(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    // RE2 (like Perl) rejects stacked repetition such as `a**` or `a{2}*`; the regex crate
    // would quietly accept it.
    let mut after_repeat = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let repeat_len = match c {
            '*' | '+' | '?' => Some(1),
            '{' => repetition_len(&chars, i),
            _ => None,
        };
        if let Some(len) = repeat_len {
            if after_repeat {
                let op: String = chars[i..i + len].iter().collect();
                return Err(format!(
                    "invalid nested repetition operator: {op} after a repetition"
                ));
            }
            out.extend(&chars[i..i + len]);
            i += len;
            // A trailing `?` makes the repetition non-greedy; it is part of the same operator.
            if chars.get(i) == Some(&'?') {
                out.push('?');
                i += 1;
            }
            after_repeat = true;
            continue;
        }
        after_repeat = false;
        match c {
            '\\' => i = translate_escape(&chars, i, false, &mut out)?,
            '[' => i = translate_class(&chars, i, &mut out)?,
            '{' => {
                out.push_str(r"\{");
                i += 1;
            }
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                i = translate_group_flags(&chars, i, &mut out)?;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `(?flags)` / `(?flags:` with Go's flags only; named groups pass through.
fn translate_group_flags(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let mut i = start + 2;
    match chars.get(i) {
        // (?P<name> and (?<name> are both RE2/Go syntax; lookbehind (?<= (?<! is left for the
        // regex crate to reject.
        Some('P' | '<') => {
            out.push_str("(?");
            return Ok(i);
        }
        Some('=' | '!') => return Err("lookaround is not supported by RE2".to_string()),
        _ => {}
    }
    while let Some(&c) = chars.get(i) {
        match c {
            ')' | ':' => {
                out.extend(&chars[start..=i]);
                return Ok(i + 1);
            }
            'i' | 'm' | 's' | 'U' | '-' => i += 1,
            other => {
                return Err(format!(
                    "invalid or unsupported Perl syntax: flag '{other}'"
                ));
            }
        }
    }
    Err("missing closing )".to_string())
}

/// Length of a valid RE2 repetition `{n}`, `{n,}` or `{n,m}` starting at `start`.
fn repetition_len(chars: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let digits = |i: &mut usize| {
        let from = *i;
        while chars.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if !digits(&mut i) {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (chars.get(i) == Some(&'}')).then(|| i + 1 - start)
}

/// Handles the escape at `chars[start] == '\\'`; returns the index after it.
fn translate_escape(
    chars: &[char],
    start: usize,
    in_class: bool,
    out: &mut String,
) -> Result<usize, String> {
    let Some(&c) = chars.get(start + 1) else {
        return Err("trailing backslash at end of expression".to_string());
    };
    let next = start + 2;
    let perl = |negated: bool, set: &str, out: &mut String| {
        // Inside a class a negated set needs the regex crate's nested-class syntax.
        match (in_class, negated) {
            (true, false) => out.push_str(set),
            (_, true) => {
                out.push_str("[^");
                out.push_str(set);
                out.push(']');
            }
            (false, false) => {
                out.push('[');
                out.push_str(set);
                out.push(']');
            }
        }
    };
    match c {
        'd' => perl(false, ASCII_DIGIT, out),
        'D' => perl(true, ASCII_DIGIT, out),
        'w' => perl(false, ASCII_WORD, out),
        'W' => perl(true, ASCII_WORD, out),
        's' => perl(false, ASCII_SPACE, out),
        'S' => perl(true, ASCII_SPACE, out),
        'b' | 'B' if !in_class => {
            out.push_str("(?-u:\\");
            out.push(c);
            out.push(')');
        }
        'Q' if !in_class => {
            let rest: String = chars[next..].iter().collect();
            let (literal, consumed) = match rest.find("\\E") {
                Some(end) => (&rest[..end], rest[..end].chars().count() + 2),
                None => (rest.as_str(), rest.chars().count()),
            };
            out.push_str(&regex::escape(literal));
            return Ok(next + consumed);
        }
        '<' | '>' | 'u' | 'U' => return Err(format!("invalid escape sequence: \\{c}")),
        '0'..='7' => return translate_octal(chars, start, out),
        'p' | 'P' | 'x' if chars.get(next) == Some(&'{') => {
            // Copy \p{Greek} / \x{263a} whole so the braces are not taken for a repetition.
            let close = chars[next..]
                .iter()
                .position(|&ch| ch == '}')
                .ok_or_else(|| format!("missing closing }} in \\{c}{{"))?;
            out.extend(&chars[start..=next + close]);
            return Ok(next + close + 1);
        }
        _ => {
            out.push('\\');
            out.push(c);
        }
    }
    Ok(next)
}

/// Go's octal escapes: `\0` plus up to two more octal digits, or `\1`-`\7` followed by at least
/// one more octal digit. A lone `\1`-`\7` is a backreference, which RE2 does not support.
fn translate_octal(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let is_octal = |i: usize| chars.get(i).is_some_and(|c| ('0'..='7').contains(c));
    let first = start + 1;
    if chars[first] != '0' && !is_octal(first + 1) {
        return Err(format!("backreference \\{} is not supported", chars[first]));
    }
    let mut end = first + 1;
    while end < first + 3 && is_octal(end) {
        end += 1;
    }
    let value = chars[first..end]
        .iter()
        .fold(0u32, |acc, c| acc * 8 + c.to_digit(8).unwrap_or(0));
    out.push_str(&format!("\\x{{{value:X}}}"));
    Ok(end)
}

/// Handles a class starting at `chars[start] == '['`; returns the index after its `]`.
fn translate_class(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    out.push('[');
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` right after `[` or `[^` is a literal in both dialects.
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    let mut prev_dash = false;
    while let Some(&c) = chars.get(i) {
        let dash = c == '-';
        match c {
            ']' => {
                out.push(']');
                return Ok(i + 1);
            }
            '\\' => i = translate_escape(chars, i, true, out)?,
            '[' => {
                if let Some(len) = posix_class_len(chars, i) {
                    out.extend(&chars[i..i + len]);
                    i += len;
                } else {
                    out.push_str(r"\[");
                    i += 1;
                }
            }
            '&' | '~' => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            '-' if prev_dash => {
                out.push_str(r"\-");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
        prev_dash = dash && !prev_dash;
    }
    Err("missing closing ]".to_string())
}

/// `[:alpha:]` / `[:^alpha:]` inside a class.
fn posix_class_len(chars: &[char], start: usize) -> Option<usize> {
    if chars.get(start + 1) != Some(&':') {
        return None;
    }
    let mut i = start + 2;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    let name_start = i;
    while chars.get(i).is_some_and(char::is_ascii_lowercase) {
        i += 1;
    }
    (i > name_start && chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&']'))
        .then(|| i + 2 - start)
}

// ---------------------------------------------------------------------------------------------
// String matchers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Already anchored for a full match; see [`compile_re2`].
    Regex(Re2),
    Present,
}

impl StringMatcher {
    pub fn exact(s: impl AsRef<[u8]>) -> Self {
        Self::Exact(s.as_ref().into())
    }

    pub fn prefix(s: impl AsRef<[u8]>) -> Self {
        Self::Prefix(s.as_ref().into())
    }

    pub fn regex(pattern: &str) -> Result<Self, RegexError> {
        compile_re2(pattern).map(Self::Regex)
    }

    /// Istio's `StringMatch` for headers, queryParams, method, scheme and authority: no match
    /// type, or `regex: "*"`, is a presence check (`IsCatchAllStringMatch`).
    pub fn from_istio(
        exact: Option<&str>,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<StringMatcher, RegexError> {
        if let Some(e) = exact {
            return Ok(Self::exact(e));
        }
        if let Some(p) = prefix {
            return Ok(Self::prefix(p));
        }
        match regex {
            None | Some("*") => Ok(Self::Present),
            Some("") => Err(RegexError::new("", "an empty regex is not allowed")),
            Some(r) => Self::regex(r),
        }
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(e) => value == &**e,
            Self::Prefix(p) => value.starts_with(p),
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
        }
    }
}

/// The RE2 pattern as compiled (after dialect translation), without the full-match anchors.
fn regex_source(r: &Re2) -> &str {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
}

fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

impl fmt::Display for StringMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(e) => write!(f, "exact {:?}", lossy(e)),
            Self::Prefix(p) => write!(f, "prefix {:?}", lossy(p)),
            Self::Regex(r) => write!(f, "regex {:?}", regex_source(r)),
            Self::Present => f.write_str("present"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// URI
// ---------------------------------------------------------------------------------------------

/// `match.uri`, compared with the normalised path without its query (Envoy's `PathMatcher`
/// strips the query for all three kinds, so `prefix: /foo` matches `/foo?x` and `/foobar`).
#[derive(Debug, Clone)]
pub enum UriMatcher {
    Exact {
        value: Box<str>,
        ignore_case: bool,
    },
    Prefix {
        value: Box<str>,
        ignore_case: bool,
    },
    /// `ignoreUriCase` has no effect on a regex (Istio); users write `(?i)`.
    Regex(Re2),
}

impl UriMatcher {
    pub fn exact(value: &str, ignore_case: bool) -> Self {
        Self::Exact {
            value: value.into(),
            ignore_case,
        }
    }

    pub fn prefix(value: &str, ignore_case: bool) -> Self {
        Self::Prefix {
            value: value.into(),
            ignore_case,
        }
    }

    pub fn regex(pattern: &str) -> Result<Self, RegexError> {
        compile_re2(pattern).map(Self::Regex)
    }

    /// Istio's translation of `match.uri`: with no match type set (`uri: {}`) Istio keeps the
    /// route's default path specifier, prefix `/` (`route.go` `TranslateRouteMatch`).
    pub fn from_istio(
        exact: Option<&str>,
        prefix: Option<&str>,
        regex: Option<&str>,
        ignore_case: bool,
    ) -> Result<Self, RegexError> {
        Ok(match (exact, prefix, regex) {
            (Some(e), _, _) => Self::exact(e, ignore_case),
            (None, Some(p), _) => Self::prefix(p, ignore_case),
            (None, None, Some("")) => {
                return Err(RegexError::new("", "an empty regex is not allowed"));
            }
            (None, None, Some(r)) => Self::regex(r)?,
            (None, None, None) => Self::prefix("/", ignore_case),
        })
    }

    /// ASCII case folding, as Envoy (`absl::EqualsIgnoreCase`); no allocation.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.as_bytes();
        match self {
            Self::Exact {
                value,
                ignore_case: false,
            } => path == value.as_bytes(),
            Self::Exact {
                value,
                ignore_case: true,
            } => path.eq_ignore_ascii_case(value.as_bytes()),
            Self::Prefix {
                value,
                ignore_case: false,
            } => path.starts_with(value.as_bytes()),
            Self::Prefix {
                value,
                ignore_case: true,
            } => path
                .get(..value.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(value.as_bytes())),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

impl fmt::Display for UriMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, value, ignore_case) = match self {
            Self::Exact { value, ignore_case } => ("exact", value, *ignore_case),
            Self::Prefix { value, ignore_case } => ("prefix", value, *ignore_case),
            Self::Regex(r) => return write!(f, "regex {:?}", regex_source(r)),
        };
        write!(f, "{kind} {value:?}")?;
        if ignore_case {
            f.write_str(" (ignoring case)")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// `headers.<name>` (`invert == false`) or `withoutHeaders.<name>` (`invert == true`).
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub matcher: StringMatcher,
    pub invert: bool,
    /// This name's place in a [`HeaderMemo`], given when the virtual host is built.
    pub slot: Option<u8>,
}

/// How many distinct header names of one virtual host are remembered per request; names past
/// these are looked up at each rule, as without a memo.
pub const MEMO_SLOTS: usize = 8;

/// The header values one request has for the names its virtual host's rules test, each looked
/// up at most once. Rules often test the same header (`x-user-group` exact `beta`, then
/// `alpha`, then a cookie regex and another): without it each rule scans the headers again.
pub struct HeaderMemo<'h> {
    known: u8,
    absent: u8,
    /// Repeated headers: joining them allocates, so they take the unmemoised path.
    repeated: u8,
    values: [&'h [u8]; MEMO_SLOTS],
}

impl Default for HeaderMemo<'_> {
    fn default() -> Self {
        Self {
            known: 0,
            absent: 0,
            repeated: 0,
            values: [&[]; MEMO_SLOTS],
        }
    }
}

/// One header's presence in a request, before any joining.
enum Lookup<'h> {
    Absent,
    One(&'h [u8]),
    Repeated,
}

/// Up to this many distinct header names, a header is found by scanning them.
const SCAN_HEADERS_UP_TO: usize = 12;

/// Envoy's `getAllOfHeaderAsString` over one header's values: repeated headers are joined
/// with ",". Only that case allocates.
fn join_values<'v, R>(
    mut values: impl Iterator<Item = &'v HeaderValue>,
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> R {
    let Some(first) = values.next() else {
        return f(None);
    };
    let Some(second) = values.next() else {
        return f(Some(first.as_bytes()));
    };
    let mut joined = Vec::with_capacity(first.len() + second.len() + 16);
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    f(Some(&joined))
}

impl HeaderMatcher {
    /// Lower-cases `name` (Istio accepts `Foo:` and matches it case-insensitively).
    pub fn new(
        name: &str,
        matcher: StringMatcher,
        invert: bool,
    ) -> Result<Self, InvalidHeaderName> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidHeaderName {
            name: name.to_string(),
        })?;
        Ok(Self {
            name,
            matcher,
            invert,
            slot: None,
        })
    }

    #[inline]
    fn lookup<'h>(&self, headers: &'h HeaderMap) -> Lookup<'h> {
        fn classify<'h>(mut values: impl Iterator<Item = &'h HeaderValue>) -> Lookup<'h> {
            match (values.next(), values.next()) {
                (None, _) => Lookup::Absent,
                (Some(v), None) => Lookup::One(v.as_bytes()),
                (Some(_), Some(_)) => Lookup::Repeated,
            }
        }
        if headers.keys_len() <= SCAN_HEADERS_UP_TO {
            classify(
                headers
                    .iter()
                    .filter(|(name, _)| *name == self.name)
                    .map(|(_, v)| v),
            )
        } else {
            classify(headers.get_all(&self.name).iter())
        }
    }

    /// Envoy's `getAllOfHeaderAsString`: repeated headers are joined with ",". Only that case
    /// allocates.
    fn with_value<R>(&self, headers: &HeaderMap, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match self.lookup(headers) {
            Lookup::Absent => f(None),
            Lookup::One(v) => f(Some(v)),
            Lookup::Repeated => join_values(headers.get_all(&self.name).iter(), f),
        }
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.with_value(headers, |value| self.decide(value))
    }

    /// `matches`, looking the header up only if no earlier rule of this virtual host did.
    #[inline]
    pub fn matches_memo<'h>(&self, headers: &'h HeaderMap, memo: &mut HeaderMemo<'h>) -> bool {
        let Some(slot) = self.slot.map(usize::from).filter(|&s| s < MEMO_SLOTS) else {
            return self.matches(headers);
        };
        let bit = 1u8 << slot;
        if memo.known & bit == 0 {
            memo.known |= bit;
            match self.lookup(headers) {
                Lookup::Absent => memo.absent |= bit,
                Lookup::One(v) => memo.values[slot] = v,
                Lookup::Repeated => memo.repeated |= bit,
            }
        }
        if memo.absent & bit != 0 {
            self.decide(None)
        } else if memo.repeated & bit != 0 {
            self.matches(headers)
        } else {
            self.decide(Some(memo.values[slot]))
        }
    }

    /// Envoy `matchHeaders` with Istio's settings: plain header matches never match a missing
    /// header; `withoutHeaders` is inverted with `treat_missing_header_as_empty`, except the
    /// presence form (`{}` / `regex: "*"`), which Istio emits as an inverted `present_match`
    /// without that flag and which therefore matches exactly when the header is absent.
    fn decide(&self, value: Option<&[u8]>) -> bool {
        match (value, self.invert) {
            (None, false) => false,
            (None, true) => match self.matcher {
                StringMatcher::Present => true,
                ref m => !m.matches(b""),
            },
            (Some(v), invert) => self.matcher.matches(v) != invert,
        }
    }

    fn describe_mismatch(&self, headers: &HeaderMap) -> Option<String> {
        self.with_value(headers, |value| {
            if self.decide(value) {
                return None;
            }
            let name = self.name.as_str();
            Some(match (value, self.invert) {
                (None, _) => format!("header {name:?} absent"),
                (Some(_), true) if matches!(self.matcher, StringMatcher::Present) => {
                    format!("withoutHeaders {name:?}: header is present")
                }
                (Some(v), true) => format!(
                    "withoutHeaders {name:?}: value {:?} matches {}",
                    lossy(v),
                    self.matcher
                ),
                (Some(v), false) => format!(
                    "header {name:?}: value {:?} does not match {}",
                    lossy(v),
                    self.matcher
                ),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// `queryParams.<name>`. Envoy parses the query with `QueryParamsMulti::parseQueryString`,
/// which does NOT percent-decode keys or values (`decode_params = false`), and matches only
/// the first value of a key (`getFirstValue`). Keys compare case-sensitively.
#[derive(Debug, Clone)]
pub struct QueryMatcher {
    pub name: Box<str>,
    pub matcher: StringMatcher,
}

impl QueryMatcher {
    pub fn new(name: &str, matcher: StringMatcher) -> Self {
        Self {
            name: name.into(),
            matcher,
        }
    }

    /// First value of the key in a raw query string: `k` alone gives `""`, and only the first
    /// `=` separates key from value.
    pub fn first_value<'q>(&self, query: Option<&'q str>) -> Option<&'q str> {
        query?
            .split('&')
            .find_map(|param| match param.split_once('=') {
                Some((k, v)) => (k == &*self.name).then_some(v),
                None => (param == &*self.name).then_some(""),
            })
    }

    pub fn matches(&self, query: Option<&str>) -> bool {
        self.first_value(query)
            .is_some_and(|v| self.matcher.matches(v.as_bytes()))
    }
}

// ---------------------------------------------------------------------------------------------
// Whole match block
// ---------------------------------------------------------------------------------------------

/// What a match block looks at, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// Raw Host / `:authority`, including any port.
    pub authority: &'a str,
    /// The port the request was addressed to; 80 if none.
    pub port: u16,
    /// Normalised, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A pseudo-header named in `headers`/`withoutHeaders`. Istio passes these to Envoy's header
/// matcher, which sees them on HTTP/1.1 requests too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pseudo {
    Method,
    /// The path with its query, as Envoy's `:path`.
    Path,
    Authority,
    Scheme,
}

impl Pseudo {
    pub fn from_name(name: &str) -> Option<Pseudo> {
        Some(match name {
            ":method" => Pseudo::Method,
            ":path" => Pseudo::Path,
            ":authority" => Pseudo::Authority,
            ":scheme" => Pseudo::Scheme,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Path => ":path",
            Pseudo::Authority => ":authority",
            Pseudo::Scheme => ":scheme",
        }
    }
}

/// A header condition on a pseudo-header: always present, so `withoutHeaders` is a plain
/// negation.
#[derive(Debug, Clone)]
pub struct PseudoMatcher {
    pub which: Pseudo,
    pub matcher: StringMatcher,
    pub invert: bool,
}

impl PseudoMatcher {
    fn with_value<R>(&self, req: &RequestView, f: impl FnOnce(&[u8]) -> R) -> R {
        match self.which {
            Pseudo::Method => f(req.method.as_bytes()),
            Pseudo::Authority => f(req.authority.as_bytes()),
            Pseudo::Scheme => f(req.scheme.as_bytes()),
            Pseudo::Path => match req.query {
                None => f(req.path.as_bytes()),
                // Only configs that match on `:path` pay for the joined copy.
                Some(q) => f(format!("{}?{q}", req.path).as_bytes()),
            },
        }
    }

    fn matches(&self, req: &RequestView) -> bool {
        self.with_value(req, |v| self.matcher.matches(v) != self.invert)
    }

    fn describe_mismatch(&self, req: &RequestView) -> Option<String> {
        self.with_value(req, |v| {
            if self.matcher.matches(v) != self.invert {
                return None;
            }
            let name = self.which.name();
            Some(if self.invert {
                format!(
                    "withoutHeaders {name:?}: value {:?} matches {}",
                    lossy(v),
                    self.matcher
                )
            } else {
                format!(
                    "header {name:?}: value {:?} does not match {}",
                    lossy(v),
                    self.matcher
                )
            })
        })
    }
}

/// One Istio `HTTPMatchRequest`: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub uri: Option<UriMatcher>,
    pub scheme: Option<StringMatcher>,
    pub method: Option<StringMatcher>,
    pub authority: Option<StringMatcher>,
    pub headers: Vec<HeaderMatcher>,
    pub without_headers: Vec<HeaderMatcher>,
    /// `headers`/`withoutHeaders` conditions on `:method`, `:path`, `:authority`, `:scheme`.
    pub pseudo: Vec<PseudoMatcher>,
    pub query: Vec<QueryMatcher>,
    pub port: Option<u16>,
}

impl RequestMatch {
    /// Cheap comparisons first; allocates only for repeated headers.
    pub fn matches(&self, req: &RequestView) -> bool {
        self.matches_memo(req, &mut HeaderMemo::default())
    }

    /// `matches` for one of a virtual host's routes, sharing header lookups with the others.
    pub fn matches_memo<'h>(&self, req: &RequestView<'h>, memo: &mut HeaderMemo<'h>) -> bool {
        self.port.is_none_or(|p| p == req.port)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(req.method.as_bytes()))
            && self.uri.as_ref().is_none_or(|u| u.matches(req.path))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(req.scheme.as_bytes()))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority.as_bytes()))
            && self
                .headers
                .iter()
                .chain(&self.without_headers)
                .all(|h| h.matches_memo(req.headers, memo))
            && self.pseudo.iter().all(|p| p.matches(req))
            && self.query.iter().all(|q| q.matches(req.query))
    }

    /// Gives a [`HeaderMemo`] slot to each header name that more than one condition of these
    /// routes tests; a name tested once gains nothing from remembering it.
    pub fn assign_memo_slots(matches: &mut [&mut RequestMatch]) {
        let mut uses: Vec<(HeaderName, usize)> = Vec::new();
        for h in matches
            .iter()
            .flat_map(|m| m.headers.iter().chain(&m.without_headers))
        {
            match uses.iter_mut().find(|(n, _)| *n == h.name) {
                Some((_, count)) => *count += 1,
                None => uses.push((h.name.clone(), 1)),
            }
        }
        uses.retain(|(_, count)| *count > 1);
        for m in matches.iter_mut() {
            for h in m.headers.iter_mut().chain(&mut m.without_headers) {
                h.slot = uses
                    .iter()
                    .position(|(n, _)| *n == h.name)
                    .and_then(|i| u8::try_from(i).ok())
                    .filter(|&s| usize::from(s) < MEMO_SLOTS);
            }
        }
    }

    /// The first condition that fails, in the order `matches` checks them, for `explain`.
    pub fn first_mismatch(&self, req: &RequestView) -> Option<String> {
        if let Some(p) = self.port
            && p != req.port
        {
            return Some(format!("port {} does not match {p}", req.port));
        }
        let pseudo = |what: &str, matcher: &Option<StringMatcher>, value: &str| {
            matcher
                .as_ref()
                .filter(|m| !m.matches(value.as_bytes()))
                .map(|m| format!("{what} {value:?} does not match {m}"))
        };
        if let Some(why) = pseudo("method", &self.method, req.method) {
            return Some(why);
        }
        if let Some(u) = &self.uri
            && !u.matches(req.path)
        {
            return Some(format!("uri {:?} does not match {u}", req.path));
        }
        if let Some(why) = pseudo("scheme", &self.scheme, req.scheme)
            .or_else(|| pseudo("authority", &self.authority, req.authority))
        {
            return Some(why);
        }
        for h in self.headers.iter().chain(&self.without_headers) {
            if let Some(why) = h.describe_mismatch(req.headers) {
                return Some(why);
            }
        }
        if let Some(why) = self.pseudo.iter().find_map(|p| p.describe_mismatch(req)) {
            return Some(why);
        }
        for q in &self.query {
            match q.first_value(req.query) {
                None => return Some(format!("query parameter {:?} absent", q.name)),
                Some(v) if !q.matcher.matches(v.as_bytes()) => {
                    return Some(format!(
                        "query parameter {:?}: value {v:?} does not match {}",
                        q.name, q.matcher
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn memoised_header_lookups_decide_as_fresh_ones() {
        let block = |headers: Vec<HeaderMatcher>, without: Vec<HeaderMatcher>| RequestMatch {
            headers,
            without_headers: without,
            ..Default::default()
        };
        let h = |name: &str, m: StringMatcher| HeaderMatcher::new(name, m, false).unwrap();
        let w = |name: &str, m: StringMatcher| HeaderMatcher::new(name, m, true).unwrap();
        let mut blocks = [
            block(
                vec![h("x-user-group", StringMatcher::exact("beta"))],
                vec![],
            ),
            block(
                vec![h("x-user-group", StringMatcher::exact("alpha"))],
                vec![],
            ),
            block(vec![h("cookie", re(".*user=dev.*"))], vec![]),
            block(vec![], vec![w("x-user-group", StringMatcher::Present)]),
            block(vec![h("cookie", StringMatcher::Present)], vec![]),
            block(
                vec![h("x-once", StringMatcher::Present)],
                vec![w("x-user-group", StringMatcher::exact("a,b"))],
            ),
        ];
        RequestMatch::assign_memo_slots(&mut blocks.iter_mut().collect::<Vec<_>>());
        let slot = |b: usize, i: usize| {
            blocks[b]
                .headers
                .iter()
                .chain(&blocks[b].without_headers)
                .nth(i)
                .and_then(|m| m.slot)
        };
        assert_eq!(
            (slot(0, 0), slot(2, 0), slot(3, 0)),
            (Some(0), Some(1), Some(0))
        );
        assert_eq!(slot(5, 0), None, "a name tested once has no slot");
        for headers in [
            hm(&[]),
            hm(&[("x-user-group", "beta")]),
            hm(&[("x-user-group", "alpha"), ("cookie", "a=1; user=dev7")]),
            hm(&[("x-user-group", "a"), ("x-user-group", "b"), ("x-once", "")]),
            hm(&[("cookie", ""), ("x-user-group", "")]),
        ] {
            let req = view("/", None, &headers);
            let mut memo = HeaderMemo::default();
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(
                    b.matches_memo(&req, &mut memo),
                    b.matches(&req),
                    "block {i} on {headers:?}"
                );
            }
        }
    }

    #[test]
    fn prefix_and_short_haystack_prefilters_agree_with_the_regex() {
        assert_eq!(
            required_prefix("^(?:/api/v2/[a-z]+)$").as_deref(),
            Some(&b"/api/v2/"[..])
        );
        assert_eq!(
            required_prefix("^(?:(abc)+d)$").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(required_prefix("^(?:a|ab)$"), None);
        assert_eq!(required_prefix("^(?:(abc)*d)$"), None);
        assert_eq!(required_prefix("^(?:(?i)abc)$"), None);
        let digits = last_bytes(r"^(?:/api/v2/[a-z]+/[0-9]+)$").expect("a last-byte set");
        assert!(digits.contains(b'7') && !digits.contains(b'x') && !digits.contains(0xBF));
        for optional_end in [r"^(?:a(;.*)?)$", "^(?:ab*)$", "^(?:a|)$", "^(?:.*)$"] {
            assert_eq!(last_bytes(optional_end), None, "{optional_end}");
        }
        for (pattern, hay) in [
            ("/api/v2/[a-z]+/\\d+", "/api/v2/items/42"),
            ("/api/v2/[a-z]+/\\d+", "/api/v2/items/42x"),
            ("/api/v2/[a-z]+/\\d+", ""),
            ("caf.", "café"),
            ("caf.", "cafe"),
            ("x[^a]", "xé"),
            ("(?i)k", "\u{212A}"),
            ("(?i)K", "k"),
            ("(ab|c\\d)", "c5"),
            ("(ab|c\\d)", "ab"),
            ("(ab|c\\d)", "ac"),
            ("a(b)+", "abbb"),
            ("a$", "a"),
            ("\\x{263a}", "\u{263a}"),
            ("/api/v2/[a-z]+", "/api/v2/abc"),
            ("/api/v2/[a-z]+", "/api/v5/abc"),
            ("/api/v2/[a-z]+", "x/api/v2/abc"),
            ("(abc)+d", "abcabcd"),
            ("(abc)+d", "abd"),
            ("(?i)abc", "ABC"),
            (r"^(.*?;)?(user=dev\d+)(;.*)?$", "a=1; user=dev42; b=2"),
            (r"^(.*?;)?(user=dev\d+)(;.*)?$", "a=1; user=de"),
            (r"^(.*?;)?(user=dev\d+)(;.*)?$", "uuser=dev7"),
            (
                r"(.*;)?user=dev\d+",
                &format!("{};user=dev1", "x".repeat(100)),
            ),
            (
                r"(.*;)?user=dev\d+",
                &format!("{};user=de", "x".repeat(100)),
            ),
        ] {
            let ours = compile_re2(pattern).expect("compiles");
            let plain = regex::bytes::Regex::new(&format!(
                "^(?:{})$",
                translate_re2(pattern).expect("translates")
            ))
            .expect("plain");
            assert_eq!(
                ours.is_match(hay.as_bytes()),
                plain.is_match(hay.as_bytes()),
                "{pattern} on {hay}"
            );
        }
    }

    #[test]
    fn required_literal_is_taken_from_the_mandatory_spine_only() {
        let lit = |p: &str| {
            required_literal(&format!("^(?:{p})$")).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            lit(r"^(.*?;)?(user=dev-1\d+)(;.*)?$").as_deref(),
            Some("user=dev-1")
        );
        assert_eq!(lit(r"/api/v2/[a-z]+/\d+").as_deref(), Some("/api/v2/"));
        // Alternations and optional parts promise nothing.
        assert_eq!(lit("abc|xyz"), None);
        assert_eq!(lit("(abcdef)?x"), None);
        assert_eq!(lit("(?:abcdef)*"), None);
        // Case-insensitive letters are classes; the literal keeps only caseless bytes.
        assert_eq!(lit("(?i)token=12").as_deref(), Some("=12"));
        assert_eq!(lit("x"), None);
    }

    #[test]
    fn the_literal_prefilter_never_changes_an_answer() {
        let patterns = [
            r"^(.*?;)?(user=dev-1\d+)(;.*)?$",
            r"/api/v2/[a-z]+/\d+",
            "(?i)token=12",
            "(ab)+cd",
            "a(bc|de)fg",
        ];
        let inputs = [
            "",
            "user=dev-12",
            "a=b; user=dev-17; c=d",
            "user=dev-x",
            "/api/v2/items/42",
            "/api/v2/items/42x",
            "TOKEN=12",
            "token=13",
            "ababcd",
            "cd",
            "abcfg",
            "adefg",
        ];
        for p in patterns {
            let ours = compile_re2(p).unwrap();
            let plain = regex::bytes::Regex::new(&format!("^(?:{p})$")).unwrap();
            for i in inputs {
                assert_eq!(
                    ours.is_match(i.as_bytes()),
                    plain.is_match(i.as_bytes()),
                    "{p} on {i:?}"
                );
            }
        }
    }

    fn re(p: &str) -> StringMatcher {
        match StringMatcher::regex(p) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            scheme: "http",
            authority: "reviews:9080",
            port: 9080,
            path,
            query,
            headers,
        }
    }

    // --- RE2 dialect ---------------------------------------------------------------------

    #[test]
    fn regex_is_a_full_match() {
        let m = re(r"\d+$");
        assert!(m.matches(b"123"));
        assert!(!m.matches(b"a123"));
        assert!(!m.matches(b"123a"));
        assert!(!m.matches(b""));
        // Alternation stays inside the anchors.
        let alt = re("a|b");
        assert!(alt.matches(b"a") && alt.matches(b"b"));
        assert!(!alt.matches(b"ab"));
        assert!(re(".*").matches(b""));
    }

    #[test]
    fn perl_classes_are_ascii_like_re2() {
        let d = re(r"\d");
        assert!(d.matches(b"7"));
        assert!(!d.matches("٣".as_bytes()), "Arabic-Indic digit");
        assert!(re(r"\D").matches("٣".as_bytes()));
        assert!(!re(r"\w").matches("é".as_bytes()));
        assert!(re(r"\W").matches("é".as_bytes()));
        assert!(re(r"\w+").matches(b"abc_XYZ_09"));
        assert!(!re(r"\s").matches("\u{a0}".as_bytes()));
        assert!(!re(r"\s").matches(b"\x0b"), "RE2's \\s has no \\v");
        assert!(re(r"\s").matches(b"\x0c"));
        assert!(re(r"\S").matches("\u{a0}".as_bytes()));
        // \b is an ASCII word boundary: é is not a word character in RE2.
        assert!(re(r".*\bx\b.*").matches("éxé".as_bytes()));
        assert!(!re(r".*\Bx.*").matches("éx".as_bytes()));
    }

    #[test]
    fn perl_classes_inside_brackets() {
        let m = re(r"[\d\s]+");
        assert!(m.matches(b"1 2\t3"));
        assert!(!m.matches("٣".as_bytes()));
        let neg = re(r"[^\d]+");
        assert!(neg.matches(b"ab") && !neg.matches(b"a1"));
        let nested = re(r"[a\D]");
        assert!(nested.matches(b"x") && nested.matches(b"a") && !nested.matches(b"5"));
        assert!(re(r"[\w-]+").matches(b"a-b_c"));
    }

    #[test]
    fn dot_matches_one_utf8_character() {
        assert!(re("caf.").matches("café".as_bytes()));
        assert!(re("^.$").matches("é".as_bytes()));
        assert!(!re("..").matches("é".as_bytes()));
        assert!(!re(".").matches(b"\n"));
    }

    #[test]
    fn flags_and_case_folding() {
        let m = re("(?i)beta");
        assert!(m.matches(b"BeTa"));
        assert!(re("(?i:ab)c").matches(b"ABc"));
        assert!(!re("(?i:ab)c").matches(b"ABC"));
        assert!(re("(?s).").matches(b"\n"));
        for bad in ["(?x)a b", "(?u)a", "(?R)a", "(?=a)", "(?!a)"] {
            assert!(StringMatcher::regex(bad).is_err(), "{bad}");
        }
        assert!(re("(?P<n>a)(?<m>b)").matches(b"ab"));
    }

    #[test]
    fn escaping_is_respected() {
        let m = re(r"\\d");
        assert!(m.matches(br"\d"));
        assert!(!m.matches(b"5"));
        assert!(re(r"\\\d").matches(br"\5"));
        assert!(re(r"a\.b").matches(b"a.b") && !re(r"a\.b").matches(b"axb"));
        assert!(re(r"[\]a]+").matches(b"]a]"));
        assert!(re(r"\x41\x{42}\p{Greek}").matches("ABλ".as_bytes()));
    }

    #[test]
    fn re2_only_syntax_is_translated() {
        assert!(re(r"\Qa.b*\Ec").matches(b"a.b*c"));
        assert!(!re(r"\Qa.b\E").matches(b"axb"));
        assert!(re(r"x\Q[unterminated").matches(b"x[unterminated"));
        assert!(re(r"\0").matches(b"\0"));
        assert!(re(r"\101\12").matches(b"A\n"));
        assert!(StringMatcher::regex(r"(a)\1").is_err());
        // In a class, RE2 reads these as plain characters, not set operations or nesting.
        let set = re(r"[a&&b]+");
        assert!(set.matches(b"a&b"));
        assert!(re(r"[~~x]").matches(b"~"));
        assert!(re(r"[+--]").matches(b",")); // range '+'..'-'
        assert!(re(r"[[]").matches(b"["));
        assert!(re(r"[[:alpha:]]+").matches(b"abC") && !re(r"[[:alpha:]]").matches(b"1"));
        // A brace that is not a repetition is a literal.
        assert!(re(r"a{").matches(b"a{"));
        assert!(re(r"{x}").matches(b"{x}"));
        assert!(re(r"a{,2}").matches(b"a{,2}"));
        assert!(re(r"a{2}").matches(b"aa") && !re(r"a{2}").matches(b"a{2}"));
        assert!(re(r"a{1,}b{0,1}").matches(b"aaab"));
    }

    #[test]
    fn rejects_non_re2_and_bad_patterns_with_context() {
        for bad in [
            r"\<a", r"a\>", r"\u0041", r"(", r"[a", r"a\", "a**", "a*??", "a{2}*", "a+{2}",
        ] {
            let err = StringMatcher::regex(bad).unwrap_err();
            assert_eq!(err.pattern, bad);
            assert!(err.to_string().starts_with("invalid regex"), "{err}");
        }
        let long = "a".repeat(MAX_REGEX_LEN + 1);
        let err = StringMatcher::regex(&long).unwrap_err();
        assert!(err.message.contains("1025 bytes"), "{}", err.message);
        assert!(StringMatcher::regex(&"a".repeat(MAX_REGEX_LEN)).is_ok());
    }

    #[test]
    fn istio_string_match_forms() {
        assert!(matches!(
            StringMatcher::from_istio(None, None, None),
            Ok(StringMatcher::Present)
        ));
        assert!(matches!(
            StringMatcher::from_istio(None, None, Some("*")),
            Ok(StringMatcher::Present)
        ));
        assert!(StringMatcher::from_istio(None, None, Some("")).is_err());
        let e = StringMatcher::from_istio(Some("v1"), None, None).unwrap();
        assert!(e.matches(b"v1") && !e.matches(b"v10") && !e.matches(b"V1"));
        let p = StringMatcher::from_istio(None, Some("v1"), None).unwrap();
        assert!(p.matches(b"v10") && !p.matches(b"v"));
        assert_eq!(re(r"\d+").to_string(), "regex \"[0-9]+\"");
        assert_eq!(e.to_string(), "exact \"v1\"");
    }

    // --- URI ------------------------------------------------------------------------------

    #[test]
    fn uri_prefix_is_a_plain_string_prefix() {
        let m = UriMatcher::prefix("/foo", false);
        assert!(m.matches("/foo"));
        assert!(m.matches("/foobar"));
        assert!(m.matches("/foo/x"));
        assert!(!m.matches("/fo"));
        assert!(!m.matches("/FOO"));
        assert!(UriMatcher::prefix("", false).matches("/anything"));
    }

    #[test]
    fn ignore_uri_case_applies_to_exact_and_prefix_only() {
        assert!(UriMatcher::exact("/Foo", true).matches("/fOO"));
        assert!(!UriMatcher::exact("/Foo", false).matches("/fOO"));
        assert!(!UriMatcher::exact("/Foo", true).matches("/fOO/"));
        assert!(UriMatcher::prefix("/API", true).matches("/api/v1"));
        assert!(!UriMatcher::prefix("/API/", true).matches("/api"));
        let r = UriMatcher::from_istio(None, None, Some("/api/.*"), true).unwrap();

        assert!(r.matches("/api/x"));
        assert!(!r.matches("/API/x"), "ignoreUriCase must not affect regex");
        // Non-ASCII is compared byte for byte even when ignoring case.
        assert!(!UriMatcher::exact("/É", true).matches("/é"));
        let any = UriMatcher::from_istio(None, None, None, true).unwrap();
        assert!(any.matches("/") && any.matches("/x/y"));
        assert!(UriMatcher::from_istio(None, None, Some(""), false).is_err());
        assert_eq!(
            UriMatcher::prefix("/api", true).to_string(),
            "prefix \"/api\" (ignoring case)"
        );
    }

    // --- headers ----------------------------------------------------------------------------

    #[test]
    fn header_names_are_case_insensitive_tokens() {
        let h = HeaderMatcher::new("X-User-Group", StringMatcher::exact("beta"), false).unwrap();
        assert_eq!(h.name.as_str(), "x-user-group");
        assert!(h.matches(&hm(&[("x-user-group", "beta")])));
        assert!(HeaderMatcher::new("bad header", StringMatcher::Present, false).is_err());
        assert!(HeaderMatcher::new("", StringMatcher::Present, false).is_err());
        assert!(HeaderMatcher::new("x:y", StringMatcher::Present, false).is_err());
        assert!(HeaderMatcher::new("!#$%&'*+-.^_`|~0aZ", StringMatcher::Present, false).is_ok());
    }

    #[test]
    fn repeated_header_values_are_joined_with_commas() {
        let h = hm(&[("x-tag", "a"), ("x-tag", "b"), ("x-tag", "c")]);
        let m = HeaderMatcher::new("x-tag", re("a,b,c"), false).unwrap();
        assert!(m.matches(&h));
        let two = hm(&[("x-tag", "a"), ("x-tag", "b")]);
        assert!(
            HeaderMatcher::new("x-tag", re("a,b"), false)
                .unwrap()
                .matches(&two)
        );
        assert!(
            !HeaderMatcher::new("x-tag", StringMatcher::exact("a"), false)
                .unwrap()
                .matches(&two)
        );
        assert!(
            HeaderMatcher::new("x-tag", StringMatcher::prefix("a,"), false)
                .unwrap()
                .matches(&two)
        );
    }

    #[test]
    fn missing_header_never_matches_plain_matchers() {
        let empty = HeaderMap::new();
        for m in [
            StringMatcher::exact(""),
            StringMatcher::Present,
            re(".*"),
            StringMatcher::prefix(""),
        ] {
            assert!(!HeaderMatcher::new("x", m, false).unwrap().matches(&empty));
        }
        // Present matches an empty value.
        let h = hm(&[("x", "")]);
        assert!(
            HeaderMatcher::new("x", StringMatcher::Present, false)
                .unwrap()
                .matches(&h)
        );
        assert!(
            HeaderMatcher::new("x", StringMatcher::exact(""), false)
                .unwrap()
                .matches(&h)
        );
    }

    #[test]
    fn without_headers_semantics() {
        let absent = HeaderMap::new();
        let a = hm(&[("x", "a")]);
        let b = hm(&[("x", "b")]);
        let without = |m| HeaderMatcher::new("x", m, true).unwrap();

        let exact_a = without(StringMatcher::exact("a"));
        assert!(
            exact_a.matches(&absent),
            "absent is treated as \"\", which is not \"a\""
        );
        assert!(!exact_a.matches(&a));
        assert!(exact_a.matches(&b));

        // Missing is "" and "" matches exact "", so the inverted match fails.
        assert!(!without(StringMatcher::exact("")).matches(&absent));
        assert!(!without(re(".*")).matches(&absent));
        assert!(without(re("a+")).matches(&absent));

        let present = without(StringMatcher::Present);
        assert!(present.matches(&absent));
        assert!(!present.matches(&a));
        assert!(!present.matches(&hm(&[("x", "")])));
    }

    // --- query ------------------------------------------------------------------------------

    #[test]
    fn query_uses_the_first_raw_value() {
        let m = QueryMatcher::new("id", StringMatcher::exact("1"));
        assert!(m.matches(Some("id=1&id=2")));
        assert!(!m.matches(Some("id=2&id=1")));
        assert!(!m.matches(Some("x=1")));
        assert!(!m.matches(None));
        assert!(m.matches(Some("a=b&id=1")));
        // Not percent-decoded, and keys are case-sensitive.
        let sp = QueryMatcher::new("q", StringMatcher::exact("a b"));
        assert!(!sp.matches(Some("q=a%20b")));
        assert!(QueryMatcher::new("q", StringMatcher::exact("a%20b")).matches(Some("q=a%20b")));
        assert!(!m.matches(Some("ID=1")));
        assert!(!m.matches(Some("i%64=1")));
        // Only the first '=' splits.
        assert_eq!(
            QueryMatcher::new("k", StringMatcher::Present).first_value(Some("k=a=b")),
            Some("a=b")
        );
    }

    #[test]
    fn query_key_without_value_is_empty() {
        let m = QueryMatcher::new("debug", StringMatcher::exact(""));
        assert!(m.matches(Some("debug")));
        assert!(m.matches(Some("x=1&debug&y")));
        assert!(m.matches(Some("debug=")));
        assert!(QueryMatcher::new("debug", StringMatcher::Present).matches(Some("debug")));
        assert!(!QueryMatcher::new("debug", StringMatcher::Present).matches(Some("debugger=1")));
        let digits = QueryMatcher::new("n", re(r"\d+$"));
        assert!(digits.matches(Some("n=123")) && !digits.matches(Some("n=a123")));
    }

    // --- whole block ------------------------------------------------------------------------

    #[test]
    fn all_conditions_must_hold_and_mismatch_is_explained() {
        let headers = hm(&[("x-user-group", "alpha")]);
        let mut m = RequestMatch {
            uri: Some(UriMatcher::prefix("/api", false)),
            headers: vec![
                HeaderMatcher::new("x-user-group", StringMatcher::exact("beta"), false).unwrap(),
            ],
            ..Default::default()
        };
        assert!(RequestMatch::default().matches(&view("/x", None, &headers)));
        assert_eq!(
            RequestMatch::default().first_mismatch(&view("/x", None, &headers)),
            None
        );

        let req = view("/api/v1", None, &headers);
        assert!(!m.matches(&req));
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some(r#"header "x-user-group": value "alpha" does not match exact "beta""#)
        );
        assert_eq!(
            m.first_mismatch(&view("/foo", None, &headers)).as_deref(),
            Some(r#"uri "/foo" does not match prefix "/api""#)
        );
        let none = HeaderMap::new();
        assert_eq!(
            m.first_mismatch(&view("/api", None, &none)).as_deref(),
            Some(r#"header "x-user-group" absent"#)
        );

        m.headers =
            vec![HeaderMatcher::new("x-user-group", StringMatcher::exact("alpha"), false).unwrap()];
        assert!(m.matches(&req));
        assert_eq!(m.first_mismatch(&req), None);

        m.port = Some(8080);
        assert!(!m.matches(&req));
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some("port 9080 does not match 8080")
        );
        m.port = Some(9080);

        m.method = Some(StringMatcher::exact("POST"));
        assert!(!m.matches(&req));
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some(r#"method "GET" does not match exact "POST""#)
        );
        m.method = Some(StringMatcher::exact("GET"));

        m.authority = Some(StringMatcher::exact("reviews"));
        assert!(!m.matches(&req), "authority includes the port");
        m.authority = Some(StringMatcher::prefix("reviews:"));
        m.scheme = Some(StringMatcher::exact("http"));
        assert!(m.matches(&req));

        m.without_headers =
            vec![HeaderMatcher::new("x-user-group", StringMatcher::Present, true).unwrap()];
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some(r#"withoutHeaders "x-user-group": header is present"#)
        );
        m.without_headers =
            vec![HeaderMatcher::new("x-user-group", StringMatcher::exact("alpha"), true).unwrap()];
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some(r#"withoutHeaders "x-user-group": value "alpha" matches exact "alpha""#)
        );
        m.without_headers.clear();

        m.query = vec![QueryMatcher::new("v", StringMatcher::exact("2"))];
        assert_eq!(
            m.first_mismatch(&req).as_deref(),
            Some(r#"query parameter "v" absent"#)
        );
        let q = view("/api/v1", Some("v=1"), &headers);
        assert!(!m.matches(&q));
        assert_eq!(
            m.first_mismatch(&q).as_deref(),
            Some(r#"query parameter "v": value "1" does not match exact "2""#)
        );
        let q2 = view("/api/v1", Some("v=2"), &headers);
        assert!(m.matches(&q2));
        assert_eq!(m.first_mismatch(&q2), None);
    }
}
