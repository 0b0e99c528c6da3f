//! `RouteTable::route` through the library API, with a seeded RNG: the exact code the proxy
//! runs, made deterministic.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{LoadOptions, ProxyIdentity, load_str};
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::route::{Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

const SEED_CONFIG: &str = include_str!("fixtures/istio-examples/seed-frontend-canary.yaml");

const FRONTEND_SE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: frontend}
spec:
  hosts: [frontend.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
";

fn table(yaml: &str) -> RouteTable {
    let identity = ProxyIdentity::default();
    let res = load_str(Path::new("t.yaml"), yaml, &LoadOptions::default());
    let diags = validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    );
    assert!(
        !diags.iter().any(|d| d.is_error()) && !res.diagnostics.iter().any(|d| d.is_error()),
        "{diags:?} {:?}",
        res.diagnostics
    );
    compile(
        &res,
        &CompileOptions {
            identity: &identity,
            outbound_policy: OutboundPolicy::RegistryOnly,
            pools: &Arc::new(PoolRegistry::default()),
            metrics: &Arc::new(switchyard::metrics::Registry::default()),
            version: 1,
        },
    )
    .expect("compiles")
}

fn subset_of(t: &RouteTable, host: &str, headers: &HeaderMap, r: u64) -> String {
    let view = RequestView {
        method: "GET",
        scheme: "http",
        authority: host,
        port: 80,
        path: "/",
        query: None,
        headers,
    };
    match t.route(host, &view, r) {
        Decision::Forward { cluster, .. } => cluster.subset.clone(),
        _ => "none".to_string(),
    }
}

fn counts(t: &RouteTable, seed: u64, n: usize) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let headers = HeaderMap::new();
    let mut v2 = 0;
    let mut v1 = 0;
    for _ in 0..n {
        match subset_of(t, "frontend", &headers, rng.random()).as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("unexpected destination {other}"),
        }
    }
    (v1, v2)
}

#[test]
fn seeded_draws_are_deterministic_and_follow_the_seed_split() {
    let t = table(&format!("{SEED_CONFIG}\n---\n{FRONTEND_SE}"));
    let a = counts(&t, 42, 20_000);
    let b = counts(&t, 42, 20_000);
    assert_eq!(a, b, "same seed, same decisions");
    // 95/5 over 20,000 independent draws: σ = sqrt(n·p·(1-p)) ≈ 30.8; allow 4σ.
    let sigma = (20_000.0f64 * 0.05 * 0.95).sqrt();
    assert!(
        (a.1 as f64 - 1000.0).abs() < 4.0 * sigma,
        "v2 got {} of 20000",
        a.1
    );
    assert_ne!(counts(&t, 7, 20_000), a, "another seed draws differently");
}

#[test]
fn envoy_interval_walk_in_config_order() {
    let t = table(&format!("{SEED_CONFIG}\n---\n{FRONTEND_SE}"));
    let h = HeaderMap::new();
    // r % 100 in [0, 95) → v1, [95, 100) → v2.
    assert_eq!(subset_of(&t, "frontend", &h, 94), "v1");
    assert_eq!(subset_of(&t, "frontend", &h, 95), "v2");
    assert_eq!(subset_of(&t, "frontend", &h, 199), "v2");
    assert_eq!(subset_of(&t, "frontend", &h, 200), "v1");
}

#[test]
fn header_rule_never_draws_and_weight_zero_is_dropped() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        include_str!("fixtures/istio-examples/seed-my-service-beta-header.yaml"),
        include_str!("fixtures/istio-examples/seed-my-service-destinationrule.yaml"),
        FRONTEND_SE.replace("frontend", "my-service")
    );
    let t = table(&yaml);
    let mut beta = HeaderMap::new();
    beta.insert("x-user-group", HeaderValue::from_static("beta"));
    for r in [0u64, 1, 94, 95, 99, u64::MAX] {
        assert_eq!(subset_of(&t, "my-service", &beta, r), "v2");
        assert_eq!(subset_of(&t, "my-service", &HeaderMap::new(), r), "v1");
    }
    // The 100/0 step: v2 has weight 0 and must never be picked.
    let step = format!(
        "{}\n---\n{}\n---\n{}",
        include_str!("fixtures/istio-examples/seed-my-service-step-100-0.yaml"),
        include_str!("fixtures/istio-examples/seed-my-service-destinationrule.yaml"),
        FRONTEND_SE.replace("frontend", "my-service")
    );
    let t = table(&step);
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..10_000 {
        assert_eq!(
            subset_of(&t, "my-service", &HeaderMap::new(), rng.random()),
            "v1"
        );
    }
}
