//! Properties of the config readers (issue #8; reliability.md R11): Go durations round trip,
//! path normalisation is idempotent, and a config that validates still validates, to the same
//! findings and the same routing, after a serialise / re-parse cycle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use proptest::prelude::*;

use switchyard::config::duration::parse_go_duration;
use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{Diagnostic, LoadOptions, ProxyIdentity, Resources, load_str};
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::route::path::normalize_path;
use switchyard::route::{Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

/// `fmtFrac` of Go's `time.Duration.String`: `.digits` without trailing zeros, or nothing.
fn frac(v: u64, prec: usize) -> String {
    if v == 0 {
        return String::new();
    }
    let digits = format!("{v:0prec$}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// Go's `time.Duration.String` for a non-negative duration: what Istio and kubectl print.
fn go_string(n: u64) -> String {
    const SEC: u64 = 1_000_000_000;
    if n == 0 {
        return "0s".to_string();
    }
    if n < SEC {
        let (prec, div, unit) = match n {
            0..1_000 => (0, 1, "ns"),
            1_000..1_000_000 => (3, 1_000, "\u{b5}s"),
            _ => (6, 1_000_000, "ms"),
        };
        return format!("{}{}{unit}", n / div, frac(n % div, prec));
    }
    let (secs, f) = (n / SEC, frac(n % SEC, 9));
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{f}s")
    } else if m > 0 {
        format!("{m}m{s}{f}s")
    } else {
        format!("{s}{f}s")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn go_duration_strings_round_trip(n in prop_oneof![0u64..2_000_000_000, 0..=i64::MAX as u64]) {
        let s = go_string(n);
        prop_assert_eq!(parse_go_duration(&s), Ok(Duration::from_nanos(n)), "{}", s);
    }

    #[test]
    fn go_duration_components_add_up(
        h in 0u64..1000, m in 0u64..1000, s in 0u64..1000,
        ms in 0u64..1000, us in 0u64..1000, ns in 0u64..1000,
        micro in prop::sample::select(vec!["us", "\u{b5}s", "\u{3bc}s"]),
    ) {
        let text = format!("{h}h{m}m{s}s{ms}ms{us}{micro}{ns}ns");
        let want = ((h * 60 + m) * 60 + s) * 1_000_000_000 + ms * 1_000_000 + us * 1_000 + ns;
        prop_assert_eq!(parse_go_duration(&text), Ok(Duration::from_nanos(want)));
        // Units in any order and a leading '+' mean the same.
        let shuffled = format!("+{ns}ns{s}s{h}h{us}{micro}{m}m{ms}ms");
        prop_assert_eq!(parse_go_duration(&shuffled), Ok(Duration::from_nanos(want)));
    }

    #[test]
    fn path_normalisation_is_idempotent(parts in prop::collection::vec(path_token(), 0..16)) {
        let path = format!("/{}", parts.concat());
        if let Ok(once) = normalize_path(&path) {
            let twice = normalize_path(&once);
            prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "input {:?}", path);
        }
    }
}

/// Pieces of request paths, biased to what normalisation rewrites: dot segments, escapes
/// (valid, invalid, of '.', '/', '\\' and '%'), backslashes, non-ASCII and plain text.
fn path_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/", ".", "..", "./", "../", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%", "%%", "%g",
            "\\", "?", "#", ";", "~", "+", " ", "\u{e9}", "a", "b1", "-_",
        ])
        .prop_map(str::to_string),
        any::<u8>().prop_map(|b| format!("%{b:02X}")),
        any::<u8>().prop_map(|b| format!("%{b:02x}")),
        (0x20u8..0x7f).prop_map(|b| char::from(b).to_string()),
    ]
}

/// One generated config: a ServiceEntry, a DestinationRule with traffic policy and subsets,
/// and a VirtualService with a header-matched rule, a weighted catch-all and some policy.
#[derive(Debug, Clone)]
struct Gen {
    weights: Vec<u32>,
    header: String,
    timeout_ms: Option<u32>,
    attempts: Option<u32>,
    max_connections: Option<u32>,
    lb: &'static str,
}

fn gen_config() -> impl Strategy<Value = Gen> {
    (
        prop::collection::vec(prop_oneof![Just(0u32), 1u32..=100], 1..=4)
            .prop_filter("some weight > 0", |w| w.iter().any(|&x| x > 0)),
        "[a-z][a-z0-9]{0,8}",
        prop::option::of(1u32..60_000),
        prop::option::of(1u32..5),
        prop::option::of(1u32..10_000),
        prop::sample::select(vec!["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]),
    )
        .prop_map(
            |(weights, header, timeout_ms, attempts, max_connections, lb)| Gen {
                weights,
                header,
                timeout_ms,
                attempts,
                max_connections,
                lb,
            },
        )
}

/// Block-style YAML, as people write it.
fn render(g: &Gen) -> String {
    let mut eps = String::new();
    let mut subsets = String::new();
    let mut route = String::new();
    for (i, w) in g.weights.iter().enumerate() {
        eps.push_str(&format!(
            "  - address: 10.0.0.{}\n    labels:\n      version: s{i}\n",
            i + 1
        ));
        subsets.push_str(&format!(
            "  - name: s{i}\n    labels:\n      version: s{i}\n"
        ));
        route.push_str(&format!(
            "    - destination:\n        host: web\n        subset: s{i}\n      weight: {w}\n"
        ));
    }
    let mut policy = String::new();
    if let Some(t) = g.timeout_ms {
        policy.push_str(&format!("    timeout: {t}ms\n"));
    }
    if let Some(a) = g.attempts {
        policy.push_str(&format!(
            "    retries:\n      attempts: {a}\n      retryOn: connect-failure,refused-stream\n"
        ));
    }
    let (lb, header) = (g.lb, &g.header);
    let pool = g.max_connections.map_or(String::new(), |c| {
        format!("    connectionPool:\n      tcp:\n        maxConnections: {c}\n")
    });
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: web
spec:
  hosts:
  - web.default.svc.cluster.local
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
spec:
  host: web
  trafficPolicy:
    loadBalancer:
      simple: {lb}
{pool}  subsets:
{subsets}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts:
  - web
  http:
  - name: pinned
    match:
    - headers:
        x-user:
          exact: \"{header}\"
    route:
    - destination:
        host: web
        subset: s0
  - name: split
{policy}    route:
{route}"
    )
}

fn load_validate(yaml: &str) -> (Resources, Vec<Diagnostic>) {
    let res = load_str(Path::new("p.yaml"), yaml, &LoadOptions::default());
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &ProxyIdentity::default(),
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    ));
    (res, diags)
}

/// Findings without their line numbers, which a re-serialised file is free to move.
fn findings(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .map(|d| {
            format!(
                "{:?} {} {} {} {}",
                d.severity, d.code, d.resource, d.field_path, d.message
            )
        })
        .collect()
}

fn table(res: &Resources) -> RouteTable {
    compile(
        res,
        &CompileOptions {
            identity: &ProxyIdentity::default(),
            outbound_policy: OutboundPolicy::RegistryOnly,
            pools: &Arc::new(PoolRegistry::default()),
            metrics: &Arc::new(switchyard::metrics::Registry::default()),
            version: 1,
        },
    )
    .expect("a validated config compiles")
}

/// What `route` decides for one request: the subset forwarded to, and the rule's timeout.
fn decide(t: &RouteTable, user: Option<&str>, r: u64) -> String {
    let mut headers = HeaderMap::new();
    if let Some(u) = user {
        headers.insert("x-user", u.parse().expect("generated header value"));
    }
    let view = RequestView {
        method: "GET",
        scheme: "http",
        authority: "web",
        port: 80,
        path: "/",
        query: None,
        headers: &headers,
    };
    match t.route("web", &view, r) {
        Decision::Forward { cluster, route, .. } => {
            format!(
                "{} {} {:?}",
                route.name, cluster.subset, route.policy.timeout
            )
        }
        _ => "not forwarded".to_string(),
    }
}

/// Each document through `yaml_serde::Value` and back: a different but equivalent text.
fn reserialise(yaml: &str) -> String {
    yaml.split("---\n")
        .map(|doc| {
            let v: yaml_serde::Value = yaml_serde::from_str(doc).expect("generated YAML parses");
            yaml_serde::to_string(&v).expect("a Value serialises")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_config_survives_serialise_and_reparse(g in gen_config(), draws in prop::collection::vec(any::<u64>(), 16)) {
        let yaml = render(&g);
        let (res, diags) = load_validate(&yaml);
        prop_assert!(!diags.iter().any(|d| d.is_error()), "{:?}\n{}", findings(&diags), yaml);

        let again = reserialise(&yaml);
        prop_assert_ne!(&again, &yaml, "the cycle should change the text, or it proves nothing");
        let (res2, diags2) = load_validate(&again);
        prop_assert_eq!(findings(&diags), findings(&diags2), "\n{}", again);
        prop_assert_eq!(res.virtual_services.len(), res2.virtual_services.len());
        prop_assert_eq!(res.destination_rules.len(), res2.destination_rules.len());
        prop_assert_eq!(res.service_entries.len(), res2.service_entries.len());

        let (t1, t2) = (table(&res), table(&res2));
        prop_assert_eq!(t1.clusters.len(), t2.clusters.len());
        for &r in &draws {
            for user in [None, Some(g.header.as_str()), Some("someone-else")] {
                prop_assert_eq!(decide(&t1, user, r), decide(&t2, user, r));
            }
        }
    }
}
