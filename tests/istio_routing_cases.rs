//! Cases from Istio's routing integration suite (`tests/integration/pilot/common/routing.go`)
//! that an Istio sidecar serves, in single-proxy form with our own fixtures: each asserts what
//! Istio's case asserts.

mod support;

use support::e2e_helpers::PROTOS;
use support::*;

fn vs(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b}}
spec:
  hosts: [b]
  http:
{body}"
    )
}

/// `b` with subsets v1 and v2 on one port.
async fn two_subsets() -> (Upstream, Upstream, String) {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let svc = service_yaml("b", &[("v1", v1.addr), ("v2", v2.addr)]);
    (v1, v2, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_in_request_headers_rewrites_the_upstream_host() {
    let (_v1, _v2, svc) = two_subsets().await;
    // Rule-level `:authority`, destination-level `Host` (any case), a route-level value over a
    // destination one, and each weighted destination with its own.
    let config = format!(
        "{svc}{}",
        vs("  - match: [{uri: {prefix: /rule}}]
    headers: {request: {set: {':authority': rule-level.example}}}
    route: [{destination: {host: b, subset: v1}}]
  - match: [{uri: {prefix: /dest}}]
    route:
    - destination: {host: b, subset: v1}
      headers: {request: {set: {HoSt: dest-level.example}}}
  - match: [{uri: {prefix: /both}}]
    headers: {request: {set: {host: route-wins.example}}}
    route:
    - destination: {host: b, subset: v1}
      headers: {request: {set: {host: dest-loses.example}}}
  - match: [{uri: {prefix: /added}}]
    headers: {request: {add: {':authority': added.example}}}
    route: [{destination: {host: b, subset: v1}}]
  - match: [{uri: {prefix: /weighted}}]
    route:
    - destination: {host: b, subset: v1}
      weight: 50
      headers: {request: {set: {host: one.example}}}
    - destination: {host: b, subset: v2}
      weight: 50
      headers: {request: {set: {host: two.example}}}
")
    );
    let p = TestProxy::start(&config).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want) in [
            ("/rule/echo", "rule-level.example"),
            ("/dest/echo", "dest-level.example"),
            ("/both/echo", "route-wins.example"),
            ("/added/echo", "added.example"),
        ] {
            let r = c.get("b", path).await;
            assert_eq!(r.status, 200, "{proto:?} {path}");
            assert_eq!(
                r.header("x-echo-host"),
                Some(want),
                "{proto:?} {path}: {r:?}"
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let r = c.get("b", "/weighted/echo").await;
            let host = r.header("x-echo-host").unwrap_or_default().to_string();
            let upstream = r.header("x-upstream").unwrap_or_default().to_string();
            let expected = if upstream == "v1" {
                "one.example"
            } else {
                "two.example"
            };
            assert_eq!(host, expected, "{proto:?}: {upstream}");
            seen.insert(upstream);
        }
        assert_eq!(seen.len(), 2, "both weighted destinations were drawn");
    }
}

#[test]
fn explain_shows_the_authority_the_upstream_sees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let config = format!(
        "{}{}",
        service_yaml("b", &[("v1", addr)]),
        vs("  - route:
    - destination: {host: b, subset: v1}
      headers: {request: {set: {host: dest-level.example}}}
")
    );
    std::fs::write(dir.path().join("c.yaml"), config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "explain",
            "--config",
            dir.path().to_str().expect("utf-8"),
            "http://b/x",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.trim()
            == "upstream authority: dest-level.example (was b; from this destination's request headers)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_without_port_on_a_multi_port_service_takes_the_request_port() {
    let p80 = Upstream::start("port-80").await;
    let p81 = Upstream::start("port-81").await;
    assert_eq!(p80.addr.ip(), p81.addr.ip());
    let config = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b}}
spec:
  hosts: [b.default.svc.cluster.local]
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 81, name: http-alt, protocol: HTTP}}
  resolution: STATIC
  endpoints:
  - address: {ip}
    ports: {{http: {a}, http-alt: {b}}}
---
{}",
        vs("  - route: [{destination: {host: b}}]\n"),
        ip = p80.addr.ip(),
        a = p80.addr.port(),
        b = p81.addr.port(),
    );
    // Served (IST0112 is an analyzer finding; the webhook accepts it), with a warning.
    let p = TestProxy::start(&config).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (authority, want) in [("b", "port-80"), ("b:80", "port-80"), ("b:81", "port-81")] {
            let r = c.get(authority, "/").await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, want),
                "{proto:?} {authority}"
            );
        }
    }
    // `validate` still reports it as istioctl does.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.yaml"), &config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", dir.path().to_str().expect("utf-8")])
        .env("NO_COLOR", "1")
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Error IST0112"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_from_request_port_keeps_a_default_port_as_sent() {
    let (_v1, _v2, svc) = two_subsets().await;
    let config = format!(
        "{svc}{}",
        vs("  - redirect: {uri: /foo, derivePort: FROM_REQUEST_PORT}\n")
    );
    let p = TestProxy::start(&config).await;
    let mut c = Client::h1(p.addr).await;
    for (host, location) in [
        ("b", "http://b/foo"),
        ("b:80", "http://b:80/foo"),
        ("b:85", "http://b:85/foo"),
    ] {
        let r = c.get(host, "/").await;
        assert_eq!(r.status, 301, "{host}");
        assert_eq!(r.header("location"), Some(location), "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_match_pseudo_headers_on_http1_and_http2() {
    let (_v1, _v2, svc) = two_subsets().await;
    let config = format!(
        "{svc}{}",
        vs("  - match: [{headers: {':method': {exact: POST}}}]
    route: [{destination: {host: b, subset: v2}}]
  - match: [{headers: {':path': {exact: /q?x=1}}}]
    route: [{destination: {host: b, subset: v2}}]
  - match: [{headers: {':authority': {exact: 'b:8080'}}}]
    route: [{destination: {host: b, subset: v2}}]
  - match: [{uri: {prefix: /scheme}, headers: {':scheme': {exact: http}}}]
    route: [{destination: {host: b, subset: v2}}]
  - match: [{uri: {prefix: /not-get}, withoutHeaders: {':method': {exact: GET}}}]
    route: [{destination: {host: b, subset: v2}}]
  - route: [{destination: {host: b, subset: v1}}]
")
    );
    let p = TestProxy::start(&config).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let cases: [(&str, &str, &str, &str); 8] = [
            ("POST", "b", "/", "v2"),
            ("GET", "b", "/", "v1"),
            ("GET", "b", "/q?x=1", "v2"),
            ("GET", "b", "/q?x=2", "v1"),
            ("GET", "b:8080", "/", "v2"),
            ("GET", "b", "/scheme", "v2"),
            ("PUT", "b", "/not-get", "v2"),
            ("GET", "b", "/not-get", "v1"),
        ];
        for (method, authority, path, want) in cases {
            let r = c.request(method, authority, path, &[]).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, want),
                "{proto:?} {method} {authority}{path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_keepalive_is_accepted_and_reported_as_not_enforced() {
    let (_v1, _v2, svc) = two_subsets().await;
    let config = format!(
        "{svc}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b-keepalive}}
spec:
  host: other.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http:
        http2KeepAlive: {{time: 30s, interval: 5s, timeout: 2s}}
"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.yaml"), &config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "validate",
            "--namespace",
            "default",
            dir.path().to_str().expect("utf-8"),
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("IST0106"), "a valid Istio field: {text}");
    assert!(
        text.lines()
            .any(|l| l.contains("SY0002") && l.contains("http2KeepAlive")),
        "{text}"
    );
}
