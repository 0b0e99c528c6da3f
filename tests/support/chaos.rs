//! Failure injection for the reliability suite: a raw HTTP/1.1 upstream whose behaviour can be
//! switched while it serves, a TCP chaos proxy, and a hashing upstream for large bodies.
//! Everything binds 127.0.0.1 and dies with its handle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::body::{TestBody, full_body};

/// How a `ChaosUpstream` answers, switchable at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200, body = name, keep-alive.
    Ok,
    /// This status for everything, keep-alive.
    Status(u16),
    /// 200 after this many milliseconds.
    Slow(u64),
    /// Answers `n` requests per connection (never saying `Connection: close`), then closes the
    /// socket `after_ms` later: the stale keep-alive race.
    CloseAfter { n: u64, after_ms: u64 },
    /// Like `CloseAfter`, but resets the connection instead of closing it.
    RstAfter { n: u64, after_ms: u64 },
    /// Reads the request head and resets the connection without answering.
    Rst,
    /// Answers the first request of each connection (keep-alive); a second request on the
    /// same connection is dropped unanswered, closing (or resetting) the socket: the stale
    /// keep-alive race, made deterministic.
    DropReused { rst: bool },
    /// Answers, then shuts down its write side but keeps reading.
    HalfClose,
    /// `HTTP/1.0 200` with no length: the body (`len` bytes) ends at EOF.
    Http10Eof { len: usize },
    /// Sends this exact response, then closes.
    Raw(&'static [u8]),
}

struct State {
    mode: Mutex<Mode>,
    requests: AtomicU64,
    answered: AtomicU64,
    connections: AtomicU64,
    heads: Mutex<Vec<String>>,
}

pub struct ChaosUpstream {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChaosUpstream {
    pub async fn start(name: &str, mode: Mode) -> ChaosUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind chaos upstream");
        let addr = listener.local_addr().expect("chaos upstream addr");
        let up = ChaosUpstream {
            addr,
            name: name.to_string(),
            state: Arc::new(State {
                mode: Mutex::new(mode),
                requests: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                heads: Mutex::new(Vec::new()),
            }),
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let tasks = self.tasks.clone();
        let name = self.name.clone();
        lock(&self.tasks).spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let (state, name) = (state.clone(), name.clone());
                lock(&tasks).spawn(connection(stream, state, name));
            }
        });
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = mode;
    }

    /// Requests whose head arrived.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with a complete response (a dropped request is not answered).
    pub fn answered(&self) -> u64 {
        self.state.answered.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request head received, as text.
    pub fn heads(&self) -> Vec<String> {
        lock(&self.state.heads).clone()
    }

    /// Dies like `kill -9`: the listener and every connection go at once, so new connects
    /// are refused.
    pub async fn kill(&self) {
        let mut set = std::mem::take(&mut *lock(&self.tasks));
        set.shutdown().await;
    }

    /// Comes back on the same address (after `kill`).
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind chaos upstream on its old port");
        self.serve(listener);
    }
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        lock(&self.tasks).abort_all();
    }
}

/// Reads one request head (and its Content-Length body, if any) from `buf` + the stream.
/// None when the peer went away first.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let lower = head.to_ascii_lowercase();
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if lower.contains("transfer-encoding: chunked") {
        // Enough for the suite: chunked bodies end with the zero chunk.
        while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(pos) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
            buf.drain(..pos + 5);
        }
    } else {
        while buf.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
    }
    Some(head)
}

fn response(status: u16, name: &str) -> Vec<u8> {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nx-upstream: {name}\r\n\r\n{name}",
        name.len()
    )
    .into_bytes()
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0 turns the close into a RST.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(mut stream: TcpStream, state: Arc<State>, name: String) {
    let mut buf = Vec::new();
    let mut served = 0u64;
    loop {
        let Some(head) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        state.requests.fetch_add(1, Ordering::SeqCst);
        lock(&state.heads).push(head);
        served += 1;
        let mode = *lock(&state.mode);
        let answers =
            !matches!(mode, Mode::Rst | Mode::DropReused { .. } if served > 1 || mode == Mode::Rst);
        if answers {
            state.answered.fetch_add(1, Ordering::SeqCst);
        }
        match mode {
            Mode::Ok => {
                if stream.write_all(&response(200, &name)).await.is_err() {
                    return;
                }
            }
            Mode::Status(code) => {
                if stream.write_all(&response(code, &name)).await.is_err() {
                    return;
                }
            }
            Mode::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if stream.write_all(&response(200, &name)).await.is_err() {
                    return;
                }
            }
            Mode::CloseAfter { n, after_ms } | Mode::RstAfter { n, after_ms } => {
                if stream.write_all(&response(200, &name)).await.is_err() {
                    return;
                }
                if served >= n {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    if matches!(mode, Mode::RstAfter { .. }) {
                        reset(stream);
                    }
                    return;
                }
            }
            Mode::Rst => {
                reset(stream);
                return;
            }
            Mode::DropReused { rst } => {
                if served > 1 {
                    if rst {
                        reset(stream);
                    }
                    return;
                }
                if stream.write_all(&response(200, &name)).await.is_err() {
                    return;
                }
            }
            Mode::HalfClose => {
                let _ = stream.write_all(&response(200, &name)).await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            Mode::Http10Eof { len } => {
                let mut out =
                    b"HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n".to_vec();
                out.extend(pattern(0, len));
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
                return;
            }
            Mode::Raw(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Deterministic bytes `offset..offset+len` of an endless pattern, so both ends can hash
/// without storing a body.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = offset + i;
            (x ^ (x >> 8) ^ (x >> 16)) as u8
        })
        .collect()
}

/// What the chaos proxy does to each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaos {
    Pass,
    /// Every chunk is forwarded this many milliseconds late.
    Delay(u64),
    /// Accepts and reads, never forwards nor answers.
    Blackhole,
    /// Accepts and resets at once.
    Reset,
    /// Forwards in slices of at most this many bytes, one per millisecond.
    Slice(usize),
}

/// A TCP proxy in front of `target` that injects `Chaos` on the connections it accepts.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    chaos: Arc<Mutex<Chaos>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr, chaos: Chaos) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind chaos proxy");
        let addr = listener.local_addr().expect("chaos proxy addr");
        let chaos = Arc::new(Mutex::new(chaos));
        let mode = chaos.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let chaos = *lock(&mode);
                conns.spawn(relay(down, target, chaos));
            }
        });
        ChaosProxy { addr, chaos, task }
    }

    pub fn set(&self, chaos: Chaos) {
        *lock(&self.chaos) = chaos;
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(down: TcpStream, target: SocketAddr, chaos: Chaos) {
    match chaos {
        Chaos::Reset => return reset(down),
        Chaos::Blackhole => {
            let mut down = down;
            let mut sink = [0u8; 4096];
            while let Ok(n) = down.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            return;
        }
        _ => {}
    }
    let Ok(up) = TcpStream::connect(target).await else {
        return reset(down);
    };
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let _ = tokio::join!(pipe(dr, uw, chaos), pipe(ur, dw, chaos));
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    chaos: Chaos,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match chaos {
            Chaos::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Chaos::Slice(size) => {
                for part in buf[..n].chunks(size.max(1)) {
                    if to.write_all(part).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A hyper upstream for large bodies (HTTP/1.1 and h2c): `POST` checks the body against the
/// repeated `block` and answers `StreamCheck::verdict`; `GET /bytes/N` streams N bytes of `pattern`; `GET /bytes/N/rst/M`
/// aborts the connection after M bytes.
pub struct HashUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HashUpstream {
    pub async fn start() -> HashUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hash upstream");
        let addr = listener.local_addr().expect("hash upstream addr");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                conns.spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service_fn(hash_handle))
                        .await;
                });
            }
        });
        HashUpstream { addr, task }
    }
}

impl Drop for HashUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const FRAME: usize = 64 * 1024;

async fn hash_handle(req: Request<Incoming>) -> Result<Response<TestBody>, std::io::Error> {
    // Errors become connection aborts, which is what `rst` wants.
    if req.method() == http::Method::POST {
        let mut body = req.into_body();
        let mut check = StreamCheck::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(std::io::Error::other)?;
            if let Ok(data) = frame.into_data() {
                check.feed(&data);
            }
        }
        return Ok(Response::new(full_body(check.verdict())));
    }
    let parts: Vec<&str> = req.uri().path().split('/').collect();
    let total: u64 = parts.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let rst_at: Option<u64> = match (parts.get(3), parts.get(4)) {
        (Some(&"rst"), Some(m)) => m.parse().ok(),
        _ => None,
    };
    let body = PatternBody {
        sent: 0,
        total,
        rst_at,
    };
    let mut resp = Response::new(body.boxed());
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(total));
    Ok(resp)
}

/// `total` bytes of the repeated `block` in 64 KiB frames, produced as polled (so a slow
/// consumer holds no buffered copy); fails at `rst_at` to simulate a peer dying mid-body.
pub struct PatternBody {
    pub sent: u64,
    pub total: u64,
    pub rst_at: Option<u64>,
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.rst_at.is_some_and(|m| self.sent >= m) {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("injected reset"))));
        }
        if self.sent >= self.total {
            return std::task::Poll::Ready(None);
        }
        // Frames start at multiples of BLOCK, so each is a zero-copy slice of it.
        let len = FRAME.min((self.total - self.sent) as usize);
        let chunk = block().slice(..len);
        self.sent += len as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total && self.rst_at.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.total - self.sent.min(self.total))
    }
}

/// The large-body stream is this 64 KiB block of `pattern`, repeated.
pub fn block() -> &'static Bytes {
    static BLOCK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| Bytes::from(pattern(0, FRAME)))
}

/// Checks a received stream byte for byte against the repeated `block`, however it was
/// re-chunked on the way (memcmp speed, which a debug-build SHA-256 is far from).
#[derive(Debug, Default)]
pub struct StreamCheck {
    pub len: u64,
    pub first_mismatch: Option<u64>,
}

impl StreamCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        let block = block();
        while !data.is_empty() {
            let off = (self.len % FRAME as u64) as usize;
            let take = data.len().min(FRAME - off);
            if self.first_mismatch.is_none() && data[..take] != block[off..off + take] {
                self.first_mismatch = Some(self.len);
            }
            self.len += take as u64;
            data = &data[take..];
        }
    }

    /// `ok N` or `mismatch at P of N`.
    pub fn verdict(&self) -> String {
        match self.first_mismatch {
            None => format!("ok {}", self.len),
            Some(p) => format!("mismatch at {p} of {}", self.len),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Peak and current resident memory of a process, in KiB (`VmHWM`, `VmRSS`).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
