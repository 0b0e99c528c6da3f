//! A real hyper upstream that identifies itself and reflects what it received,
//! so tests can assert where the proxy sent a request and how it rewrote it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::body::{RepeatBody, TestBody, empty_body, full_body};

const STREAM_FRAME: usize = 64 * 1024;

/// Paths: default → 200 with body = name; `/echo*` → JSON of what arrived;
/// `/status/NNN`; `/slow/MS`; `/stream/N` (N bytes, 64 KiB frames, trailer
/// `x-trailer: done`); `/upload` (counts a streamed body, reports the
/// `x-trailer` request trailer as `x-got-trailer`); `/grpc`; `/ws` + Upgrade →
/// 101 then byte echo. Every non-101 answer carries `x-upstream` and the
/// `x-echo-*` headers. hyper sends HTTP/1 response trailers only when the
/// request said `te: trailers`, so tests expecting trailers over h1 must send it.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    requests: AtomicU64,
    connections: AtomicU64,
    tasks: Tasks,
}

/// Every task the upstream owns (accept loop, connections, h2 streams, upgraded
/// tunnels) lives here so `stop` can kill them all: an upstream that "dies"
/// but keeps serving open keep-alive connections would make failover tests lie.
struct Tasks {
    set: Mutex<JoinSet<()>>,
    stopped: AtomicBool,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, JoinSet<()>> {
        // A panic in another test thread must not turn into a confusing
        // poison panic here.
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        let mut set = self.lock();
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        while set.try_join_next().is_some() {}
        set.spawn(fut);
    }
}

/// Routes hyper's h2 per-stream tasks into the tracked set.
#[derive(Clone)]
struct TrackedExec(Arc<Shared>);

impl<F> hyper::rt::Executor<F> for TrackedExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.tasks.spawn(fut);
    }
}

impl Upstream {
    /// Serves HTTP/1.1 and h2c prior knowledge on one loopback port.
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream listener on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("read upstream listener address");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            tasks: Tasks {
                set: Mutex::new(JoinSet::new()),
                stopped: AtomicBool::new(false),
            },
        });
        shared.tasks.spawn(accept_loop(listener, shared.clone()));
        Upstream {
            addr,
            name: name.to_string(),
            shared,
        }
    }

    /// Requests received so far (counted on arrival, so a `/slow` request the
    /// proxy gave up on still counts).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and drops every open connection and tunnel without
    /// a graceful goodbye; returns once all of them are gone.
    pub async fn stop(self) {
        let set = {
            let mut set = self.shared.tasks.lock();
            self.shared.tasks.stopped.store(true, Ordering::SeqCst);
            std::mem::take(&mut *set)
        };
        let mut set = set;
        set.shutdown().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let mut set = self.shared.tasks.lock();
        self.shared.tasks.stopped.store(true, Ordering::SeqCst);
        set.abort_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(TrackedExec(
        shared.clone(),
    )));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Transient (e.g. EMFILE under load); back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let conn_shared = shared.clone();
        let builder = builder.clone();
        shared.tasks.spawn(async move {
            let svc_shared = conn_shared.clone();
            let service = service_fn(move |req| handle(req, svc_shared.clone()));
            // Errors here are peers hanging up or sending garbage, which tests
            // provoke on purpose.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// The request target as it arrived. For HTTP/1 the URI is the literal
/// request-target (so an absolute-form target the proxy forgot to rewrite
/// shows up as such); HTTP/2 always has a full URI, so only path+query count.
fn echo_path<B>(req: &Request<B>) -> String {
    if req.version() == Version::HTTP_2 {
        req.uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string())
    } else {
        req.uri().to_string()
    }
}

/// HTTP/2 carries the host in :authority (preferred there); HTTP/1 in Host.
fn echo_host<B>(req: &Request<B>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if req.version() == Version::HTTP_2 {
        authority.or(host).unwrap_or_default()
    } else {
        host.or(authority).unwrap_or_default()
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        HeaderValue::from_str(&s.escape_default().to_string()).expect("escaped header value")
    })
}

struct Echo {
    name: String,
    path: String,
    host: String,
    version: &'static str,
    method: String,
}

impl Echo {
    fn response(&self, status: StatusCode, body: TestBody) -> Response<TestBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert("x-upstream", header_value(&self.name));
        h.insert("x-echo-path", header_value(&self.path));
        h.insert("x-echo-host", header_value(&self.host));
        h.insert("x-echo-version", HeaderValue::from_static(self.version));
        h.insert("x-echo-method", header_value(&self.method));
        resp
    }

    fn default_response(&self) -> Response<TestBody> {
        let mut resp = self.response(StatusCode::OK, full_body(self.name.clone()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<TestBody>, Infallible> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let echo = Echo {
        name: shared.name.clone(),
        path: echo_path(&req),
        host: echo_host(&req),
        version: version_str(req.version()),
        method: req.method().to_string(),
    };
    let path = req.uri().path().to_string();

    if path == "/ws" && req.headers().contains_key(header::UPGRADE) {
        return Ok(upgrade(req, &shared, &echo));
    }
    if path.starts_with("/echo") {
        return Ok(echo_json(&req, &echo));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => echo.response(status, full_body(echo.name.clone())),
                None => echo.response(StatusCode::BAD_REQUEST, full_body("bad status code")),
            },
        );
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return Ok(echo.response(StatusCode::BAD_REQUEST, full_body("bad delay")));
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(echo.default_response());
    }
    if let Some(n) = path.strip_prefix("/stream/") {
        let Ok(n) = n.parse::<usize>() else {
            return Ok(echo.response(StatusCode::BAD_REQUEST, full_body("bad length")));
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("x-trailer", HeaderValue::from_static("done"));
        let body = RepeatBody {
            remaining: n,
            frame: STREAM_FRAME,
            trailers: Some(trailers),
        };
        let mut resp = echo.response(StatusCode::OK, body.boxed());
        // hyper's HTTP/1 encoder only emits trailer fields announced here.
        resp.headers_mut()
            .insert(header::TRAILER, HeaderValue::from_static("x-trailer"));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(resp);
    }
    if path == "/upload" {
        return Ok(upload(req, &echo).await);
    }
    if path == "/grpc" {
        return Ok(grpc(&echo));
    }
    Ok(echo.default_response())
}

fn echo_json<B>(req: &Request<B>, echo: &Echo) -> Response<TestBody> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let json = serde_json::json!({
        "upstream": echo.name,
        "method": echo.method,
        "path": echo.path,
        "version": echo.version,
        "authority": req.uri().authority().map(|a| a.as_str()),
        "headers": headers,
    });
    let mut resp = echo.response(StatusCode::OK, full_body(json.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn upload(req: Request<Incoming>, echo: &Echo) -> Response<TestBody> {
    let mut body = req.into_body();
    let mut count: u64 = 0;
    let mut trailer: Option<HeaderValue> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                return echo.response(
                    StatusCode::BAD_REQUEST,
                    full_body(format!("body error after {count} bytes: {e}")),
                );
            }
        };
        match frame.into_data() {
            Ok(data) => count += data.len() as u64,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailer = t.get("x-trailer").cloned();
                }
            }
        }
    }
    let mut resp = echo.response(StatusCode::OK, full_body(count.to_string()));
    if let Some(t) = trailer {
        resp.headers_mut().insert("x-got-trailer", t);
    }
    resp
}

fn grpc(echo: &Echo) -> Response<TestBody> {
    // One length-prefixed gRPC message (flag 0, big-endian length) so
    // gRPC-aware code sees well-formed framing.
    let payload = echo.name.as_bytes();
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(0);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = super::body::body_from_chunks(vec![Bytes::from(frame)], Some(trailers));
    let mut resp = echo.response(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp.headers_mut()
        .insert(header::TRAILER, HeaderValue::from_static("grpc-status"));
    resp
}

fn upgrade(mut req: Request<Incoming>, shared: &Arc<Shared>, echo: &Echo) -> Response<TestBody> {
    let protocol = req
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    shared.tasks.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if io.write_all(&buf[..n]).await.is_err() || io.flush().await.is_err() {
                break;
            }
        }
        let _ = io.shutdown().await;
    });
    let mut resp = echo.response(StatusCode::SWITCHING_PROTOCOLS, empty_body());
    resp.headers_mut().insert(header::UPGRADE, protocol);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}

/// Loopback address with nothing listening, so connecting is refused.
///
/// The port stays bound (but never listening) for the rest of the test
/// process: a port merely bound and released could be handed to a parallel
/// test's `bind(0)` a moment later, and the "refused" connect would succeed.
pub fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("create a throwaway socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a throwaway port on 127.0.0.1");
    let addr = socket
        .local_addr()
        .expect("read the throwaway port's address");
    // Leaked on purpose: the reservation must outlive every use of `addr`.
    std::mem::forget(socket);
    addr
}

/// Writes `bytes`, then collects whatever comes back until EOF or `timeout`
/// (what arrived so far is returned either way). Keeps the write side open:
/// a half-close could make the server hang up before answering.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("raw_exchange: connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("raw_exchange: connecting to {addr} failed: {e}"));
    let mut out = Vec::new();
    match tokio::time::timeout_at(deadline, stream.write_all(bytes)).await {
        Ok(Ok(())) => {}
        // The server may reject and close before reading everything; what it
        // answered is still the interesting part.
        Ok(Err(_)) => {}
        Err(_) => return out,
    }
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}
