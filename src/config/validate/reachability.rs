//! Rules and match blocks that can never be the ones that apply (`IST0130`, `IST0131`).
//!
//! The codes are istioctl's: `IST0130` only for a rule after a rule without matches, or whose
//! every match block repeats an earlier one exactly (Istio's `analyzeUnreachableHTTPRules`);
//! `IST0131` for one match block an earlier one makes useless. Istio decides "useless" beyond
//! exact repeats only for uri prefixes with the same count of other conditions; here an earlier
//! block covers a later one whenever each of its conditions is implied by the later block's
//! ([`covers`]), decided exactly or not claimed at all.

use std::collections::BTreeMap;

use super::super::istio::{Bool, HttpMatchRequest, Int, Opaque, StringMatch};
use super::super::{Severity, VirtualService, codes};
use super::{Out, seq};
use crate::route::matcher::StringMatcher;

impl Out {
    fn unreachable(&mut self, vs: &VirtualService, path: String, rule: &str, reason: &str) {
        self.push(
            vs,
            Severity::Warning,
            codes::UNREACHABLE_RULE,
            path,
            format!("VirtualService rule {rule} not used ({reason})."),
        );
    }

    fn ineffective(&mut self, vs: &VirtualService, path: String, message: String) {
        self.push(vs, Severity::Info, codes::INEFFECTIVE_MATCH, path, message);
    }

    pub(super) fn unreachable_http(&mut self, vs: &VirtualService) {
        let http = &vs.spec.http;
        // Every distinct match block so far (normalised), with the index of its rule.
        let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
        let mut without_matches = false;
        for (i, rule) in http.iter().enumerate() {
            let name = rule_name(http, i);
            let path = format!("spec.http[{i}]");
            if rule.matches.is_empty() {
                if without_matches {
                    self.unreachable(vs, path, &name, "only the last rule can have no matches");
                } else if let Some((_, k)) = seen.iter().find(|(s, _)| takes_everything(s)) {
                    // Istio says nothing here, yet the rule is dead all the same; Info, as IST0131.
                    let message = format!(
                        "VirtualService rule {name} is not used (a match in rule {} before it takes every request).",
                        rule_name(http, *k)
                    );
                    self.ineffective(vs, path, message);
                }
                without_matches = true;
                continue;
            }
            if without_matches {
                self.unreachable(vs, path, &name, "route without matches defined before");
                continue;
            }
            let (mut repeated, mut covered) = (0, 0);
            let mut findings = Vec::new();
            for (j, m) in rule.matches.iter().enumerate() {
                let n = normalized(m);
                let k = if let Some(&(_, k)) = seen.iter().find(|(s, _)| *s == n) {
                    repeated += 1;
                    k
                } else if let Some(&(_, k)) =
                    seen.iter().find(|(s, _)| covers(s, &n, &vs.namespace))
                {
                    covered += 1;
                    seen.push((n, i));
                    k
                } else {
                    seen.push((n, i));
                    continue;
                };
                let message = format!(
                    "VirtualService rule {name} match {} is not used (duplicate/overlapping match in rule {}).",
                    match_name(m, j),
                    rule_name(http, k)
                );
                findings.push((format!("{path}.match[{j}]"), message));
            }
            let every = rule.matches.len();
            if covered > 0 && repeated + covered == every {
                // istioctl keeps IST0130 for exact repeats; say it here instead.
                if let Some((_, message)) = findings.last_mut() {
                    message.push_str(&format!(
                        " No match of rule {name} can apply, so the rule is never used."
                    ));
                }
            }
            for (p, message) in findings {
                self.ineffective(vs, p, message);
            }
            if repeated == every {
                self.unreachable(vs, path, &name, "all matches used by prior rules");
            }
        }
    }

    /// Istio's `analyzeUnreachableTCPRules` / `TLSRules`, on the raw YAML of each match.
    pub(super) fn unreachable_l4(&mut self, vs: &VirtualService, kind: &str, routes: &[Opaque]) {
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut empty_seen = false;
        for (i, r) in routes.iter().enumerate() {
            let name = format!("#{i}");
            let path = format!("spec.{kind}[{i}]");
            let matches = seq(r.get("match"));
            if matches.is_empty() {
                if empty_seen {
                    self.unreachable(vs, path, &name, "only the last rule can have no matches");
                }
                empty_seen = true;
                continue;
            }
            if empty_seen {
                self.unreachable(vs, path, &name, "route without matches defined before");
                continue;
            }
            let mut used = 0;
            for (j, m) in matches.iter().enumerate() {
                let key = canonical(m);
                match seen.iter().find(|(s, _)| *s == key) {
                    Some(&(_, k)) => {
                        self.ineffective(
                            vs,
                            format!("{path}.match[{j}]"),
                            format!("VirtualService rule {name} match #{j} is not used (duplicate/overlapping match in rule #{k})."),
                        );
                        used += 1;
                    }
                    None => seen.push((key, i)),
                }
            }
            if used == matches.len() {
                self.unreachable(vs, path, &name, "all matches used by prior rules");
            }
        }
    }
}

fn rule_name(http: &[super::super::istio::HttpRoute], i: usize) -> String {
    match http.get(i).and_then(|r| r.name.as_deref()) {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => format!("#{i}"),
    }
}

fn match_name(m: &HttpMatchRequest, j: usize) -> String {
    match m.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => format!("#{j}"),
    }
}

/// The routing content of a match: names and stats labels removed, and the values Istio's
/// proto treats as unset made unset, so `port: 0` equals no port (Istio compares the JSON of
/// the proto, which leaves zero values out).
fn normalized(m: &HttpMatchRequest) -> HttpMatchRequest {
    let mut n = m.clone();
    n.name = None;
    n.stat_prefix = None;
    if n.ignore_uri_case == Some(Bool(false)) {
        n.ignore_uri_case = None;
    }
    if n.port == Some(Int(0)) {
        n.port = None;
    }
    if n.source_namespace.as_deref() == Some("") {
        n.source_namespace = None;
    }
    n
}

/// A block that accepts every request covers every later one.
fn takes_everything(m: &HttpMatchRequest) -> bool {
    covers(m, &HttpMatchRequest::default(), "")
}

/// Key order does not matter to Istio's comparison (it compares protos), so mappings are sorted.
fn canonical(v: &Opaque) -> String {
    match v {
        Opaque::Null => "null".to_string(),
        Opaque::Bool(b) => b.to_string(),
        Opaque::Number(n) => n.to_string(),
        Opaque::String(s) => format!("{s:?}"),
        Opaque::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        Opaque::Mapping(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", canonical(k), canonical(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        Opaque::Tagged(t) => format!("!{}{}", t.tag, canonical(&t.value)),
    }
}

// ---------------------------------------------------------------------------------------------
// Implication between match blocks

/// True when every request `later` accepts is accepted by `earlier` (both normalised, of a
/// VirtualService in namespace `ns`): each condition of `earlier` is implied by `later`'s.
/// Only claimed when that is certain; what cannot be decided exactly (a regex against a prefix
/// or another regex, a prefix or exact value against a regex) counts as not implied.
pub(super) fn covers(earlier: &HttpMatchRequest, later: &HttpMatchRequest, ns: &str) -> bool {
    let (e, l) = (earlier, later);
    uri_implied(e, l)
        && [
            (&e.scheme, &l.scheme),
            (&e.method, &l.method),
            (&e.authority, &l.authority),
        ]
        .into_iter()
        .all(|(e, l)| {
            e.as_ref()
                .is_none_or(|e| implies(l.as_ref().map_or(Cond::Any, cond), cond(e)))
        })
        && named_implied(&e.headers, &l.headers, true)
        && named_implied(&e.query_params, &l.query_params, false)
        && e.without_headers
            .iter()
            .all(|(name, ce)| absence_implied(name, cond(ce), l))
        && e.port.is_none_or(|p| l.port == Some(p))
        && e.source_labels
            .iter()
            .all(|(k, v)| l.source_labels.get(k) == Some(v))
        && e.source_namespace
            .as_ref()
            .is_none_or(|s| l.source_namespace.as_ref() == Some(s))
        && (e.gateways.is_empty()
            || (!l.gateways.is_empty()
                && l.gateways.iter().all(|g| {
                    e.gateways
                        .iter()
                        .any(|h| gateway_name(g, ns) == gateway_name(h, ns))
                })))
}

/// One condition on one value, as switchyard (and Envoy) evaluate it. `Any` is no condition
/// at all, or Istio's presence form (no match type, or `regex: "*"`): for a header or query
/// parameter it still needs the name present, which the caller checks by name.
#[derive(Clone, Copy)]
enum Cond<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
    Any,
}

fn cond(sm: &StringMatch) -> Cond<'_> {
    match (
        sm.exact.as_deref(),
        sm.prefix.as_deref(),
        sm.regex.as_deref(),
    ) {
        (Some(e), _, _) => Cond::Exact(e),
        (None, Some(p), _) => Cond::Prefix(p),
        (None, None, None | Some("*")) => Cond::Any,
        (None, None, Some(r)) => Cond::Regex(r),
    }
}

/// RE2 full match, as the proxy runs it; an invalid pattern (a schema error) matches nothing.
fn regex_accepts(pattern: &str, value: &str) -> bool {
    StringMatcher::regex(pattern).is_ok_and(|m| m.matches(value.as_bytes()))
}

/// `.*` takes every header value and path (neither holds a newline).
fn accepts_everything(c: Cond) -> bool {
    matches!(c, Cond::Any | Cond::Regex(".*"))
}

/// Every value `l` accepts, `e` accepts.
fn implies(l: Cond, e: Cond) -> bool {
    if accepts_everything(e) {
        return true;
    }
    match (l, e) {
        (Cond::Exact(b), Cond::Exact(a)) => a == b,
        (Cond::Exact(b) | Cond::Prefix(b), Cond::Prefix(a)) => b.starts_with(a),
        (Cond::Exact(b), Cond::Regex(r)) => regex_accepts(r, b),
        (Cond::Regex(s), Cond::Regex(r)) => r == s,
        _ => false,
    }
}

/// No value is accepted by both.
fn disjoint(x: Cond, y: Cond) -> bool {
    match (x, y) {
        (Cond::Exact(a), Cond::Exact(b)) => a != b,
        (Cond::Exact(a), Cond::Prefix(p)) | (Cond::Prefix(p), Cond::Exact(a)) => !a.starts_with(p),
        (Cond::Prefix(p), Cond::Prefix(q)) => !p.starts_with(q) && !q.starts_with(p),
        (Cond::Exact(a), Cond::Regex(r)) | (Cond::Regex(r), Cond::Exact(a)) => {
            StringMatcher::regex(r).is_ok() && !regex_accepts(r, a)
        }
        _ => false,
    }
}

/// The uri condition, with Istio's default (prefix `/`) for `uri: {}` and `ignoreUriCase`,
/// which does nothing to a regex.
fn uri_cond(m: &HttpMatchRequest) -> Option<(Cond<'_>, bool)> {
    let u = m.uri.as_ref()?;
    let ignore_case = m.ignore_uri_case.is_some_and(|b| b.0);
    Some(match cond(u) {
        Cond::Any if u.regex.is_none() => (Cond::Prefix("/"), ignore_case),
        c @ (Cond::Regex(_) | Cond::Any) => (c, false),
        c => (c, ignore_case),
    })
}

fn uri_implied(e: &HttpMatchRequest, l: &HttpMatchRequest) -> bool {
    let Some((ec, e_ic)) = uri_cond(e) else {
        return true;
    };
    // Normalised paths all start with `/`.
    if accepts_everything(ec) || matches!(ec, Cond::Prefix("/")) {
        return true;
    }
    let Some((lc, l_ic)) = uri_cond(l) else {
        return false;
    };
    let text = |a: &str, b: &str, whole: bool| {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if whole && a.len() != b.len() {
            return false;
        }
        let Some(head) = b.get(..a.len()) else {
            return false;
        };
        match (e_ic, l_ic) {
            (false, false) => head == a,
            (true, _) => head.eq_ignore_ascii_case(a),
            // `later` also takes other cases of its letters, which `earlier` refuses.
            (false, true) => head.eq_ignore_ascii_case(a) && !a.iter().any(u8::is_ascii_alphabetic),
        }
    };
    match (lc, ec) {
        (Cond::Exact(b), Cond::Exact(a)) => text(a, b, true),
        (Cond::Exact(b) | Cond::Prefix(b), Cond::Prefix(a)) => text(a, b, false),
        (Cond::Exact(b), Cond::Regex(r)) => {
            (!l_ic || !b.bytes().any(|c| c.is_ascii_alphabetic())) && regex_accepts(r, b)
        }
        (Cond::Regex(s), Cond::Regex(r)) => r == s,
        _ => false,
    }
}

/// Each named condition of `e` (headers, names case-insensitive; query parameters, exact
/// names) is implied by a condition `l` has on the same name.
fn named_implied(
    e: &BTreeMap<String, StringMatch>,
    l: &BTreeMap<String, StringMatch>,
    ignore_case: bool,
) -> bool {
    let same = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    e.iter().all(|(name, ce)| {
        l.iter()
            .any(|(n, cl)| same(name, n) && implies(cond(cl), cond(ce)))
    })
}

/// `withoutHeaders.<name>: ce` of the earlier block holds for every request `l` accepts.
/// Istio emits it inverted with a missing header read as "" (so `exact: ""` also refuses a
/// missing header), except the presence form, which refuses exactly a present header.
fn absence_implied(name: &str, ce: Cond, l: &HttpMatchRequest) -> bool {
    let refuses_missing = match ce {
        Cond::Any => false,
        Cond::Exact(v) => v.is_empty(),
        Cond::Prefix(p) => p.is_empty(),
        Cond::Regex(r) => regex_accepts(r, ""),
    };
    let by_absence = l.without_headers.iter().any(|(n, cl)| {
        n.eq_ignore_ascii_case(name)
            && match cond(cl) {
                // `later` refuses any present value; `earlier` must not refuse a missing one.
                Cond::Any => !refuses_missing,
                cl => !matches!(ce, Cond::Any) && implies(ce, cl),
            }
    });
    // `later` needs a value `earlier` does not refuse.
    let by_value = !matches!(ce, Cond::Any)
        && l.headers
            .iter()
            .any(|(n, cl)| n.eq_ignore_ascii_case(name) && disjoint(cond(cl), ce));
    by_absence || by_value
}

/// `name` and `ns/name` are the same gateway for a VirtualService in `ns`.
fn gateway_name(g: &str, ns: &str) -> String {
    if g == "mesh" || g.contains('/') || g.contains('.') {
        g.to_string()
    } else {
        format!("{ns}/{g}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> HttpMatchRequest {
        normalized(&yaml_serde::from_str(yaml).expect("a match block"))
    }

    fn covered(earlier: &str, later: &str) -> bool {
        covers(&m(earlier), &m(later), "shop")
    }

    #[test]
    fn an_added_condition_narrows_a_block() {
        let product = "uri: {prefix: /api/v1/product}";
        assert!(covered(
            product,
            "{uri: {prefix: /api/v1/products}, method: {exact: GET}}"
        ));
        assert!(covered(
            product,
            "{uri: {exact: /api/v1/product}, headers: {x-a: {exact: b}}}"
        ));
        assert!(!covered(
            "{uri: {prefix: /api/v1/product}, method: {exact: GET}}",
            "uri: {prefix: /api/v1/products}"
        ));
        assert!(!covered(product, "uri: {prefix: /api/v1/prod}"));
        assert!(!covered(product, "uri: {regex: /api/v1/products.*}"));
    }

    #[test]
    fn headers_and_query_parameters() {
        let beta = "headers: {X-Group: {exact: beta}}";
        assert!(covered(beta, "headers: {x-group: {exact: beta}, x-b: {}}"));
        assert!(!covered(beta, "headers: {x-group: {prefix: beta}}"));
        assert!(covered(
            "headers: {x-group: {}}",
            "headers: {x-group: {prefix: b}}"
        ));
        assert!(covered("headers: {x-group: {prefix: be}}", beta));
        assert!(covered("headers: {x-group: {regex: 'b[a-z]+'}}", beta));
        assert!(!covered(
            "headers: {x-group: {regex: 'b[a-z]+'}}",
            "headers: {x-group: {prefix: b}}"
        ));
        // Query parameter names are case-sensitive.
        assert!(!covered(
            "queryParams: {v: {exact: '1'}}",
            "queryParams: {V: {exact: '1'}}"
        ));
        assert!(covered(
            "queryParams: {v: {exact: '1'}}",
            "{queryParams: {v: {exact: '1'}}, port: 80}"
        ));
    }

    #[test]
    fn without_headers() {
        let no_debug = "withoutHeaders: {x-debug: {}}";
        assert!(covered(no_debug, "withoutHeaders: {x-debug: {}}"));
        assert!(!covered(no_debug, "headers: {x-debug: {exact: '0'}}"));
        assert!(!covered(no_debug, "uri: {prefix: /}"));
        let not_one = "withoutHeaders: {x-debug: {exact: '1'}}";
        assert!(covered(not_one, "headers: {x-debug: {exact: '0'}}"));
        assert!(covered(not_one, "withoutHeaders: {x-debug: {prefix: '1'}}"));
        assert!(covered(not_one, "withoutHeaders: {x-debug: {}}"));
        assert!(!covered(not_one, "headers: {x-debug: {prefix: '1'}}"));
        // `exact: ""` also refuses a missing header, which `later` lets through.
        assert!(!covered(
            "withoutHeaders: {x-debug: {exact: ''}}",
            "withoutHeaders: {x-debug: {}}"
        ));
    }

    #[test]
    fn uri_case() {
        let ci = "{uri: {prefix: /API}, ignoreUriCase: true}";
        assert!(covered(ci, "uri: {prefix: /api/v2}"));
        assert!(!covered(
            "uri: {prefix: /api}",
            "{uri: {prefix: /api/v2}, ignoreUriCase: true}"
        ));
        assert!(covered(
            "uri: {prefix: /1}",
            "{uri: {exact: /1/A}, ignoreUriCase: true}"
        ));
        assert!(covered("uri: {regex: '/v[0-9]+'}", "uri: {exact: /v2}"));
        assert!(covered("uri: {}", "method: {exact: GET}"));
    }

    #[test]
    fn config_time_conditions() {
        assert!(covered("gateways: [shop/edge]", "gateways: [edge]"));
        assert!(!covered("gateways: [edge]", "gateways: [edge, mesh]"));
        assert!(!covered("gateways: [edge]", "uri: {prefix: /}"));
        assert!(covered(
            "sourceLabels: {app: a}",
            "sourceLabels: {app: a, v: '1'}"
        ));
        assert!(!covered("sourceNamespace: a", "port: 80"));
        assert!(!covered("port: 80", "port: 81"));
        assert!(covered("port: 0", "port: 81"));
    }
}
