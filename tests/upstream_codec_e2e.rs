//! The upstream HTTP/1.1 codec against a scripted upstream that writes its responses a few
//! bytes at a time: interim responses, chunked bodies with extensions and trailers, bodies
//! delimited by the close, bodiless responses, HTTP/1.0 keep-alive rules, and the framing of
//! request bodies of unknown length. Each case also checks whether the connection was reused,
//! which is where a framing mistake shows: a reused connection carrying leftover bytes.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::*;

/// What the upstream answers to one request head: the reply bytes, and whether it closes the
/// connection afterwards.
type Script = fn(&str) -> (Vec<u8>, bool);

struct ScriptedUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    /// Every request as received, head and body, in order.
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, then a content-length or chunked body) from `stream`; `None` at
/// the end of the connection.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let complete = |b: &[u8]| match (length, chunked) {
        (Some(n), _) => b.len() >= head_end + n,
        (None, true) => b[head_end..].ends_with(b"0\r\n\r\n"),
        (None, false) => true,
    };
    while !complete(buf) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let end = match length {
        Some(n) => head_end + n,
        None => buf.len(),
    };
    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(request)
}

impl ScriptedUpstream {
    async fn start(script: Script) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(req) = tokio::time::timeout(
                        Duration::from_secs(10),
                        read_request(&mut stream, &mut buf),
                    )
                    .await
                    .ok()
                    .flatten()
                    {
                        let (reply, close) = script(&req);
                        seen.lock().expect("requests").push(req);
                        // A few bytes per write: every parser state meets a partial read.
                        for piece in reply.chunks(3) {
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                            let _ = stream.flush().await;
                            tokio::task::yield_now().await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedUpstream {
            addr,
            connections,
            requests,
            task,
        }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

async fn proxy_to(up: &ScriptedUpstream) -> TestProxy {
    TestProxy::start(&service_yaml("web", &[("v1", up.addr)])).await
}

fn chunked_with_trailers(_req: &str) -> (Vec<u8>, bool) {
    let reply = "HTTP/1.1 100 Continue\r\n\r\n\
                 HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
                 5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n";
    (reply.as_bytes().to_vec(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_skipped_and_a_trickled_chunked_body_arrives_whole() {
    let up = ScriptedUpstream::start(chunked_with_trailers).await;
    let p = proxy_to(&up).await;
    let mut c = Client::h1(p.addr).await;
    for i in 0..2 {
        let r = c.get("web", "/").await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "hello world", "request {i}");
    }
    // The terminating chunk and the empty trailer section were consumed: the connection
    // carried the second request.
    assert_eq!(up.connections(), 1);
    // An HTTP/2 client gets the upstream's trailers.
    let mut c = Client::h2(p.addr).await;
    let r = c.get("web", "/").await;
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.trailer("x-checksum"), Some("abc"));
    assert_eq!(up.requests().len(), 3);
}

fn close_delimited(_req: &str) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec(),
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_length_runs_to_the_close_and_its_connection_is_not_reused() {
    let up = ScriptedUpstream::start(close_delimited).await;
    let p = proxy_to(&up).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(p.addr, proto).await;
        for i in 0..2 {
            let r = c.get("web", "/").await;
            assert_eq!(r.status, 200, "{proto:?} request {i}");
            assert_eq!(r.text(), "until the end", "{proto:?} request {i}");
        }
    }
    assert_eq!(up.connections(), 4);
}

fn bodiless(req: &str) -> (Vec<u8>, bool) {
    let reply: &[u8] = if req.starts_with("HEAD ") {
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n"
    } else if req.starts_with("GET /not-modified ") {
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 11\r\n\r\n"
    } else if req.starts_with("GET /no-content ") {
        b"HTTP/1.1 204 No Content\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world"
    };
    (reply.to_vec(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_304_and_204_responses_have_no_body_and_keep_the_connection() {
    let up = ScriptedUpstream::start(bodiless).await;
    let p = proxy_to(&up).await;
    let mut c = Client::h1(p.addr).await;
    let head = c.request("HEAD", "web", "/", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"));
    assert!(head.body.is_empty());
    assert_eq!(c.get("web", "/not-modified").await.status, 304);
    assert_eq!(c.get("web", "/no-content").await.status, 204);
    // Had the proxy waited for 11 body bytes after any of them, this would hang or read
    // the wrong response.
    let r = c.get("web", "/").await;
    assert_eq!(r.text(), "hello world");
    assert_eq!(up.connections(), 1);
    assert_eq!(up.requests().len(), 4);
}

fn http10(req: &str) -> (Vec<u8>, bool) {
    let reply: &[u8] = if req.starts_with("GET /keep ") {
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
    } else if req.starts_with("GET /close ") {
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    } else {
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
    };
    // Never closes: only the proxy's reading of the headers decides reuse.
    (reply.to_vec(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reuse_follows_the_response_version_and_connection_header() {
    let up = ScriptedUpstream::start(http10).await;
    let p = proxy_to(&up).await;
    let mut c = Client::h1(p.addr).await;
    // HTTP/1.0 without keep-alive: not reused.
    assert_eq!(c.get("web", "/").await.text(), "ok");
    assert_eq!(c.get("web", "/").await.text(), "ok");
    assert_eq!(up.connections(), 2);
    // HTTP/1.0 with keep-alive: kept, and reused by the next request.
    assert_eq!(c.get("web", "/keep").await.text(), "ok");
    assert_eq!(c.get("web", "/keep").await.text(), "ok");
    assert_eq!(up.connections(), 3);
    // HTTP/1.1 with `Connection: close`: the first goes out on the kept connection and
    // ends it; each later one needs a new connection.
    for _ in 0..3 {
        assert_eq!(c.get("web", "/close").await.text(), "ok");
    }
    assert_eq!(up.connections(), 5);
}

fn echo_length(req: &str) -> (Vec<u8>, bool) {
    let body = req.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
        body.len().to_string().len(),
        body.len()
    );
    (reply.into_bytes(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_of_unknown_length_goes_out_chunked_and_a_known_one_with_its_length() {
    let up = ScriptedUpstream::start(echo_length).await;
    let p = proxy_to(&up).await;
    // From HTTP/2 without content-length: the size is unknown until the end. Large enough
    // for the second chunk to be written from its own buffer.
    let big = "x".repeat(5000);
    let chunks = vec![
        Bytes::from_static(b"hello"),
        Bytes::from(big.clone()),
        Bytes::from_static(b"!"),
    ];
    let mut c = Client::h2(p.addr).await;
    let r = c
        .request_with_body("POST", "web", "/up", &[], body_from_chunks(chunks, None))
        .await;
    assert_eq!(r.status, 200);
    let sent = up.requests().pop().expect("one request");
    let (head, body) = sent.split_once("\r\n\r\n").expect("head");
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(!head.to_lowercase().contains("content-length"), "{head}");
    assert_eq!(
        body,
        format!("5\r\nhello\r\n1388\r\n{big}\r\n1\r\n!\r\n0\r\n\r\n")
    );
    // With a length: sent as is, and the connection stays in step for the next request.
    let mut c = Client::h1(p.addr).await;
    let r = c
        .request_with_body("POST", "web", "/up", &[], full_body("abc"))
        .await;
    assert_eq!(r.text(), "3");
    let sent = up.requests().pop().expect("second request");
    assert!(
        sent.to_lowercase().contains("content-length: 3\r\n"),
        "{sent}"
    );
    assert!(sent.ends_with("\r\n\r\nabc"), "{sent}");
    assert_eq!(c.get("web", "/").await.text(), "0");
    assert_eq!(up.connections(), 1);
}

/// Reads from `s` until `pat` appears, the stream ends, or `limit` passes.
async fn read_until(
    s: &mut tokio::net::TcpStream,
    pat: &[u8],
    limit: Duration,
) -> (Vec<u8>, &'static str) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if got.windows(pat.len()).any(|w| w == pat) {
            return (got, "found");
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (got, "timeout"),
            Ok(Ok(0)) => return (got, "eof"),
            Ok(Err(_)) => return (got, "error"),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_failing_after_the_response_began_ends_both_connections() {
    // The upstream starts its (chunked) answer on the request head, then waits for the
    // rest of the request body before finishing it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(AtomicU64::new(0));
    let seen_close = closed.clone();
    let upstream = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n";
        if s.write_all(head).await.is_err() {
            return;
        }
        // Waits for the end of the request body, which never comes, or for the close.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    seen_close.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(Ok(_)) => {}
                Err(_) => return,
            }
        }
    });
    let p = TestProxy::start(&service_yaml("web", &[("v1", addr)])).await;
    let mut s = tokio::net::TcpStream::connect(p.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST / HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    let (got, how) = read_until(&mut s, b"hi\r\n", Duration::from_secs(3)).await;
    assert_eq!(how, "found", "{}", String::from_utf8_lossy(&got));
    // A malformed chunk: the client's body fails mid-stream.
    s.write_all(b"zz\r\n").await.expect("write");
    let (got, how) = read_until(&mut s, b"0\r\n\r\n", Duration::from_secs(3)).await;
    assert_ne!(
        how,
        "timeout",
        "the client was left waiting: {}",
        String::from_utf8_lossy(&got)
    );
    assert_ne!(how, "found", "a failed exchange was delivered as complete");
    // The upstream connection is closed, not left waiting for the rest of the body.
    assert!(
        support::e2e_helpers::eventually(Duration::from_secs(3), || closed.load(Ordering::SeqCst)
            == 1)
        .await,
        "the upstream connection stayed open"
    );
    upstream.abort();
}

fn connect_then_plain(req: &str) -> (Vec<u8>, bool) {
    let reply: &[u8] = if req.starts_with("CONNECT ") {
        b"HTTP/1.1 200 Connection established\r\ncontent-length: 0\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain"
    };
    (reply.to_vec(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_to_connect_never_puts_its_connection_back_in_the_pool() {
    let up = ScriptedUpstream::start(connect_then_plain).await;
    let p = proxy_to(&up).await;
    let mut s = tokio::net::TcpStream::connect(p.addr)
        .await
        .expect("connect");
    s.write_all(b"CONNECT web:80 HTTP/1.1\r\nhost: web:80\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_until(&mut s, b"\r\n\r\n", Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.starts_with("http/1.1 2") {
        // RFC 9110 §9.3.6: no framing fields on a 2xx to CONNECT, and no tunnel is carried,
        // so the connection ends with the head.
        assert!(!text.contains("content-length"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        let mut rest = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut rest))
            .await
            .expect("the connection stayed open after the CONNECT answer")
            .unwrap_or(0);
        assert_eq!(n, 0, "bytes after the head: {:?}", &rest[..n]);
    }
    // Whatever the proxy made of the CONNECT, the upstream took it as a tunnel: a later
    // request must not be written into it.
    let mut c = Client::h1(p.addr).await;
    assert_eq!(c.get("web", "/next").await.text(), "plain");
    let heads = up.requests();
    if heads.iter().any(|h| h.starts_with("CONNECT ")) {
        assert!(
            !heads.iter().any(|h| h.starts_with("CONNECT  ")),
            "{heads:?}"
        );
        assert_eq!(up.connections(), 2, "{heads:?}");
    }
}

fn gzip_chunked(_req: &str) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_transfer_coding_we_cannot_remove_is_502_upe_as_in_envoy() {
    let up = ScriptedUpstream::start(gzip_chunked).await;
    let p = proxy_to(&up).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!(r.status, 502, "{proto:?}: {r:?}");
        assert_eq!(
            r.text(),
            "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            "{proto:?}"
        );
    }
}
