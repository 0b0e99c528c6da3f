//! End-to-end failure handling: what a client sees when routing or the upstream fails, exactly
//! as Envoy reports it (reference §5: status, body, response flag; gRPC-shaped local replies),
//! and what happens to the serving table when a config is refused or swapped.
//!
//! The response flag is not on the wire; `flag_tap` serves the same `Proxy::handle` the real
//! listener calls and copies the flag the proxy attached into `x-test-response-flag`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::e2e_helpers::*;
use support::*;
use switchyard::{OutboundPolicy, ReloadOutcome};

const UPSTREAM_CONNECT_ERROR: &str = "upstream connect error or disconnect/reset before headers";

fn vs(name: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {hosts}\n  http:\n{http}---\n"
    )
}

fn route_all_to(subset: &str) -> String {
    vs(
        "web",
        "[web]",
        &format!("  - route:\n    - destination: {{host: web, subset: {subset}}}\n"),
    )
}

fn flag(r: &Reply) -> Option<&str> {
    r.header("x-test-response-flag")
}

fn diag_text(diags: &[switchyard::Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_matched_is_404_nr_with_an_empty_body() {
    let v1 = Upstream::start("v1").await;
    let http = "  - match:\n    - uri: {prefix: /only}\n    route:\n    - destination: {host: web, subset: v1}\n";
    let p =
        TestProxy::start(&(service_yaml("web", &[("v1", v1.addr)]) + &vs("web", "[web]", http)))
            .await;
    let tap = flag_tap(&p).await;
    for proto in PROTOS {
        for addr in [p.addr, tap] {
            let mut c = Client::connect(addr, proto).await;
            let r = c.get("web", "/elsewhere").await;
            assert_eq!(r.status, 404, "{proto:?}");
            assert!(r.body.is_empty(), "{proto:?}: body {:?}", r.text());
            assert_eq!(r.header("x-envoy-upstream-service-time"), None, "{proto:?}");
            if addr == tap {
                assert_eq!(flag(&r), Some("NR"), "{proto:?}");
            }
            assert_eq!(c.get("web", "/only").await.status, 200, "{proto:?}");
        }
    }
    assert_eq!(v1.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_selecting_no_endpoints_is_accepted_and_answers_503_uh() {
    let v1 = Upstream::start("v1").await;
    // Subset v2 exists in the DestinationRule but no endpoint carries version=v2 (a canary
    // scaled to zero).
    let base = service_entry(
        "web",
        "default",
        "web.default.svc.cluster.local",
        "HTTP",
        &[("version=v1", v1.addr)],
    ) + &destination_rule("web", "default", "web", &["v1", "v2"]);
    let yaml = base.clone() + &route_all_to("v2");
    let p = TestProxy::start(&yaml).await;
    let tap = flag_tap(&p).await;
    for proto in PROTOS {
        let mut c = Client::connect(tap, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (503, "no healthy upstream"),
            "{proto:?}"
        );
        assert_eq!(flag(&r), Some("UH"), "{proto:?}");
        assert_eq!(r.header("x-envoy-upstream-service-time"), None, "{proto:?}");
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (503, "no healthy upstream"),
            "{proto:?}"
        );
    }
    assert_eq!(v1.requests(), 0);
    // The same config through the reload path: accepted, with the IST0173 warning.
    match p.rewrite(&format!("# touched\n{yaml}")).await {
        Ok(ReloadOutcome::Applied { warnings, .. }) => {
            let text = diag_text(&warnings);
            assert!(
                text.contains("IST0173") && text.contains("v2"),
                "expected an IST0173 warning naming v2: {text}"
            );
        }
        Ok(other) => panic!("reload not applied: {other:?}"),
        Err(d) => panic!(
            "subset without endpoints must not block a reload:\n{}",
            diag_text(&d)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_503_uf_urx_after_retries() {
    let dead = closed_port();
    let p = TestProxy::start(&(service_yaml("web", &[("v1", dead)]) + &route_all_to("v1"))).await;
    let tap = flag_tap(&p).await;
    for proto in PROTOS {
        for addr in [p.addr, tap] {
            let mut c = Client::connect(addr, proto).await;
            c.set_timeout(Duration::from_secs(5));
            let r = c
                .try_request("GET", "web", "/", &[])
                .await
                .unwrap_or_else(|e| panic!("{proto:?}: no answer: {e}"));
            assert_eq!(r.status, 503, "{proto:?}: {}", r.text());
            assert!(
                r.text().starts_with(UPSTREAM_CONNECT_ERROR),
                "{proto:?}: body {:?}",
                r.text()
            );
            // Envoy's wording for a refused connect, which operators search for.
            assert!(
                r.text()
                    .ends_with("transport failure reason: delayed connect error: 111"),
                "{proto:?}: body {:?}",
                r.text()
            );
            assert_eq!(r.header("x-envoy-upstream-service-time"), None, "{proto:?}");
            if addr == tap {
                // Retries ran out: Envoy logs both UF and URX.
                assert_eq!(flag(&r), Some("UF,URX"), "{proto:?}");
            }
        }
    }
}

/// `web` with `dead` refused endpoints followed by one live one, balanced by `lb` (`None`:
/// Istio's default LEAST_REQUEST), everything routed to subset v1.
fn dead_and_alive(dead: usize, alive: SocketAddr, lb: Option<&str>) -> String {
    let mut ports: Vec<SocketAddr> = Vec::new();
    while ports.len() < dead {
        let p = closed_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let mut eps: Vec<(&str, SocketAddr)> = ports.into_iter().map(|a| ("v1", a)).collect();
    eps.push(("v1", alive));
    let mut yaml = service_yaml("web", &eps);
    if let Some(lb) = lb {
        yaml = yaml.replace(
            "spec:\n  host: web\n",
            &format!(
                "spec:\n  host: web\n  trafficPolicy:\n    loadBalancer:\n      simple: {lb}\n"
            ),
        );
    }
    yaml + &route_all_to("v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_the_other_endpoint() {
    // One dead, one alive, host choice deterministic (ROUND_ROBIN): the retry after a refused
    // connect goes to the other host (previous_hosts predicate), so no request fails.
    let alive = Upstream::start("alive").await;
    let p = TestProxy::start(&dead_and_alive(1, alive.addr, Some("ROUND_ROBIN"))).await;
    let (t1, t2) = par_tally_both(p.addr, 2, 200, "web", "/", &[]).await;
    assert_eq!(t1.get("alive"), Some(&100), "H1: {t1:?}");
    assert_eq!(t2.get("alive"), Some(&100), "H2: {t2:?}");
    // A request body survives the retry (nothing was sent on the refused attempt).
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for _ in 0..4 {
            let r = c
                .request_with_body("POST", "web", "/upload", &[], full_body("hello"))
                .await;
            assert_eq!((r.status, r.text().as_str()), (200, "5"), "{proto:?}");
        }
    }

    // The same with Istio's default LEAST_REQUEST. Envoy re-draws a previously tried host at
    // most `host_selection_retry_max_attempts` (5) times and then uses it anyway, so a failure
    // stays possible (~1 in 8000 requests); without retries half of them would fail.
    let alive = Upstream::start("alive").await;
    let p = TestProxy::start(&dead_and_alive(1, alive.addr, None)).await;
    let (t1, t2) = par_tally_both(p.addr, 2, 200, "web", "/", &[]).await;
    let all = merged(&t1, &t2);
    assert!(
        all.get("alive").copied().unwrap_or(0) >= 198,
        "LEAST_REQUEST: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_retry_policy_makes_three_attempts() {
    // Two dead hosts ahead of a live one, round robin: only a third attempt (1 + Istio's
    // default 2 retries, each on a host not tried yet) can reach the live one, and the
    // upstream sees which attempt it was.
    let alive = Upstream::start("alive").await;
    let p = TestProxy::start(&dead_and_alive(2, alive.addr, Some("ROUND_ROBIN"))).await;
    let mut attempts = std::collections::BTreeMap::new();
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for _ in 0..30 {
            let r = c.get("web", "/echo").await;
            assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
            let n = echoed(&r, "x-envoy-attempt-count").unwrap_or_default();
            *attempts.entry(n).or_insert(0) += 1;
        }
    }
    assert!(
        attempts
            .keys()
            .all(|k| ["1", "2", "3"].contains(&k.as_str())),
        "{attempts:?}"
    );
    assert!(
        attempts.contains_key("3"),
        "no request needed a third attempt: {attempts:?}"
    );
    // And no fourth: three dead hosts and nothing else fail after three connect attempts.
    let dead = TestProxy::start(&dead_and_alive(3, closed_port(), Some("ROUND_ROBIN"))).await;
    let tap = flag_tap(&dead).await;
    let mut c = Client::h1(tap).await;
    let r = c.get("web", "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(flag(&r), Some("UF,URX"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_under_registry_only_is_502() {
    let v1 = Upstream::start("v1").await;
    let p = TestProxy::start(&service_yaml("web", &[("v1", v1.addr)])).await;
    let tap = flag_tap(&p).await;
    for proto in PROTOS {
        let mut c = Client::connect(tap, proto).await;
        for host in [
            "nothing.example",
            "127.0.0.1",
            &format!("127.0.0.1:{}", v1.addr.port()),
        ] {
            let r = c.get(host, "/").await;
            assert_eq!(r.status, 502, "{proto:?} {host}");
            assert!(r.body.is_empty(), "{proto:?} {host}: {:?}", r.text());
            assert_eq!(r.header("x-envoy-upstream-service-time"), None);
            // Envoy answers from the block_all virtual host's direct response: no flag.
            assert_eq!(flag(&r), Some("-"), "{proto:?} {host}");
        }
    }
    assert_eq!(v1.requests(), 0, "REGISTRY_ONLY passed a request through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_passes_unknown_hosts_through_but_never_to_itself() {
    let up = Upstream::start("outside").await;
    let v1 = Upstream::start("v1").await;
    let p = TestProxy::start_with(
        &service_yaml("web", &[("v1", v1.addr)]),
        ProxyOptions {
            outbound_policy: OutboundPolicy::AllowAny,
            ..ProxyOptions::default()
        },
    )
    .await;
    let admin = p.admin.expect("admin");
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        c.set_timeout(Duration::from_secs(5));
        let host = format!("127.0.0.1:{}", up.addr.port());
        let r = c.get(&host, "/echo/x?y=1").await;
        assert_eq!(
            (r.status, r.header("x-upstream")),
            (200, Some("outside")),
            "{proto:?}: {}",
            r.text()
        );
        assert_eq!(r.header("x-echo-path"), Some("/echo/x?y=1"), "{proto:?}");
        assert_eq!(r.header("x-echo-host"), Some(host.as_str()), "{proto:?}");
        // A name is resolved (through the caching resolver; /etc/hosts has localhost).
        let named = format!("localhost:{}", up.addr.port());
        for _ in 0..2 {
            let r = c.get(&named, "/").await;
            assert_eq!(
                r.header("x-upstream"),
                Some("outside"),
                "{proto:?}: {}",
                r.text()
            );
        }
        // Known hosts still route normally.
        assert_eq!(c.get("web", "/").await.text(), "v1", "{proto:?}");
        // Our own listener and admin, under any spelling: refused at once, never a loop.
        for own in [
            format!("127.0.0.1:{}", p.addr.port()),
            format!("localhost:{}", p.addr.port()),
            format!("0.0.0.0:{}", p.addr.port()),
            format!("127.0.0.1:{}", admin.port()),
        ] {
            let started = Instant::now();
            let r = c
                .try_request("GET", &own, "/", &[])
                .await
                .unwrap_or_else(|e| panic!("{proto:?} {own}: {e}"));
            assert_eq!(r.status, 502, "{proto:?} {own}: {}", r.text());
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{proto:?} {own}: took {:?}",
                started.elapsed()
            );
        }
    }
    let in_flight = p
        .proxy
        .state
        .in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(in_flight, 0, "requests still in flight: a loop?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_get_grpc_shaped_local_replies() {
    let v1 = Upstream::start("v1").await;
    let yaml = service_yaml("web", &[("v1", v1.addr)])
        + &service_yaml("dead", &[("v1", closed_port())])
        // `empty`'s subset v1 selects nothing: its only endpoint is labelled v9.
        + &service_entry(
            "empty",
            "default",
            "empty.default.svc.cluster.local",
            "HTTP",
            &[("version=v9", v1.addr)],
        )
        + &destination_rule("empty", "default", "empty", &["v1"])
        + &vs(
            "web",
            "[web]",
            "  - match:\n    - uri: {prefix: /svc}\n    route:\n    - destination: {host: web, subset: v1}\n",
        )
        + &vs(
            "empty",
            "[empty]",
            "  - route:\n    - destination: {host: empty, subset: v1}\n",
        );
    let p = TestProxy::start(&yaml).await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    // (host, path, grpc-status, HTTP status a plain client gets)
    let cases = [
        ("nothing.example", "/pkg.Svc/Call", "14", 502), // REGISTRY_ONLY
        ("web", "/pkg.Svc/Call", "12", 404),             // no route
        ("empty", "/pkg.Svc/Call", "14", 503),           // no healthy upstream
        ("dead", "/pkg.Svc/Call", "14", 503),            // connect failure
    ];
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for (host, path, status, plain) in cases {
            let r = c.request("POST", host, path, &grpc).await;
            assert_eq!(r.status, 200, "{proto:?} {host}: {r:?}");
            let grpc_status = r.header("grpc-status").or_else(|| r.trailer("grpc-status"));
            assert_eq!(grpc_status, Some(status), "{proto:?} {host}: {r:?}");
            assert_eq!(
                r.header("content-type"),
                Some("application/grpc"),
                "{proto:?} {host}"
            );
            // The same failure without gRPC stays plain HTTP.
            let r = c.request("POST", host, path, &[]).await;
            assert_eq!(r.status, plain, "{proto:?} {host}");
            assert_eq!(r.header("grpc-status"), None, "{proto:?} {host}");
        }
    }
    assert_eq!(v1.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_response_surfaces_as_an_error_not_a_hang() {
    // Headers promise 1 MB, 1000 bytes follow, then the upstream closes.
    let mut reply =
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\ncontent-type: text/plain\r\n\r\n".to_vec();
    reply.extend_from_slice(&[b'x'; 1000]);
    let raw = RawUpstream::start(reply).await;
    let ok = Upstream::start("ok").await;
    let yaml = service_yaml("web", &[("v1", raw.addr)])
        + &route_all_to("v1")
        + &service_yaml("ok", &[("v1", ok.addr)]);
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        c.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let result = c.try_request("GET", "web", "/", &[]).await;
        let elapsed = started.elapsed();
        match result {
            Err(e) => assert!(!e.starts_with("timed out"), "{proto:?}: hung: {e}"),
            Ok(r) => panic!(
                "{proto:?}: a truncated body was delivered as complete: status {} with {} bytes",
                r.status,
                r.body.len()
            ),
        }
        assert!(
            elapsed < Duration::from_secs(4),
            "{proto:?}: took {elapsed:?}"
        );
        // The proxy keeps serving.
        let mut c = Client::connect(p.addr, proto).await;
        assert_eq!(c.get("ok", "/").await.text(), "ok", "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_before_headers_is_503_uc_and_not_retried() {
    let raw = RawUpstream::start(Vec::new()).await;
    let p =
        TestProxy::start(&(service_yaml("web", &[("v1", raw.addr)]) + &route_all_to("v1"))).await;
    let tap = flag_tap(&p).await;
    let mut requests = 0;
    for proto in PROTOS {
        let mut c = Client::connect(tap, proto).await;
        c.set_timeout(Duration::from_secs(5));
        let r = c
            .try_request("GET", "web", "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: {e}"));
        requests += 1;
        assert_eq!(r.status, 503, "{proto:?}: {}", r.text());
        assert!(
            r.text().starts_with(UPSTREAM_CONNECT_ERROR),
            "{proto:?}: {:?}",
            r.text()
        );
        assert_eq!(flag(&r), Some("UC"), "{proto:?}");
        // A disconnect after the request was sent is not a connect failure: Istio's default
        // retryOn does not replay it.
        assert_eq!(
            raw.connections(),
            requests,
            "{proto:?}: request was retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_naming_an_unknown_subset_or_host_is_refused_with_a_diagnostic() {
    let v1 = Upstream::start("v1").await;
    let base = service_yaml("web", &[("v1", v1.addr)]);
    let cases = [
        (route_all_to("canary"), ["IST0101", "canary"]),
        (
            vs(
                "web",
                "[web]",
                "  - route:\n    - destination: {host: nowhere}\n",
            ),
            ["IST0101", "nowhere.default.svc.cluster.local"],
        ),
    ];
    for (bad, needles) in cases {
        match TestProxy::try_start_with(&(base.clone() + &bad), ProxyOptions::default()).await {
            Ok(_) => panic!("config accepted:\n{bad}"),
            Err(diags) => {
                let text = diag_text(&diags);
                for n in needles {
                    assert!(text.contains(n), "diagnostic lacks {n:?}:\n{text}");
                }
                assert!(diags.iter().any(|d| d.is_error()), "{text}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reload_keeps_the_old_table_and_a_later_good_one_applies() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let base = service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)]);
    let p = TestProxy::start(&(base.clone() + &route_all_to("v1"))).await;
    let version = p.reloader.version();

    let bad_yaml = base.clone()
        + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web\nspec: [\n";
    let unknown_subset = base.clone() + &route_all_to("v7");
    for bad in [bad_yaml, unknown_subset] {
        let diags = match p.rewrite(&bad).await {
            Err(d) => d,
            Ok(o) => panic!("a broken config was applied: {o:?}"),
        };
        assert!(diags.iter().any(|d| d.is_error()), "{}", diag_text(&diags));
        assert_eq!(p.reloader.version(), version, "the table changed");
        let (t1, t2) = par_tally_both(p.addr, 2, 100, "web", "/", &[]).await;
        assert_eq!(t1.get("v1"), Some(&50), "H1 after refusal: {t1:?}");
        assert_eq!(t2.get("v1"), Some(&50), "H2 after refusal: {t2:?}");
    }
    let dump = admin_get(&p, "/config_dump").await.json();
    assert_eq!(dump["last_reload"]["result"], "refused", "{dump}");

    match p.rewrite(&(base + &route_all_to("v2"))).await {
        Ok(ReloadOutcome::Applied { version: v, .. }) => assert!(v > version),
        other => panic!("good config not applied: {other:?}"),
    }
    let (t1, t2) = par_tally_both(p.addr, 2, 100, "web", "/", &[]).await;
    assert_eq!(t1.get("v2"), Some(&50), "H1 after good reload: {t1:?}");
    assert_eq!(t2.get("v2"), Some(&50), "H2 after good reload: {t2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swap_lets_in_flight_requests_finish_on_the_old_destination() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let base = service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)]);
    let p = TestProxy::start(&(base.clone() + &route_all_to("v1"))).await;
    let addr: SocketAddr = p.addr;
    let slow: Vec<_> = PROTOS
        .into_iter()
        .map(|proto| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr, proto).await;
                let r = c.get("web", "/slow/1500").await;
                (proto, r)
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || v1.requests() >= 2).await,
        "slow requests never reached v1"
    );
    match p.rewrite(&(base + &route_all_to("v2"))).await {
        Ok(ReloadOutcome::Applied { .. }) => {}
        other => panic!("reload not applied: {other:?}"),
    }
    // New requests go to the new destination at once, while the slow ones are still running.
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        assert_eq!(c.get("web", "/").await.text(), "v2", "{proto:?}");
    }
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "the slow requests finished before the swap was observed"
    );
    for task in slow {
        let (proto, r) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("slow request hung")
            .expect("slow request task");
        assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{proto:?}");
    }
    assert_eq!(v1.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_response_is_502_upe() {
    // Conflicting lengths, and a head over Envoy's 60 KiB response-header limit.
    let conflicting =
        RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello".to_vec()).await;
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..700 {
        huge.extend_from_slice(format!("x-filler-{i}: {}\r\n", "y".repeat(80)).as_bytes());
    }
    huge.extend_from_slice(b"content-length: 0\r\n\r\n");
    let oversized = RawUpstream::start(huge).await;
    let yaml = service_yaml("web", &[("v1", conflicting.addr)])
        + &route_all_to("v1")
        + &service_yaml("big", &[("v1", oversized.addr)]);
    let p = TestProxy::start(&yaml).await;
    let tap = flag_tap(&p).await;
    for host in ["web", "big"] {
        let mut c = Client::h1(tap).await;
        c.set_timeout(Duration::from_secs(5));
        let r = c
            .try_request("GET", host, "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(r.status, 502, "{host}: {}", r.text());
        assert_eq!(flag(&r), Some("UPE"), "{host}");
        assert_eq!(
            r.text(),
            format!("{UPSTREAM_CONNECT_ERROR}. reset reason: protocol error"),
            "{host}"
        );
    }
}
