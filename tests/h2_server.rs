//! Our HTTP/2 server codec against a stub handler: the protocol errors RFC 9113 names get the
//! codes it names, and flow control gives every byte back in both directions (a request body
//! read after the client ended it, a response bigger than the client's window).

// Shared with tests/h2_abuse.rs, which uses the probes this file does not.
#[allow(dead_code)]
mod h2probes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2probes::{Conn, frame, literal};
use http_body_util::BodyExt;
use switchyard::downstream::server::{Limits, ProxyListener};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const PROTOCOL_ERROR: u32 = 0x1;
const STREAM_CLOSED: u32 = 0x5;
const CANCEL: u32 = 0x8;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;

/// Answers `GET /big/N` with N bytes; anything else with its body's length, read after a
/// pause (so that a small body has fully arrived before it is read), and 422 when that is
/// not the length `x-expect-len` announced.
struct Stub {
    drain: Arc<switchyard::downstream::DrainState>,
    metrics: Arc<switchyard::metrics::Registry>,
}

impl switchyard::downstream::Handler for Stub {
    type Body = http_body_util::Full<Bytes>;

    async fn handle(
        self: Arc<Self>,
        req: http::Request<switchyard::downstream::Incoming>,
        _conn: switchyard::downstream::ConnInfo,
    ) -> http::Response<Self::Body> {
        let (head, body) = req.into_parts();
        if let Some(n) = head.uri.path().strip_prefix("/big/") {
            let n: usize = n.parse().unwrap_or(0);
            return http::Response::new(vec![b'x'; n].into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let expect = head
            .headers
            .get("x-expect-len")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let (text, len) = match body.collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                (b.len().to_string(), Some(b.len()))
            }
            Err(e) => (format!("body error: {e}"), None),
        };
        let mut resp = http::Response::new(text.into());
        if expect.is_some() && expect != len {
            *resp.status_mut() = http::StatusCode::UNPROCESSABLE_ENTITY;
        }
        resp
    }

    fn drain_state(&self) -> &Arc<switchyard::downstream::DrainState> {
        &self.drain
    }

    fn metrics(&self) -> &Arc<switchyard::metrics::Registry> {
        &self.metrics
    }
}

async fn server() -> ProxyListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stub = Arc::new(Stub {
        drain: Default::default(),
        metrics: Default::default(),
    });
    ProxyListener::spawn(listener, stub, Limits::default()).expect("spawn")
}

/// What the server answered to `frames` sent after the preface: the GOAWAY code, or the
/// streams it reset, and whether a GET on stream 101 still got a 200 afterwards.
#[derive(Debug)]
struct Answer {
    goaway: Option<u32>,
    /// The status stream 1 was answered with, if it was.
    status: Option<u16>,
    resets: Vec<(u32, u32)>,
    after: Option<u16>,
}

async fn answer(addr: SocketAddr, frames: Vec<u8>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let mut c = Conn::connect(addr, "stub").expect("connect");
        c.pump(Duration::from_millis(200), |c| c.server_settings_seen);
        c.send(&frames);
        c.pump(Duration::from_millis(300), |c| {
            c.goaway.is_some() || !c.resets.is_empty()
        });
        let mut after = None;
        if c.goaway.is_none() && !c.closed {
            c.get(101, "/big/3");
            c.pump(Duration::from_secs(3), |c| c.responses.contains_key(&101));
            after = c.responses.get(&101).copied().flatten();
        }
        Answer {
            goaway: c.goaway.map(|g| g.error_code),
            status: c.responses.get(&1).copied().flatten(),
            resets: c.resets.iter().map(|(s, r)| (*s, *r)).collect(),
            after,
        }
    })
    .await
    .expect("probe thread")
}

fn get_block(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "GET"),
        (":path", "/"),
        (":scheme", "http"),
        (":authority", "stub"),
    ]
    .iter()
    .chain(extra)
    {
        literal(&mut b, n, v);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_get_goaway_with_rfc_9113_codes() {
    let s = server().await;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "DATA on an idle stream",
            frame(DATA, END_STREAM, 1, b"x"),
            PROTOCOL_ERROR,
        ),
        (
            "HEADERS on an even stream id",
            frame(HEADERS, END_STREAM | END_HEADERS, 2, &get_block(&[])),
            PROTOCOL_ERROR,
        ),
        (
            "WINDOW_UPDATE of 0 on the connection",
            frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
            PROTOCOL_ERROR,
        ),
        (
            "SETTINGS on a stream",
            frame(SETTINGS, 0, 1, &[]),
            PROTOCOL_ERROR,
        ),
        (
            "PING of 7 bytes",
            frame(PING, 0, 0, &[0; 7]),
            FRAME_SIZE_ERROR,
        ),
        (
            "a frame over SETTINGS_MAX_FRAME_SIZE",
            frame(DATA, 0, 1, &vec![0; 16_385]),
            FRAME_SIZE_ERROR,
        ),
        (
            "HEADERS opening stream 3 after stream 5 (RFC 9113 §5.1.1)",
            [
                frame(HEADERS, END_STREAM | END_HEADERS, 5, &get_block(&[])),
                frame(HEADERS, END_STREAM | END_HEADERS, 3, &get_block(&[])),
            ]
            .concat(),
            PROTOCOL_ERROR,
        ),
        (
            "HPACK index 0",
            frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0x80]),
            COMPRESSION_ERROR,
        ),
        (
            "HPACK index past the tables",
            frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0xff, 0x40]),
            COMPRESSION_ERROR,
        ),
    ];
    for (what, frames, code) in cases {
        let a = answer(s.addr, frames).await;
        assert_eq!(a.goaway, Some(code), "{what}: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_reset_and_the_connection_serves_on() {
    let s = server().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an uppercase field name", get_block(&[("X-Upper", "1")])),
        (
            "a connection-specific field",
            get_block(&[("connection", "close")]),
        ),
        ("TE other than trailers", get_block(&[("te", "gzip")])),
        ("an unknown pseudo-header", get_block(&[(":protocol", "x")])),
        (
            "content-length without the body",
            get_block(&[("content-length", "5")]),
        ),
        ("no :path", {
            let mut b = Vec::new();
            literal(&mut b, ":method", "GET");
            literal(&mut b, ":scheme", "http");
            b
        }),
    ];
    for (what, block) in cases {
        let a = answer(s.addr, frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)).await;
        assert_eq!(a.goaway, None, "{what}: {a:?}");
        assert_eq!(a.resets, vec![(1, PROTOCOL_ERROR)], "{what}: {a:?}");
        assert_eq!(a.after, Some(200), "{what}: {a:?}");
    }
}

async fn h2_client(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = builder.handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn read_all(mut body: h2::RecvStream) -> usize {
    let mut n = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        n += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    n
}

/// Each body is over half the 1 MiB connection window and has fully arrived before the
/// handler reads it: were the bytes read after END_STREAM not given back to the connection's
/// window, the third upload would stall for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_read_after_they_ended_give_the_window_back() {
    let s = server().await;
    let send = h2_client(s.addr, &h2::client::Builder::new()).await;
    const BODY: usize = 700 * 1024;
    for round in 0..5 {
        let mut send = send.clone().ready().await.expect("ready");
        let req = http::Request::post(format!("http://stub/up/{round}"))
            .body(())
            .expect("request");
        let (resp, mut tx) = send.send_request(req, false).expect("send");
        let mut left = BODY;
        while left > 0 {
            tx.reserve_capacity(left);
            let cap = std::future::poll_fn(|cx| tx.poll_capacity(cx))
                .await
                .expect("capacity")
                .expect("capacity ok");
            let n = cap.min(left);
            left -= n;
            tx.send_data(Bytes::from(vec![b'u'; n]), left == 0)
                .expect("data");
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap_or_else(|_| panic!("round {round}: no response: the window was not given back"))
            .expect("response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let got = body.data().await.expect("a body").expect("body ok");
        assert_eq!(&got[..], BODY.to_string().as_bytes(), "round {round}");
    }
}

/// A client that opens only 16 KiB per stream and 64 KiB on the connection still gets a
/// 3 MiB response whole, window update by window update, on two streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_bigger_than_the_clients_window_arrives_whole() {
    let s = server().await;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(16 * 1024)
        .initial_connection_window_size(64 * 1024);
    let send = h2_client(s.addr, &builder).await;
    const SIZE: usize = 3 * 1024 * 1024;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut send = send.clone().ready().await.expect("ready");
        let req = http::Request::get(format!("http://stub/big/{SIZE}"))
            .body(())
            .expect("request");
        let (resp, _) = send.send_request(req, true).expect("send");
        streams.push(tokio::spawn(async move {
            let resp = resp.await.expect("response");
            assert_eq!(resp.headers()["content-length"], SIZE.to_string().as_str());
            read_all(resp.into_body()).await
        }));
    }
    for s in streams {
        let n = tokio::time::timeout(Duration::from_secs(20), s)
            .await
            .expect("response in time")
            .expect("reader");
        assert_eq!(n, SIZE);
    }
}

/// DATA after the client ended its side is a stream error (RFC 9113 §5.1, half-closed
/// (remote)), not a reason to drop the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_the_client_ended_the_stream_resets_only_that_stream() {
    let s = server().await;
    let mut frames = frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block(&[]));
    frames.extend(frame(DATA, 0, 1, b"late"));
    let a = answer(s.addr, frames).await;
    assert_eq!(a.goaway, None, "{a:?}");
    assert_eq!(a.resets, vec![(1, STREAM_CLOSED)], "{a:?}");
    assert_eq!(a.after, Some(200), "{a:?}");
}

/// CONNECT is authority-form over HTTP/2 (RFC 9113 §8.5). Tunnels are not served: a 2xx
/// answer goes out as the head, then the stream is cancelled (as under hyper before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gets_its_head_then_the_stream_is_cancelled() {
    let s = server().await;
    let mut block = Vec::new();
    literal(&mut block, ":method", "CONNECT");
    literal(&mut block, ":authority", "db.internal:5432");
    let a = answer(s.addr, frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)).await;
    assert_eq!(a.goaway, None, "{a:?}");
    assert_eq!(a.status, Some(200), "{a:?}");
    assert_eq!(a.resets, vec![(1, CANCEL)], "{a:?}");
    assert_eq!(a.after, Some(200), "{a:?}");
}

/// A body sent one byte per DATA frame arrives whole and in order (small frames are gathered
/// into blocks rather than queued one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_one_byte_data_frames_arrives_whole() {
    let s = server().await;
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":path", "/up"),
        (":scheme", "http"),
        (":authority", "stub"),
        ("x-expect-len", "3000"),
    ] {
        literal(&mut block, n, v);
    }
    let mut frames = frame(HEADERS, END_HEADERS, 1, &block);
    for i in 0..3000 {
        let end = if i == 2999 { END_STREAM } else { 0 };
        frames.extend(frame(DATA, end, 1, b"x"));
    }
    let a = answer(s.addr, frames).await;
    assert_eq!(a.goaway, None, "{a:?}");
    assert_eq!(a.status, Some(200), "{a:?}");
}
