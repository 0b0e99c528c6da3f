//! VirtualService traffic policy against real misbehaving upstreams: route timeouts, retries
//! (Istio's default policy and configured ones, per-try timeouts, bodies), fault injection.

mod support;

use std::time::{Duration, Instant};

use support::e2e_helpers::{PROTOS, RawUpstream, admin_get, assert_within_4_sigma, par_tally};
use support::*;

const FAIL_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfail";

/// ServiceEntry + DestinationRule (ROUND_ROBIN, so host choice is deterministic) for `web`
/// with endpoints labelled by version, then a VirtualService with one rule whose extra YAML
/// (timeout, retries, fault) is `rule`, routing to `subset`.
fn config(endpoints: &[(&str, std::net::SocketAddr)], subset: &str, rule: &str) -> String {
    let mut eps = String::new();
    let mut subsets = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for (v, a) in endpoints {
        eps.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, labels: {{version: {v}, all: \"yes\"}}}}\n",
            a.ip(),
            a.port()
        ));
        if seen.insert(*v) {
            subsets.push_str(&format!("  - {{name: {v}, labels: {{version: {v}}}}}\n"));
        }
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
  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
  subsets:
{subsets}  - {{name: all, labels: {{all: \"yes\"}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - name: main
{rule}    route: [{{destination: {{host: web, subset: {subset}}}}}]
"
    )
}

/// Sum of `istio_requests_total` samples whose labels contain all of `want`.
/// `istio_requests_total` summed over the series carrying every label in `want`, read until it
/// reaches `expected` or 3 s pass: a request's metrics are recorded when its exchange has
/// finished in both directions, which can be a moment after the client has the response.
async fn requests_with(p: &TestProxy, want: &[(&str, &str)], expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = admin_get(p, "/stats/prometheus").await.text();
        let n = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| {
                want.iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
            .sum();
        if n >= expected || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cluster_stat(p: &TestProxy, name: &str, cluster: &str) -> u64 {
    let text = admin_get(p, "/stats/prometheus").await.text();
    let prefix = format!("envoy_cluster_{name}{{cluster_name=\"{cluster}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_is_504_ut_and_the_client_header_overrides_it() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", "    timeout: 200ms\n")).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let t = Instant::now();
        let r = c.get("web", "/slow/2000").await;
        let took = t.elapsed();
        assert_eq!(
            (r.status, r.text().as_str()),
            (504, "upstream request timeout"),
            "{proto:?}"
        );
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
            "{proto:?}: {took:?}"
        );
        // Faster than the timeout: served.
        assert_eq!(c.get("web", "/slow/20").await.status, 200);
        // The client may lengthen it.
        let r = c
            .request(
                "GET",
                "web",
                "/slow/400",
                &[("x-envoy-upstream-rq-timeout-ms", "3000")],
            )
            .await;
        assert_eq!(r.status, 200, "{proto:?}: override to 3 s");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        requests_with(&p, &[("response_code", "504"), ("response_flags", "UT")], 2).await,
        2
    );
    // The upstream was told how long it has, and never saw the override header.
    let mut c = Client::h1(p.addr).await;
    let r = c
        .request(
            "GET",
            "web",
            "/echo",
            &[("x-envoy-upstream-rq-timeout-ms", "1500")],
        )
        .await;
    let echo = r.json();
    assert_eq!(echo["headers"]["x-envoy-expected-rq-timeout-ms"][0], "1500");
    assert!(echo["headers"]["x-envoy-upstream-rq-timeout-ms"].is_null());
}

/// An upstream that sends response headers and 2 of 10 promised body bytes, then stalls for
/// `stall` before closing.
async fn stalling_body_upstream(stall: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
                    .await;
                tokio::time::sleep(stall).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_covers_the_response_body() {
    let up = stalling_body_upstream(Duration::from_secs(4)).await;
    let p = TestProxy::start(&config(&[("v1", up)], "v1", "    timeout: 300ms\n")).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        c.set_timeout(Duration::from_secs(3));
        let t = Instant::now();
        let r = c.try_request("GET", "web", "/", &[]).await;
        let took = t.elapsed();
        // Headers arrived in time; the body did not: the stream is reset, not left hanging.
        assert!(r.is_err(), "{proto:?}: {:?}", r.map(|r| r.status));
        assert!(
            r.as_ref().err().is_some_and(|e| !e.contains("timed out")),
            "{proto:?}: the proxy must cut the body, not the client: {r:?}"
        );
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(2000),
            "{proto:?}: {took:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        requests_with(&p, &[("response_code", "200"), ("response_flags", "UT")], 2).await,
        2
    );
    assert_eq!(
        cluster_stat(
            &p,
            "upstream_rq_timeout",
            "outbound|80|v1|web.default.svc.cluster.local"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retry_headers_amend_the_route_policy() {
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let good = Upstream::start("good").await;
    // Istio's default policy: a plain 503 is not retried ...
    let p = TestProxy::start(&config(&[("v1", bad.addr), ("v1", good.addr)], "v1", "")).await;
    let mut c = Client::h1(p.addr).await;
    let mut plain_503 = 0;
    for _ in 0..4 {
        if c.get("web", "/").await.status == 503 {
            plain_503 += 1;
        }
    }
    assert_eq!(
        plain_503, 2,
        "round robin: every other request hits the 503 host"
    );
    // ... unless the client asks for it; the retry goes to the other host.
    for _ in 0..4 {
        let r = c
            .request("GET", "web", "/echo", &[("x-envoy-retry-on", "5xx")])
            .await;
        assert_eq!(r.status, 200);
        let echo = r.json();
        assert!(echo["headers"]["x-envoy-retry-on"].is_null(), "{echo}");
    }
    // x-envoy-max-retries replaces the count: 0 means no retry even when asked.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c
            .request(
                "GET",
                "web",
                "/",
                &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "0")],
            )
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    // Retriable status codes from the client.
    for _ in 0..2 {
        let r = c
            .request(
                "GET",
                "web",
                "/",
                &[
                    ("x-envoy-retry-on", "retriable-status-codes"),
                    ("x-envoy-retriable-status-codes", "503"),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_does_not_retry_a_plain_503() {
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let p = TestProxy::start(&config(&[("v1", bad.addr)], "v1", "")).await;
    let mut c = Client::h1(p.addr).await;
    for _ in 0..5 {
        assert_eq!(c.get("web", "/").await.status, 503);
    }
    assert_eq!(bad.connections(), 5, "one attempt per request");
    assert_eq!(
        cluster_stat(
            &p,
            "upstream_rq_retry",
            "outbound|80|v1|web.default.svc.cluster.local"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx_move_to_a_healthy_host_and_resend_the_body() {
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let good = Upstream::start("good").await;
    let rule = "    retries: {attempts: 3, retryOn: 5xx}\n";
    let p = TestProxy::start(&config(
        &[("bad", bad.addr), ("good", good.addr)],
        "all",
        rule,
    ))
    .await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for i in 0..20 {
            let r = c.get("web", "/").await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "good"),
                "{proto:?} request {i}"
            );
        }
        // A small body is buffered and sent again on the retry.
        for _ in 0..4 {
            let r = c
                .request_with_body(
                    "POST",
                    "web",
                    "/upload",
                    &[("content-length", "5")],
                    full_body("hello"),
                )
                .await;
            assert_eq!((r.status, r.text().as_str()), (200, "5"), "{proto:?}");
        }
    }
    assert!(
        bad.connections() >= 20,
        "round robin sent about half the first attempts to the bad host"
    );
    let retries = cluster_stat(
        &p,
        "upstream_rq_retry",
        "outbound|80|all|web.default.svc.cluster.local",
    )
    .await;
    assert_eq!(
        retries,
        bad.connections(),
        "every failed attempt was retried once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_return_the_last_response_flagged_urx() {
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let rule = "    retries: {attempts: 2, retryOn: gateway-error, perTryTimeout: 1s}\n";
    let p = TestProxy::start(&config(&[("v1", bad.addr)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    let r = c.get("web", "/").await;
    assert_eq!((r.status, r.text().as_str()), (503, "fail"));
    assert_eq!(bad.connections(), 3, "1 + attempts");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        requests_with(
            &p,
            &[("response_code", "503"), ("response_flags", "URX")],
            1
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_then_answers_504() {
    let slow = Upstream::start("slow").await;
    let rule = "    retries: {attempts: 2, retryOn: 5xx, perTryTimeout: 100ms}\n";
    let p = TestProxy::start(&config(&[("v1", slow.addr)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    let t = Instant::now();
    let r = c.get("web", "/slow/2000").await;
    let took = t.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(slow.requests(), 3, "three tries of 100 ms each");
    // A fast answer within the per-try timeout is served.
    assert_eq!(c.get("web", "/slow/10").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_never_sent_twice() {
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let rule = "    retries: {attempts: 3, retryOn: 5xx}\n";
    let p = TestProxy::start(&config(&[("v1", bad.addr)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    // 2 MiB is over the 1 MiB replay buffer: one attempt only.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = c
        .request_with_body(
            "POST",
            "web",
            "/upload",
            &[("content-length", "2097152")],
            full_body(big),
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        bad.connections(),
        1,
        "a body beyond the replay buffer is never resent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay() {
    let up = Upstream::start("v1").await;
    let rule = "    fault: {abort: {httpStatus: 555, percentage: {value: 100}}}\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (555, "fault filter abort"),
            "{proto:?}"
        );
        let r = c
            .request(
                "POST",
                "web",
                "/svc.Echo/Call",
                &[("content-type", "application/grpc")],
            )
            .await;
        assert_eq!(r.status, 200, "gRPC callers get a gRPC-shaped abort");
    }
    assert_eq!(
        up.requests(),
        0,
        "aborted requests never reach the upstream"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(requests_with(&p, &[("response_flags", "FI")], 4).await, 4);

    let rule = "    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    let mut c = Client::h2(p.addr).await;
    let r = c
        .request(
            "POST",
            "web",
            "/svc.Echo/Call",
            &[("content-type", "application/grpc")],
        )
        .await;
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("14")));

    let rule = "    fault: {delay: {fixedDelay: 300ms, percent: 100}}\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    let t = Instant::now();
    let r = c.get("web", "/").await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        requests_with(&p, &[("response_code", "200"), ("response_flags", "DI")], 1).await,
        1
    );

    // A fault block without a percentage injects nothing (istio/istio#39969).
    let rule = "    fault: {abort: {httpStatus: 500}}\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    assert_eq!(c.get("web", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_percentage_over_20000_requests_lands_within_4_sigma() {
    let up = Upstream::start("v1").await;
    let rule = "    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    let n = 20_000;
    let t = par_tally(p.addr, Proto::H1, 8, n, "web", "/", &[]).await;
    let aborted = n - t.get("v1").copied().unwrap_or(0);
    assert_within_4_sigma(aborted, n, 0.10, "10% abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_requests_without_touching_the_primary() {
    let primary = Upstream::start("v1").await;
    let shadow = Upstream::start("v2").await;
    let rule = "    mirror: {host: web, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let p = TestProxy::start(&config(
        &[("v1", primary.addr), ("v2", shadow.addr)],
        "v1",
        rule,
    ))
    .await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for _ in 0..10 {
            let r = c.get("web", "/mirrored").await;
            assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{proto:?}");
        }
        let r = c
            .request_with_body(
                "POST",
                "web",
                "/upload",
                &[("content-length", "3")],
                full_body("abc"),
            )
            .await;
        assert_eq!(r.text(), "3");
    }
    // Shadow traffic is asynchronous: wait (bounded) for it to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.requests() < 22 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.requests(), 22, "every request mirrored once");
    assert_eq!(primary.requests(), 22);

    // A dead shadow never fails or slows the primary.
    let dead = closed_port();
    let rule = "    mirror: {host: web, subset: v2}\n";
    let p = TestProxy::start(&config(&[("v1", primary.addr), ("v2", dead)], "v1", rule)).await;
    let mut c = Client::h1(p.addr).await;
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.get("web", "/").await.status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // mirrorPercentage 0 mirrors nothing.
    let before = shadow.requests();
    let rule = "    mirror: {host: web, subset: v2}\n    mirrorPercentage: {value: 0}\n";
    let p = TestProxy::start(&config(
        &[("v1", primary.addr), ("v2", shadow.addr)],
        "v1",
        rule,
    ))
    .await;
    let mut c = Client::h1(p.addr).await;
    for _ in 0..10 {
        c.get("web", "/").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shadow.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_policy_answers_preflights_and_decorates_responses() {
    let up = Upstream::start("v1").await;
    let rule = "    corsPolicy:\n      allowOrigins: [{exact: \"https://example.com\"}, {regex: \"https://.*\\\\.trusted\\\\.io\"}]\n      allowMethods: [POST, GET]\n      allowHeaders: [X-Foo-Bar]\n      exposeHeaders: [X-Expose]\n      maxAge: \"24h\"\n      allowCredentials: true\n";
    let p = TestProxy::start(&config(&[("v1", up.addr)], "v1", rule)).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let pre = [
            ("origin", "https://example.com"),
            ("access-control-request-method", "POST"),
        ];
        let r = c.request("OPTIONS", "web", "/", &pre).await;
        assert_eq!(r.status, 200, "{proto:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://example.com")
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("POST,GET"));
        assert_eq!(r.header("access-control-allow-headers"), Some("X-Foo-Bar"));
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        // An actual request from an allowed origin gets the CORS response headers.
        let r = c
            .request("GET", "web", "/", &[("origin", "https://a.trusted.io")])
            .await;
        assert_eq!(r.text(), "v1");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://a.trusted.io")
        );
        assert_eq!(r.header("access-control-expose-headers"), Some("X-Expose"));
        // Other origins get none, and their preflight is forwarded (unmatchedPreflights FORWARD).
        let r = c
            .request("GET", "web", "/", &[("origin", "https://evil.example")])
            .await;
        assert!(r.header("access-control-allow-origin").is_none());
    }
    assert_eq!(up.requests(), 4, "allowed preflights are answered locally");
}

/// ServiceEntry with `stable` and `canary` endpoints and a DestinationRule whose canary
/// subset carries `canary_policy` (a trafficPolicy body, indented for the subset).
fn dr_config(
    stable: &[std::net::SocketAddr],
    canary: &[std::net::SocketAddr],
    canary_policy: &str,
) -> String {
    let mut eps = String::new();
    for a in stable {
        eps.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, labels: {{version: stable}}}}\n",
            a.ip(),
            a.port()
        ));
    }
    for a in canary {
        eps.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, labels: {{version: canary}}}}\n",
            a.ip(),
            a.port()
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
  - name: stable
    labels: {{version: stable}}
  - name: canary
    labels: {{version: canary}}
    trafficPolicy:
{canary_policy}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - match: [{{headers: {{x-canary: {{exact: \"1\"}}}}}}]
    route: [{{destination: {{host: web, subset: canary}}}}]
  - route: [{{destination: {{host: web, subset: stable}}}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_circuit_breaker_overflows_with_503_uo_and_spares_stable() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let policy = "      loadBalancer: {simple: ROUND_ROBIN}\n      connectionPool:\n        tcp: {maxConnections: 1}\n        http: {http1MaxPendingRequests: 1}\n";
    let p = TestProxy::start(&dr_config(&[stable.addr], &[canary.addr], policy)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let addr = p.addr;
        tasks.spawn(async move {
            let mut c = Client::h1(addr).await;
            let t = Instant::now();
            let r = c
                .request("GET", "web", "/slow/300", &[("x-canary", "1")])
                .await;
            (i, r.status, r.text(), t.elapsed())
        });
    }
    let mut stable_ok = 0;
    let mut sc = Client::h2(p.addr).await;
    for _ in 0..20 {
        if sc.get("web", "/").await.status == 200 {
            stable_ok += 1;
        }
    }
    let mut ok = 0;
    let mut overflow = 0;
    while let Some(res) = tasks.join_next().await {
        let (_, status, body, took) = res.expect("request task");
        match status {
            200 => ok += 1,
            503 => {
                assert!(body.ends_with("reset reason: overflow"), "{body}");
                assert!(
                    took < Duration::from_millis(250),
                    "overflow must be immediate: {took:?}"
                );
                overflow += 1;
            }
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    assert_eq!(stable_ok, 20, "the stable subset is unaffected");
    assert_eq!(ok + overflow, 100);
    assert!(ok >= 2 && overflow >= 90, "ok {ok}, overflow {overflow}");
    assert_eq!(
        cluster_stat(
            &p,
            "upstream_rq_pending_overflow",
            "outbound|80|canary|web.default.svc.cluster.local"
        )
        .await,
        overflow as u64
    );
    assert_eq!(
        requests_with(&p, &[("response_flags", "UO")], overflow as u64).await,
        overflow as u64
    );
}

/// A reload that leaves the canary's limits alone (here it only edits a route) keeps the
/// canary's circuit breaker and what it counts: the request in flight still holds the one
/// connection slot and the queued one the one pending place, so a third overflows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_keeps_counting_across_a_reload_that_keeps_its_limits() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let policy = "      connectionPool:\n        tcp: {maxConnections: 1}\n        http: {http1MaxPendingRequests: 1}\n";
    let config = dr_config(&[stable.addr], &[canary.addr], policy);
    let p = TestProxy::start(&config).await;
    // A canary request on its own connection; resolves to its status.
    let canary_get = |path: &'static str| {
        let addr = p.addr;
        async move {
            let mut c = Client::h1(addr).await;
            c.request("GET", "web", path, &[("x-canary", "1")])
                .await
                .status
        }
    };
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..2 {
        held.spawn(canary_get("/slow/800"));
        // The first takes the slot, the second the pending place.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let edited = config.replace(
        "  - route: [{destination: {host: web, subset: stable}}]",
        "  - route: [{destination: {host: web, subset: stable}}]\n    timeout: 30s",
    );
    assert_ne!(edited, config, "the edit must change the config");
    p.rewrite(&edited).await.expect("reload accepted");
    let mut c = Client::h1(p.addr).await;
    let t = Instant::now();
    let r = c
        .request("GET", "web", "/slow/800", &[("x-canary", "1")])
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().ends_with("reset reason: overflow"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    while let Some(status) = held.join_next().await {
        assert_eq!(status.expect("held request"), 200);
    }
    // Changed limits make a new breaker, as Envoy makes a new cluster: with two slots, two
    // requests at once are both served.
    let wider = edited.replace("maxConnections: 1", "maxConnections: 2");
    p.rewrite(&wider).await.expect("reload accepted");
    let mut both = tokio::task::JoinSet::new();
    for _ in 0..2 {
        both.spawn(canary_get("/slow/200"));
    }
    while let Some(status) = both.join_next().await {
        assert_eq!(status.expect("request"), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_canary_endpoint() {
    let good = Upstream::start("canary").await;
    let bad = RawUpstream::start(FAIL_503.to_vec()).await;
    let policy = "      loadBalancer: {simple: ROUND_ROBIN}\n      outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
    let p = TestProxy::start(&dr_config(&[good.addr], &[good.addr, bad.addr], policy)).await;
    let mut c = Client::h1(p.addr).await;
    let mut failed = 0;
    for _ in 0..200 {
        if c.request("GET", "web", "/", &[("x-canary", "1")])
            .await
            .status
            != 200
        {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 2,
        "two consecutive 5xx eject the endpoint; nothing fails after that"
    );
    assert_eq!(bad.connections(), 2);
    let cluster = "outbound|80|canary|web.default.svc.cluster.local";
    assert_eq!(
        cluster_stat(&p, "outlier_detection_ejections_active", cluster).await,
        1
    );
    assert_eq!(
        cluster_stat(&p, "outlier_detection_ejections_total", cluster).await,
        1
    );
    let clusters = admin_get(&p, "/clusters").await.text();
    assert!(
        clusters.contains(&format!(
            "{cluster}::{}::health_flags::/failed_outlier_check",
            bad.addr
        )),
        "{clusters}"
    );
    assert!(clusters.contains(&format!("{cluster}::{}::health_flags::healthy", good.addr)));

    // Istio's default maxEjectionPercent (10%) never ejects one of two hosts (Envoy >= 1.27).
    let bad2 = RawUpstream::start(FAIL_503.to_vec()).await;
    let policy = "      loadBalancer: {simple: ROUND_ROBIN}\n      outlierDetection: {consecutive5xxErrors: 2}\n";
    let p = TestProxy::start(&dr_config(&[good.addr], &[good.addr, bad2.addr], policy)).await;
    let mut c = Client::h1(p.addr).await;
    let mut failed = 0;
    for _ in 0..40 {
        if c.request("GET", "web", "/", &[("x-canary", "1")])
            .await
            .status
            != 200
        {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 20,
        "round robin keeps sending half to the failing host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let policy = "      loadBalancer:\n        consistentHash: {httpHeaderName: x-user}\n";
    let p = TestProxy::start(&dr_config(&[a.addr], &[a.addr, b.addr], policy)).await;
    let mut c = Client::h1(p.addr).await;
    let mut seen = std::collections::BTreeMap::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let first = c
            .request("GET", "web", "/", &[("x-canary", "1"), ("x-user", &user)])
            .await
            .text();
        for _ in 0..5 {
            let again = c
                .request("GET", "web", "/", &[("x-canary", "1"), ("x-user", &user)])
                .await
                .text();
            assert_eq!(again, first, "{user} moved");
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "keys spread over both endpoints: {seen:?}");

    // Cookie with a TTL: generated when absent, then the client sticks.
    let policy = "      loadBalancer:\n        consistentHash:\n          httpCookie: {name: user, ttl: 3600s, path: /}\n";
    let p = TestProxy::start(&dr_config(&[a.addr], &[a.addr, b.addr], policy)).await;
    let mut c = Client::h1(p.addr).await;
    for _ in 0..10 {
        let r = c.request("GET", "web", "/", &[("x-canary", "1")]).await;
        let cookie = r.header("set-cookie").expect("cookie set").to_string();
        assert!(
            cookie.contains("Max-Age=3600") && cookie.contains("Path=/"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().expect("name=value").to_string();
        for _ in 0..5 {
            let again = c
                .request("GET", "web", "/", &[("x-canary", "1"), ("cookie", &pair)])
                .await;
            assert!(again.header("set-cookie").is_none());
            assert_eq!(again.text(), r.text(), "the cookie pins the endpoint");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_load_balancer_forwards_to_the_address_the_client_named() {
    let up = Upstream::start("direct").await;
    let port = up.addr.port();
    let dead = closed_port();
    let yaml_for = |lb: &str, protocol: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local}}
spec:
  hosts: [localhost]
  ports: [{{number: {port}, name: http, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: local}}
spec:
  host: localhost
  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}
",
            dead.port()
        )
    };
    let yaml = |lb: &str| yaml_for(lb, "HTTP");
    let authority = format!("localhost:{port}");
    // The listed endpoint is dead: a normal load balancer fails ...
    let p = TestProxy::start(&yaml("ROUND_ROBIN")).await;
    let mut c = Client::h1(p.addr).await;
    assert_eq!(c.get(&authority, "/").await.status, 503);
    // ... PASSTHROUGH ignores the endpoints and goes where the client asked, speaking the
    // port's protocol: an HTTP2 port is reached over HTTP/2 there too.
    for (protocol, version) in [("HTTP", "HTTP/1.1"), ("HTTP2", "HTTP/2.0")] {
        let p = TestProxy::start(&yaml_for("PASSTHROUGH", protocol)).await;
        for proto in PROTOS {
            let mut c = Client::connect(p.addr, proto).await;
            let r = c.get(&authority, "/").await;
            assert_eq!((r.status, r.text().as_str()), (200, "direct"), "{proto:?}");
            assert_eq!(r.header("x-echo-version"), Some(version), "{proto:?}");
        }
        // Counted for the service the rule names, not as unknown PassthroughCluster traffic.
        let service = [
            ("destination_service_name", "localhost"),
            ("response_code", "200"),
        ];
        assert_eq!(requests_with(&p, &service, 2).await, 2, "{protocol}");
        let unknown = [("destination_service", "PassthroughCluster")];
        assert_eq!(requests_with(&p, &unknown, 0).await, 0, "{protocol}");
    }
    assert_eq!(up.requests(), 4);
}
