//! HTTP/1.1 wire pieces shared by our two codecs, the upstream client (`upstream::h1`) and
//! the downstream server (`downstream::h1`): the read buffer, body framing and its decoder,
//! and the small encoders. Both sides must read framing the same strict way: a lenient
//! reading on either side is how a connection falls out of step with its peer.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use tokio::io::{AsyncRead, ReadBuf};

/// Initial read buffer of a connection.
pub const READ_BUF: usize = 4 * 1024;
/// A read that fills the buffer doubles it for the next one, up to this: large bodies are
/// read in fewer system calls, and small exchanges keep small buffers.
pub const MAX_BODY_READ: usize = 32 * 1024;
/// A chunk-size line longer than this is refused (a size plus generous extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailer fields accepted.
const MAX_TRAILERS: usize = 100;

/// Why a body could not be read off the wire.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid HTTP/1.1 body framing: {0}")]
    Invalid(&'static str),
    #[error("trailers larger than the header limit")]
    TooLarge,
    #[error("connection closed before the body was complete")]
    Incomplete,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A connection's read buffer: always initialised (no `unsafe` to read into spare
/// capacity); `start..end` is unread.
///
/// A connection holds a buffer only while it has unread bytes, or while a large message keeps
/// a grown one: the 4 KiB block a read lands in comes from this thread's spares and goes back
/// to them as soon as everything in it is consumed. An idle keep-alive connection, and one
/// waiting for its upstream's answer, then holds none (nginx frees an idle connection's buffer
/// the same way); a worker needs about as many blocks as it has reads to parse at once.
pub struct RecvBuf {
    /// Empty while nothing is unread and the buffer has not grown.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The buffer grows up to this for a head or trailers that do not fit.
    max: usize,
}

impl RecvBuf {
    pub fn new(max: usize) -> RecvBuf {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max: max.max(MAX_BODY_READ),
        }
    }

    pub fn avail(&self) -> usize {
        self.end - self.start
    }

    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether a read would find space: false only when unread bytes fill the buffer.
    pub fn has_room(&self) -> bool {
        self.buf.is_empty() || self.avail() < self.buf.len()
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // A grown buffer stays until the message ends (`shrink`).
            if self.buf.len() == READ_BUF {
                self.release();
            }
        }
    }

    /// At the end of a message: lets go of the buffer, grown or not, once nothing is unread.
    pub fn shrink(&mut self) {
        if self.avail() == 0 {
            self.start = 0;
            self.end = 0;
            self.release();
        }
    }

    /// Drops the buffer: a standard-sized one goes back to the thread's spares.
    fn release(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == READ_BUF {
            crate::recycle::give_back_read_buf(buf);
        }
    }

    /// Reads more bytes after the unread ones; `Ok(0)` at end of stream. A full buffer
    /// grows (up to its maximum; the callers bound heads below it).
    pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.is_empty() {
                return self.poll_fill_fresh(io, cx);
            }
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).min(self.max).max(self.buf.len() + 1);
                self.buf.resize(grown, 0);
            }
        }
        let space = self.buf.len() - self.end;
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        if n == space && self.buf.len() < MAX_BODY_READ {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        Poll::Ready(Ok(n))
    }

    /// A read with no buffer held lands on the stack, and a block is taken only when bytes
    /// arrived: most polls of a connection waiting for its peer find nothing.
    fn poll_fill_fresh<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        let mut landing = [MaybeUninit::<u8>::uninit(); READ_BUF];
        let mut rb = ReadBuf::uninit(&mut landing);
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        let n = got.len();
        if n > 0 {
            let mut buf = crate::recycle::read_buf(READ_BUF);
            buf[..n].copy_from_slice(got);
            if n == READ_BUF {
                // As a full read into a held buffer would: the next one gets more room.
                buf.resize(2 * READ_BUF, 0);
            }
            self.buf = buf;
            self.end = n;
        }
        Poll::Ready(Ok(n))
    }

    /// Copies out up to `max` unread bytes as a data frame.
    pub fn take(&mut self, max: u64) -> Bytes {
        let n = usize::try_from(max).unwrap_or(usize::MAX).min(self.avail());
        let data = crate::recycle::copy(&self.buf[self.start..self.start + n]);
        self.consume(n);
        data
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a `Connection` field says (RFC 9112 §9.6): the options for this hop, and whether it
/// names anything else (a header to strip, or `upgrade`), which hop-by-hop handling further
/// on needs to see.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub other: bool,
}

pub fn connection_tokens(value: &[u8]) -> ConnectionTokens {
    let mut t = ConnectionTokens::default();
    // The one value most peers send on every message, spelled as they send it: one compare
    // instead of the split and case-folding below.
    if value == b"keep-alive" || value == b"Keep-Alive" {
        t.keep_alive = true;
        return t;
    }
    for token in value.split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            t.close = true;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            t.keep_alive = true;
        } else if !token.is_empty() {
            t.other = true;
        }
    }
    t
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes the connection (responses only).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// The next frame of a body framed by `framing`, read from `rb` and then `io`. `Ready(None)`
/// once the body is complete, when `framing` is left `Empty`; a close-delimited body
/// completes at end of stream. `max_trailers` bounds the trailer section in bytes.
pub fn poll_decode<R: AsyncRead + Unpin + ?Sized>(
    framing: &mut Framing,
    rb: &mut RecvBuf,
    io: &mut R,
    max_trailers: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, DecodeError>>> {
    loop {
        match framing {
            Framing::Empty => return Poll::Ready(None),
            Framing::Length(rest) => {
                if rb.avail() > 0 {
                    let data = rb.take(*rest);
                    *rest -= data.len() as u64;
                    if *rest == 0 {
                        *framing = Framing::Empty;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
            Framing::Close => {
                if rb.avail() > 0 {
                    return Poll::Ready(Some(Ok(Frame::data(rb.take(u64::MAX)))));
                }
            }
            Framing::Chunked(state) => match *state {
                Chunk::Size if rb.avail() > 0 => match parse_chunk_size(rb.unread()) {
                    Ok(Some((used, size))) => {
                        rb.consume(used);
                        *state = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                        continue;
                    }
                    Ok(None) if rb.avail() > MAX_CHUNK_LINE => {
                        return fail(framing, DecodeError::Invalid("chunk size line too long"));
                    }
                    Ok(None) => {}
                    Err(e) => return fail(framing, e),
                },
                Chunk::Data(rest) if rb.avail() > 0 => {
                    let data = rb.take(rest);
                    let rest = rest - data.len() as u64;
                    *state = if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Chunk::DataEnd if rb.avail() >= 2 => {
                    if &rb.unread()[..2] != b"\r\n" {
                        return fail(framing, DecodeError::Invalid("chunk not followed by CRLF"));
                    }
                    rb.consume(2);
                    *state = Chunk::Size;
                    continue;
                }
                Chunk::Trailers if rb.avail() > 0 => {
                    let rest = rb.unread();
                    if rest[0] == b'\n' {
                        return fail(framing, DecodeError::Invalid("bare LF ending the trailers"));
                    }
                    if rest.starts_with(b"\r\n") {
                        rb.consume(2);
                        *framing = Framing::Empty;
                        return Poll::Ready(None);
                    }
                    // A lone CR waits for what follows it.
                    if rest.len() > 1 {
                        match parse_trailers(rest) {
                            Ok(Some((trailers, used))) => {
                                rb.consume(used);
                                *framing = Framing::Empty;
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                            Ok(None) if rb.avail() >= max_trailers => {
                                return fail(framing, DecodeError::TooLarge);
                            }
                            Ok(None) => {}
                            Err(e) => return fail(framing, e),
                        }
                    }
                }
                _ => {}
            },
        }
        match ready!(rb.poll_fill(io, cx)) {
            Ok(0) if *framing == Framing::Close => {
                *framing = Framing::Empty;
                return Poll::Ready(None);
            }
            Ok(0) => return fail(framing, DecodeError::Incomplete),
            Ok(_) => {}
            Err(e) => return fail(framing, DecodeError::Io(e)),
        }
    }
}

fn fail(framing: &mut Framing, e: DecodeError) -> Poll<Option<Result<Frame<Bytes>, DecodeError>>> {
    *framing = Framing::Empty;
    Poll::Ready(Some(Err(e)))
}

/// A chunk-size line (RFC 9112 §7.1): hex digits, optional whitespace, optional extensions,
/// CRLF. Stricter than httparse's: an empty size, a bare LF or a control character in an
/// extension is refused, because a lenient reading here is how a connection falls out of
/// step with its peer. `Ok(None)` if the line is incomplete.
pub fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, DecodeError> {
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(d) = buf.get(i).and_then(|b| char::from(*b).to_digit(16)) {
        if i == 16 {
            return Err(DecodeError::Invalid("chunk size overflows"));
        }
        size = (size << 4) | u64::from(d);
        i += 1;
    }
    if i == buf.len() {
        return Ok(None);
    }
    if i == 0 {
        return Err(DecodeError::Invalid("chunk size missing"));
    }
    while buf.get(i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
        i += 1;
    }
    if buf.get(i) == Some(&b';') {
        while let Some(&b) = buf.get(i) {
            if b == b'\r' {
                break;
            }
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                return Err(DecodeError::Invalid(
                    "control character in a chunk extension",
                ));
            }
            i += 1;
        }
    }
    match (buf.get(i), buf.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(b'\n')) => Ok(Some((i + 2, size))),
        _ => Err(DecodeError::Invalid("chunk size line")),
    }
}

fn parse_trailers(buf: &[u8]) -> Result<Option<(HeaderMap, usize)>, DecodeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((n, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields.iter() {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| DecodeError::Invalid("trailer name"))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| DecodeError::Invalid("trailer value"))?;
                map.append(name, value);
            }
            Ok(Some((map, n)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(DecodeError::Invalid("trailers")),
    }
}

pub fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The transfer codings a message lists over all its `Transfer-Encoding` fields, as far as
/// framing needs them. Only a lone `chunked` is understood.
#[derive(Default)]
pub struct TeCodings {
    chunked: usize,
    other: bool,
    /// A field, or a list element, with no coding in it.
    pub empty: bool,
}

impl TeCodings {
    pub fn add(&mut self, field: &[u8]) {
        let mut any = false;
        for token in field.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            any = true;
            if token.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
            } else {
                self.other = true;
            }
        }
        self.empty |= !any;
    }

    pub fn only_chunked(&self) -> bool {
        self.chunked == 1 && !self.other
    }
}

/// `Transfer-Encoding`'s last coding is `chunked`.
pub fn last_token_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|b| *b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The `content-length` of a message: `None` when absent; an error when invalid, or when
/// several values disagree.
pub fn content_length(headers: &HeaderMap) -> Option<Result<u64, ()>> {
    let mut found: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        match (found, content_length_value(v.as_bytes())) {
            (_, None) => return Some(Err(())),
            (Some(prev), Some(n)) if prev != n => return Some(Err(())),
            (_, Some(n)) => found = Some(n),
        }
    }
    found.map(Ok)
}

/// One `content-length` field: a number, or a list of the same number repeated.
pub fn content_length_value(v: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(prev) if prev != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

/// True for an HTTP/1.1 request asking to switch protocols (WebSocket and friends).
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_tell_options_from_names() {
        let t = connection_tokens(b" Keep-Alive , ,close");
        assert_eq!(
            t,
            ConnectionTokens {
                close: true,
                keep_alive: true,
                other: false
            }
        );
        assert!(connection_tokens(b"upgrade").other);
        assert!(connection_tokens(b"keep-alive, x-secret").other);
        assert_eq!(connection_tokens(b""), ConnectionTokens::default());
    }

    /// Polls `rb.poll_fill` once on `io` with a no-op waker.
    fn fill_once(
        rb: &mut RecvBuf,
        io: &mut tokio::io::DuplexStream,
    ) -> Poll<std::io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        rb.poll_fill(io, &mut cx)
    }

    #[tokio::test]
    async fn a_buffer_is_held_only_while_bytes_are_unread() {
        use tokio::io::AsyncWriteExt;
        let (mut near, mut far) = tokio::io::duplex(256 * 1024);
        let mut rb = RecvBuf::new(64 * 1024);
        assert!(rb.buf.is_empty(), "a new connection holds no buffer");
        assert!(fill_once(&mut rb, &mut near).is_pending());
        assert!(
            rb.buf.is_empty(),
            "a read that found nothing gives its block back"
        );
        assert!(rb.has_room());

        far.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(fill_once(&mut rb, &mut near), Poll::Ready(Ok(18))));
        assert_eq!(rb.unread(), b"GET / HTTP/1.1\r\n\r\n");
        rb.consume(4);
        assert_eq!(rb.buf.len(), READ_BUF, "kept while bytes are unread");
        rb.consume(14);
        assert!(rb.buf.is_empty(), "given back once everything is consumed");

        // A large body grows the buffer, which stays for the rest of the message even when a
        // read finds nothing, and goes at its end.
        far.write_all(&[b'x'; 3 * READ_BUF]).await.unwrap();
        let mut got = 0;
        while let Poll::Ready(Ok(n)) = fill_once(&mut rb, &mut near) {
            got += n;
            let _ = rb.take(u64::MAX);
        }
        assert_eq!(got, 3 * READ_BUF);
        assert!(rb.buf.len() > READ_BUF, "full reads grow the buffer");
        rb.shrink();
        assert!(rb.buf.is_empty(), "the end of the message frees it");

        // End of stream with nothing unread holds nothing either.
        drop(far);
        assert!(matches!(fill_once(&mut rb, &mut near), Poll::Ready(Ok(0))));
        assert!(rb.buf.is_empty());
    }
}
