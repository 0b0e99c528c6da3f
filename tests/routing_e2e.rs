//! End-to-end routing: real upstreams on 127.0.0.1, the real proxy in-process, real client
//! sockets over HTTP/1.1 and h2c. Each test states the Istio/Envoy behaviour it checks
//! (the semantics the README's "What it does with your YAML" describes).

mod support;

use std::net::SocketAddr;

use support::e2e_helpers::*;
use support::*;
use switchyard::ProxyIdentity;
use switchyard::ReloadOutcome;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/istio-examples");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// Upstreams named after their subsets.
async fn upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut out = Vec::new();
    for n in names {
        out.push(Upstream::start(n).await);
    }
    out
}

/// `service_yaml` for `host` with one subset per upstream, named like the upstream.
fn svc(host: &str, ups: &[Upstream]) -> String {
    let eps: Vec<(&str, SocketAddr)> = ups.iter().map(|u| (u.name.as_str(), u.addr)).collect();
    service_yaml(host, &eps)
}

/// The seed article's `my-service` with v1/v2 endpoints, its DestinationRule, and `vs_file`
/// exactly as written.
fn seed_config(v1: &Upstream, v2: &Upstream, vs_file: &str) -> String {
    format!(
        "{}{}\n---\n{}\n",
        service_entry(
            "my-service",
            "default",
            "my-service.default.svc.cluster.local",
            "HTTP",
            &[("version=v1", v1.addr), ("version=v2", v2.addr)],
        ),
        fixture("seed-my-service-destinationrule.yaml"),
        fixture(vs_file)
    )
}

/// (path, request headers, expected upstream)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn vs(name: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {hosts}\n  http:\n{http}---\n"
    )
}

async fn body_of(c: &mut Client, authority: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let r = c.request("GET", authority, path, headers).await;
    assert_eq!(
        r.status,
        200,
        "{:?} {authority}{path} {headers:?}: {}",
        c.proto(),
        r.text()
    );
    r.text()
}

// ---------------------------------------------------------------------------------------------
// Weighted splits (reference §4.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_95_5_split_lands_within_4_sigma_over_20000_requests() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let p = TestProxy::start(&seed_config(&v1, &v2, "seed-my-service-step-95-5.yaml")).await;
    // 20,000 draws: 10,000 over HTTP/1.1 and 10,000 over h2c, 8 connections each, at once.
    const N: usize = 20_000;
    let (t1, t2) = par_tally_both(p.addr, 8, N, "my-service", "/", &[]).await;
    for (proto, t) in [(Proto::H1, &t1), (Proto::H2, &t2)] {
        let n1 = t.get("v1").copied().unwrap_or(0);
        let n2 = t.get("v2").copied().unwrap_or(0);
        assert_eq!(n1 + n2, N / 2, "{proto:?}: unexpected answers {t:?}");
        assert_within_4_sigma(n2, N / 2, 0.05, &format!("{proto:?} v2 share of 95/5"));
    }
    let all = merged(&t1, &t2);
    assert_within_4_sigma(all["v2"], N, 0.05, "v2 share of 95/5");
    assert_eq!(v1.requests() + v2.requests(), N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_need_not_sum_to_100() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = "  - route:\n    - destination: {host: web, subset: v1}\n      weight: 1\n    - destination: {host: web, subset: v2}\n      weight: 3\n";
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    const N: usize = 8_000;
    let (t1, t2) = par_tally_both(p.addr, 4, N, "web", "/", &[]).await;
    for (proto, t) in [(Proto::H1, &t1), (Proto::H2, &t2)] {
        let n1 = t.get("v1").copied().unwrap_or(0);
        let n2 = t.get("v2").copied().unwrap_or(0);
        assert_eq!(n1 + n2, N / 2, "{proto:?}: unexpected answers {t:?}");
    }
    let all = merged(&t1, &t2);
    assert_within_4_sigma(all["v1"], N, 0.25, "v1 share of weights 1/3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_100_0_zero_weight_destination_never_receives_traffic() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let p = TestProxy::start(&seed_config(&v1, &v2, "seed-my-service-step-100-0.yaml")).await;
    let (t1, t2) = par_tally_both(p.addr, 4, 2_000, "my-service", "/", &[]).await;
    assert_eq!(t1.get("v1"), Some(&1_000), "H1: {t1:?}");
    assert_eq!(t2.get("v1"), Some(&1_000), "H2: {t2:?}");
    assert_eq!(v2.requests(), 0, "the weight-0 canary was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_destination_with_weight_zero_gets_everything() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = "  - route:\n    - destination: {host: web, subset: v2}\n      weight: 0\n";
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    for proto in PROTOS {
        let t = par_tally(p.addr, proto, 2, 300, "web", "/", &[]).await;
        assert_eq!(t.get("v2"), Some(&300), "{proto:?}: {t:?}");
    }
    assert_eq!(ups[0].requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Match conditions (reference §3)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_beta_header_always_reaches_v2_1000_of_1000() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    // The 95/5 step first, with the header rule of the seed article spliced in front: a
    // header-matched request must never take part in the draw.
    let header_vs = fixture("seed-my-service-beta-header.yaml").replace(
        "      weight: 100",
        "      weight: 95\n    - destination:\n        host: my-service\n        subset: v2\n      weight: 5",
    );
    let yaml = format!(
        "{}{}\n---\n{header_vs}\n",
        service_entry(
            "my-service",
            "default",
            "my-service.default.svc.cluster.local",
            "HTTP",
            &[("version=v1", v1.addr), ("version=v2", v2.addr)],
        ),
        fixture("seed-my-service-destinationrule.yaml"),
    );
    let p = TestProxy::start(&yaml).await;
    // The client sends the header name as written in the seed article; the h1 wire case is
    // covered by `header_exact_prefix_regex_with_case_insensitive_names`.
    let beta = [("X-User-Group", "beta")];
    let (t1, t2) = par_tally_both(p.addr, 4, 2_000, "my-service", "/", &beta).await;
    assert_eq!(t1.get("v2"), Some(&1_000), "H1: {t1:?}");
    assert_eq!(t2.get("v2"), Some(&1_000), "H2: {t2:?}");
    // Values are case-sensitive: `Beta` takes the weighted default route.
    let other = [("x-user-group", "Beta")];
    let (t1, t2) = par_tally_both(p.addr, 2, 400, "my-service", "/", &other).await;
    let all = merged(&t1, &t2);
    assert!(all.get("v1").copied().unwrap_or(0) > 300, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_exact_prefix_regex_with_case_insensitive_names() {
    let ups = upstreams(&["base", "exact", "prefix", "regex"]).await;
    let http = r#"  - match:
    - headers:
        X-User-Group: {exact: beta}
    route:
    - destination: {host: web, subset: exact}
  - match:
    - headers:
        x-tier: {prefix: gold}
    route:
    - destination: {host: web, subset: prefix}
  - match:
    - headers:
        x-build: {regex: '\d+'}
    route:
    - destination: {host: web, subset: regex}
  - route:
    - destination: {host: web, subset: base}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("x-user-group", "beta")], "exact"),
        (&[("X-USER-GROUP", "beta")], "exact"),
        (&[("x-user-group", "Beta")], "base"),
        (&[("x-user-group", "beta2")], "base"),
        (&[("x-tier", "gold-plus")], "prefix"),
        (&[("x-tier", "gold")], "prefix"),
        (&[("x-tier", "Gold")], "base"),
        (&[("x-tier", "silver-gold")], "base"),
        (&[("x-build", "1234")], "regex"),
        (&[("x-build", "12a")], "base"),
        (&[("x-build", "a1234")], "base"),
        // Repeated values are joined with "," before matching, as Envoy does.
        (&[("x-tier", "silver"), ("x-tier", "gold")], "base"),
        (&[("x-tier", "gold"), ("x-tier", "silver")], "prefix"),
        (
            &[("x-user-group", "beta"), ("x-user-group", "beta")],
            "base",
        ),
        (&[], "base"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (headers, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", "/", headers).await,
                *want,
                "{proto:?} {headers:?}"
            );
        }
    }
    // On the wire HTTP/1 header names keep the client's case; matching must ignore it.
    let raw = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nX-USER-GROUP: beta\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.contains("x-upstream: exact"), "{text}");
    // Non-ASCII digits must not satisfy `\d` (raw bytes: UTF-8 Arabic-Indic digits).
    let mut req = b"GET / HTTP/1.1\r\nHost: web\r\nx-build: ".to_vec();
    req.extend_from_slice("١٢".as_bytes());
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let raw = raw_exchange(p.addr, &req, std::time::Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.contains("x-upstream: base"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_blocks_are_ored_and_conditions_anded() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = r#"  - match:
    - uri: {prefix: /and}
      headers:
        x-a: {exact: "1"}
    - headers:
        x-b: {exact: "1"}
    route:
    - destination: {host: web, subset: v2}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases: &[Case] = &[
        ("/and/x", &[("x-a", "1")], "v2"),
        ("/other", &[("x-a", "1")], "v1"),
        ("/and/x", &[], "v1"),
        ("/and/x", &[("x-a", "2")], "v1"),
        ("/anything", &[("x-b", "1")], "v2"),
        ("/and", &[("x-b", "1"), ("x-a", "0")], "v2"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, headers, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, headers).await,
                *want,
                "{proto:?} {path} {headers:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_headers_inverts_and_treats_missing_as_empty() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = r#"  - match:
    - uri: {prefix: /w}
      withoutHeaders:
        x-canary: {exact: "off"}
    route:
    - destination: {host: web, subset: v2}
  - match:
    - uri: {prefix: /p}
      withoutHeaders:
        x-debug: {}
    route:
    - destination: {host: web, subset: v2}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases: &[Case] = &[
        ("/w", &[("x-canary", "off")], "v1"),
        ("/w", &[("x-canary", "on")], "v2"),
        ("/w", &[], "v2"),
        ("/p", &[("x-debug", "1")], "v1"),
        ("/p", &[], "v2"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, headers, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, headers).await,
                *want,
                "{proto:?} {path} {headers:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_params_match_the_first_value_only() {
    let ups = upstreams(&["v1", "v2", "v3"]).await;
    let http = r#"  - match:
    - queryParams:
        user: {exact: jason}
    route:
    - destination: {host: web, subset: v2}
  - match:
    - queryParams:
        id: {regex: '\d+'}
    route:
    - destination: {host: web, subset: v3}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases = [
        ("/?user=jason", "v2"),
        ("/x?a=1&user=jason", "v2"),
        ("/?user=jason&user=bob", "v2"),
        ("/?user=bob&user=jason", "v1"),
        ("/?xuser=jason", "v1"),
        ("/?user=Jason", "v1"),
        ("/?id=42", "v3"),
        ("/?id=4a", "v1"),
        ("/?id=", "v1"),
        ("/", "v1"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, &[]).await,
                want,
                "{proto:?} {path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_exact_prefix_regex_and_ignore_uri_case() {
    let ups = upstreams(&["base", "exact", "prefix", "regex", "nocase"]).await;
    let http = r#"  - match:
    - uri: {exact: /exact}
    route:
    - destination: {host: web, subset: exact}
  - match:
    - uri: {prefix: /pre}
    route:
    - destination: {host: web, subset: prefix}
  - match:
    - uri: {regex: '/re/[0-9]+'}
    route:
    - destination: {host: web, subset: regex}
  - match:
    - uri: {exact: /Ignore/Me}
      ignoreUriCase: true
    - uri: {prefix: /CI/}
      ignoreUriCase: true
    route:
    - destination: {host: web, subset: nocase}
  - route:
    - destination: {host: web, subset: base}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases = [
        ("/exact", "exact"),
        ("/exact?x=1", "exact"),
        ("/exact/", "base"),
        ("/EXACT", "base"),
        ("/pre", "prefix"),
        ("/prefixed/deep", "prefix"),
        ("/PRE", "base"),
        ("/re/123", "regex"),
        ("/re/123?q=a", "regex"),
        ("/re/12a", "base"),
        ("/re/123/x", "base"),
        ("/x/re/123", "base"),
        ("/ignore/me", "nocase"),
        ("/IGNORE/ME?z", "nocase"),
        ("/ignore/me/too", "base"),
        ("/ci/anything", "nocase"),
        ("/Ci/Other", "nocase"),
        ("/c/i", "base"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, &[]).await,
                want,
                "{proto:?} {path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_authority_and_port_matches() {
    let ups = upstreams(&["v1", "post", "auth", "port"]).await;
    let http = r#"  - match:
    - method: {regex: 'POST|PUT'}
    route:
    - destination: {host: web, subset: post}
  - match:
    - scheme: {exact: https}
    route:
    - destination: {host: web, subset: post}
  - match:
    - authority: {exact: "web.default:9000"}
    route:
    - destination: {host: web, subset: auth}
  - match:
    - port: 8080
    route:
    - destination: {host: web, subset: port}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let cases: &[(&str, &str, &str)] = &[
            ("POST", "web", "post"),
            ("PUT", "web", "post"),
            ("GET", "web", "v1"),
            ("DELETE", "web", "v1"),
            // `authority` sees the raw Host, port included.
            ("GET", "web.default:9000", "auth"),
            ("GET", "web.default", "v1"),
            ("GET", "web:9000", "v1"),
            // `port` compares with the port the client addressed (80 when absent).
            ("GET", "web:8080", "port"),
            ("GET", "web.default.svc.cluster.local:8080", "port"),
            ("GET", "web:80", "v1"),
        ];
        for (method, authority, want) in cases {
            let r = c.request(method, authority, "/", &[]).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, *want),
                "{proto:?} {method} {authority}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_and_source_namespace_follow_the_proxy_identity() {
    let ups = upstreams(&["v1", "canary", "nsmatch"]).await;
    let eps: Vec<(String, SocketAddr)> = ups
        .iter()
        .map(|u| (format!("version={}", u.name), u.addr))
        .collect();
    let eps: Vec<(&str, SocketAddr)> = eps.iter().map(|(l, a)| (l.as_str(), *a)).collect();
    // Everything in namespace `default`, explicitly, so a proxy in `test` sees the same config.
    let yaml = service_entry(
        "web",
        "default",
        "web.default.svc.cluster.local",
        "HTTP",
        &eps,
    ) + &destination_rule("web", "default", "web", &["v1", "canary", "nsmatch"])
        + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts: [web]
  http:
  - match:
    - sourceLabels: {app: frontend, track: canary}
    route:
    - destination: {host: web, subset: canary}
  - match:
    - sourceNamespace: test
    route:
    - destination: {host: web, subset: nsmatch}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let identity = |ns: &str, labels: &[(&str, &str)]| ProxyIdentity {
        namespace: ns.to_string(),
        workload: "client".to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let cases: Vec<(ProxyIdentity, &str)> = vec![
        (
            identity(
                "default",
                &[("app", "frontend"), ("track", "canary"), ("extra", "x")],
            ),
            "canary",
        ),
        // sourceLabels must be a subset of ours: one missing label fails.
        (identity("default", &[("app", "frontend")]), "v1"),
        (identity("default", &[]), "v1"),
        (identity("test", &[]), "nsmatch"),
        (
            identity("test", &[("app", "frontend"), ("track", "canary")]),
            "canary",
        ),
    ];
    for (id, want) in cases {
        let what = format!("{id:?}");
        // From another namespace, `web` alone is not a name of this service.
        let host = if id.namespace == "default" {
            "web"
        } else {
            "web.default"
        };
        let p = TestProxy::start_with(
            &yaml,
            ProxyOptions {
                identity: id,
                ..ProxyOptions::default()
            },
        )
        .await;
        for proto in PROTOS {
            let mut c = Client::connect(p.addr, proto).await;
            assert_eq!(
                body_of(&mut c, host, "/", &[]).await,
                want,
                "{proto:?} {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bound_rules_do_not_apply_to_the_sidecar() {
    let ups = upstreams(&["v1", "v2", "gw"]).await;
    let yaml = svc("web", &ups)
        + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web-edge
spec:
  hosts: [web]
  gateways: [istio-system/ingress]
  http:
  - route:
    - destination: {host: web, subset: gw}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: [web]
  http:
  - match:
    - uri: {prefix: /gw}
      gateways: [istio-system/ingress]
    route:
    - destination: {host: web, subset: gw}
  - match:
    - uri: {prefix: /mesh}
      gateways: [mesh]
    - uri: {prefix: /both}
      gateways: [istio-system/ingress, mesh]
    route:
    - destination: {host: web, subset: v2}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&yaml).await;
    let cases = [
        ("/", "v1"),
        ("/gw/x", "v1"),
        ("/mesh", "v2"),
        ("/both", "v2"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, &[]).await,
                want,
                "{proto:?} {path}"
            );
        }
    }
    assert_eq!(
        ups[2].requests(),
        0,
        "a gateway-only rule served the sidecar"
    );
}

// ---------------------------------------------------------------------------------------------
// Host → virtual host (reference §2)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubernetes_host_form_reaches_the_same_virtual_host() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = "  - route:\n    - destination: {host: web, subset: v2}\n";
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let forms = [
        "web",
        "web:80",
        "web:8080",
        "web.default",
        "web.default:80",
        "web.default.svc",
        "web.default.svc.cluster.local",
        "web.default.svc.cluster.local:80",
        "WEB",
        "Web.Default.Svc.Cluster.Local",
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for host in forms {
            assert_eq!(
                body_of(&mut c, host, "/", &[]).await,
                "v2",
                "{proto:?} {host}"
            );
        }
        for unknown in ["web.other", "web.default.svc.cluster", "webx"] {
            let r = c.get(unknown, "/").await;
            assert_eq!(r.status, 502, "{proto:?} {unknown}: {}", r.text());
        }
    }
    assert_eq!(ups[0].requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_in_another_namespace_needs_qualified_names() {
    let api = Upstream::start("api").await;
    let yaml = service_entry(
        "api",
        "shop",
        "api.shop.svc.cluster.local",
        "HTTP",
        &[("version=v1", api.addr)],
    ) + &destination_rule("api", "shop", "api", &["v1"])
        + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
  namespace: shop
spec:
  hosts: [api]
  http:
  - route:
    - destination: {host: api, subset: v1}
    headers:
      response:
        set: {x-vs: shop-api}
"#;
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for host in [
            "api.shop",
            "api.shop:80",
            "api.shop.svc",
            "api.shop.svc.cluster.local",
        ] {
            let r = c.get(host, "/").await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "api"),
                "{proto:?} {host}"
            );
            assert_eq!(r.header("x-vs"), Some("shop-api"), "{proto:?} {host}");
        }
        // The bare name resolves in the client's namespace (default), where nothing is.
        let r = c.get("api", "/").await;
        assert_eq!(r.status, 502, "{proto:?} bare name: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_dot_in_another_namespace_is_invisible() {
    let api = Upstream::start("api").await;
    let yaml = service_entry(
        "api",
        "shop",
        "api.shop.svc.cluster.local",
        "HTTP",
        &[("version=v1", api.addr)],
    ) + &service_entry(
        "pub",
        "shop",
        "pub.shop.svc.cluster.local",
        "HTTP",
        &[("version=v1", api.addr)],
    ) + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-private
  namespace: shop
spec:
  hosts: [api]
  exportTo: ["."]
  http:
  - directResponse:
      status: 418
      body: {string: private}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: pub
  namespace: shop
spec:
  hosts: [pub]
  exportTo: ["*"]
  http:
  - directResponse:
      status: 418
      body: {string: public}
"#;
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        // The private VirtualService does not exist for us: the ServiceEntry's default route.
        let r = c.get("api.shop", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "api"), "{proto:?}");
        let r = c.get("pub.shop", "/").await;
        assert_eq!((r.status, r.text().as_str()), (418, "public"), "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_uri_routes_by_its_authority() {
    let web = Upstream::start("web").await;
    let other = Upstream::start("other").await;
    let yaml =
        service_yaml("web", &[("v1", web.addr)]) + &service_yaml("other", &[("v1", other.addr)]);
    let p = TestProxy::start(&yaml).await;
    let mut c = Client::h1(p.addr).await;
    // As an http_proxy client sends it: absolute-form, Host naming the same authority.
    let r = c
        .request("GET", "web", "http://web/echo/path?q=1", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("web"));
    // The upstream gets origin-form, never the absolute URI.
    assert_eq!(r.header("x-echo-path"), Some("/echo/path?q=1"));
    assert_eq!(r.header("x-echo-host"), Some("web"));
    // RFC 9112 §3.2.2: the absolute-form authority wins over a disagreeing Host.
    let r = c.request("GET", "other", "http://web/x", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "web"));
    assert_eq!(r.header("x-echo-path"), Some("/x"));
    assert_eq!(other.requests(), 0);
    // And over h2, where it is :authority.
    let mut c = Client::h2(p.addr).await;
    let r = c.request("GET", "", "http://other/x", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_of_two_virtual_services_for_one_host_wins_and_config_is_accepted() {
    let ups = upstreams(&["v1", "v2"]).await;
    let route_to = |name: &str, subset: &str| {
        vs(
            name,
            "[web]",
            &format!("  - route:\n    - destination: {{host: web, subset: {subset}}}\n"),
        )
    };
    // Same file: document order decides.
    let yaml = svc("web", &ups) + &route_to("web-first", "v2") + &route_to("web-second", "v1");
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let t = par_tally(p.addr, proto, 2, 50, "web", "/", &[]).await;
        assert_eq!(t.get("v2"), Some(&50), "{proto:?}: {t:?}");
    }
    // Across files: sorted path order decides, not the order they were written in.
    p.rewrite(&svc("web", &ups)).await.expect("service only");
    write_config_files(
        &p,
        &[
            ("zz-web.yaml", Some(&route_to("web-z", "v2"))),
            ("aa-web.yaml", Some(&route_to("web-a", "v1"))),
        ],
    );
    match p.reloader.reload().await {
        Ok(ReloadOutcome::Applied { warnings, .. }) => {
            let text: Vec<String> = warnings.iter().map(|d| d.to_string()).collect();
            assert!(
                text.iter().any(|w| w.contains("IST0109")),
                "the conflict must be reported: {text:?}"
            );
        }
        other => panic!("two VirtualServices for one host must be accepted: {other:?}"),
    }
    for proto in PROTOS {
        let t = par_tally(p.addr, proto, 2, 50, "web", "/", &[]).await;
        assert_eq!(t.get("v1"), Some(&50), "{proto:?}: {t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints: ServiceEntry, WorkloadEntry, DNS, upstream protocol (reference §2, §7)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_without_virtual_service_gets_the_default_route() {
    let ups = upstreams(&["v1", "v2"]).await;
    let p = TestProxy::start(&svc("web", &ups)).await;
    for proto in PROTOS {
        let t = par_tally(p.addr, proto, 4, 400, "web", "/any/path", &[]).await;
        let n1 = t.get("v1").copied().unwrap_or(0);
        let n2 = t.get("v2").copied().unwrap_or(0);
        assert_eq!(n1 + n2, 400, "{proto:?}: {t:?}");
        assert!(n1 > 40 && n2 > 40, "{proto:?}: both endpoints serve: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_entries_selected_by_workload_selector_are_the_endpoints() {
    let ups = upstreams(&["v1", "v2", "stray"]).await;
    let we = |name: &str, app: &str, version: &str, addr: SocketAddr| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: {app}\n    version: {version}\n---\n",
            addr.ip(),
            addr.port()
        )
    };
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: details
spec:
  hosts: [details.bookinfo.com]
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels: {app: details}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
spec:
  host: details.bookinfo.com
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details
spec:
  hosts: [details.bookinfo.com]
  http:
  - match:
    - headers:
        x-v2: {exact: "yes"}
    route:
    - destination: {host: details.bookinfo.com, subset: v2}
  - route:
    - destination: {host: details.bookinfo.com, subset: v1}
---
"#
    .to_string()
        + &we("details-v1", "details", "v1", ups[0].addr)
        + &we("details-v2", "details", "v2", ups[1].addr)
        + &we("reviews-v1", "reviews", "v1", ups[2].addr);
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let t = par_tally(p.addr, proto, 2, 100, "details.bookinfo.com", "/", &[]).await;
        assert_eq!(t.get("v1"), Some(&100), "{proto:?}: {t:?}");
        let t = par_tally(
            p.addr,
            proto,
            2,
            100,
            "details.bookinfo.com",
            "/",
            &[("x-v2", "yes")],
        )
        .await;
        assert_eq!(t.get("v2"), Some(&100), "{proto:?}: {t:?}");
    }
    assert_eq!(
        ups[2].requests(),
        0,
        "a WorkloadEntry the selector excludes got traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_resolution_localhost_resolves_and_serves() {
    let up = Upstream::start("dns").await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: local\nspec:\n  hosts: [local.example.com]\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: DNS\n  endpoints:\n  - address: localhost\n    ports:\n      http: {}\n",
        up.addr.port()
    );
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for _ in 0..20 {
            let r = c.get("local.example.com", "/").await;
            assert_eq!((r.status, r.text().as_str()), (200, "dns"), "{proto:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_service_port_makes_the_proxy_speak_h2_upstream() {
    let up = Upstream::start("h2up").await;
    let plain = Upstream::start("h1up").await;
    let yaml = service_entry(
        "h2svc",
        "default",
        "h2svc.default.svc.cluster.local",
        "HTTP2",
        &[("version=v1", up.addr)],
    ) + &service_entry(
        "h1svc",
        "default",
        "h1svc.default.svc.cluster.local",
        "HTTP",
        &[("version=v1", plain.addr)],
    );
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for host in ["h2svc", "h2svc.default.svc.cluster.local"] {
            let r = c.get(host, "/echo").await;
            assert_eq!(r.status, 200, "{proto:?} {host}: {}", r.text());
            assert_eq!(r.header("x-echo-version"), Some("HTTP/2.0"), "{proto:?}");
            // The service name travels as :authority, not the endpoint address we dialled.
            assert_eq!(r.header("x-echo-host"), Some(host), "{proto:?}");
            assert_eq!(r.json()["authority"], host, "{proto:?}");
        }
        let r = c.get("h1svc", "/").await;
        assert_eq!(r.header("x-echo-version"), Some("HTTP/1.1"), "{proto:?}");
        assert_eq!(r.header("x-echo-host"), Some("h1svc"), "{proto:?}");
    }
    // One multiplexed upstream connection serves both downstream clients.
    assert_eq!(up.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// Delegation and paths
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_virtual_service_splices_its_routes() {
    let ups = upstreams(&["v1", "v2", "v3"]).await;
    let yaml = svc("web", &ups)
        + r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: [web]
  http:
  - match:
    - uri: {prefix: /api}
    delegate:
      name: web-api
      namespace: default
  - route:
    - destination: {host: web, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web-api
spec:
  http:
  - match:
    - uri: {prefix: /api/v2}
    route:
    - destination: {host: web, subset: v2}
  - route:
    - destination: {host: web, subset: v3}
"#;
    let p = TestProxy::start(&yaml).await;
    let cases = [
        ("/api/v2/items", "v2"),
        ("/api/v1/items", "v3"),
        ("/api", "v3"),
        ("/", "v1"),
        ("/other/api/v2", "v1"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want) in cases {
            assert_eq!(
                body_of(&mut c, "web", path, &[]).await,
                want,
                "{proto:?} {path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_matching_and_forwarded_normalised() {
    let ups = upstreams(&["public", "admin"]).await;
    let http = r#"  - match:
    - uri: {prefix: /admin}
    route:
    - destination: {host: web, subset: admin}
  - route:
    - destination: {host: web, subset: public}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases = [
        ("/public/../admin", "admin", "/admin"),
        ("/a/b/../../admin/x?q=1", "admin", "/admin/x?q=1"),
        ("/./admin", "admin", "/admin"),
        ("/public/./x", "public", "/public/x"),
        ("/public/../x", "public", "/x"),
        ("/admin/../public", "public", "/public"),
        // BASE normalisation does not merge slashes.
        ("//admin", "public", "//admin"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, want, forwarded) in cases {
            let r = c.get("web", path).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, want),
                "{proto:?} {path}"
            );
            assert_eq!(r.header("x-echo-path"), Some(forwarded), "{proto:?} {path}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Route actions: rewrite, headers, redirect, directResponse (reference §4.2–§4.5)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_uri_authority_and_regex() {
    let ups = upstreams(&["v1"]).await;
    let http = r#"  - match:
    - uri: {prefix: /old}
    rewrite:
      uri: /echo/new
    route:
    - destination: {host: web, subset: v1}
  - match:
    - uri: {exact: /whole}
    rewrite:
      uri: /echo/replaced
    route:
    - destination: {host: web, subset: v1}
  - match:
    - uri: {regex: '/rx/[0-9]+'}
    rewrite:
      uri: /echo/rx
    route:
    - destination: {host: web, subset: v1}
  - match:
    - uri: {prefix: /host}
    rewrite:
      authority: backend.internal:9999
    route:
    - destination: {host: web, subset: v1}
  - match:
    - uri: {prefix: /svc}
    rewrite:
      uriRegexRewrite:
        match: '^/svc/([^/]+)/(.*)$'
        rewrite: '/echo/\2/by/\1'
    route:
    - destination: {host: web, subset: v1}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;

        let r = c.get("web", "/old/item?id=7").await;
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        assert_eq!(
            r.header("x-echo-path"),
            Some("/echo/new/item?id=7"),
            "{proto:?}"
        );
        assert_eq!(
            echoed(&r, "x-envoy-original-path").as_deref(),
            Some("/old/item?id=7"),
            "{proto:?}"
        );

        let r = c.get("web", "/whole?k=v").await;
        assert_eq!(
            r.header("x-echo-path"),
            Some("/echo/replaced?k=v"),
            "{proto:?}"
        );

        // A regex match covers the whole path, so the rewrite replaces all of it.
        let r = c.get("web", "/rx/42?k=1").await;
        assert_eq!(r.header("x-echo-path"), Some("/echo/rx?k=1"), "{proto:?}");

        let r = c.get("web", "/host/echo").await;
        assert_eq!(
            r.header("x-echo-host"),
            Some("backend.internal:9999"),
            "{proto:?}"
        );
        assert_eq!(r.header("x-echo-path"), Some("/host/echo"), "{proto:?}");

        let r = c.get("web", "/svc/users/list?all=1").await;
        assert_eq!(
            r.header("x-echo-path"),
            Some("/echo/list/by/users?all=1"),
            "{proto:?}"
        );
        assert_eq!(
            echoed(&r, "x-envoy-original-path").as_deref(),
            Some("/svc/users/list?all=1"),
            "{proto:?}"
        );

        // No rewrite: no x-envoy-original-path.
        let r = c.get("web", "/echo/plain").await;
        assert_eq!(echoed(&r, "x-envoy-original-path"), None, "{proto:?}");
        assert_eq!(r.header("x-echo-host"), Some("web"), "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_operations_at_rule_and_destination_level() {
    let ups = upstreams(&["v1", "v2"]).await;
    let http = r#"  - match:
    - headers:
        x-weighted: {exact: "1"}
    headers:
      request:
        set: {x-order: rule}
      response:
        set: {x-resp-order: rule}
    route:
    - destination: {host: web, subset: v1}
      weight: 50
      headers:
        request:
          set: {x-order: dest}
        response:
          set: {x-resp-order: dest}
    - destination: {host: web, subset: v2}
      weight: 50
      headers:
        request:
          set: {x-order: dest}
        response:
          set: {x-resp-order: dest}
  - headers:
      request:
        set:
          x-rule-set: rule
          x-order: rule
          x-client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
          x-percent: "100%%"
        add: {x-rule-add: rule}
        remove: [x-drop-me]
      response:
        set: {x-resp-set: rule, x-resp-order: rule}
        add: {x-resp-add: rule}
        remove: [x-echo-method]
    route:
    - destination: {host: web, subset: v1}
      headers:
        request:
          set: {x-dest-set: dest, x-order: dest}
          remove: [x-drop-dest]
        response:
          set: {x-dest-resp: dest, x-resp-order: dest}
          remove: [x-echo-version]
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c
            .request(
                "GET",
                "web",
                "/echo",
                &[
                    ("x-rule-set", "client"),
                    ("x-rule-add", "client"),
                    ("x-drop-me", "1"),
                    ("x-drop-dest", "1"),
                    ("x-keep", "1"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        // Request side, as the upstream saw it.
        assert_eq!(echoed_all(&r, "x-rule-set"), ["rule"], "{proto:?}");
        assert_eq!(
            echoed_all(&r, "x-rule-add"),
            ["client", "rule"],
            "{proto:?}"
        );
        assert_eq!(echoed(&r, "x-drop-me"), None, "{proto:?}");
        assert_eq!(echoed(&r, "x-drop-dest"), None, "{proto:?}");
        assert_eq!(echoed_all(&r, "x-dest-set"), ["dest"], "{proto:?}");
        assert_eq!(echoed(&r, "x-keep").as_deref(), Some("1"), "{proto:?}");
        // One destination: its ops come after the rule's, so its `set` wins.
        assert_eq!(echoed_all(&r, "x-order"), ["dest"], "{proto:?}");
        // Response side.
        assert_eq!(r.header("x-resp-set"), Some("rule"), "{proto:?}");
        assert_eq!(r.header("x-resp-add"), Some("rule"), "{proto:?}");
        assert_eq!(r.header("x-dest-resp"), Some("dest"), "{proto:?}");
        assert_eq!(r.header("x-resp-order"), Some("dest"), "{proto:?}");
        assert_eq!(r.header("x-echo-method"), None, "{proto:?}");
        assert_eq!(r.header("x-echo-version"), None, "{proto:?}");
        assert_eq!(r.header("x-upstream"), Some("v1"), "{proto:?}");
        // Envoy's header formatter: variables expand, `%%` is a literal `%`.
        assert_eq!(echoed_all(&r, "x-client"), ["127.0.0.1"], "{proto:?}");
        assert_eq!(echoed_all(&r, "x-percent"), ["100%"], "{proto:?}");

        // Several destinations: their ops sit on the weighted cluster, which Envoy applies
        // before the route's, so the rule-level `set` wins.
        for _ in 0..4 {
            let r = c
                .request("GET", "web", "/echo", &[("x-weighted", "1")])
                .await;
            assert_eq!(r.status, 200, "{proto:?}");
            assert_eq!(echoed_all(&r, "x-order"), ["rule"], "{proto:?}");
            assert_eq!(r.header("x-resp-order"), Some("rule"), "{proto:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_location_and_never_contact_the_upstream() {
    let ups = upstreams(&["v1"]).await;
    let http = r#"  - match:
    - uri: {exact: /r1}
    redirect:
      uri: /new-path
  - match:
    - uri: {prefix: /r2}
    redirect:
      authority: other.example
      redirectCode: 302
  - match:
    - uri: {prefix: /r3}
    redirect:
      scheme: https
      port: 8443
      redirectCode: 308
  - match:
    - uri: {prefix: /old}
    redirect:
      prefixRewrite: /new
  - match:
    - uri: {prefix: /r5}
    redirect:
      scheme: https
      port: 443
      authority: secure.example
    headers:
      response:
        set: {x-redirected: "yes"}
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    let cases: &[(&str, u16, &str)] = &[
        ("/r1?q=1", 301, "http://web/new-path?q=1"),
        ("/r1", 301, "http://web/new-path"),
        ("/r2/x?a=b", 302, "http://other.example/r2/x?a=b"),
        ("/r3/y", 308, "https://web:8443/r3/y"),
        ("/old/a?x=1", 301, "http://web/new/a?x=1"),
        ("/older", 301, "http://web/newer"),
        ("/r5/z", 301, "https://secure.example/r5/z"),
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (path, status, location) in cases {
            let r = c.get("web", path).await;
            assert_eq!(r.status, *status, "{proto:?} {path}: {}", r.text());
            assert_eq!(r.header("location"), Some(*location), "{proto:?} {path}");
            assert_eq!(r.header("x-envoy-upstream-service-time"), None);
        }
        let r = c.get("web", "/r5").await;
        assert_eq!(r.header("x-redirected"), Some("yes"), "{proto:?}");
        // The request's own port is kept when the redirect does not change it.
        let r = c.get("web:8080", "/r1").await;
        assert_eq!(
            r.header("location"),
            Some("http://web:8080/new-path"),
            "{proto:?}"
        );
    }
    assert_eq!(ups[0].requests(), 0, "a redirect contacted the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_answers_without_an_upstream() {
    let ups = upstreams(&["v1"]).await;
    let http = r#"  - match:
    - uri: {prefix: /teapot}
    directResponse:
      status: 418
      body:
        string: "short and stout"
    headers:
      response:
        set: {x-direct: "yes"}
  - match:
    - uri: {prefix: /empty}
    directResponse:
      status: 503
  - match:
    - uri: {prefix: /bytes}
    directResponse:
      status: 200
      body:
        bytes: aGVsbG8=
  - route:
    - destination: {host: web, subset: v1}
"#;
    let p = TestProxy::start(&(svc("web", &ups) + &vs("web", "[web]", http))).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/teapot").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (418, "short and stout"),
            "{proto:?}"
        );
        assert_eq!(r.header("x-direct"), Some("yes"), "{proto:?}");
        assert_eq!(r.header("x-envoy-upstream-service-time"), None, "{proto:?}");
        let r = c.get("web", "/empty").await;
        assert_eq!((r.status, r.body.len()), (503, 0), "{proto:?}");
        let r = c.get("web", "/bytes").await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{proto:?}");
    }
    assert_eq!(ups[0].requests(), 0);
}
