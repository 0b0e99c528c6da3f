//! One routing decision on a 10-host × 10-route table with header and regex matches, and one
//! weighted draw alone: the pure part of the request path, measured without sockets.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};

use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{LoadOptions, ProxyIdentity, load_str};
use switchyard::route::compile::{CompileOptions, OutboundPolicy, compile};
use switchyard::route::weighted::WeightedPick;
use switchyard::route::{Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

/// Ten services, each with nine header/regex/uri rules before its 95/5 split.
fn config() -> String {
    let mut y = String::new();
    for h in 0..10 {
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{h}}}\nspec:\n  hosts: [svc{h}.default.svc.cluster.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: 9001}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{http: 9002}}, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{h}}}\nspec:\n  host: svc{h}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{h}}}\nspec:\n  hosts: [svc{h}]\n  http:\n"
        ));
        for r in 0..9 {
            let m = match r % 3 {
                0 => format!("    - headers: {{x-user-group: {{exact: group{r}}}}}\n"),
                1 => format!(
                    "    - headers: {{cookie: {{regex: \"^(.*?;)?(user=dev-{r}\\\\d+)(;.*)?$\"}}}}\n"
                ),
                _ => format!("    - uri: {{regex: \"/api/v{r}/[a-z]+/\\\\d+\"}}\n"),
            };
            y.push_str(&format!(
                "  - name: r{r}\n    match:\n{m}    route:\n    - destination: {{host: svc{h}, subset: v2}}\n"
            ));
        }
        y.push_str(&format!(
            "  - name: split\n    route:\n    - destination: {{host: svc{h}, subset: v1}}\n      weight: 95\n    - destination: {{host: svc{h}, subset: v2}}\n      weight: 5\n---\n"
        ));
    }
    y
}

fn table() -> RouteTable {
    let identity = ProxyIdentity::default();
    let res = load_str(Path::new("bench.yaml"), &config(), &LoadOptions::default());
    let diags = validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: false,
        },
    );
    assert!(
        !diags.iter().any(|d| d.is_error()),
        "bench config invalid: {diags:?}"
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
    .expect("bench table compiles")
}

fn bench(c: &mut Criterion) {
    let table = table();
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_static("session=abc; theme=dark"),
    );
    headers.insert("user-agent", HeaderValue::from_static("curl/8.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    let view = RequestView {
        method: "GET",
        scheme: "http",
        authority: "svc7",
        port: 80,
        path: "/api/v2/items/42x",
        query: None,
        headers: &headers,
    };
    // The request falls through all nine rules to the split: the slowest common case.
    assert!(matches!(
        table.route("svc7", &view, 1),
        Decision::Forward { .. }
    ));
    let mut r = 0u64;
    c.bench_function(
        "route: 10 hosts x 10 routes, falls through 9 header/regex rules",
        |b| {
            b.iter(|| {
                r = r.wrapping_add(0x9E37_79B9_7F4A_7C15);
                black_box(matches!(
                    table.route(black_box("svc7"), black_box(&view), r),
                    Decision::Forward { .. }
                ))
            })
        },
    );
    let mut beta = headers.clone();
    beta.insert("x-user-group", HeaderValue::from_static("group0"));
    let beta_view = RequestView {
        headers: &beta,
        ..view
    };
    c.bench_function("route: header match on the first rule", |b| {
        b.iter(|| {
            black_box(matches!(
                table.route(black_box("svc7"), black_box(&beta_view), 0),
                Decision::Forward { .. }
            ))
        })
    });
    // The canary-only rate limit's check (descriptor keyed on the routed cluster): a few
    // atomics and string compares, no lock, no allocation.
    let limit = canary_limit();
    let canary = "outbound|80|v2|web.default.svc.cluster.local";
    c.bench_function("rate limit: canary descriptor check (tokens left)", |b| {
        b.iter(|| black_box(limit.check(black_box(&headers), black_box(Some(canary)), 80, 0, 0)))
    });
    // The sticky pick on top of a decision: find the key, hash it, find its interval.
    let sticky = switchyard::route::sticky::Sticky::new(
        switchyard::route::sticky::StickyKey::Header(http::header::HeaderName::from_static(
            "x-user-id",
        )),
        "VirtualService/default/web/split",
        &[95, 5],
        None,
    );
    let mut user = headers.clone();
    user.insert("x-user-id", HeaderValue::from_static("user-4711"));
    c.bench_function("sticky: key lookup, hash and interval", |b| {
        b.iter(|| black_box(sticky.pick(black_box(&user), None)))
    });
    let pick = WeightedPick::new(vec![(95u32, "v1"), (5u32, "v2")]).expect("weights");
    c.bench_function("weighted draw 95/5", |b| {
        b.iter(|| {
            r = r.wrapping_add(0x9E37_79B9_7F4A_7C15);
            black_box(pick.pick(black_box(r)))
        })
    });
}

fn canary_limit() -> switchyard::ratelimit::RouteLimit {
    use std::sync::Arc;
    use switchyard::ratelimit::{Bucket, BucketDef, LimitDef, LimitStats, RlAction, RouteLimit};
    let huge = BucketDef {
        max_tokens: u64::MAX / 2,
        tokens_per_fill: u64::MAX / 2,
        fill_interval: std::time::Duration::from_secs(1),
    };
    let entries = vec![(
        "destination_cluster".to_string(),
        "outbound|80|v2|web.default.svc.cluster.local".to_string(),
    )];
    RouteLimit {
        def: LimitDef {
            stat_prefix: "bench".into(),
            bucket: Some(huge.clone()),
            descriptors: vec![(entries.clone(), huge.clone())],
            always_consume_default: false,
            enabled: 1_000_000,
            enforced: 1_000_000,
            status: http::StatusCode::TOO_MANY_REQUESTS,
            headers: Vec::new(),
            actions: vec![RlAction::DestinationCluster],
        },
        stats: Arc::new(LimitStats::default()),
        default_bucket: Some(Arc::new(Bucket::new(&huge))),
        descriptor_buckets: vec![(entries, Arc::new(Bucket::new(&huge)))],
        port: None,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
