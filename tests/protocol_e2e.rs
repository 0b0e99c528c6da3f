//! End-to-end HTTP behaviour of the proxy itself: header hygiene as an Istio sidecar's Envoy
//! does it (reference §9), streaming bodies and trailers, upgrades, gRPC, malformed and
//! oversized requests, keep-alive and upstream pooling.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use support::e2e_helpers::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// `web` → one upstream named `v1`.
async fn proxy_to(up: &Upstream) -> TestProxy {
    TestProxy::start(&service_yaml("web", &[("v1", up.addr)])).await
}

/// `web` on a ServiceEntry port of protocol HTTP2: the upstream leg is h2c.
async fn proxy_to_http2(up: &Upstream) -> TestProxy {
    let yaml = service_entry(
        "web",
        "default",
        "web.default.svc.cluster.local",
        "HTTP2",
        &[("version=v1", up.addr)],
    );
    TestProxy::start(&yaml).await
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed_and_te_trailers_kept() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    // HTTP/1.1: the Connection header names an extra hop-by-hop header.
    let mut c = Client::h1(p.addr).await;
    let r = c
        .request(
            "GET",
            "web",
            "/echo",
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("x-normal", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for gone in ["x-secret", "keep-alive", "proxy-connection", "connection"] {
        assert_eq!(echoed(&r, gone), None, "H1: {gone} reached the upstream");
    }
    assert_eq!(echoed_all(&r, "te"), ["trailers"], "H1");
    assert_eq!(echoed(&r, "x-normal").as_deref(), Some("1"), "H1");
    // The connection is still usable (keep-alive was not broken by the listed options).
    assert_eq!(c.get("web", "/").await.text(), "v1");
    assert_eq!(c.connects(), 1);

    // HTTP/2 carries no connection-specific headers; `te: trailers` is the one allowed.
    let mut c = Client::h2(p.addr).await;
    let r = c
        .request(
            "GET",
            "web",
            "/echo",
            &[("te", "trailers"), ("x-normal", "1")],
        )
        .await;
    assert_eq!(echoed_all(&r, "te"), ["trailers"], "H2");
    assert_eq!(echoed(&r, "x-normal").as_deref(), Some("1"), "H2");
    // Any other TE value is hop-by-hop and dropped.
    let mut c = Client::h1(p.addr).await;
    let r = c.request("GET", "web", "/echo", &[("te", "gzip")]).await;
    assert_eq!(echoed(&r, "te"), None, "H1 te: gzip");
}

/// HTTP/2 clients send cookies as one field per pair ("crumbs"); an HTTP/1.1 upstream gets
/// them joined into one `Cookie` field (RFC 9113 §8.2.3, as Envoy does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_crumbs_from_an_h2_client_reach_an_h1_upstream_as_one_field() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    let mut c = Client::h2(p.addr).await;
    let r = c
        .request(
            "GET",
            "web",
            "/echo",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_all(&r, "cookie"), ["a=1; b=2; c=3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed() {
    let body = "from-raw";
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: keep-alive, x-resp-secret\r\nx-resp-secret: 1\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-fine: 1\r\n\r\n{body}",
        body.len()
    );
    let raw = RawUpstream::start(reply.into_bytes()).await;
    let p = TestProxy::start(&service_yaml("web", &[("v1", raw.addr)])).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{proto:?}");
        assert_eq!(r.header("x-fine"), Some("1"), "{proto:?}");
        for gone in ["x-resp-secret", "keep-alive", "proxy-connection"] {
            assert_eq!(r.header(gone), None, "{proto:?}: {gone} reached the client");
        }
        if proto == Proto::H1 {
            // Only our own connection management may appear here.
            let conn = r.header("connection").unwrap_or("");
            assert!(!conn.contains("x-resp-secret"), "H1 connection: {conn}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_generated_when_absent_and_kept_when_present() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let a = echoed(&c.get("web", "/echo").await, "x-request-id").unwrap_or_default();
        let b = echoed(&c.get("web", "/echo").await, "x-request-id").unwrap_or_default();
        assert!(is_uuid(&a), "{proto:?}: generated id {a:?} is not a UUID");
        assert!(is_uuid(&b), "{proto:?}: generated id {b:?} is not a UUID");
        assert_ne!(a, b, "{proto:?}: ids must be unique per request");
        let r = c
            .request(
                "GET",
                "web",
                "/echo",
                &[("x-request-id", "client-chosen-42")],
            )
            .await;
        assert_eq!(
            echoed_all(&r, "x-request-id"),
            ["client-chosen-42"],
            "{proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_as_a_sidecar_sets_them() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        // Sidecars run with use_remote_address: false: XFF passes through unchanged.
        let r = c
            .request(
                "GET",
                "web",
                "/echo",
                &[("x-forwarded-for", "10.1.2.3, 10.4.5.6")],
            )
            .await;
        assert_eq!(
            echoed_all(&r, "x-forwarded-for"),
            ["10.1.2.3, 10.4.5.6"],
            "{proto:?}"
        );
        assert_eq!(echoed_all(&r, "x-forwarded-proto"), ["http"], "{proto:?}");
        // No XFF in, none invented.
        let r = c.get("web", "/echo").await;
        assert_eq!(echoed(&r, "x-forwarded-for"), None, "{proto:?}");
        // A client-supplied x-forwarded-proto is kept.
        let r = c
            .request("GET", "web", "/echo", &[("x-forwarded-proto", "https")])
            .await;
        assert_eq!(echoed_all(&r, "x-forwarded-proto"), ["https"], "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_service_time_on_proxied_responses_only() {
    let up = Upstream::start("v1").await;
    let yaml = service_yaml("web", &[("v1", up.addr)])
        + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts: [web]\n  http:\n  - match:\n    - uri: {prefix: /direct}\n    directResponse:\n      status: 200\n      body: {string: direct}\n  - match:\n    - uri: {prefix: /nowhere}\n    route:\n    - destination: {host: web, subset: v9}\n  - match:\n    - uri: {prefix: /}\n    route:\n    - destination: {host: web, subset: v1}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: web-extra\nspec:\n  host: web\n  subsets:\n  - name: v9\n    labels: {version: v9}\n";
    // Two DestinationRules for one host merge; v9 selects nothing (503 UH).
    let p = TestProxy::start(&yaml).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/slow/150").await;
        assert_eq!(r.status, 200, "{proto:?}");
        let ms: u64 = r
            .header("x-envoy-upstream-service-time")
            .unwrap_or_else(|| panic!("{proto:?}: missing on a proxied response"))
            .parse()
            .expect("milliseconds");
        assert!(
            (150..5_000).contains(&ms),
            "{proto:?}: {ms} ms for /slow/150"
        );
        // A proxied error status is still a proxied response.
        let r = c.get("web", "/status/500").await;
        assert_eq!(r.status, 500);
        assert!(
            r.header("x-envoy-upstream-service-time").is_some(),
            "{proto:?}"
        );
        // Local replies never carry it.
        for (host, path, status) in [
            ("web", "/direct", 200),
            ("web", "/nowhere", 503),
            ("unknown.example", "/", 502),
        ] {
            let r = c.get(host, path).await;
            assert_eq!(r.status, status, "{proto:?} {host}{path}");
            assert_eq!(
                r.header("x-envoy-upstream-service-time"),
                None,
                "{proto:?} {host}{path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_count_is_sent_upstream() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/echo").await;
        assert_eq!(echoed_all(&r, "x-envoy-attempt-count"), ["1"], "{proto:?}");
        // A client cannot pre-set it.
        let r = c
            .request("GET", "web", "/echo", &[("x-envoy-attempt-count", "7")])
            .await;
        assert_eq!(echoed_all(&r, "x-envoy-attempt-count"), ["1"], "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_upload_and_download_stream_through() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    const SIZE: usize = 64 * MIB;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        c.set_timeout(Duration::from_secs(30));
        // Upload, fed in 256 KiB pieces through a small channel so it really streams.
        let (tx, body) = body_channel(2);
        let producer = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
            for _ in 0..SIZE / chunk.len() {
                if !tx.send_data(chunk.clone()).await {
                    return false;
                }
            }
            true
        });
        let r = c
            .request_with_body("POST", "web", "/upload", &[], body)
            .await;
        assert!(producer.await.expect("producer"), "{proto:?}: upload cut");
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        assert_eq!(r.text(), SIZE.to_string(), "{proto:?}: upload size");

        let r = c
            .request("GET", "web", &format!("/stream/{SIZE}"), &[])
            .await;
        assert_eq!(r.status, 200, "{proto:?}");
        assert_eq!(r.body.len(), SIZE, "{proto:?}: download size");
        assert!(r.body.iter().all(|&b| b == b'x'), "{proto:?}: corrupted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways_over_h2() {
    // h2c end to end: the ServiceEntry port says HTTP2, so the upstream leg is h2 too.
    let up = Upstream::start("v1").await;
    let p = proxy_to_http2(&up).await;
    let mut c = Client::h2(p.addr).await;
    // Response trailers.
    let r = c.get("web", "/stream/100000").await;
    assert_eq!(r.body.len(), 100_000);
    assert_eq!(r.trailer("x-trailer"), Some("done"), "response trailers");
    // Request trailers.
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("sent"));
    let body = body_from_chunks(vec![Bytes::from_static(b"abc")], Some(trailers));
    let r = c
        .request_with_body("POST", "web", "/upload", &[], body)
        .await;
    assert_eq!(r.text(), "3");
    assert_eq!(r.header("x-got-trailer"), Some("sent"), "request trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways_over_h1_when_announced() {
    // The default (HTTP/1.1) upstream leg; clients announce `te: trailers`. Response trailers
    // are checked for both downstream protocols.
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    let mut missing = Vec::new();
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c
            .request("GET", "web", "/stream/100000", &[("te", "trailers")])
            .await;
        assert_eq!(r.body.len(), 100_000, "{proto:?}");
        if r.trailer("x-trailer") != Some("done") {
            missing.push(format!("{proto:?}: trailers {:?}", r.trailers));
        }
    }
    // HTTP/1.1 request trailers, announced in a Trailer header as HTTP/1 requires.
    let mut c = Client::h1(p.addr).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("sent"));
    let body = body_from_chunks(vec![Bytes::from_static(b"abcd")], Some(trailers));
    let r = c
        .request_with_body(
            "POST",
            "web",
            "/upload",
            &[("te", "trailers"), ("trailer", "x-trailer")],
            body,
        )
        .await;
    assert_eq!(r.text(), "4");
    if r.header("x-got-trailer") != Some("sent") {
        missing.push("H1 request trailers did not reach the upstream".to_string());
    }
    assert!(missing.is_empty(), "trailers lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through_and_echoes() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    let mut c = Client::h1(p.addr).await;
    let (reply, io) = c
        .upgrade("web", "/ws", &[("sec-websocket-version", "13")])
        .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(reply.header("upgrade"), Some("websocket"));
    let mut io = io.expect("101 hands over the connection");
    for msg in [
        &b"hello"[..],
        &[0u8, 1, 2, 255, 254][..],
        &[b'z'; 100_000][..],
    ] {
        io.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .expect("read echo");
        assert_eq!(back, msg);
    }
    io.shutdown().await.expect("close the tunnel");
    // The proxy still serves ordinary requests.
    assert_eq!(c.get("web", "/").await.text(), "v1");
}

/// WebSocket exists only in HTTP/1.1 here: an Upgrade request to a service whose port speaks
/// HTTP/2 goes out on an HTTP/1.1 connection of its own, and the cluster's other requests
/// keep using HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_to_an_http2_service_goes_out_as_http1() {
    let up = Upstream::start("v1").await;
    let p = proxy_to_http2(&up).await;
    let mut c = Client::h1(p.addr).await;
    let (reply, io) = c
        .upgrade("web", "/ws", &[("sec-websocket-version", "13")])
        .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    let mut io = io.expect("101 hands over the connection");
    io.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("read echo");
    assert_eq!(&back, b"ping");
    io.shutdown().await.expect("close the tunnel");
    let r = c.get("web", "/").await;
    assert_eq!(r.text(), "v1");
    assert_eq!(
        r.header("x-echo-version"),
        Some("HTTP/2.0"),
        "ordinary requests still reach the upstream over HTTP/2: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_response_trailers_reach_an_h2_client() {
    let up = Upstream::start("v1").await;
    let yaml = service_entry(
        "grpc",
        "default",
        "grpc.default.svc.cluster.local",
        "GRPC",
        &[("version=v1", up.addr)],
    );
    let p = TestProxy::start(&yaml).await;
    let mut c = Client::h2(p.addr).await;
    let r = c
        .request(
            "POST",
            "grpc",
            "/grpc",
            &[("content-type", "application/grpc"), ("te", "trailers")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.trailer("grpc-status"), Some("0"), "{r:?}");
    // One length-prefixed message: flag 0, length 2, "v1".
    assert_eq!(&r.body[..], b"\x00\x00\x00\x00\x02v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_bytes_get_400() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    for garbage in [
        &b"\x01\x02 NOT HTTP AT ALL\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: web\r\nbad header line\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"[..],
    ] {
        let out = raw_exchange(p.addr, garbage, Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&out),
            Some(400),
            "{:?} → {:?}",
            String::from_utf8_lossy(garbage),
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let up = Upstream::start("v1").await;
    let raw = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let p = TestProxy::start(
        &(service_yaml("web", &[("v1", up.addr)]) + &service_yaml("raw", &[("v1", raw.addr)])),
    )
    .await;
    // One 70 KiB header over HTTP/1.1.
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: web\r\nx-big: {big}\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(p.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        raw_status(&out),
        Some(431),
        "{:?}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    // Envoy's max_headers_count is 100: 100 pass, 101 are refused. The 100-header request
    // goes to a raw upstream, since the proxy adds headers of its own and the test upstream
    // (hyper) would refuse more than 100 itself.
    for (count, want) in [(100, 200), (101, 431)] {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n");
        for i in 0..count - 2 {
            req.push_str(&format!("x-h-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        let out = raw_exchange(p.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&out),
            Some(want),
            "{count} headers: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
    assert_eq!(
        raw.connections(),
        1,
        "only the 100-header request is proxied"
    );
    // HTTP/2: the same 70 KiB header is refused too (431 or a stream error), never served.
    let mut c = Client::h2(p.addr).await;
    c.set_timeout(Duration::from_secs(5));
    match c.try_request("GET", "web", "/", &[("x-big", &big)]).await {
        Ok(r) => assert_eq!(r.status, 431, "H2: {}", r.text()),
        Err(e) => assert!(!e.starts_with("timed out"), "H2 hung: {e}"),
    }
    assert_eq!(up.requests(), 0, "an oversized request was proxied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_the_client_connection_and_pools_upstream() {
    let up = Upstream::start("v1").await;
    let p = proxy_to(&up).await;
    for proto in PROTOS {
        let mut c = Client::connect(p.addr, proto).await;
        for i in 0..100 {
            let r = c.get("web", &format!("/n/{i}")).await;
            assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{proto:?}");
        }
        assert_eq!(c.connects(), 1, "{proto:?}: client connection not reused");
    }
    assert_eq!(up.requests(), 200);
    assert!(
        up.connections() <= 2,
        "upstream saw {} connections for 200 sequential requests",
        up.connections()
    );
}
