//! Properties of weighted destination choice and of `RouteTable::route`, over generated
//! weights and seeds (issue #8; reliability.md R11). Exact rather than statistical: Envoy's
//! pick walks `random % total` over cumulative intervals, so sweeping `random` over one period
//! must hit every destination exactly `weight` times, which leaves nothing to flake.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{LoadOptions, ProxyIdentity, load_str};
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::route::weighted::{WeightError, WeightedPick};
use switchyard::route::{Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

/// A ServiceEntry with one endpoint per subset, its DestinationRule, and a VirtualService
/// splitting `weights[i]` to subset `s{i}`.
fn canary_yaml(weights: &[u32]) -> String {
    let mut eps = String::new();
    let mut subsets = String::new();
    let mut route = String::new();
    for (i, w) in weights.iter().enumerate() {
        eps.push_str(&format!(
            "  - address: 10.0.0.{}\n    labels: {{version: s{i}}}\n",
            i + 1
        ));
        subsets.push_str(&format!("  - name: s{i}\n    labels: {{version: s{i}}}\n"));
        route.push_str(&format!(
            "    - destination: {{host: web, subset: s{i}}}\n      weight: {w}\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  subsets:
{subsets}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - route:
{route}"
    )
}

fn table(yaml: &str) -> RouteTable {
    let identity = ProxyIdentity::default();
    let res = load_str(Path::new("p.yaml"), yaml, &LoadOptions::default());
    let diags = validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    );
    assert!(
        !res.diagnostics.iter().chain(&diags).any(|d| d.is_error()),
        "{diags:?}\n{yaml}"
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
    .expect("a validated config compiles")
}

fn subset(t: &RouteTable, r: u64) -> String {
    let headers = HeaderMap::new();
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
        Decision::Forward { cluster, .. } => cluster.subset.clone(),
        _ => panic!("the catch-all route must forward"),
    }
}

/// Weights with many zeros, at least one positive.
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![Just(0u32), 1u32..=100], 2..=5)
        .prop_filter("some weight > 0", |w| w.iter().any(|&x| x > 0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn weighted_pick_follows_the_weights_and_never_lands_on_zero(
        ws in prop::collection::vec(prop_oneof![Just(0u32), 1u32..=300], 1..=6),
        draws in prop::collection::vec(any::<u64>(), 32),
    ) {
        let entries: Vec<(u32, usize)> = ws.iter().copied().zip(0..).collect();
        let total: u64 = ws.iter().map(|&w| u64::from(w)).sum();
        match WeightedPick::new(entries) {
            Err(e) => {
                prop_assert!(ws.len() > 1 && total == 0, "refused {ws:?}: {e}");
                prop_assert_eq!(e, WeightError::ZeroTotal);
            }
            Ok(p) => {
                prop_assert_eq!(p.total(), total);
                if ws.len() == 1 {
                    // A lone destination takes everything, whatever its weight (Istio ignores it).
                    prop_assert!(draws.iter().all(|&r| *p.pick(r) == 0));
                } else {
                    for &r in &draws {
                        let i = *p.pick(r);
                        prop_assert!(ws[i] > 0, "r={r} picked weight-0 entry {i} of {ws:?}");
                        // Periodic in `total`: the same draw modulo total, the same pick.
                        prop_assert_eq!(*p.pick(r % total), i);
                    }
                    let mut hits = vec![0u64; ws.len()];
                    for r in 0..total {
                        hits[*p.pick(r)] += 1;
                    }
                    let want: Vec<u64> = ws.iter().map(|&w| u64::from(w)).collect();
                    prop_assert_eq!(hits, want, "one period hits each entry `weight` times");
                }
            }
        }
    }
}

proptest! {
    // Each case compiles a table; 64 keep the file well under a second.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn route_is_deterministic_for_a_seed_and_honours_weights(ws in weights(), seed in any::<u64>()) {
        let t = table(&canary_yaml(&ws));
        let draw = |seed: u64| -> Vec<String> {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200).map(|_| subset(&t, rng.random())).collect()
        };
        let a = draw(seed);
        prop_assert_eq!(&a, &draw(seed), "same seed, same decisions");
        let zero: Vec<String> = ws
            .iter()
            .enumerate()
            .filter(|(_, w)| **w == 0)
            .map(|(i, _)| format!("s{i}"))
            .collect();
        prop_assert!(!a.iter().any(|s| zero.contains(s)), "{a:?} hit a weight-0 subset of {ws:?}");

        let total: u64 = ws.iter().map(|&w| u64::from(w)).sum();
        let mut hits: BTreeMap<String, u64> = BTreeMap::new();
        for r in 0..total {
            *hits.entry(subset(&t, r)).or_default() += 1;
        }
        let want: BTreeMap<String, u64> = ws
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0)
            .map(|(i, &w)| (format!("s{i}"), u64::from(w)))
            .collect();
        prop_assert_eq!(hits, want);
    }
}
