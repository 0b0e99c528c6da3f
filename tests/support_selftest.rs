//! Checks the test toolkit itself against its own upstreams, so a failure in a
//! proxy test can be blamed on the proxy rather than on the harness.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use support::{
    Client, Proto, ProxyProcess, SIGTERM, Upstream, body_channel, closed_port, parse_log_addr,
    raw_exchange, strip_ansi, tally,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPLOAD_BYTES: usize = 3 * 1024 * 1024;

async fn check_upstream(up: &Upstream, proto: Proto) {
    let mut c = Client::connect(up.addr, proto).await;
    let version = match proto {
        Proto::H1 => "HTTP/1.1",
        Proto::H2 => "HTTP/2.0",
    };
    let ctx = format!("{} over {proto:?}", up.name);

    let r = c.get("example.test", "/hello?x=1").await;
    assert_eq!(r.status, 200, "{ctx}");
    assert_eq!(r.text(), up.name, "{ctx}");
    assert_eq!(r.header("x-upstream"), Some(up.name.as_str()), "{ctx}");
    assert_eq!(r.header("x-echo-path"), Some("/hello?x=1"), "{ctx}");
    assert_eq!(r.header("x-echo-host"), Some("example.test"), "{ctx}");
    assert_eq!(r.header("x-echo-version"), Some(version), "{ctx}");
    assert_eq!(r.header("x-echo-method"), Some("GET"), "{ctx}");

    let r = c
        .request(
            "POST",
            "example.test",
            "/echo/deep?q=2",
            &[("x-multi", "a"), ("x-multi", "b"), ("X-Case", "v")],
        )
        .await;
    assert_eq!(r.status, 200, "{ctx}");
    let json = r.json();
    assert_eq!(json["upstream"], up.name.as_str(), "{ctx}");
    assert_eq!(json["method"], "POST", "{ctx}");
    assert_eq!(json["path"], "/echo/deep?q=2", "{ctx}");
    assert_eq!(json["version"], version, "{ctx}");
    assert_eq!(
        json["headers"]["x-multi"],
        serde_json::json!(["a", "b"]),
        "{ctx}"
    );
    assert_eq!(json["headers"]["x-case"], serde_json::json!(["v"]), "{ctx}");
    match proto {
        Proto::H1 => assert_eq!(json["headers"]["host"], serde_json::json!(["example.test"])),
        Proto::H2 => assert_eq!(json["authority"], "example.test", "{ctx}"),
    }

    let r = c.get("example.test", "/status/503").await;
    assert_eq!((r.status, r.text()), (503, up.name.clone()), "{ctx}");

    let started = Instant::now();
    let r = c.get("example.test", "/slow/100").await;
    assert_eq!(r.text(), up.name, "{ctx}");
    assert!(started.elapsed() >= Duration::from_millis(100), "{ctx}");

    // hyper (like most servers) only sends HTTP/1 trailers to a client that
    // announced `te: trailers`.
    let te = [("te", "trailers")];
    let r = c
        .request("GET", "example.test", "/stream/200000", &te)
        .await;
    assert_eq!(r.status, 200, "{ctx}");
    assert_eq!(r.body.len(), 200_000, "{ctx}");
    assert!(r.body.iter().all(|&b| b == b'x'), "{ctx}");
    assert_eq!(r.trailer("x-trailer"), Some("done"), "{ctx}");

    let r = c.request("POST", "example.test", "/grpc", &te).await;
    assert_eq!(r.header("content-type"), Some("application/grpc"), "{ctx}");
    assert_eq!(r.trailer("grpc-status"), Some("0"), "{ctx}");

    // A small channel keeps the producer in lock-step with the server, so the
    // body is really streamed rather than handed over in one piece.
    let (tx, body) = body_channel(2);
    let producer = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
        for _ in 0..UPLOAD_BYTES / chunk.len() {
            assert!(
                tx.send_data(chunk.clone()).await,
                "upload receiver went away"
            );
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-trailer", HeaderValue::from_static("sent"));
        tx.send_trailers(trailers).await;
    });
    // HTTP/1 only transmits trailers announced in a Trailer header.
    let r = c
        .request_with_body(
            "POST",
            "example.test",
            "/upload",
            &[("trailer", "x-trailer")],
            body,
        )
        .await;
    producer.await.expect("upload producer task");
    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
    assert_eq!(r.text(), UPLOAD_BYTES.to_string(), "{ctx}");
    assert_eq!(r.header("x-got-trailer"), Some("sent"), "{ctx}");

    let counts = tally(&mut c, "example.test", "/", &[], 5).await;
    assert_eq!(counts.get(&up.name), Some(&5), "{ctx}: {counts:?}");
    assert_eq!(
        c.connects(),
        1,
        "{ctx}: keep-alive connection was not reused"
    );
}

#[tokio::test]
async fn upstreams_answer_both_protocols() {
    let alpha = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    assert_ne!(alpha.addr, beta.addr);
    for up in [&alpha, &beta] {
        check_upstream(up, Proto::H1).await;
        check_upstream(up, Proto::H2).await;
    }
    // Per upstream: 12 requests per protocol, one connection each.
    for up in [&alpha, &beta] {
        assert_eq!(up.requests(), 24, "{}", up.name);
        assert_eq!(up.connections(), 2, "{}", up.name);
    }
}

#[tokio::test]
async fn websocket_upgrade_echoes() {
    let up = Upstream::start("ws").await;
    let mut c = Client::h1(up.addr).await;
    let (reply, io) = c.upgrade("example.test", "/ws", &[]).await;
    assert_eq!(reply.status, 101);
    assert_eq!(reply.header("upgrade"), Some("websocket"));
    let mut io = io.expect("101 must hand over the connection");
    for msg in [&b"hello"[..], &b"second frame"[..]] {
        io.write_all(msg).await.expect("write to upgraded stream");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .expect("read echo");
        assert_eq!(back, msg);
    }
    // The upgrade consumed the connection; the client must transparently
    // open a new one.
    let r = c.get("example.test", "/").await;
    assert_eq!(r.text(), "ws");
    assert_eq!(c.connects(), 2);

    // Without an Upgrade header /ws is an ordinary path.
    assert_eq!(c.get("example.test", "/ws").await.status, 200);
}

#[tokio::test]
async fn closed_port_refuses() {
    let addr = closed_port();
    assert!(addr.ip().is_loopback());
    let err = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect to closed port timed out")
        .expect_err("nothing should listen on closed_port()");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn raw_garbage_gets_400() {
    let up = Upstream::start("raw").await;
    let out = raw_exchange(
        up.addr,
        b"\x01\x02 NOT HTTP AT ALL\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "got {text:?}");

    let out = raw_exchange(
        up.addr,
        b"GET /raw HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "got {text:?}");
    assert!(text.ends_with("raw"), "got {text:?}");
}

#[tokio::test]
async fn stop_kills_listener_and_open_connections() {
    let up = Upstream::start("doomed").await;
    let addr = up.addr;
    let mut h1 = Client::h1(addr).await;
    let mut h2 = Client::h2(addr).await;
    assert_eq!(h1.get("a", "/").await.text(), "doomed");
    assert_eq!(h2.get("a", "/").await.text(), "doomed");
    // An in-flight request must die with the upstream too.
    let mut slow = Client::h1(addr).await;
    let in_flight =
        tokio::spawn(async move { slow.try_request("GET", "a", "/slow/30000", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    up.stop().await;

    let result = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("in-flight request outlived the upstream")
        .expect("in-flight task");
    assert!(result.is_err(), "in-flight request succeeded: {result:?}");
    for c in [&mut h1, &mut h2] {
        let result = c.try_request("GET", "a", "/", &[]).await;
        assert!(
            result.is_err(),
            "{:?} request after stop succeeded",
            c.proto()
        );
    }
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still open after stop");
}

#[test]
fn log_line_parsing() {
    let line = "2025-01-01T00:00:00Z INFO switchyard: switchyard listening proxy=127.0.0.1:15001 admin=off";
    assert_eq!(
        parse_log_addr(line, "proxy"),
        Some("127.0.0.1:15001".parse().expect("addr"))
    );
    assert_eq!(parse_log_addr(line, "admin"), None);
    let json = r#"{"fields":{"message":"switchyard listening","proxy":"127.0.0.1:1","admin":"127.0.0.1:2"}}"#;
    assert_eq!(
        parse_log_addr(json, "admin"),
        Some("127.0.0.1:2".parse().expect("addr"))
    );
    let colored = strip_ansi("\u{1b}[3mproxy\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9");
    assert_eq!(
        parse_log_addr(&colored, "proxy"),
        Some("127.0.0.1:9".parse().expect("addr"))
    );
    assert_eq!(parse_log_addr("xproxy=127.0.0.1:9", "proxy"), None);
}

/// Exercises the process harness with a stand-in shell script, since the
/// real binary's flags belong to other tests.
#[test]
fn process_harness_with_stand_in() {
    let script = "echo 'booting'; \
        echo 'INFO switchyard listening proxy=127.0.0.1:4000 admin=127.0.0.1:4001' >&2; \
        trap 'echo got-term >&2; exit 3' TERM; \
        while :; do sleep 0.05; done";
    let mut p = ProxyProcess::spawn("sh", &["-c", script], &[("UNUSED", "1")]);
    assert_eq!(p.proxy, Some("127.0.0.1:4000".parse().expect("addr")));
    assert_eq!(p.admin, Some("127.0.0.1:4001".parse().expect("addr")));
    assert!(p.wait_exit(Duration::from_millis(50)).is_none());
    p.signal(SIGTERM);
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("stand-in ignored SIGTERM");
    assert_eq!(status.code(), Some(3));
    // Reader threads may lag the exit by a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !p.stderr_text().contains("got-term") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.stderr_text().contains("got-term"), "{}", p.stderr_text());
    assert!(p.stdout_text().contains("booting"));
}

#[test]
#[should_panic(expected = "exited")]
fn process_harness_reports_early_exit() {
    let _p = ProxyProcess::spawn("sh", &["-c", "echo 'config error: boom' >&2; exit 2"], &[]);
}
