//! Upstream connection lifetime from DestinationRule `connectionPool.http`:
//! `maxRequestsPerConnection` (HTTP/1.1 and HTTP/2) and `idleTimeout`, seen from upstreams
//! that count connections and tell who closed them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::e2e_helpers::{admin_get, eventually};
use support::tls::KeepAliveUpstream;
use support::*;

const HOST: &str = "web.default.svc.cluster.local";

/// ServiceEntry `web` (port 80 of `protocol`, endpoint `up`) and a DestinationRule with
/// `connectionPool: {http: <http>}`; `http` empty: no DestinationRule.
fn config(up: SocketAddr, protocol: &str, http: &str) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 80, name: web, protocol: {protocol}}}]
  resolution: STATIC
  endpoints:
  - {{address: {}, ports: {{web: {}}}}}
",
        up.ip(),
        up.port()
    );
    if !http.is_empty() {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  trafficPolicy:
    connectionPool:
      http: {http}
"
        ));
    }
    yaml
}

async fn cluster_stat(p: &TestProxy, name: &str) -> i64 {
    let text = admin_get(p, "/stats/prometheus").await.text();
    let prefix = format!("envoy_cluster_{name}{{cluster_name=\"outbound|80||{HOST}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `n` sequential requests over one client connection; every answer must be 200.
async fn requests(p: &TestProxy, proto: Proto, n: usize) -> Vec<String> {
    let mut c = Client::connect(p.addr, proto).await;
    c.set_timeout(Duration::from_secs(5));
    let mut bodies = Vec::new();
    for i in 0..n {
        let r = c
            .try_request("GET", HOST, "/", &[])
            .await
            .unwrap_or_else(|e| panic!("request {i}: no answer: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        bodies.push(r.text());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_one_opens_a_connection_per_request() {
    let up = KeepAliveUpstream::start(Duration::from_secs(10)).await;
    let p = TestProxy::start(&config(up.addr, "HTTP", "{maxRequestsPerConnection: 1}")).await;
    let bodies = requests(&p, Proto::H1, 5).await;
    // The upstream numbers its connections: each request came on a new one.
    assert_eq!(bodies, ["1", "2", "3", "4", "5"]);
    assert_eq!(up.accepted(), 5);
    // The proxy closed each one after its response (the upstream saw EOF, not its timeout).
    assert!(
        eventually(Duration::from_secs(2), || up.closed_by_peer() == 5).await,
        "upstream saw {} closes",
        up.closed_by_peer()
    );
    assert_eq!(cluster_stat(&p, "upstream_cx_max_requests").await, 5);
    assert_eq!(cluster_stat(&p, "upstream_cx_total").await, 5);
    assert_eq!(cluster_stat(&p, "upstream_cx_active").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_limits_reuse_and_zero_is_unlimited() {
    let up = KeepAliveUpstream::start(Duration::from_secs(10)).await;
    let p = TestProxy::start(&config(up.addr, "HTTP", "{maxRequestsPerConnection: 2}")).await;
    let bodies = requests(&p, Proto::H1, 6).await;
    assert_eq!(bodies, ["1", "1", "2", "2", "3", "3"]);
    assert_eq!(cluster_stat(&p, "upstream_cx_max_requests").await, 3);

    // Istio's default (0, unlimited): one connection carries everything.
    let up = KeepAliveUpstream::start(Duration::from_secs(10)).await;
    p.rewrite(&config(up.addr, "HTTP", "{maxRequestsPerConnection: 0}"))
        .await
        .expect("reload");
    let bodies = requests(&p, Proto::H1, 6).await;
    assert_eq!(bodies, ["1"; 6]);
    assert_eq!(up.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_takes_no_new_streams_after_the_limit() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&config(up.addr, "HTTP2", "{maxRequestsPerConnection: 2}")).await;
    requests(&p, Proto::H2, 6).await;
    assert_eq!(up.requests(), 6);
    assert_eq!(up.connections(), 3, "two streams per HTTP/2 connection");
    assert_eq!(cluster_stat(&p, "upstream_cx_max_requests").await, 3);

    // Unlimited: one multiplexed connection.
    let up2 = Upstream::start("v2").await;
    p.rewrite(&config(up2.addr, "HTTP2", ""))
        .await
        .expect("reload");
    requests(&p, Proto::H2, 6).await;
    assert_eq!(up2.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_pooled_connections_before_the_upstream_does() {
    // The upstream would drop an idle keep-alive connection after 1 s; the proxy's 300ms
    // idle timeout closes it first.
    let up = KeepAliveUpstream::start(Duration::from_secs(1)).await;
    let p = TestProxy::start(&config(up.addr, "HTTP", "{idleTimeout: 300ms}")).await;
    assert_eq!(requests(&p, Proto::H1, 1).await, ["1"]);
    assert_eq!(cluster_stat(&p, "upstream_cx_active").await, 1);
    // Closed at ~300ms: well before the upstream's own 1 s.
    assert!(
        eventually(Duration::from_millis(900), || up.closed_by_peer() == 1).await,
        "the proxy did not close the idle connection (peer closes {}, upstream closes {})",
        up.closed_by_peer(),
        up.closed_idle()
    );
    assert_eq!(up.closed_idle(), 0);
    assert_eq!(cluster_stat(&p, "upstream_cx_idle_timeout").await, 1);
    assert_eq!(cluster_stat(&p, "upstream_cx_active").await, 0);
    // The next request opens a fresh connection and succeeds.
    assert_eq!(requests(&p, Proto::H1, 1).await, ["2"]);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_counts_from_the_last_request() {
    let up = KeepAliveUpstream::start(Duration::from_secs(10)).await;
    let p = TestProxy::start(&config(up.addr, "HTTP", "{idleTimeout: 400ms}")).await;
    let mut c = Client::h1(p.addr).await;
    // Five requests 150ms apart: 600ms+ in all, but never 400ms idle.
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let r = c.get(HOST, "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "1", "request {i} reused the connection");
    }
    assert_eq!(up.accepted(), 1);
    assert_eq!(cluster_stat(&p, "upstream_cx_idle_timeout").await, 0);

    // Istio's default idle timeout is an hour: an upstream that closes idle connections
    // itself after 300ms is the one that closes them.
    let up = KeepAliveUpstream::start(Duration::from_millis(300)).await;
    p.rewrite(&config(up.addr, "HTTP", ""))
        .await
        .expect("reload");
    assert_eq!(requests(&p, Proto::H1, 1).await, ["1"]);
    assert!(eventually(Duration::from_secs(2), || up.closed_idle() == 1).await);
    assert_eq!(up.closed_by_peer(), 0);
}

/// `idleTimeout` on an HTTP/2 upstream counts only time with no stream open: a stream longer
/// than the timeout keeps its connection; once idle for the timeout it is closed, and the
/// next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_idle_timeout_closes_the_connection_once_no_stream_is_open() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&config(up.addr, "HTTP2", "{idleTimeout: 300ms}")).await;
    let mut c = Client::h1(p.addr).await;
    let r = c.get(HOST, "/slow/700").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get(HOST, "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections(), 1, "the long stream kept its connection");
    assert_eq!(cluster_stat(&p, "upstream_cx_idle_timeout").await, 0);
    assert_eq!(cluster_stat(&p, "upstream_cx_active").await, 1);

    let t = std::time::Instant::now();
    while cluster_stat(&p, "upstream_cx_idle_timeout").await == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the idle HTTP/2 connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "closed too early: {:?}",
        t.elapsed()
    );
    assert_eq!(cluster_stat(&p, "upstream_cx_idle_timeout").await, 1);
    assert_eq!(cluster_stat(&p, "upstream_cx_active").await, 0);
    assert_eq!(requests(&p, Proto::H2, 2).await.len(), 2);
    assert_eq!(up.connections(), 2, "a new connection after the idle close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closes_while_idle_is_closed_and_not_reused() {
    // The upstream drops idle keep-alive connections after 200ms; the proxy's idle timeout
    // is Istio's hour.
    let up = KeepAliveUpstream::start(Duration::from_millis(200)).await;
    let p = TestProxy::start(&config(up.addr, "HTTP", "")).await;
    assert_eq!(requests(&p, Proto::H1, 1).await, ["1"]);
    assert!(eventually(Duration::from_secs(2), || up.closed_idle() == 1).await);
    // Noticed while idle (not left in CLOSE_WAIT until the next request).
    let mut active = cluster_stat(&p, "upstream_cx_active").await;
    for _ in 0..40 {
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        active = cluster_stat(&p, "upstream_cx_active").await;
    }
    assert_eq!(active, 0, "the closed connection is still counted as open");
    // The next request goes out on a new connection, without an error or a replay.
    assert_eq!(requests(&p, Proto::H1, 1).await, ["2"]);
    assert_eq!(up.accepted(), 2);
}
