//! Our HTTP/1.1 server codec on the client side, spoken to over raw TCP: request bodies of
//! each framing leave the keep-alive connection in step, pipelined requests are answered in
//! order, `Expect: 100-continue` is answered before the body is sent, HTTP/1.0 keep-alive only
//! when asked, responses of unknown length to HTTP/1.0 end at the close, the header-read
//! timeout cuts a stalled head but not an idle keep-alive connection, and every response
//! carries a `date`. The last test serves a stub handler, with no proxy behind the codec.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard::downstream::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const DEADLINE: Duration = Duration::from_secs(5);

/// One raw client connection, reading responses off it one at a time.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(DEADLINE, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no bytes from the proxy within {DEADLINE:?}"),
        }
    }

    async fn head(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                return String::from_utf8(head).expect("an ASCII head");
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).collect();
                return String::from_utf8_lossy(&line[..at]).into_owned();
            }
            assert!(self.fill().await, "connection closed inside a chunk line");
        }
    }

    /// One response; `to_close` reads a body delimited by the end of the connection.
    async fn response(&mut self, head_request: bool) -> RawResponse {
        let head = self.head().await;
        let status = head[9..12].parse().expect("a status code");
        let mut r = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return r;
        }
        if let Some(n) = r.header("content-length") {
            let n: usize = n.parse().expect("a length");
            r.body = self.take(n).await;
        } else if r.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().await.trim(), 16).expect("hex");
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                let data = self.take(size).await;
                r.body.extend_from_slice(&data);
                assert_eq!(self.take(2).await, b"\r\n");
            }
        } else {
            while self.fill().await {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// True if the proxy closes the connection within `within` without sending a byte.
    async fn closed_silently(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(within, self.s.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

async fn proxy_with(up: &Upstream, limits: Limits) -> TestProxy {
    TestProxy::start_with(
        &service_yaml("web", &[("v1", up.addr)]),
        ProxyOptions {
            limits,
            ..ProxyOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_of_each_framing_leave_the_connection_in_step() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    // Content-Length, chunked with an extension and trailers, then a bodiless request: all on
    // one connection, so a byte of body left unread would be parsed as the next head.
    c.send(b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n\r\nabcd")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"4"[..]));
    c.send(b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n3\r\ndef\r\n0\r\nx-trailer: t\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"6"[..]));
    // A body larger than the retry buffer streams instead of being collected first.
    let big = 3 * 1024 * 1024;
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    c.send(&vec![b'x'; big]).await;
    let r = c.response(false).await;
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        (200, big.to_string())
    );
    c.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(up.connections(), 1, "one upstream connection, reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET /echo/a HTTP/1.1\r\nHost: web\r\n\r\nPOST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabcGET /echo/b HTTP/1.1\r\nHost: web\r\n\r\n").await;
    let a = c.response(false).await;
    let upload = c.response(false).await;
    let b = c.response(false).await;
    assert!(String::from_utf8_lossy(&a.body).contains("/echo/a"));
    assert_eq!(upload.body, b"3");
    assert!(String::from_utf8_lossy(&b.body).contains("/echo/b"));
    assert_eq!(up.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_and_not_forwarded() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(
        b"PUT /upload HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    // The body is not sent until the interim answer arrives.
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"5"[..]));
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.status, 100);
    c.send(b"hi").await;
    let r = c.response(false).await;
    let echoed = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert_eq!(r.status, 200);
    assert!(!echoed.contains("\"expect\""), "Expect forwarded: {echoed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keeps_the_connection_only_when_asked() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET / HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert!(
        c.closed_silently(Duration::from_secs(2)).await,
        "an HTTP/1.0 request without keep-alive closes its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_of_unknown_length_to_http10_ends_at_the_close() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET /stream/100000 HTTP/1.0\r\nHost: web\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "no chunking in HTTP/1.0"
    );
    assert_eq!(r.body.len(), 100_000);
    // The same body to HTTP/1.1: chunked, and the connection stays.
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET /stream/100000 HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 100_000);
    c.send(b"HEAD / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    c.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(
        c.response(false).await.status,
        200,
        "HEAD left no body behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_head_is_cut_but_an_idle_keep_alive_connection_is_not() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(
        &up,
        Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let mut slow = Raw::connect(p.addr).await;
    slow.send(b"GET / HTTP/1.1\r\nHost: web\r\n").await;
    let t = Instant::now();
    assert!(slow.closed_silently(Duration::from_secs(3)).await);
    let cut = t.elapsed();
    assert!(
        cut >= Duration::from_millis(250) && cut < Duration::from_millis(1500),
        "stalled head closed after {cut:?}"
    );
    let mut idle = Raw::connect(p.addr).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(idle.response(false).await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(
        idle.response(false).await.status,
        200,
        "idle keep-alive connection was closed by the header timer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_date() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    for path in ["/", "/status/503"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: web\r\n\r\n").as_bytes())
            .await;
        let r = c.response(false).await;
        let date = r.header("date").expect("a date header").to_string();
        assert!(
            date.ends_with(" GMT") && date.len() == 29,
            "{path}: date {date:?}"
        );
    }
    // A local reply (a host we have no service for) too.
    c.send(b"GET / HTTP/1.1\r\nHost: nowhere.invalid\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert!(r.status >= 400, "{}", r.head);
    assert_eq!(r.header("server"), Some("envoy"));
    assert!(r.header("date").is_some(), "{}", r.head);
}

// Regressions from the review of the first version of the codec: each failed on it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_before_a_half_close_are_all_answered() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET /slow/100 HTTP/1.1\r\nHost: web\r\n\r\nGET /echo/b HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    c.s.shutdown().await.expect("half-close");
    assert_eq!(c.response(false).await.status, 200);
    let b = c.response(false).await;
    assert!(String::from_utf8_lossy(&b.body).contains("/echo/b"));
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_skips_an_unread_buffered_body_and_keeps_the_connection() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: nowhere.invalid\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert!(r.status >= 400);
    assert_eq!(r.header("connection"), None, "{}", r.head);
    c.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_ended_says_the_connection_closes() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(
        b"POST /status/403 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    c.send(b"0\r\n\r\nGET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    assert!(c.closed_silently(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_101_are_never_read_as_http() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc").await;
    let head = c.head().await;
    if !head.starts_with("HTTP/1.1 101") {
        panic!("an upgrade with a small body is still upgraded: {head}");
    }
    c.send(b"GET /echo/smuggled HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    let mut got = Vec::new();
    while got.len() < 18 && c.fill().await {
        got.append(&mut c.buf);
    }
    // The test upstream's WebSocket handler echoes raw bytes: the tunnel carried them.
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("GET /echo/smuggled"),
        "bytes after the 101 were not tunnelled (served as HTTP?): {got}"
    );
}

/// Header maps and byte slabs are reused between requests on a worker (`src/recycle.rs`):
/// nothing of one request's or response's fields may show up in the next one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_header_maps_carry_nothing_over_between_requests() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let mut c = Raw::connect(p.addr).await;
    c.send(
        b"GET /echo/one HTTP/1.1\r\nHost: web\r\nx-first: only-once\r\nx-request-id: req-1\r\n\r\n",
    )
    .await;
    let one = c.response(false).await;
    assert_eq!(one.status, 200);
    assert!(String::from_utf8_lossy(&one.body).contains("only-once"));
    for _ in 0..50 {
        c.send(b"GET /echo/two HTTP/1.1\r\nHost: web\r\n\r\n").await;
        let two = c.response(false).await;
        let body = String::from_utf8_lossy(&two.body);
        assert_eq!(two.status, 200);
        assert!(
            !body.contains("x-first"),
            "a field of the first request came back: {body}"
        );
        assert!(
            !body.contains("req-1"),
            "the first request's id came back: {body}"
        );
        assert_eq!(two.header("x-echo-path"), Some("/echo/two"));
        let paths = two
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-echo-path:"))
            .count();
        assert_eq!(paths, 1, "one x-echo-path field: {}", two.head);
    }
}

/// The proxy closes a connection after its last response (here, asked by `Connection: close`)
/// while the client still has bytes in flight (pipelined past what the proxy buffers). Closing
/// with bytes unread makes the kernel reset the connection and drop whatever of the response
/// it has not sent yet. So the proxy reads and discards until the client closes (up to Envoy's
/// 1 s `delayed_close_timeout`), and the client gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_connection_delivers_its_whole_response_despite_unread_bytes() {
    const LEN: usize = 16 * 1024 * 1024;
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let mut sent = format!("GET /stream/{LEN} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .into_bytes();
    // More than the proxy buffers of a next request: the rest stays in its socket, unread.
    sent.extend(std::iter::repeat_n(b'x', 256 * 1024));
    wr.write_all(&sent).await.expect("write");
    // Let the proxy write all it can and close before a byte is read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::with_capacity(LEN + 4096);
    let read = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut got))
        .await
        .expect("the response ends within the deadline");
    assert!(
        read.is_ok(),
        "the connection was reset after {} bytes: {read:?}",
        got.len()
    );
    let text_end = String::from_utf8_lossy(&got[got.len().saturating_sub(64)..]).into_owned();
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert!(
        text_end.ends_with("\r\n0\r\n\r\n"),
        "the body was cut short at {} bytes: ...{text_end:?}",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_we_do_not_implement_is_501_and_never_forwarded() {
    let up = Upstream::start("v1").await;
    let p = proxy_with(&up, Limits::default()).await;
    for te in ["gzip, chunked", "gzip", "chunked, gzip", "identity"] {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let reply = raw_exchange(p.addr, head.as_bytes(), Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 501 "), "{te}: {text}");
        assert!(text.contains("connection: close"), "{te}: {text}");
    }
    assert_eq!(up.requests(), 0, "none reached the upstream");
    // A lone `chunked` still works.
    let reply = raw_exchange(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200 "));
}

/// A stub in the proxy's place: the codec knows only a `Handler`, so it serves with no proxy,
/// routes or upstream behind it. This one answers `METHOD PATH BODY`.
struct Echo {
    drain: std::sync::Arc<switchyard::downstream::DrainState>,
    metrics: std::sync::Arc<switchyard::metrics::Registry>,
}

impl switchyard::downstream::Handler for Echo {
    type Body = http_body_util::Full<bytes::Bytes>;

    async fn handle(
        self: std::sync::Arc<Self>,
        req: http::Request<switchyard::downstream::Incoming>,
        _conn: switchyard::downstream::ConnInfo,
    ) -> http::Response<Self::Body> {
        use http_body_util::BodyExt;
        let (head, body) = req.into_parts();
        let mut out = format!("{} {} ", head.method, head.uri.path()).into_bytes();
        match body.collect().await {
            Ok(b) => out.extend_from_slice(&b.to_bytes()),
            Err(e) => out.extend_from_slice(format!("body error: {e}").as_bytes()),
        }
        http::Response::new(out.into())
    }

    fn drain_state(&self) -> &std::sync::Arc<switchyard::downstream::DrainState> {
        &self.drain
    }

    fn metrics(&self) -> &std::sync::Arc<switchyard::metrics::Registry> {
        &self.metrics
    }
}

#[tokio::test]
async fn the_codec_serves_a_stub_handler_pipelined_framed_and_drained() {
    use switchyard::downstream::server::ProxyListener;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = std::sync::Arc::new(Echo {
        drain: Default::default(),
        metrics: Default::default(),
    });
    let server = ProxyListener::spawn(listener, echo.clone(), Limits::default()).expect("spawn");
    let mut c = Raw::connect(server.addr).await;
    // Three pipelined requests, one per body framing, answered in order on one connection.
    c.send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for want in ["POST /a hello", "PUT /b abcde", "GET /c "] {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(String::from_utf8_lossy(&r.body), want);
        assert!(r.header("date").is_some(), "{}", r.head);
        assert_eq!(r.header("connection"), None, "{}", r.head);
    }
    // Once draining, the codec closes HTTP/1.1 connections after their next response.
    echo.drain
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    c.send(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(String::from_utf8_lossy(&r.body), "GET /d ");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert!(c.closed_silently(DEADLINE).await);
    assert!(server.drain(Duration::ZERO, DEADLINE).await);
}
