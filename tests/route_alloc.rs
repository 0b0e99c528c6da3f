//! `RouteTable::route` makes no heap allocation: every request pays for it, so it is counted
//! here with an instrumented global allocator (this test binary only).

use std::alloc::System;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{LoadOptions, ProxyIdentity, load_str};
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::route::{Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Three services, each with exact-header, cookie-regex, uri-regex, prefix and method rules,
/// a redirect and a direct response before a 95/5 split.
fn config() -> String {
    let mut y = String::new();
    for h in 0..3 {
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{h}}}\nspec:\n  hosts: [svc{h}.default.svc.cluster.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 10.0.0.1, labels: {{version: v1}}}}\n  - {{address: 10.0.0.2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{h}}}\nspec:\n  host: svc{h}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{h}}}\nspec:\n  hosts: [svc{h}]\n  http:\n"
        ));
        y.push_str(
            "  - match: [{headers: {x-user-group: {exact: beta}}}]\n    route: [{destination: {host: HOST, subset: v2}}]\n  - match: [{headers: {cookie: {regex: \"^(.*?;)?(user=dev\\\\d+)(;.*)?$\"}}}]\n    route: [{destination: {host: HOST, subset: v2}}]\n  - match: [{uri: {regex: \"/api/v[0-9]+/items/\\\\d+\"}, method: {exact: POST}}]\n    route: [{destination: {host: HOST, subset: v2}}]\n  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new}\n  - match: [{uri: {exact: /health}}]\n    directResponse: {status: 200, body: {string: ok}}\n  - route:\n    - {destination: {host: HOST, subset: v1}, weight: 95}\n    - {destination: {host: HOST, subset: v2}, weight: 5}\n---\n"
                .replace("HOST", &format!("svc{h}"))
                .as_str(),
        );
    }
    y
}

fn table() -> RouteTable {
    let identity = ProxyIdentity::default();
    let res = load_str(Path::new("t.yaml"), &config(), &LoadOptions::default());
    let diags = validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    );
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
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

fn kind(d: &Decision) -> &'static str {
    match d {
        Decision::Forward { .. } => "forward",
        Decision::Redirect { .. } => "redirect",
        Decision::Direct { .. } => "direct",
        Decision::NoRoute { .. } => "no route",
        Decision::UnknownHost => "unknown host",
    }
}

#[test]
fn route_allocates_nothing() {
    let table = table();
    let mut plain = HeaderMap::new();
    plain.insert(
        "cookie",
        HeaderValue::from_static("session=abc; theme=dark"),
    );
    plain.insert("user-agent", HeaderValue::from_static("curl/8.0"));
    let mut beta = plain.clone();
    beta.insert("x-user-group", HeaderValue::from_static("beta"));
    let mut dev = plain.clone();
    dev.insert("cookie", HeaderValue::from_static("a=b; user=dev42; c=d"));
    let view = |method, path, headers| RequestView {
        method,
        scheme: "http",
        authority: "svc1",
        port: 80,
        path,
        query: Some("q=1"),
        headers,
    };
    let cases = [
        ("svc1", view("GET", "/api/v1/items/42x", &plain), "forward"),
        ("svc1", view("GET", "/", &beta), "forward"),
        ("svc1", view("GET", "/", &dev), "forward"),
        ("svc1", view("POST", "/api/v3/items/7", &plain), "forward"),
        ("svc1", view("GET", "/old/x", &plain), "redirect"),
        ("svc1", view("GET", "/health", &plain), "direct"),
        (
            "svc1.default.svc.cluster.local",
            view("GET", "/", &plain),
            "forward",
        ),
        ("elsewhere", view("GET", "/", &plain), "unknown host"),
    ];
    // Warm up once: lazily built regex caches may allocate on first use per thread.
    for (host, v, _) in &cases {
        std::hint::black_box(table.route(host, v, 1));
    }
    let region = Region::new(GLOBAL);
    let mut seen = Vec::with_capacity(cases.len() * 1000);
    let before = region.change();
    let mut r = 0u64;
    for _ in 0..1000 {
        for (host, v, _) in &cases {
            r = r.wrapping_add(0x9E37_79B9_7F4A_7C15);
            seen.push(kind(&table.route(host, v, r)));
        }
    }
    let after = region.change();
    assert_eq!(
        after.allocations - before.allocations,
        0,
        "route() allocated {} times in {} decisions",
        after.allocations - before.allocations,
        seen.len()
    );
    assert_eq!(after.reallocations - before.reallocations, 0);
    // The counter itself works: one boxed value is seen.
    let probe = Region::new(GLOBAL);
    std::hint::black_box(Box::new(r));
    assert!(
        probe.change().allocations >= 1,
        "the allocator is not instrumented"
    );
    for (i, (_, _, want)) in cases.iter().enumerate() {
        assert_eq!(seen[i], *want, "case {i}");
    }
}
