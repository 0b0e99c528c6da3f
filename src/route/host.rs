//! Host names: Istio's short-name expansion, the aliases a sidecar answers to, and Envoy's
//! virtual-host lookup order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// Istio's `ResolveShortnameToFQDN`: a name with no dot is a Kubernetes service in the
/// namespace of the resource that mentions it (not the namespace of the service).
pub fn resolve_short_name(name: &str, namespace: &str) -> String {
    let mut out = name.to_ascii_lowercase();
    if out.is_empty() || out.starts_with('*') || out.contains('.') || is_ip_literal(&out) {
        return out;
    }
    // Istio skips the namespace part when it is unknown rather than inventing one.
    if !namespace.is_empty() {
        out.push('.');
        out.push_str(&namespace.to_ascii_lowercase());
    }
    out.push_str(".svc.");
    out.push_str(DEFAULT_DOMAIN);
    out
}

/// IPv4 always contains a dot, so this matters for IPv6 literals such as `::1` or `fe80::1%eth0`
/// (Go's `netip.ParseAddr`, which Istio uses, accepts the zone).
fn is_ip_literal(s: &str) -> bool {
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let without_zone = s.split_once('%').map_or(s, |(addr, _)| addr);
    without_zone.parse::<IpAddr>().is_ok()
}

/// Splits a Host / `:authority` value into host and port, the way Envoy strips the port under
/// `ignore_port_in_host_matching` (`HeaderUtility::getPortStart`): the last `:` that is not
/// inside `[...]` starts the port, and the host part is cut there even when the port is empty
/// or not a number (`host:` and `host:abc` both look up `host`; the port is then `None`).
///
/// Decisions:
/// - Bare IPv6 without brackets (`::1`, `fe80::1`): Envoy would cut at the last colon and look
///   up `::`; we treat more than one colon outside brackets as an address with no port, which
///   is what the client meant. No configured domain can match either way except `*`.
/// - A trailing dot (`reviews.` / `reviews.:80`) is kept. Envoy only strips it with the HCM
///   option `strip_trailing_host_dot`, which Istio does not set; Istio instead adds the dotted
///   FQDN as an extra domain behind a feature flag.
/// - Brackets stay on the host (`[::1]`), because Envoy domains for IPv6 VIPs carry them.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let Some(colon) = authority.rfind(':') else {
        return (authority, None);
    };
    match authority.rfind(']') {
        Some(close) if close > colon => return (authority, None),
        Some(_) => {}
        None if authority[..colon].contains(':') => return (authority, None),
        None => {}
    }
    let port = &authority[colon + 1..];
    let port = if port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u16>().ok()
    } else {
        None
    };
    (&authority[..colon], port)
}

/// Istio's `generateAltVirtualHostsForKubernetesService`: the extra domains a sidecar's virtual
/// host for a Kubernetes service carries, in Istio's order. Other hosts get none, because
/// expanding e.g. `api.example.com` to `api` could collide with a real service name.
pub fn lookup_aliases(fqdn: &str, proxy_namespace: &str) -> Vec<String> {
    let Some(svc) = fqdn.find(".svc.") else {
        return Vec::new();
    };
    let Some(first_dot) = fqdn.find('.') else {
        return Vec::new();
    };
    // Needs a non-empty name and namespace before `.svc.`.
    if svc == 0 || first_dot == 0 || first_dot + 1 > svc {
        return Vec::new();
    }
    let name = &fqdn[..first_dot];
    let name_ns = &fqdn[..svc];
    let name_ns_svc = format!("{name_ns}.svc");
    if &fqdn[first_dot + 1..svc] == proxy_namespace {
        vec![name.to_string(), name_ns_svc, name_ns.to_string()]
    } else {
        vec![name_ns.to_string(), name_ns_svc]
    }
}

/// FNV-1a for the exact-domain map: host names are short, and SipHash's per-lookup setup was
/// a tenth of a routing decision. Flooding is not a concern: the keys come from the config,
/// and a request can only choose which one it looks up.
#[derive(Default)]
pub struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Virtual-host domains with Envoy's lookup order (`RouteMatcher::findVirtualHost`): exact,
/// then `*suffix` (longest first), then `prefix*` (longest first), then `*`. A wildcard must
/// match at least one character, so `*.foo.com` matches `a.foo.com` and `a.b.foo.com` but not
/// `foo.com` or `.foo.com`.
#[derive(Debug, Clone)]
pub struct HostIndex<T> {
    /// Values with the (lower-cased) domain they were registered under, in insertion order.
    entries: Vec<(Box<str>, T)>,
    exact: HashMap<Box<str>, usize, BuildHasherDefault<Fnv1a>>,
    /// `*suffix` domains stored without the `*`, longest suffix first.
    suffixes: Vec<(Box<str>, usize)>,
    /// `prefix*` domains stored without the `*`, longest prefix first.
    prefixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> HostIndex<T> {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            exact: HashMap::default(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
        }
    }

    /// Registers `domain` (lower-cased here, as Envoy does). If the same domain is already
    /// present the value is handed back: the first registration wins, as on an Istio sidecar.
    pub fn insert(&mut self, domain: &str, value: T) -> Result<(), T> {
        let domain: Box<str> = domain.to_ascii_lowercase().into_boxed_str();
        let idx = self.entries.len();
        if &*domain == "*" {
            if self.any.is_some() {
                return Err(value);
            }
            self.any = Some(idx);
        } else if let Some(suffix) = domain.strip_prefix('*') {
            if !insert_sorted(&mut self.suffixes, suffix, idx) {
                return Err(value);
            }
        } else if let Some(prefix) = domain.strip_suffix('*') {
            if !insert_sorted(&mut self.prefixes, prefix, idx) {
                return Err(value);
            }
        } else {
            if self.exact.contains_key(&domain) {
                return Err(value);
            }
            self.exact.insert(domain.clone(), idx);
        }
        self.entries.push((domain, value));
        Ok(())
    }

    /// Looks up an already lower-cased, port-stripped host. Does not allocate.
    pub fn get(&self, host: &str) -> Option<&T> {
        self.lookup(host).map(|(_, v)| v)
    }

    /// Like [`get`](Self::get), also returning the domain that matched (for `explain`).
    pub fn lookup(&self, host: &str) -> Option<(&str, &T)> {
        let idx = self.find(host)?;
        self.entries.get(idx).map(|(d, v)| (&**d, v))
    }

    fn find(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefixes {
            if host.len() > prefix.len() && host.starts_with(&**prefix) {
                return Some(*i);
            }
        }
        self.any
    }

    /// Registered domains and values in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().map(|(d, v)| (&**d, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Keeps `list` ordered by descending key length; equal lengths keep insertion order (they can
/// never both match one host unless they are equal, which is a duplicate). Returns false on a
/// duplicate key.
fn insert_sorted(list: &mut Vec<(Box<str>, usize)>, key: &str, idx: usize) -> bool {
    if list.iter().any(|(k, _)| &**k == key) {
        return false;
    }
    let pos = list.partition_point(|(k, _)| k.len() >= key.len());
    list.insert(pos, (key.into(), idx));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_in_the_resource_namespace() {
        assert_eq!(
            resolve_short_name("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_short_name("Reviews", "Prod"),
            "reviews.prod.svc.cluster.local"
        );
        // Any dot means "already qualified", even when it is only partly so.
        assert_eq!(
            resolve_short_name("reviews.other", "default"),
            "reviews.other"
        );
        assert_eq!(
            resolve_short_name("API.Example.COM", "default"),
            "api.example.com"
        );
        assert_eq!(resolve_short_name("*", "default"), "*");
        assert_eq!(
            resolve_short_name("*.example.com", "default"),
            "*.example.com"
        );
        assert_eq!(resolve_short_name("10.0.0.1", "default"), "10.0.0.1");
        assert_eq!(resolve_short_name("::1", "default"), "::1");
        assert_eq!(
            resolve_short_name("FE80::1%eth0", "default"),
            "fe80::1%eth0"
        );
        assert_eq!(
            resolve_short_name("[2001:db8::1]", "default"),
            "[2001:db8::1]"
        );
        assert_eq!(resolve_short_name("", "default"), "");
        assert_eq!(
            resolve_short_name("reviews", ""),
            "reviews.svc.cluster.local"
        );
    }

    #[test]
    fn authority_splitting() {
        assert_eq!(split_authority("reviews"), ("reviews", None));
        assert_eq!(split_authority("reviews:9080"), ("reviews", Some(9080)));
        assert_eq!(
            split_authority("Reviews.Default:80"),
            ("Reviews.Default", Some(80))
        );
        assert_eq!(split_authority("reviews:"), ("reviews", None));
        assert_eq!(split_authority("reviews:abc"), ("reviews", None));
        assert_eq!(split_authority("reviews:+80"), ("reviews", None));
        assert_eq!(split_authority("reviews:65536"), ("reviews", None));
        assert_eq!(split_authority("reviews.:80"), ("reviews.", Some(80)));
        assert_eq!(split_authority("[::1]:8080"), ("[::1]", Some(8080)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(
            split_authority("[fe80::1%25eth0]:443"),
            ("[fe80::1%25eth0]", Some(443))
        );
        assert_eq!(split_authority("::1"), ("::1", None));
        assert_eq!(split_authority("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(split_authority(""), ("", None));
        assert_eq!(split_authority(":80"), ("", Some(80)));
    }

    #[test]
    fn kubernetes_aliases_follow_istio() {
        assert_eq!(
            lookup_aliases("reviews.default.svc.cluster.local", "default"),
            vec!["reviews", "reviews.default.svc", "reviews.default"]
        );
        assert_eq!(
            lookup_aliases("reviews.default.svc.cluster.local", "other"),
            vec!["reviews.default", "reviews.default.svc"]
        );
        assert!(lookup_aliases("api.example.com", "default").is_empty());
        assert!(lookup_aliases("reviews", "default").is_empty());
        assert!(lookup_aliases("reviews.svc.cluster.local", "default").is_empty());
        assert!(lookup_aliases(".default.svc.cluster.local", "default").is_empty());
        assert!(lookup_aliases("", "default").is_empty());
    }

    fn index(domains: &[&str]) -> HostIndex<usize> {
        let mut idx = HostIndex::new();
        for (i, d) in domains.iter().enumerate() {
            assert!(idx.insert(d, i).is_ok(), "{d}");
        }
        idx
    }

    #[test]
    fn lookup_order_exact_suffix_prefix_any() {
        let idx = index(&[
            "*",
            "foo.*",
            "*.foo.com",
            "a.foo.com",
            "*.b.foo.com",
            "foo.bar.*",
        ]);
        assert_eq!(idx.get("a.foo.com"), Some(&3));
        assert_eq!(idx.get("x.foo.com"), Some(&2));
        // Longest suffix wins whatever the insertion order.
        assert_eq!(idx.get("x.b.foo.com"), Some(&4));
        assert_eq!(idx.get("a.x.foo.com"), Some(&2));
        // Suffix wildcards beat prefix wildcards.
        assert_eq!(idx.get("foo.foo.com"), Some(&2));
        assert_eq!(idx.get("foo.org"), Some(&1));
        assert_eq!(idx.get("foo.bar.org"), Some(&5));
        assert_eq!(idx.get("other.org"), Some(&0));
        assert_eq!(idx.lookup("x.b.foo.com"), Some(("*.b.foo.com", &4)));
    }

    #[test]
    fn wildcards_never_match_the_empty_string() {
        let suffix = index(&["*.foo.com"]);
        assert_eq!(suffix.get("foo.com"), None);
        assert_eq!(suffix.get(".foo.com"), None);
        assert_eq!(suffix.get("a.foo.com"), Some(&0));
        let prefix = index(&["foo.*"]);
        assert_eq!(prefix.get("foo."), None);
        assert_eq!(prefix.get("foo"), None);
        assert_eq!(prefix.get("foo.x"), Some(&0));
        // Envoy's suffix wildcard is a plain string suffix, not label-aware.
        let dash = index(&["*-bar.foo.com"]);
        assert_eq!(dash.get("x-bar.foo.com"), Some(&0));
        assert_eq!(dash.get("-bar.foo.com"), None);
    }

    #[test]
    fn no_match_without_default() {
        let idx = index(&["reviews.default.svc.cluster.local"]);
        assert_eq!(idx.get("reviews"), None);
        assert_eq!(idx.get(""), None);
        assert_eq!(HostIndex::<()>::new().get("x"), None);
    }

    #[test]
    fn duplicates_are_handed_back_and_first_wins() {
        let mut idx = HostIndex::new();
        assert_eq!(idx.insert("Reviews", "first"), Ok(()));
        assert_eq!(idx.insert("reviews", "second"), Err("second"));
        assert_eq!(idx.insert("*.a.com", "w1"), Ok(()));
        assert_eq!(idx.insert("*.A.com", "w2"), Err("w2"));
        assert_eq!(idx.insert("a.*", "p1"), Ok(()));
        assert_eq!(idx.insert("a.*", "p2"), Err("p2"));
        assert_eq!(idx.insert("*", "any1"), Ok(()));
        assert_eq!(idx.insert("*", "any2"), Err("any2"));
        assert_eq!(idx.get("reviews"), Some(&"first"));
        assert_eq!(idx.len(), 4);
        let listed: Vec<_> = idx.iter().collect();
        assert_eq!(
            listed,
            vec![
                ("reviews", &"first"),
                ("*.a.com", &"w1"),
                ("a.*", &"p1"),
                ("*", &"any1")
            ]
        );
    }
}
