//! Our own HTTP/1.1 client codec for pooled upstream connections. hyper's client drives each
//! connection from a task of its own and hands every request to it, and its response back,
//! through channels; measured, that cost about a fifth of the proxy's user-space instructions
//! per request, and its request channel alone kept ~27 KiB per upstream connection. Here the
//! request's own task writes the request and reads the response, and the response body owns
//! the connection until its last byte, when it goes back to the pool.
//!
//! hyper still serves the upstream HTTP/2 connections and HTTP/1.1 Upgrade requests.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::tls::Stream;
use crate::proxy::body::RequestBody;
use crate::wire::{
    Chunk, DecodeError, Framing, READ_BUF, RecvBuf, connection_tokens, content_length_value,
    itoa_u64, last_token_is_chunked, poll_decode, push_field, push_hex,
};

/// Envoy's default limit on response headers (`max_response_headers_kb`: 60 KiB).
pub const MAX_HEAD: usize = 60 * 1024;
/// Response header fields accepted (Envoy's and hyper's default: 100).
const MAX_HEADERS: usize = 100;
/// Body chunks at least this large are written from their own buffer instead of being copied
/// behind the head.
const COPY_LIMIT: usize = 4 * 1024;
/// Bytes gathered before they are written.
const OUT_SOFT_LIMIT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection closed before the response started")]
    ClosedBeforeResponse,
    #[error("connection closed in the middle of the response headers")]
    IncompleteHead,
    #[error("connection closed before the response body was complete")]
    IncompleteBody,
    #[error("invalid HTTP/1.1 response: {0}")]
    Invalid(&'static str),
    #[error("response headers larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body: {0}")]
    RequestBody(crate::downstream::BodyError),
    #[error("request body does not match its content-length")]
    RequestLength,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        match e {
            DecodeError::Invalid(what) => Error::Invalid(what),
            DecodeError::TooLarge => Error::HeadTooLarge,
            DecodeError::Incomplete => Error::IncompleteBody,
            DecodeError::Io(e) => Error::Io(e),
        }
    }
}

impl Error {
    /// The connection was gone before any of the response arrived: on a reused keep-alive
    /// connection, the race with the upstream closing it while idle.
    pub fn is_stale_close(&self) -> bool {
        match self {
            Error::ClosedBeforeResponse => true,
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// The upstream closed the connection mid-exchange (Envoy's "connection termination").
    pub fn is_termination(&self) -> bool {
        matches!(
            self,
            Error::ClosedBeforeResponse | Error::IncompleteHead | Error::IncompleteBody
        )
    }
}

/// One upstream connection's socket and buffers.
pub struct Conn {
    io: Stream,
    rb: RecvBuf,
    /// The head and small body pieces waiting to be written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// A large body chunk, written after `out`.
    big: Bytes,
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            rb: RecvBuf::new(MAX_HEAD + READ_BUF),
            out: Vec::new(),
            out_pos: 0,
            big: Bytes::new(),
        }
    }

    /// An idle connection is fit for another request: the upstream has neither closed it
    /// nor sent anything unasked. Costs no system call unless the socket became readable.
    pub fn is_idle_fit(&mut self) -> bool {
        if self.rb.avail() != 0 {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let io = &mut self.io;
        // One byte tells: an unfit connection is closed, so what it read is not wanted.
        let mut byte = [0u8; 1];
        // Outside tokio's cooperative budget: a spent budget would answer Pending without
        // looking at the socket, and a connection holding unasked-for bytes would pass.
        let probe = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut byte[..]);
            Pin::new(&mut *io).poll_read(cx, &mut rb)
        }));
        matches!(std::pin::pin!(probe).poll(&mut cx), Poll::Pending)
    }

    /// Gives back a read buffer a large head or body grew, before the connection idles.
    pub fn shrink(&mut self) {
        self.rb.shrink();
    }

    fn avail(&self) -> usize {
        self.rb.avail()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.rb.poll_fill(&mut self.io, cx)
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        while !self.big.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.big))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.big.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Empty,
    Length(u64),
    Chunked { open: bool },
}

/// The request body still being written.
pub struct Upload {
    body: RequestBody,
    enc: Enc,
    done: bool,
}

impl Upload {
    fn push_data(&mut self, conn: &mut Conn, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.enc {
            Enc::Empty => return Err(Error::RequestLength),
            Enc::Length(rest) => {
                *rest = rest
                    .checked_sub(data.len() as u64)
                    .ok_or(Error::RequestLength)?;
            }
            Enc::Chunked { open } => {
                // Each chunk's closing CRLF is written in front of the next chunk (or of the
                // last-chunk), so a large chunk can go out from its own buffer.
                if *open {
                    conn.out.extend_from_slice(b"\r\n");
                }
                *open = true;
                push_hex(&mut conn.out, data.len());
                conn.out.extend_from_slice(b"\r\n");
            }
        }
        if data.len() < COPY_LIMIT {
            conn.out.extend_from_slice(&data);
        } else {
            conn.big = data;
        }
        Ok(())
    }

    fn finish(&mut self, conn: &mut Conn, trailers: Option<&HeaderMap>) -> Result<(), Error> {
        match self.enc {
            Enc::Empty => {}
            Enc::Length(rest) => {
                if rest != 0 {
                    return Err(Error::RequestLength);
                }
            }
            Enc::Chunked { open } => {
                if open {
                    conn.out.extend_from_slice(b"\r\n");
                }
                conn.out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    push_field(&mut conn.out, name, value);
                }
                conn.out.extend_from_slice(b"\r\n");
            }
        }
        self.done = true;
        Ok(())
    }

    /// Writes the request body as it arrives; ready once all of it is written and flushed.
    fn poll(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            // Gather what the body has ready, so a head and a small body share one write.
            while !self.done
                && conn.big.is_empty()
                && conn.out.len() - conn.out_pos < OUT_SOFT_LIMIT
            {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => self.finish(conn, None)?,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::RequestBody(e))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.push_data(conn, data)?,
                        Err(frame) => {
                            // Trailers travel only in a chunked body; otherwise they are
                            // dropped, as hyper and Envoy drop them.
                            if let Ok(t) = frame.into_trailers()
                                && matches!(self.enc, Enc::Chunked { .. })
                            {
                                self.finish(conn, Some(&t))?;
                            }
                        }
                    },
                }
            }
            let pending = conn.out_pos < conn.out.len() || !conn.big.is_empty();
            ready!(conn.poll_write_out(cx))?;
            if self.done {
                ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            if !pending {
                // Everything written and the body has nothing yet: a TLS stream must not
                // sit on what it has buffered meanwhile.
                ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                return Poll::Pending;
            }
        }
    }
}

/// Writes the request line and header block, choosing the body's framing as hyper does: the
/// caller's `content-length` or `transfer-encoding` if set, none for a body known to be
/// empty, a `content-length` for a body of known size, chunked otherwise.
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &RequestBody) -> Enc {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if parts.method == Method::CONNECT
        && let Some(authority) = parts.uri.authority()
    {
        out.extend_from_slice(authority.as_str().as_bytes());
    } else {
        out.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The fields go out as they are while the framing fields are read on the way: one pass
    // instead of two hashed lookups before it (a framing field we add goes after them).
    let mut last_te: Option<&HeaderValue> = None;
    let mut length: Option<Result<u64, ()>> = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            last_te = Some(value);
        } else if name == header::CONTENT_LENGTH {
            length = match (length, content_length_value(value.as_bytes())) {
                (Some(Err(())), _) | (_, None) => Some(Err(())),
                (Some(Ok(prev)), Some(n)) if prev != n => Some(Err(())),
                (_, Some(n)) => Some(Ok(n)),
            };
        }
        push_field(out, name, value);
    }
    let chunked_te = last_te.map(|v| last_token_is_chunked(v.as_bytes()));
    let enc = match chunked_te {
        Some(true) => Enc::Chunked { open: false },
        Some(false) | None => match length {
            Some(Ok(n)) if chunked_te.is_none() => Enc::Length(n),
            _ if body.is_end_stream() => Enc::Empty,
            _ => match body.size_hint().exact() {
                Some(n) => {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa_u64(n, &mut [0u8; 20]));
                    out.extend_from_slice(b"\r\n");
                    Enc::Length(n)
                }
                None => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Enc::Chunked { open: false }
                }
            },
        },
    };
    out.extend_from_slice(b"\r\n");
    enc
}

/// A parsed response head and what it says about the body and the connection.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// What the response framing depends on in the request.
#[derive(Debug, Clone, Copy, Default)]
struct Asked {
    head: bool,
    connect: bool,
}

/// Parses one response head from `buf`: `Ok(None)` if incomplete, else the head and its
/// length in bytes.
fn parse_head(buf: &[u8], asked: Asked) -> Result<Option<(Head, usize)>, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("status code"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // One copy of the head backs every header value.
    let block = crate::recycle::copy(&buf[..len]);
    let base = buf.as_ptr() as usize;
    // Room for what the proxy adds (service time, server) without growing the map.
    let mut headers = crate::recycle::header_map(resp.headers.len() + 3);
    let (mut te, mut close, mut keep_alive_token) = (false, false, false);
    let mut codings = crate::wire::TeCodings::default();
    let mut lengths: Option<Result<u64, ()>> = None;
    for h in resp.headers.iter() {
        let name =
            crate::names::parse(h.name.as_bytes()).map_err(|_| Error::Invalid("header name"))?;
        let at = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(block.slice(at..at + h.value.len()))
            .map_err(|_| Error::Invalid("header value"))?;
        if name == header::CONTENT_LENGTH {
            lengths = match (lengths, content_length_value(value.as_bytes())) {
                (_, None) => Some(Err(())),
                (None, Some(n)) => Some(Ok(n)),
                (Some(Ok(prev)), Some(n)) if prev == n => Some(Ok(n)),
                _ => Some(Err(())),
            };
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
        }
        headers.append(name, value);
    }
    let length = if te {
        None
    } else {
        match lengths {
            Some(Ok(n)) => Some(n),
            Some(Err(())) => return Err(Error::Invalid("content-length")),
            None => None,
        }
    };
    let code = status.as_u16();
    // A 2xx to CONNECT opens a tunnel (RFC 9112 §6.3): this codec does not carry one, so
    // the answer ends at its head and the connection is not reused.
    let tunnel = asked.connect && status.is_success();
    let framing =
        if asked.head || tunnel || code == 204 || code == 304 || (100..200).contains(&code) {
            Framing::Empty
        } else if te {
            // A coding we cannot remove (`gzip, chunked`) would reach the client as a body
            // nobody declared: Envoy's codec refuses it as a protocol error (502 UPE).
            if !codings.only_chunked() {
                return Err(Error::Invalid("transfer-encoding"));
            }
            Framing::Chunked(Chunk::Size)
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
    // Framing that both Transfer-Encoding and Content-Length claim, or Transfer-Encoding in
    // HTTP/1.0, cannot be trusted to leave the connection in step (RFC 9112 §6.1, §6.3).
    let keep_alive = framing != Framing::Close
        && !close
        && !tunnel
        && (version == Version::HTTP_11 || keep_alive_token)
        && !(te && (version == Version::HTTP_10 || headers.contains_key(header::CONTENT_LENGTH)));
    Ok(Some((
        Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// A response's head, and what its body needs to be read.
pub struct Exchanged {
    parts: http::response::Parts,
    framing: Framing,
    keep_alive: bool,
    upload: Option<Box<Upload>>,
}

/// Writes the request (`head`, then `body`) on `conn` and reads the response head; the request
/// body keeps being written while the response is read, so an upstream that answers before
/// reading it all (or streams its answer) cannot deadlock us.
///
/// The head is encoded before the returned future is first polled and only borrowed: the
/// caller keeps it for a retry without cloning its header map, and the future holds only the
/// body (every byte of an await point's state is copied when the request's future is boxed).
/// Inlined so the returned future is built in place in the caller's state: outlined, it was
/// returned and then copied (measured: ~250 instructions per request under callgrind).
#[inline(always)]
pub fn exchange<'a>(
    conn: &'a mut Conn,
    head: &http::request::Parts,
    body: RequestBody,
) -> impl Future<Output = Result<Exchanged, Error>> + 'a {
    let asked = Asked {
        head: head.method == Method::HEAD,
        connect: head.method == Method::CONNECT,
    };
    conn.out.clear();
    conn.out_pos = 0;
    let enc = encode_head(&mut conn.out, head, &body);
    let upload = Upload {
        body,
        enc,
        done: enc == Enc::Empty,
    };
    read_head(conn, upload, asked)
}

async fn read_head(conn: &mut Conn, upload: Upload, asked: Asked) -> Result<Exchanged, Error> {
    let mut upload = Some(upload);
    let mut write_error = None;
    let mut seen = false;
    let head = std::future::poll_fn(|cx| {
        if let Some(up) = &mut upload {
            match up.poll(conn, cx) {
                Poll::Ready(Ok(())) => upload = None,
                // The request itself is broken: nothing sensible can follow on this connection.
                Poll::Ready(Err(e @ (Error::RequestBody(_) | Error::RequestLength))) => {
                    return Poll::Ready(Err(e));
                }
                // The upstream may have answered and stopped reading (a 413, say): read
                // its response before reporting the write's failure.
                Poll::Ready(Err(e)) => {
                    upload = None;
                    write_error = Some(e);
                }
                Poll::Pending => {}
            }
        }
        loop {
            if conn.avail() > 0 {
                seen = true;
                match parse_head(conn.rb.unread(), asked)? {
                    Some((head, len)) => {
                        conn.rb.consume(len);
                        let code = head.status.as_u16();
                        if code == 101 {
                            return Poll::Ready(Err(Error::Invalid(
                                "101 Switching Protocols to a request that did not ask",
                            )));
                        }
                        // 100 Continue and other interim responses are not forwarded.
                        if (100..200).contains(&code) {
                            continue;
                        }
                        return Poll::Ready(Ok(head));
                    }
                    None if conn.avail() >= MAX_HEAD => {
                        return Poll::Ready(Err(Error::HeadTooLarge));
                    }
                    None => {}
                }
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(match write_error.take() {
                        Some(e) => e,
                        None if seen => Error::IncompleteHead,
                        None => Error::ClosedBeforeResponse,
                    }));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(write_error.take().unwrap_or(Error::Io(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await?;
    let mut resp = http::Response::new(());
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    let (parts, ()) = resp.into_parts();
    Ok(Exchanged {
        parts,
        framing: head.framing,
        // A request body that failed to go out leaves the connection in an unknown state.
        keep_alive: head.keep_alive && write_error.is_none(),
        // Boxed: a body still going out when the answer comes is rare, and inline it made
        // every response ~120 bytes larger through each layer it is returned through.
        upload: upload.map(Box::new),
    })
}

/// A connection lent for one exchange by whoever owns it (the pool): the codec speaks HTTP on
/// it, and gives it back once the response is complete with nothing left unread.
pub trait Lease {
    fn conn(&mut self) -> &mut Conn;
    /// The exchange is over and the connection may serve another one.
    fn give_back(self);
}

/// A response body read straight from its connection, which is given back once the body is
/// complete (or is closed, if it cannot be reused).
pub struct Body<L: Lease> {
    lease: Option<L>,
    framing: Framing,
    keep_alive: bool,
    upload: Option<Box<Upload>>,
}

impl<L: Lease> Body<L> {
    /// The response of `ex`, its body reading from the lent connection.
    pub fn response(lease: L, ex: Exchanged) -> http::Response<Body<L>> {
        let mut body = Body {
            lease: Some(lease),
            framing: ex.framing,
            keep_alive: ex.keep_alive,
            upload: ex.upload,
        };
        // A response without a body frees its connection at once: it may never be polled.
        if body.framing == Framing::Empty {
            body.finish();
        }
        http::Response::from_parts(ex.parts, body)
    }

    /// The body is complete: the connection goes back to the pool if nothing is left on it.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let Some(mut lease) = self.lease.take()
            && self.keep_alive
            && self.upload.is_none()
            && lease.conn().avail() == 0
        {
            lease.conn().shrink();
            lease.give_back();
        }
        self.upload = None;
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.lease = None;
        self.upload = None;
        self.framing = Framing::Empty;
        Poll::Ready(Some(Err(e)))
    }
}

impl<L: Lease + Unpin> http_body::Body for Body<L> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let Some(lease) = this.lease.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(up) = &mut this.upload {
            match up.poll(lease.conn(), cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                // The client's body failed (or broke its length): the exchange is over, as
                // Envoy resets the upstream stream, and the client must not wait on an
                // upstream still waiting for the rest of the body.
                Poll::Ready(Err(e @ (Error::RequestBody(_) | Error::RequestLength))) => {
                    return this.fail(e);
                }
                // A write failed: the upstream may still answer in full (it stopped reading);
                // the connection is not reused.
                Poll::Ready(Err(_)) => {
                    this.upload = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        let Some(lease) = this.lease.as_mut() else {
            return Poll::Ready(None);
        };
        let close_delimited = this.framing == Framing::Close;
        let wire = lease.conn();
        match ready!(poll_decode(
            &mut this.framing,
            &mut wire.rb,
            &mut wire.io,
            MAX_HEAD,
            cx
        )) {
            None => {
                // The close delimits the body; the connection is spent.
                if close_delimited {
                    this.keep_alive = false;
                }
                this.finish();
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                if this.framing == Framing::Empty {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => this.fail(e.into()),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lease.is_none() || self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{content_length, parse_chunk_size};

    #[test]
    fn chunk_size_lines_are_read_strictly() {
        assert_eq!(parse_chunk_size(b"1a\r\nxx").unwrap(), Some((4, 26)));
        assert_eq!(
            parse_chunk_size(b"5 ;ext=\"v\"\r\n").unwrap(),
            Some((12, 5))
        );
        assert_eq!(
            parse_chunk_size(b"FFFFFFFFFFFFFFFF\r\n").unwrap(),
            Some((18, u64::MAX))
        );
        for partial in [&b"5"[..], b"5;ext", b"5\r", b""] {
            assert_eq!(parse_chunk_size(partial).unwrap(), None, "{partial:?}");
        }
        for bad in [
            &b"\r\n"[..],
            b";x\r\n",
            b"5\n",
            b"5;x\nJUNK\r\n",
            b"5x\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunked_is_the_last_transfer_coding() {
        assert!(last_token_is_chunked(b"chunked"));
        assert!(last_token_is_chunked(b"gzip, Chunked"));
        assert!(!last_token_is_chunked(b"chunked, gzip"));
    }

    #[test]
    fn content_length_must_be_one_number() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(content_length(&h), Some(Ok(42)));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42, 42"));
        assert_eq!(content_length(&h), Some(Ok(42)));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42, 43"));
        assert_eq!(content_length(&h), Some(Err(())));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&h), Some(Err(())));
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_static("99999999999999999999"),
        );
        assert_eq!(content_length(&h), Some(Err(())));
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |raw: &str, head: bool| {
            parse_head(
                raw.as_bytes(),
                Asked {
                    head,
                    connect: false,
                },
            )
            .map(|h| h.map(|(h, n)| (h.framing, h.keep_alive, n)))
        };
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(
            framing(ok, false).unwrap(),
            Some((Framing::Length(5), true, ok.len() - 5))
        );
        // HEAD and 204/304 have no body whatever the headers say.
        assert_eq!(
            framing(ok, true).unwrap().map(|x| x.0),
            Some(Framing::Empty)
        );
        let no_content = "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(
            framing(no_content, false).unwrap().map(|x| x.0),
            Some(Framing::Empty)
        );
        // Transfer-Encoding wins over Content-Length, and the connection is not reused.
        let both = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(
            framing(both, false).unwrap().map(|x| (x.0, x.1)),
            Some((Framing::Chunked(Chunk::Size), false))
        );
        // No length: the body runs to the close.
        let close = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(
            framing(close, false).unwrap().map(|x| (x.0, x.1)),
            Some((Framing::Close, false))
        );
        // HTTP/1.0 keeps the connection only when asked to; `Connection: close` ends it.
        let old = "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(old, false).unwrap().map(|x| x.1), Some(false));
        let old_ka = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(old_ka, false).unwrap().map(|x| x.1), Some(true));
        let closing = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(closing, false).unwrap().map(|x| x.1), Some(false));
        assert!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n", false)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n", false),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            framing("HTTP/1.1 2000 OK\r\n\r\n", false),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn untrustworthy_framing_ends_the_connection() {
        let asked = |connect| Asked {
            head: false,
            connect,
        };
        let parse = |raw: &[u8], connect| {
            parse_head(raw, asked(connect)).map(|h| h.map(|(h, _)| (h.framing, h.keep_alive)))
        };
        // Transfer-Encoding in HTTP/1.0: read to the end, but never reused.
        let old_te =
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(
            parse(old_te, false).unwrap(),
            Some((Framing::Chunked(Chunk::Size), false))
        );
        // A 2xx to CONNECT is a tunnel: no body is read and the connection is not reused.
        let tunnel = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse(tunnel, true).unwrap(), Some((Framing::Empty, false)));
        assert_eq!(parse(tunnel, false).unwrap(), Some((Framing::Empty, true)));
        // A complete head over the limit is refused even when it arrived in one read.
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(format!("x-filler: {}\r\n", "y".repeat(1000)).as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&big, false), Err(Error::HeadTooLarge)));
    }

    #[test]
    fn request_framing_is_chosen_like_hyper() {
        use http::Request;
        let head = |req: Request<RequestBody>| {
            let (parts, body) = req.into_parts();
            let mut out = Vec::new();
            let enc = encode_head(&mut out, &parts, &body);
            (String::from_utf8(out).unwrap(), enc)
        };
        let get = Request::get("/a?b=1")
            .header("host", "svc")
            .body(RequestBody::buffered(Bytes::new(), None, None))
            .unwrap();
        assert_eq!(
            head(get),
            (
                "GET /a?b=1 HTTP/1.1\r\nhost: svc\r\n\r\n".to_string(),
                Enc::Empty
            )
        );
        let post = Request::post("/")
            .body(RequestBody::buffered(
                Bytes::from_static(b"abc"),
                None,
                None,
            ))
            .unwrap();
        assert_eq!(
            head(post),
            (
                "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n".to_string(),
                Enc::Length(3)
            )
        );
    }
}
