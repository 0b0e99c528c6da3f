//! Our own HTTP/1.1 server codec for client connections. hyper's server kept a dispatcher, a
//! 16 KiB read and an 8 KiB write buffer per connection, and a boxed service future it polled
//! through several layers; measured, its share was the largest single part of the proxy's
//! user-space instructions per request. Here one loop per connection reads a request head,
//! runs the proxy on it, and writes the response as its frames arrive. A request body takes
//! the connection's read side with it and hands it back once read to its end.
//!
//! The rules follow hyper's server (which the test corpus pins) and Envoy's codec where they
//! differ: 400 for a malformed head, 431 past the header limits, `Transfer-Encoding` over
//! `Content-Length` (which is then removed), `Transfer-Encoding` refused in HTTP/1.0 and
//! unless `chunked` is its last coding, differing `Content-Length`s refused, `Expect:
//! 100-continue` answered by the proxy itself (Envoy's default), and a head that does not
//! arrive whole within `header_read_timeout` of its first byte closes the connection.

use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

use super::server::{
    H1_SLACK, Limits, close_http1_when_draining, over_header_limit, request_timed_out,
};
use super::{ConnInfo, Handler, Incoming};
use crate::deadline::MaybeTimeout;
use crate::wire::{
    Chunk, DecodeError, Framing, RecvBuf, TeCodings, connection_tokens, itoa_u64, poll_decode,
    push_field, push_hex,
};

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Header slots parsed without touching the heap; a larger `max_headers` uses a vector.
const STACK_SLOTS: usize = 128;
/// Response data frames at least this large are written from their own buffer instead of
/// being copied behind the head.
const COPY_LIMIT: usize = 4 * 1024;
/// Response bytes gathered before they are written.
const OUT_SOFT_LIMIT: usize = 16 * 1024;
/// A write buffer larger than this is not kept while the connection idles.
const OUT_KEEP: usize = 4 * 1024;

/// A connection's read side: the socket's read half and what was read but not yet used.
pub struct ReadSide {
    io: ReadHalf,
    rb: RecvBuf,
}

impl ReadSide {
    pub fn new(io: ReadHalf, rb: RecvBuf) -> ReadSide {
        ReadSide { io, rb }
    }
}

/// How the serving loop is asked to stop: idle connections close at once, busy ones after
/// their current response.
///
/// A flag, with no waker: it is only ever set by the task that polls the connection (the
/// select loop in `serve_connection`), which polls the connection again right after setting
/// it. A `Notify` here cost a mutex lock and unlock on every request.
#[derive(Default)]
pub struct Shutdown {
    asked: AtomicBool,
}

impl Shutdown {
    pub fn ask(&self) {
        self.asked.store(true, Ordering::Relaxed);
    }

    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Ready once asked; see the type's note on who wakes it.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|_| {
            if self.asked() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The read side handed back by a request body, with what is left of the body on it
/// (`Framing::Empty` once read to its end).
type HandedBack = (ReadSide, Framing);

/// A client's HTTP/1.1 request body, read straight from its connection.
pub struct RequestBody {
    side: Option<ReadSide>,
    framing: Framing,
    max_trailers: usize,
    back: Option<oneshot::Sender<HandedBack>>,
}

impl RequestBody {
    fn hand_back(&mut self) {
        if let (Some(side), Some(back)) = (self.side.take(), self.back.take()) {
            let _ = back.send((side, self.framing));
        }
    }
}

/// A body dropped before its end (a local reply, an upstream that answered without reading
/// it all) still hands the read side back: what is left of it may already be buffered and
/// can be skipped, keeping the connection, as hyper's server does.
impl Drop for RequestBody {
    fn drop(&mut self) {
        self.hand_back();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = DecodeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DecodeError>>> {
        let this = self.get_mut();
        let Some(side) = this.side.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(poll_decode(
            &mut this.framing,
            &mut side.rb,
            &mut side.io,
            this.max_trailers,
            cx
        ));
        match &polled {
            // The connection's framing is lost: it is not handed back, so it closes.
            Some(Err(_)) => {
                this.side = None;
                this.back = None;
            }
            _ if this.framing == Framing::Empty => this.hand_back(),
            _ => {}
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// The client side of an HTTP/1.1 Upgrade, handed over once the 101 response is written.
/// In the request's extensions (which must be `Clone`, hence the shared slot).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The upgraded connection, or `None` if the response was not a 101 after all.
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// A client connection after its 101: the bytes it sent after the request head first.
pub struct Upgraded {
    side: ReadSide,
    wr: WriteHalf,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let rb = &mut this.side.rb;
        if rb.avail() > 0 {
            let n = rb.avail().min(buf.remaining());
            buf.put_slice(&rb.unread()[..n]);
            rb.consume(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.side.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().wr).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_shutdown(cx)
    }
}

/// What the connection needs to know about the request it is answering.
struct Asked {
    head: bool,
    /// A CONNECT: its 2xx answer opens a tunnel, which carries no framing fields.
    connect: bool,
    version: Version,
    keep_alive: bool,
}

// Not boxed: the parsed head is returned once per request and moved out at once, and a box
// cost an allocation and a free per request for ~30 fewer bytes copied (callgrind: -56
// instructions per HTTP/1.1 request unboxed).
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Request(Parsed),
    /// The client closed, or went silent mid-head past the timeout, or shutdown was asked
    /// while idle: close without a response.
    Close,
    /// Answer this status and close.
    Refuse(StatusCode),
}

struct Parsed {
    req: Request<()>,
    framing: Framing,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
}

/// Serves HTTP/1.1 requests on one connection until either side closes it.
pub async fn serve<H: Handler>(
    side: ReadSide,
    mut wr: WriteHalf,
    proxy: Arc<H>,
    info: ConnInfo,
    limits: &Limits,
    keep_alive: bool,
    shutdown: &Shutdown,
) {
    let mut side = Some(side);
    let mut out: Vec<u8> = Vec::new();
    let request_timeout = (!limits.request_timeout.is_zero()).then_some(limits.request_timeout);
    loop {
        let Some(s) = side.as_mut() else { return };
        let parsed = match read_head(s, limits, shutdown).await {
            HeadRead::Request(p) => p,
            HeadRead::Close => return,
            HeadRead::Refuse(status) => {
                refuse(&mut wr, status).await;
                linger(s).await;
                return;
            }
        };
        let Parsed {
            mut req,
            framing,
            keep_alive: wants_keep_alive,
            upgrade,
            expect_continue,
        } = parsed;
        let mut asked = Asked {
            head: req.method() == Method::HEAD,
            connect: req.method() == Method::CONNECT,
            version: req.version(),
            keep_alive: wants_keep_alive && keep_alive,
        };
        if expect_continue
            && wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let upgrade_tx = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let (body, body_back) = if framing == Framing::Empty {
            (Incoming::Empty, None)
        } else {
            let (tx, rx) = oneshot::channel();
            let body = RequestBody {
                side: side.take(),
                framing,
                max_trailers: limits.max_header_bytes,
                back: Some(tx),
            };
            (Incoming::H1(body), Some(rx))
        };
        let req = req.map(|()| body);
        let refused = over_header_limit(&req, limits);
        // Pinned where it is built: `let f = async {..}; pin!(f)` moved the ~480-byte future
        // once more per request.
        let mut handled = pin!(async {
            match refused {
                Some(resp) => resp,
                // Boxed per request: the request path's future is several KB, and an idle
                // connection should not carry it. Written into a box allocated first, so the
                // compiler builds the future in place: `Box::pin(future)` copied all of its
                // bytes (several KB) from the stack, though only a few hundred were set.
                None => MaybeTimeout::new(
                    Box::into_pin(Box::write(
                        Box::new_uninit(),
                        proxy.clone().handle(req, info),
                    )),
                    request_timeout,
                )
                .await
                .unwrap_or_else(|_| request_timed_out()),
            }
        });
        let mut read_closed = false;
        let mut resp = match side.as_mut() {
            Some(s) => {
                // Watch the client while the request is handled: bytes it sends meanwhile are
                // its next request (kept); its end of stream may be a half-close, so the
                // response still goes out; an error means it is gone, and the request with it.
                let watched = std::future::poll_fn(|cx| {
                    if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
                        return Poll::Ready(Some(resp));
                    }
                    while !read_closed && s.rb.has_room() {
                        match s.rb.poll_fill(&mut s.io, cx) {
                            Poll::Ready(Ok(0)) => read_closed = true,
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(_)) => return Poll::Ready(None),
                            Poll::Pending => break,
                        }
                    }
                    Poll::Pending
                });
                match watched.await {
                    Some(resp) => resp,
                    None => return,
                }
            }
            None => handled.await,
        };
        // While draining, an HTTP/1 response closes its connection.
        close_http1_when_draining(&mut resp, proxy.drain_state());
        if let Some(mut rx) = body_back {
            // Before the head is written, so a connection about to close says so. The body
            // hands the read side back at its end, or when dropped; what is left of a dropped
            // body is skipped if it is already buffered. A body still in use (streaming to an
            // upstream that answered first) or one that failed leaves the connection out of
            // step: it closes after this response. Not awaited: an HTTP/2 upstream may hold
            // the body for as long as its stream lives.
            side = match rx.try_recv() {
                Ok((back, Framing::Empty)) => Some(back),
                Ok((mut back, mut rest)) => {
                    skip_buffered(&mut back, &mut rest, limits.max_header_bytes).then_some(back)
                }
                Err(_) => None,
            };
        }
        if side.is_none() || shutdown.asked() {
            asked.keep_alive = false;
        }
        let keep =
            match write_response(&mut wr, &mut out, resp, &asked, upgrade_tx, &mut side).await {
                Written::KeepAlive => true,
                Written::Close => false,
                Written::Upgraded => return,
            };
        if out.capacity() > OUT_KEEP {
            out = Vec::new();
        }
        // A client that half-closed still gets answers to the requests it sent before it:
        // the next read_head serves what is buffered, then meets the end of stream.
        if !keep || side.is_none() || shutdown.asked() {
            let _ = wr.shutdown().await;
            if let Some(s) = side.as_mut() {
                linger(s).await;
            }
            return;
        }
        if let Some(s) = side.as_mut() {
            s.rb.shrink();
        }
    }
}

/// Envoy's default `delayed_close_timeout`.
const LINGER: Duration = Duration::from_secs(1);

/// After the last response (its side of the connection shut down), reads and discards what
/// the client still sends, until it closes or for [`LINGER`] at most. Closing with bytes
/// unread would make the kernel reset the connection, discarding the part of the response it
/// has not sent yet, and on some clients the part they have not read yet. (Envoy's delayed
/// close; nginx's lingering close.)
async fn linger(side: &mut ReadSide) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = side.io.read(&mut sink).await
            && n > 0
        {}
    })
    .await;
}

/// Most of an unread request body that is skipped to keep its connection.
const SKIP_LIMIT: u64 = 64 * 1024;

/// Skips the rest of a request body nobody read, if it is already on hand (buffered, or
/// readable without waiting) and small: true if the connection is back in step.
fn skip_buffered(side: &mut ReadSide, framing: &mut Framing, max_trailers: usize) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut left = SKIP_LIMIT;
    loop {
        match poll_decode(framing, &mut side.rb, &mut side.io, max_trailers, &mut cx) {
            Poll::Ready(None) => return true,
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => return false,
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
        }
    }
}

/// Reads one request head. The header-read timeout starts at the head's first byte, so an
/// idle keep-alive connection is governed by the stream idle timeout alone.
async fn read_head(s: &mut ReadSide, limits: &Limits, shutdown: &Shutdown) -> HeadRead {
    let limit = limits.max_header_bytes + H1_SLACK;
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            if s.rb.avail() > 0 {
                match parse_request(s.rb.unread(), limits) {
                    Ok(Some((parsed, used))) if used > limit => {
                        drop(parsed);
                        return Poll::Ready(HeadRead::Refuse(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        ));
                    }
                    Ok(Some((parsed, used))) => {
                        s.rb.consume(used);
                        return Poll::Ready(HeadRead::Request(parsed));
                    }
                    Ok(None) if s.rb.avail() >= limit => {
                        return Poll::Ready(HeadRead::Refuse(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        ));
                    }
                    Ok(None) => {}
                    Err(status) => return Poll::Ready(HeadRead::Refuse(status)),
                }
                let t = timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(limits.header_read_timeout))
                });
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(HeadRead::Close);
                }
            } else if shutdown.asked() {
                return Poll::Ready(HeadRead::Close);
            }
            match ready!(s.rb.poll_fill(&mut s.io, cx)) {
                Ok(0) | Err(_) => return Poll::Ready(HeadRead::Close),
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Parses a request head from `buf`: `Ok(None)` if incomplete, else the request and the
/// head's length; `Err` with the status to refuse it with.
fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Parsed, usize)>, StatusCode> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_SLOTS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut r = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut r, buf, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let bad = StatusCode::BAD_REQUEST;
    let version = match r.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad),
    };
    let method = Method::from_bytes(r.method.unwrap_or("").as_bytes()).map_err(|_| bad)?;
    // One copy of the head backs the target and every header value.
    let block = crate::recycle::copy(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let slice_of = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        block.slice(at..at + s.len())
    };
    let target = r.path.unwrap_or("");
    let uri = Uri::from_maybe_shared(slice_of(target.as_bytes())).map_err(|_| bad)?;
    // Room for what the proxy adds (request id, forwarded proto, attempt count, timeouts)
    // without growing the map.
    let mut headers = crate::recycle::header_map(r.headers.len() + 6);
    let mut length: Option<u64> = None;
    let (mut te, mut close, mut keep_alive_token) = (false, false, false);
    // Transfer codings over every Transfer-Encoding field, in order.
    let mut codings = TeCodings::default();
    let mut expect_continue = false;
    let mut upgrade_field = false;
    for h in r.headers.iter() {
        let name = crate::names::parse(h.name.as_bytes()).map_err(|_| bad)?;
        let value = HeaderValue::from_maybe_shared(slice_of(h.value)).map_err(|_| bad)?;
        if name == header::CONTENT_LENGTH {
            // Strictly one number per field; several fields must agree.
            let n = plain_length(value.as_bytes()).ok_or(bad)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(bad);
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            codings.add(value.as_bytes());
        } else if name == header::CONNECTION {
            let t = connection_tokens(value.as_bytes());
            close |= t.close;
            keep_alive_token |= t.keep_alive;
            if !t.other {
                // Only this hop's options: read here, and never forwarded (hop-by-hop).
                continue;
            }
        } else if name == header::UPGRADE {
            upgrade_field = true;
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    let framing = if te {
        if version == Version::HTTP_10 || codings.empty {
            return Err(bad);
        }
        // RFC 9112 §6.1: a coding we do not understand is 501 (nginx too). Only a lone
        // `chunked` is understood: forwarding `gzip, chunked` as chunked would hand the
        // upstream a gzip body nobody told it about.
        if !codings.only_chunked() {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        // RFC 9112 §6.1: Transfer-Encoding wins, the length must not travel on, and the
        // connection closes after the response (what follows may be a smuggled request).
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            close = true;
        }
        Framing::Chunked(Chunk::Size)
    } else {
        match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let expect_continue = expect_continue && version == Version::HTTP_11;
    if expect_continue {
        // Envoy answers 100 Continue itself and does not forward the expectation.
        headers.remove(header::EXPECT);
    }
    // Envoy strips an h2c upgrade (RFC 7540 §3.2, removed in RFC 9113): forwarded, it would
    // let a client turn a routed request into an HTTP/2 connection straight to the upstream.
    if upgrade_field
        && headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"h2c"))
    {
        headers.remove(header::UPGRADE);
        headers.remove("http2-settings");
    }
    let upgrade = upgrade_field && version == Version::HTTP_11 && crate::wire::is_upgrade(&headers);
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some((
        Parsed {
            req,
            framing,
            keep_alive,
            upgrade,
            expect_continue: expect_continue && framing != Framing::Empty,
        },
        len,
    )))
}

/// A `content-length` field holding exactly one decimal number.
fn plain_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// hyper's and Envoy's answer to a head that cannot be served: a bare status, then close.
async fn refuse(wr: &mut WriteHalf, status: StatusCode) {
    let mut out = Vec::with_capacity(128);
    push_status_line(&mut out, status);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n");
    push_field(&mut out, &header::DATE, &super::date::now());
    out.extend_from_slice(b"\r\n");
    let _ = wr.write_all(&out).await;
    let _ = wr.shutdown().await;
}

fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    None,
    Length(u64),
    Chunked,
    Close,
}

enum Written {
    KeepAlive,
    Close,
    Upgraded,
}

/// Encodes the status line and headers, choosing the body's framing as hyper's server does.
fn encode_head<B: Body>(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &B,
    asked: &Asked,
) -> (Plan, bool) {
    push_status_line(out, parts.status);
    let code = parts.status.as_u16();
    let mut keep = asked.keep_alive;
    let (mut has_date, mut has_close) = (false, false);
    let mut length = None;
    // RFC 9110 §9.3.6: a 2xx to CONNECT carries no Content-Length or Transfer-Encoding. No
    // tunnel is carried here (as upstream), so the connection ends with the head.
    let tunnel = asked.connect && parts.status.is_success();
    if tunnel {
        keep = false;
    }
    for (name, value) in &parts.headers {
        if tunnel && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
            continue;
        } else if name == header::CONTENT_LENGTH {
            length = crate::wire::content_length_value(value.as_bytes());
        } else if name == header::DATE {
            has_date = true;
        } else if name == header::CONNECTION && connection_tokens(value.as_bytes()).close {
            has_close = true;
            keep = false;
        }
        push_field(out, name, value);
    }
    if !has_date {
        push_field(out, &header::DATE, &super::date::now());
    }
    let no_body = asked.head || tunnel || code == 204 || code == 304 || (100..200).contains(&code);
    let plan = if no_body {
        Plan::None
    } else if let Some(n) = length {
        Plan::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa_u64(n, &mut [0u8; 20]));
        out.extend_from_slice(b"\r\n");
        if n == 0 { Plan::None } else { Plan::Length(n) }
    } else if asked.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Plan::Chunked
    } else {
        keep = false;
        Plan::Close
    };
    if !keep && !has_close && asked.version == Version::HTTP_11 && code != 101 {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep && asked.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (plan, keep)
}

enum Step<E> {
    Frame(Option<Result<Frame<Bytes>, E>>),
    Flush,
}

/// Writes one response. The head and small frames are gathered and written together; the
/// gathered bytes go out whenever the body has nothing ready.
async fn write_response<B: Body<Data = Bytes> + Unpin>(
    wr: &mut WriteHalf,
    out: &mut Vec<u8>,
    resp: Response<B>,
    asked: &Asked,
    upgrade_tx: Option<oneshot::Sender<Upgraded>>,
    side: &mut Option<ReadSide>,
) -> Written {
    out.clear();
    let (parts, mut body) = resp.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // After a 101 the connection speaks the new protocol: it must never be read as HTTP
        // again. Without the read side in hand (an upgrade request whose body the upstream
        // did not read to its end) there is no tunnel to hand over: close without the 101.
        let (Some(tx), true) = (upgrade_tx, side.is_some()) else {
            return Written::Close;
        };
        encode_head(out, &parts, &body, asked);
        if wr.write_all(out).await.is_err() || wr.flush().await.is_err() {
            return Written::Close;
        }
        if let Some(side) = side.take() {
            let wr = std::mem::replace(wr, Box::new(tokio::io::sink()));
            let _ = tx.send(Upgraded { side, wr });
        }
        return Written::Upgraded;
    }
    let (plan, mut keep) = encode_head(out, &parts, &body, asked);
    crate::recycle::give_back(parts.headers);
    let mut left = match plan {
        Plan::Length(n) => n,
        _ => 0,
    };
    if plan != Plan::None {
        loop {
            let step = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending => Poll::Pending,
                Poll::Ready(f) => Poll::Ready(Step::Frame(f)),
            })
            .await;
            match step {
                Step::Flush => {
                    if wr.write_all(out).await.is_err() {
                        return Written::Close;
                    }
                    out.clear();
                }
                Step::Frame(None) => {
                    match plan {
                        Plan::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                        // Shorter than announced: the client must see the connection end.
                        Plan::Length(_) if left != 0 => keep = false,
                        _ => {}
                    }
                    break;
                }
                // The upstream failed mid-body: the client sees the body cut short (no
                // last-chunk, or fewer bytes than announced) and the connection close.
                Step::Frame(Some(Err(_))) => {
                    let _ = wr.write_all(out).await;
                    return Written::Close;
                }
                Step::Frame(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        match plan {
                            Plan::Length(_) => {
                                if data.len() as u64 > left {
                                    let _ = wr.write_all(out).await;
                                    return Written::Close;
                                }
                                left -= data.len() as u64;
                            }
                            Plan::Chunked => {
                                push_hex(out, data.len());
                                out.extend_from_slice(b"\r\n");
                            }
                            _ => {}
                        }
                        if data.len() < COPY_LIMIT {
                            out.extend_from_slice(&data);
                        } else {
                            if wr.write_all(out).await.is_err()
                                || wr.write_all(&data).await.is_err()
                            {
                                return Written::Close;
                            }
                            out.clear();
                        }
                        if plan == Plan::Chunked {
                            out.extend_from_slice(b"\r\n");
                        }
                        if out.len() >= OUT_SOFT_LIMIT {
                            if wr.write_all(out).await.is_err() {
                                return Written::Close;
                            }
                            out.clear();
                        }
                    }
                    Err(frame) => {
                        if plan == Plan::Chunked
                            && let Ok(trailers) = frame.into_trailers()
                        {
                            out.extend_from_slice(b"0\r\n");
                            for (name, value) in &trailers {
                                push_field(out, name, value);
                            }
                            out.extend_from_slice(b"\r\n");
                            break;
                        }
                    }
                },
            }
        }
    }
    drop(body);
    if !out.is_empty() && wr.write_all(out).await.is_err() {
        return Written::Close;
    }
    if wr.flush().await.is_err() {
        return Written::Close;
    }
    out.clear();
    if plan == Plan::Close || !keep {
        Written::Close
    } else {
        Written::KeepAlive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<(Parsed, usize)>, StatusCode> {
        parse_request(raw.as_bytes(), &Limits::default())
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let (p, _) = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.framing, Framing::Length(3));
        let (p, _) = parse(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.framing, Framing::Chunked(Chunk::Size));
        assert!(!p.req.headers().contains_key(header::CONTENT_LENGTH));
        assert!(!p.keep_alive, "CL+TE closes after its response");
        let (p, _) = parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!(p.framing, Framing::Empty);
        assert!(p.keep_alive);
        let (p, _) = parse("GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert!(!p.keep_alive);
        let (p, _) = parse("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(p.keep_alive);
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad).err(),
                Some(StatusCode::BAD_REQUEST),
                "{bad:?} must be refused"
            );
        }
        let (p, _) = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.framing, Framing::Length(3));
    }

    #[test]
    fn a_transfer_coding_other_than_a_lone_chunked_is_not_implemented() {
        for unknown in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            assert_eq!(
                parse(unknown).err(),
                Some(StatusCode::NOT_IMPLEMENTED),
                "{unknown:?}"
            );
        }
        for fine in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
        ] {
            let (p, _) = parse(fine).unwrap().unwrap();
            assert_eq!(p.framing, Framing::Chunked(Chunk::Size), "{fine:?}");
        }
    }

    #[test]
    fn expect_continue_is_answered_here_and_not_forwarded() {
        let (p, _) =
            parse("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(p.expect_continue);
        assert!(!p.req.headers().contains_key(header::EXPECT));
    }

    #[test]
    fn an_h2c_upgrade_is_stripped() {
        let (p, _) = parse(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!p.upgrade);
        assert!(!p.req.headers().contains_key(header::UPGRADE));
        assert!(!p.req.headers().contains_key("http2-settings"));
        let (p, _) =
            parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(p.upgrade);
    }

    #[test]
    fn connection_options_are_read_here_and_not_forwarded() {
        let (p, _) = parse("GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(p.keep_alive);
        assert!(!p.req.headers().contains_key(header::CONNECTION));
        let (p, _) = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive);
        assert!(!p.req.headers().contains_key(header::CONNECTION));
        // A field naming other headers stays, for hop-by-hop stripping to read.
        let (p, _) = parse(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            p.req.headers().get(header::CONNECTION).unwrap(),
            "keep-alive, x-secret"
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..101 {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(
            parse(&raw).err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }
}
