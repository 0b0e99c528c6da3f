//! Sticky subset choice: a user stays on their version for the whole rollout. Opt-in with
//! VirtualService annotations Istio ignores:
//!
//! - `switchyard.io/sticky: header:NAME | cookie:NAME | query:PARAM` — the key;
//! - `switchyard.io/sticky-salt: TEXT` — default: the route's identity, so two services'
//!   canaries do not pick the same users; a shared salt keeps one cohort on canary across a
//!   chain of services;
//! - `switchyard.io/sticky-canary: SUBSET` — with three or more destinations, the canary.
//!
//! The key is hashed with a fixed, seedless hash (FNV-1a: the same on every replica and after
//! restarts) into 10,000 buckets; the weights are scaled to integers summing to exactly
//! 10,000 and laid out so that raising a destination's weight only adds buckets to it. With
//! two destinations the first owns `[0, w0)` and the second `[w0, 10000)`, so the property
//! holds whichever is the canary; with more, the canary sits at the top. A request without
//! the key falls back to the independent random draw (Envoy's behaviour).

use http::HeaderMap;
use http::header::HeaderName;

use crate::config::{Diagnostic, Resources, Severity, codes};

pub const ANNOTATION: &str = "switchyard.io/sticky";
pub const SALT: &str = "switchyard.io/sticky-salt";
pub const CANARY: &str = "switchyard.io/sticky-canary";

/// Buckets a key hashes into.
pub const BUCKETS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

impl StickyKey {
    pub fn parse(text: &str) -> Result<StickyKey, String> {
        let (kind, name) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected header:NAME, cookie:NAME or query:PARAM"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("{text:?}: the name is empty"));
        }
        match kind.trim() {
            "header" => HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map(StickyKey::Header)
                .map_err(|_| format!("{text:?}: {name:?} is not a header name")),
            "cookie" => Ok(StickyKey::Cookie(name.to_string())),
            "query" => Ok(StickyKey::Query(name.to_string())),
            other => Err(format!(
                "{text:?}: unknown key kind {other:?}; use header:NAME, cookie:NAME or query:PARAM (source-ip is not supported yet)"
            )),
        }
    }

    /// The key's bytes in this request, if it carries one.
    fn find<'r>(&self, headers: &'r HeaderMap, query: Option<&'r str>) -> Option<&'r [u8]> {
        match self {
            StickyKey::Header(n) => headers.get(n).map(|v| v.as_bytes()),
            StickyKey::Query(name) => query?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v.as_bytes())
            }),
            StickyKey::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then_some(v.as_bytes())
                }),
        }
    }
}

/// FNV-1a, 64 bits: fixed, seedless, the same everywhere.
fn fnv(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A route's sticky layout: each destination's bucket interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    pub key: StickyKey,
    /// The hash state after the salt.
    salted: u64,
    /// `(start, end, entry index)`, ascending; together they cover `[0, BUCKETS)`.
    pub intervals: Box<[(u32, u32, usize)]>,
}

/// Raw weights scaled to integers summing to exactly `BUCKETS` (largest remainder).
pub fn scale(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        let mut v = vec![0; weights.len()];
        if let Some(first) = v.first_mut() {
            *first = BUCKETS;
        }
        return v;
    }
    let exact: Vec<(u32, u64)> = weights
        .iter()
        .map(|w| {
            let num = u64::from(*w) * u64::from(BUCKETS);
            ((num / total) as u32, num % total)
        })
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.0).collect();
    let mut short = BUCKETS - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i].1));
    for i in order {
        if short == 0 {
            break;
        }
        out[i] += 1;
        short -= 1;
    }
    out
}

impl Sticky {
    /// `canary`: the entry laid out at the top when there are three or more.
    pub fn new(key: StickyKey, salt: &str, weights: &[u32], canary: Option<usize>) -> Sticky {
        let scaled = scale(weights);
        let mut intervals = Vec::with_capacity(scaled.len());
        let n = scaled.len();
        let top = if n > 2 {
            canary.unwrap_or(n - 1)
        } else {
            n.saturating_sub(1)
        };
        let mut at = 0;
        for (i, w) in scaled.iter().enumerate() {
            if i != top {
                intervals.push((at, at + w, i));
                at += w;
            }
        }
        if n > 0 {
            intervals.push((at, BUCKETS, top));
        }
        Sticky {
            key,
            salted: fnv(FNV_OFFSET, salt.as_bytes()),
            intervals: intervals.into(),
        }
    }

    pub fn bucket_of(&self, key: &[u8]) -> u32 {
        (fnv(self.salted, key) % u64::from(BUCKETS)) as u32
    }

    /// The entry that owns `bucket`.
    pub fn owner(&self, bucket: u32) -> usize {
        self.intervals
            .iter()
            .find(|(s, e, _)| *s <= bucket && bucket < *e)
            .map_or(0, |x| x.2)
    }

    /// The entry for this request, or `None` when it carries no key (draw at random then).
    #[inline]
    pub fn pick(&self, headers: &HeaderMap, query: Option<&str>) -> Option<usize> {
        let key = self.key.find(headers, query)?;
        Some(self.owner(self.bucket_of(key)))
    }
}

/// `validate`: the annotations' syntax, with file:line.
pub fn check(res: &Resources) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for vs in &res.virtual_services {
        if let Some(text) = vs.meta.annotations.get(ANNOTATION)
            && let Err(e) = StickyKey::parse(text)
        {
            out.push(Diagnostic {
                severity: Severity::Error,
                code: codes::SCHEMA_VALIDATION_ERROR,
                file: vs.source.file.to_path_buf(),
                line: vs.source.line_of("metadata.annotations"),
                resource: vs.id(),
                field_path: format!("metadata.annotations[{ANNOTATION}]"),
                message: e,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StickyKey {
        StickyKey::Header(HeaderName::from_static("x-user-id"))
    }

    #[test]
    fn raising_a_weight_only_adds_users_whichever_is_listed_first() {
        let ramp = [0u32, 1, 5, 10, 25, 33, 50, 75, 99, 100];
        for canary_first in [false, true] {
            let layouts: Vec<Sticky> = ramp
                .iter()
                .map(|&c| {
                    let w = if canary_first {
                        [c, 100 - c]
                    } else {
                        [100 - c, c]
                    };
                    Sticky::new(key(), "salt", &w, None)
                })
                .collect();
            let canary = usize::from(!canary_first);
            for user in 0..20_000u32 {
                let id = format!("user-{user}");
                let b = layouts[0].bucket_of(id.as_bytes());
                let on: Vec<bool> = layouts.iter().map(|l| l.owner(b) == canary).collect();
                // Once on the canary, on it at every later (larger) weight; read backwards, a
                // stable user stays stable as the weight falls.
                if let Some(first) = on.iter().position(|x| *x) {
                    assert!(on[first..].iter().all(|x| *x), "{id}: {on:?}");
                }
            }
        }
    }

    #[test]
    fn envoys_hash_modulo_total_moves_canary_users_back_ours_does_not() {
        // Envoy's `hash % total` with weights stable:canary 3:1 then 7:3: a hash of 3 is
        // canary at 3:1 (3 % 4 = 3 >= 3) and stable at 7:3 (3 % 10 = 3 < 7).
        let envoy = |h: u64, stable: u64, canary: u64| h % (stable + canary) >= stable;
        assert!(envoy(3, 3, 1) && !envoy(3, 7, 3));
        // Ours at 25% then 30%: every canary user at 25% is still one at 30%.
        let a = Sticky::new(key(), "s", &[75, 25], None);
        let b = Sticky::new(key(), "s", &[70, 30], None);
        for bucket in 0..BUCKETS {
            if a.owner(bucket) == 1 {
                assert_eq!(b.owner(bucket), 1, "bucket {bucket}");
            }
        }
    }

    #[test]
    fn weights_scale_to_exactly_10000_and_three_way_keeps_the_canary_on_top() {
        assert_eq!(scale(&[1, 1, 1]).iter().sum::<u32>(), BUCKETS);
        assert_eq!(scale(&[95, 5]), [9500, 500]);
        let s = Sticky::new(key(), "s", &[50, 40, 10], Some(0));
        assert_eq!(s.intervals.last().map(|x| x.2), Some(0));
        assert_eq!(s.intervals.last().map(|x| x.0), Some(5000));
        assert!(StickyKey::parse("source-ip").is_err());
        assert!(StickyKey::parse("bogus:x").is_err());
        assert_eq!(
            StickyKey::parse("cookie:session"),
            Ok(StickyKey::Cookie("session".into()))
        );
    }
}
