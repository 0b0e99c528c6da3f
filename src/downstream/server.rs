//! Listeners and connection lifecycles: HTTP/1.1 and h2c prior knowledge on one port, the
//! header limits, downstream timeouts, the connection limit, and the drain sequence a sidecar
//! needs on SIGTERM.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{ConnInfo, DrainState, Handler, h1};
use crate::wire::RecvBuf;

/// Downstream limits, Envoy's defaults unless noted. None of them can cut a healthy gRPC
/// stream or SSE response: only silence (no byte either way) for `stream_idle_timeout` does.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Method + target + every header name and value, HTTP/1 and HTTP/2 alike (431 beyond it;
    /// Envoy's `max_request_headers_kb`, which Envoy enforces on HTTP/2 by resetting the stream
    /// where we answer 431).
    pub max_header_bytes: usize,
    /// Header fields, HTTP/1 and HTTP/2 alike (431 beyond it).
    pub max_headers: usize,
    /// Time an HTTP/1 client has to send its whole request head (slowloris).
    pub header_read_timeout: Duration,
    /// A connection that moves no byte in either direction for this long is closed (Envoy's
    /// `stream_idle_timeout`, counted per connection). Zero disables it.
    pub stream_idle_timeout: Duration,
    /// Time from the request head to the response head; 408 beyond it. Zero (the default,
    /// as in Envoy) disables it.
    pub request_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    /// Open connections per listener; beyond it new connections are closed at accept. Zero
    /// means no limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::ZERO,
            h2_max_concurrent_streams: 1024,
            max_connections: 0,
        }
    }
}

/// Per-field overhead HPACK counts in a header list's size (RFC 7541 §4.1), so the HTTP/2
/// codec's SETTINGS_MAX_HEADER_LIST_SIZE can sit above our limit and one check decides on both
/// protocols.
pub(crate) const H2_FIELD_OVERHEAD: usize = 32;
/// Room for `: ` and CRLF per field plus the request line's fixed parts in the HTTP/1 read
/// buffer, for the same reason.
pub(crate) const H1_SLACK: usize = 4 * 1024;
/// At most one "connection limit reached" warning per this period.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(10);

/// Drain phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Readiness fails; HTTP/2 connections get GOAWAY and HTTP/1 responses close their
    /// connections; new connections are still accepted but served without keep-alive.
    Draining,
    /// The listener is closed; every connection is asked to finish.
    Closing,
}

/// The accept loop of the proxy listener.
pub struct ProxyListener {
    pub addr: SocketAddr,
    phase: watch::Sender<Phase>,
    state: Arc<DrainState>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyListener {
    /// A listener with a connection limit of its own.
    pub fn spawn<H: Handler>(
        listener: TcpListener,
        proxy: Arc<H>,
        limits: Limits,
    ) -> std::io::Result<ProxyListener> {
        let conns = Arc::new(ConnLimit::new(limits.max_connections));
        Self::spawn_sharing(listener, proxy, limits, conns)
    }

    /// A listener counting its connections in `conns`: the workers' `SO_REUSEPORT` listeners
    /// on one address share one, so `--max-connections` caps the address, not each worker.
    pub fn spawn_sharing<H: Handler>(
        listener: TcpListener,
        proxy: Arc<H>,
        limits: Limits,
        conns: Arc<ConnLimit>,
    ) -> std::io::Result<ProxyListener> {
        let addr = listener.local_addr()?;
        let (phase, rx) = watch::channel(Phase::Serving);
        let state = proxy.drain_state().clone();
        let task = tokio::spawn(accept_loop(listener, proxy, limits, conns, rx));
        Ok(ProxyListener {
            addr,
            phase,
            state,
            task,
        })
    }

    /// Runs the drain sequence: readiness fails now; after `delay` the listener closes; then
    /// waits up to `timeout` for open connections to finish. Returns true if all finished.
    pub async fn drain(self, delay: Duration, timeout: Duration) -> bool {
        self.state.draining.store(true, Ordering::Relaxed);
        let _ = self.phase.send(Phase::Draining);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = self.phase.send(Phase::Closing);
        self.task.abort();
        let state = self.state.clone();
        let wait = async move {
            loop {
                let idle = state.idle.notified();
                if state.connections.load(Ordering::Acquire) == 0
                    && state.in_flight.load(Ordering::Acquire) == 0
                {
                    return;
                }
                // Re-check periodically too: a notification can race the counters.
                let _ = tokio::time::timeout(Duration::from_millis(50), idle).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Open connections on one listening address, and the rate-limited overflow warning.
pub struct ConnLimit {
    /// 0: unlimited (connections are still counted).
    max: usize,
    open: AtomicUsize,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warning, plus one (0: never warned).
    last_warning_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl ConnLimit {
    pub fn new(max: usize) -> ConnLimit {
        ConnLimit {
            max,
            open: AtomicUsize::new(0),
            epoch: Instant::now(),
            last_warning_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// A slot for a new connection, or `None` when the limit is reached. A race between two
    /// workers can admit one connection beyond the limit for an instant; Envoy's per-worker
    /// accounting is looser than that.
    fn acquire(self: &Arc<Self>) -> Option<Slot> {
        if self.max > 0 && self.open.load(Ordering::Acquire) >= self.max {
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Slot(self.clone()))
    }

    /// Logs the first overflow at once and then at most once per `OVERFLOW_LOG_EVERY`, with
    /// the number of connections refused meanwhile: a flood must not flood the log too.
    fn overflowed(&self, remote: SocketAddr) {
        let now_ms = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_warning_ms.load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_sub(last) >= OVERFLOW_LOG_EVERY.as_millis() as u64;
        if !due
            || self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tracing::warn!(
            limit = self.max,
            %remote,
            refused_since_last_warning = self.suppressed.swap(0, Ordering::Relaxed),
            "connection limit reached (--max-connections): closing new connections at accept"
        );
    }
}

/// One open connection, released when the connection task ends.
struct Slot(Arc<ConnLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    proxy: Arc<H>,
    limits: Limits,
    conns: Arc<ConnLimit>,
    phase: watch::Receiver<Phase>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = conns.acquire() else {
            // Envoy's overflow behaviour: accept and close at once, so the client sees a
            // reset rather than a connect that hangs in the backlog.
            proxy.metrics().proxy.downstream_cx_overflow.inc();
            conns.overflowed(remote);
            drop(stream);
            continue;
        };
        let local = stream.local_addr().unwrap_or(remote);
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let limits = limits.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(stream, ConnInfo { remote, local }, proxy, limits, phase).await;
        });
    }
}

/// While draining, an HTTP/1 response closes its connection (see the drain in
/// [`serve_connection`]); an upgrade's 101 keeps it for the tunnel.
pub(crate) fn close_http1_when_draining<B>(resp: &mut Response<B>, drain: &DrainState) {
    if drain.is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The byte stream of one connection, flagging each read or write so the connection task
/// can close it after `stream_idle_timeout` of silence. A slow reader that never drains its
/// socket blocks our writes, so it goes silent too. A flag, not a timestamp: reading the clock
/// on every read and write was ~1.5% of the proxy's CPU per request.
struct IdleIo<S> {
    inner: S,
    active: Arc<AtomicBool>,
}

impl<S> IdleIo<S> {
    fn touch(&self) {
        self.active.store(true, Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes a request head counts against `max_header_bytes`: what Envoy's header map counts
/// (method, target, every name and value), the same on HTTP/1 and HTTP/2.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let authority = if req.version() == Version::HTTP_2 {
        req.uri().authority().map_or(0, |a| a.as_str().len())
    } else {
        0
    };
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum::<usize>()
        + req.method().as_str().len()
        + target
        + authority
}

/// 431 when the head is over a limit. The codecs' own limits sit a little above ours (see
/// `serve_connection`), so this check is the one that decides on both protocols.
pub(crate) fn over_header_limit<R, B: From<Bytes>>(
    req: &Request<R>,
    limits: &Limits,
) -> Option<Response<B>> {
    if req.headers().len() <= limits.max_headers && head_bytes(req) <= limits.max_header_bytes {
        return None;
    }
    Some(header_fields_too_large(req.version() != Version::HTTP_2))
}

/// 431, as Envoy words it. `close` for HTTP/1, where the body (if any) is unread: closing is
/// simpler and safer than draining it.
pub(crate) fn header_fields_too_large<B: From<Bytes>>(close: bool) -> Response<B> {
    let mut resp = Response::new(B::from(Bytes::from_static(
        b"request header fields too large\n",
    )));
    *resp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::SERVER, HeaderValue::from_static("envoy"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(crate) fn request_timed_out<B: From<Bytes>>() -> Response<B> {
    let mut resp = Response::new(B::from(Bytes::from_static(b"request timeout\n")));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::SERVER, HeaderValue::from_static("envoy"));
    resp
}

struct ConnGuard(Arc<DrainState>, Arc<crate::metrics::Registry>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.1.proxy.downstream_cx_active.dec();
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A byte stream the HTTP/1.1 server can read and write from separate places: the request
/// body reads while the connection writes.
pub trait SplitIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn split_io(self) -> (Self::Read, Self::Write);
}

impl SplitIo for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    /// Lock-free, unlike the generic split.
    fn split_io(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl SplitIo for tokio::io::DuplexStream {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split_io(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one downstream connection on any byte stream: TCP from the accept loop, or an
/// in-memory pipe (the front-door fuzz target and tests).
pub async fn serve_connection<S: SplitIo, H: Handler>(
    stream: S,
    info: ConnInfo,
    proxy: Arc<H>,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
) {
    proxy
        .drain_state()
        .connections
        .fetch_add(1, Ordering::AcqRel);
    proxy.metrics().proxy.downstream_cx_total.inc();
    proxy.metrics().proxy.downstream_cx_active.inc();
    let metrics = proxy.metrics().clone();
    let _guard = ConnGuard(proxy.drain_state().clone(), metrics.clone());
    let draining_at_accept = *phase.borrow() >= Phase::Draining;
    let idle_timeout = limits.stream_idle_timeout;
    let active = Arc::new(AtomicBool::new(false));
    let h2 = AtomicBool::new(false);
    let shutdown = h1::Shutdown::default();
    let mut quiet_since = Instant::now();
    let conn = serve_protocol(
        stream,
        info,
        proxy,
        &limits,
        // Connections accepted during drain serve one request and close.
        !draining_at_accept,
        &shutdown,
        &active,
        &h2,
    );
    tokio::pin!(conn);
    // Checking a few times per timeout keeps the overshoot small (silence is measured from
    // the last check that saw activity) without a timer or a clock read per byte.
    let check_every = (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let idle_check = tokio::time::sleep(check_every);
    tokio::pin!(idle_check);
    let mut asked_to_close = false;
    let trigger = if draining_at_accept {
        Phase::Closing
    } else {
        Phase::Draining
    };
    loop {
        let event = {
            // A second handle on the drain signal, to peek at it while `changed` borrows it.
            let peek = phase.clone();
            let changed = phase.changed();
            tokio::pin!(changed);
            // The timer and the drain signal keep this task's waker once they have it, so
            // after their first poll they are polled again only when they may be ready: the
            // connection wakes this task twice per request, and polling both each time cost
            // a timer registration and a channel check per wake-up.
            let mut armed = false;
            std::future::poll_fn(|cx| {
                // The connection first, and no random draw on each of its many wake-ups.
                if conn.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Done);
                }
                if !idle_timeout.is_zero()
                    && (!armed || idle_check.is_elapsed())
                    && idle_check.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Check);
                }
                if !asked_to_close
                    && (!armed || !matches!(peek.has_changed(), Ok(false)))
                    && let Poll::Ready(r) = changed.as_mut().poll(cx)
                {
                    return Poll::Ready(Event::Phase(r.is_err()));
                }
                armed = true;
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Done => break,
            Event::Check => {
                idle_check
                    .as_mut()
                    .reset(tokio::time::Instant::now() + check_every);
                if active.swap(false, Ordering::Relaxed) {
                    quiet_since = Instant::now();
                    continue;
                }
                let silent = quiet_since.elapsed();
                if silent >= idle_timeout {
                    metrics.proxy.downstream_cx_idle_timeout.inc();
                    tracing::debug!(remote = %info.remote, ?silent, "closing an idle downstream connection");
                    break;
                }
            }
            Event::Phase(closed) => {
                let now = *phase.borrow();
                // HTTP/2: GOAWAY as soon as the drain starts; streams in progress finish and
                // the client retries any it sent after it, which the server never processed.
                // HTTP/1 has no such signal: closing an idle connection races with a request
                // the client may be sending on it. While the listener is open, each response
                // closes its connection instead (`Connection: close`); idle ones are closed
                // when the listener is.
                if closed || now >= Phase::Closing || (now >= trigger && h2.load(Ordering::Relaxed))
                {
                    shutdown.ask();
                    asked_to_close = true;
                }
            }
        }
    }
}

/// What woke the connection's supervisor.
enum Event {
    Done,
    Check,
    /// The drain phase moved (`true`: its sender is gone).
    Phase(bool),
}

/// Tells HTTP/2 (by its preface) from HTTP/1.1 and serves the connection in it.
#[allow(clippy::too_many_arguments)]
async fn serve_protocol<S: SplitIo, H: Handler>(
    mut stream: S,
    info: ConnInfo,
    proxy: Arc<H>,
    limits: &Limits,
    keep_alive: bool,
    shutdown: &h1::Shutdown,
    active: &Arc<AtomicBool>,
    h2: &AtomicBool,
) {
    let mut rb = RecvBuf::new(limits.max_header_bytes + H1_SLACK);
    let is_h2 = loop {
        let got = rb.unread();
        let n = got.len().min(H2_PREFACE.len());
        if got[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
        let filled = tokio::select! {
            r = std::future::poll_fn(|cx| rb.poll_fill(&mut stream, cx)) => r,
            () = shutdown.wait() => return,
        };
        match filled {
            Ok(0) | Err(_) => return,
            Ok(_) => active.store(true, Ordering::Relaxed),
        }
    };
    if is_h2 {
        h2.store(true, Ordering::Relaxed);
        let io = IdleIo {
            inner: stream,
            active: active.clone(),
        };
        // Each protocol's connection state in a box of its own size: inline, every
        // connection task was as large as the larger of the two (HTTP/1.1's, 6.5 KiB against
        // 1.1 KiB), so 1,000 HTTP/2 clients held megabytes they never used. Boxed in a `let`
        // of its own: a temporary in the awaited expression would keep its storage in this
        // future's state across the await, box or not.
        let conn = Box::pin(super::h2::serve(io, rb, info, proxy, limits, shutdown));
        conn.await;
    } else {
        let (rd, wr) = stream.split_io();
        let rd: h1::ReadHalf = Box::new(IdleIo {
            inner: rd,
            active: active.clone(),
        });
        let wr: h1::WriteHalf = Box::new(IdleIo {
            inner: wr,
            active: active.clone(),
        });
        let conn = Box::pin(h1::serve(
            h1::ReadSide::new(rd, rb),
            wr,
            proxy,
            info,
            limits,
            keep_alive,
            shutdown,
        ));
        conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn get(version: Version, headers: &[(&str, String)]) -> Request<()> {
        let mut b = Request::builder()
            .method("GET")
            .uri("http://web/abc")
            .version(version);
        for (n, v) in headers {
            b = b.header(*n, v.as_str());
        }
        b.body(()).expect("a valid request")
    }

    #[test]
    fn the_header_limit_is_the_same_on_both_protocols() {
        let limits = Limits::default();
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let fits = get(version, &[("x-big", "a".repeat(59 * 1024))]);
            assert!(
                over_header_limit::<_, Full<Bytes>>(&fits, &limits).is_none(),
                "{version:?}"
            );
            let big = get(version, &[("x-big", "a".repeat(61 * 1024))]);
            let resp = over_header_limit::<_, Full<Bytes>>(&big, &limits).expect("refused");
            assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            assert_eq!(
                resp.headers().contains_key(header::CONNECTION),
                version != Version::HTTP_2,
                "only HTTP/1 closes"
            );
        }
    }

    #[test]
    fn the_header_count_limit_counts_every_field() {
        let limits = Limits::default();
        let fields =
            |n: usize| -> Vec<(&str, String)> { (0..n).map(|i| ("x-h", i.to_string())).collect() };
        assert!(
            over_header_limit::<_, Full<Bytes>>(&get(Version::HTTP_2, &fields(100)), &limits)
                .is_none()
        );
        assert!(
            over_header_limit::<_, Full<Bytes>>(&get(Version::HTTP_2, &fields(101)), &limits)
                .is_some()
        );
    }

    #[test]
    fn head_bytes_counts_method_target_names_and_values() {
        let req = get(Version::HTTP_11, &[("host", "web".to_string())]);
        // "GET" + "/abc" + "host" + "web"
        assert_eq!(head_bytes(&req), 3 + 4 + 4 + 3);
        // HTTP/2 carries the authority in the URI (`:authority`), so it counts there.
        let req = get(Version::HTTP_2, &[]);
        assert_eq!(head_bytes(&req), 3 + 4 + 3);
    }
}
