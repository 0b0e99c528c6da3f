//! Envoy's local rate limit from Istio's EnvoyFilter: the canary-only recipe (a descriptor
//! keyed on the routed cluster), the listener-wide bucket, and bad input, with real traffic.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::flaky::Flaky;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn split(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - name: canary-split
    route:
    - destination: {{host: web, subset: v1}}
      weight: 50
    - destination: {{host: web, subset: v2}}
      weight: 50
",
        service_yaml("web", &[("v1", v1), ("v2", v2)])
    )
}

/// The README's canary-only recipe (rollout.md D.3), for `web`'s canary at 10 req/s.
pub const CANARY_ONLY: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: web-canary-10rps
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: web_canary
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_OUTBOUND
      routeConfiguration:
        vhost:
          name: "web.default.svc.cluster.local:80"
          route:
            name: canary-split
    patch:
      operation: MERGE
      value:
        route:
          rate_limits:
          - actions:
            - destination_cluster: {}
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: web_canary
              token_bucket: {max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval: 1s}
              always_consume_default_token_bucket: false
              descriptors:
              - entries:
                - key: destination_cluster
                  value: "outbound|80|v2|web.default.svc.cluster.local"
                token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s}
              filter_enabled:
                runtime_key: rl_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              filter_enforced:
                runtime_key: rl_enforced
                default_value: {numerator: 100, denominator: HUNDRED}
              response_headers_to_add:
              - append: false
                header: {key: x-local-rate-limit, value: "true"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_canary_is_limited_to_10_per_second_on_a_shared_weighted_route() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    let p = TestProxy::start(&format!("{}---\n{CANARY_ONLY}", split(v1.addr, v2.addr))).await;
    // Open loop, 50 req/s for 4 s: 5 clients each sending every 100 ms.
    let secs = 4;
    let counts: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let counts = counts.clone();
        let addr = p.addr;
        tasks.spawn(async move {
            let mut c = Client::h1(addr).await;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..secs * 10 {
                tick.tick().await;
                let r = c.get("web", "/").await;
                let key = match r.status {
                    200 => r.text(),
                    429 => {
                        assert_eq!(r.text(), "local_rate_limited");
                        assert_eq!(r.header("x-local-rate-limit"), Some("true"));
                        "429".to_string()
                    }
                    s => format!("status {s}"),
                };
                *counts.lock().expect("lock").entry(key).or_default() += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let counts = counts.lock().expect("lock").clone();
    let limited = counts.get("429").copied().unwrap_or(0);
    let canary_ok = counts.get("v2").copied().unwrap_or(0);
    let stable_ok = counts.get("v1").copied().unwrap_or(0);
    let total: u64 = counts.values().sum();
    assert_eq!(total, 200, "{counts:?}");
    // The canary drew about 100 (4 sigma: 72..=128); it passes a burst of 10, then 10 a
    // second: about 40 to 50 in 4 s, the rest limited.
    assert!(
        (72..=128).contains(&(canary_ok + limited)),
        "canary draws: {counts:?}"
    );
    assert!(
        (35..=52).contains(&canary_ok),
        "canary passed {canary_ok}: {counts:?}"
    );
    // The stable subset is never limited: every request not to the canary succeeded.
    assert_eq!(stable_ok + canary_ok + limited, 200, "{counts:?}");
    // No limited request reached the canary.
    assert_eq!(v2.requests(), canary_ok);
    assert_eq!(v1.requests(), stable_ok);
    let text = p.metrics.encode();
    assert!(
        text.contains(&format!(
            "envoy_web_canary_http_local_rate_limit_enforced {limited}"
        )),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"429\"")
            && l.contains("response_flags=\"RL\"")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_wide_bucket_allows_its_burst_then_429_and_keeps_its_tokens_across_a_reload() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    // Istio's task, Shape 1, with the outbound context a client sidecar uses.
    let filter = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener: {filterChain: {filter: {name: "envoy.filters.network.http_connection_manager"}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
            filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
            filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}
            response_headers_to_add: [{append: false, header: {key: x-local-rate-limit, value: 'true'}}]
"#;
    let config = format!("{}---\n{filter}", split(v1.addr, v2.addr));
    let p = TestProxy::start(&config).await;
    let mut c = Client::h1(p.addr).await;
    let statuses: Vec<u16> = futures_collect(&mut c, 6).await;
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    // An unchanged bucket keeps its (empty) state across a reload.
    std::fs::write(p.config_path(), format!("{config}# touched\n")).expect("rewrite");
    p.reloader.reload().await.expect("reload");
    assert_eq!(c.get("web", "/").await.status, 429);
    // A changed one starts full.
    std::fs::write(
        p.config_path(),
        config.replace("max_tokens: 4", "max_tokens: 2"),
    )
    .expect("rewrite");
    p.reloader.reload().await.expect("reload");
    let statuses: Vec<u16> = futures_collect(&mut c, 3).await;
    assert_eq!(statuses, [200, 200, 429]);
}

async fn futures_collect(c: &mut Client, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.get("web", "/").await.status);
    }
    out
}

fn validate(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args([
            "validate",
            "--namespace",
            "default",
            dir.to_str().expect("utf-8"),
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn bad_rate_limits_are_refused_with_file_line_and_field_and_others_are_reported() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = split(addr, addr);
    let write = |filter: &str| {
        std::fs::write(dir.path().join("c.yaml"), format!("{base}---\n{filter}")).expect("write")
    };
    write(&CANARY_ONLY.replace(
        "fill_interval: 1s}\n              filter_enabled",
        "fill_interval: 10ms}\n              filter_enabled",
    ));
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines().any(
            |l| l.contains("Error IST0106 EnvoyFilter/default/web-canary-10rps")
                && l.contains("descriptors[0].token_bucket.fill_interval")
                && l.contains("under Envoy's minimum of 50ms")
        ),
        "{out}"
    );
    write(&CANARY_ONLY.replace("              token_bucket: {max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval: 1s}\n", ""));
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("a per-route local rate limit needs its own token_bucket"),
        "{out}"
    );
    write(&CANARY_ONLY.replace("- destination_cluster: {}", "- remote_address: {}"));
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("route.rate_limits[0].actions[0]") && out.contains("unsupported action"),
        "{out}"
    );
    // Not enabled: a warning, and served.
    write(&CANARY_ONLY.replace(
        "default_value: {numerator: 100, denominator: HUNDRED}\n              filter_enforced",
        "default_value: {numerator: 0, denominator: HUNDRED}\n              filter_enforced",
    ));
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("rate limit configured but not enabled"),
        "{out}"
    );
    // Any other patch: reported with its path, never dropped silently.
    write(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: lua}\nspec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_OUTBOUND}\n    patch:\n      operation: INSERT_BEFORE\n      value: {name: envoy.filters.http.lua}\n",
    );
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(|l| l
            .contains("Warning SY0002 EnvoyFilter/default/lua: spec.configPatches[0]")
            && l.contains("not supported")),
        "{out}"
    );
}
