//! HTTP/2 abuse probes against an h2c (prior knowledge) listener, for tests/h2_abuse.rs:
//! hand-built frames (RFC 9113 §4, §6) over a blocking `TcpStream`, so that a probe can send
//! what a well-behaved client library refuses to (a stream past the peer's limit, CONTINUATION
//! without END_HEADERS, a header list over the advertised size, floods of control frames).
//!
//! Requests are HPACK-encoded as literals without indexing (RFC 7541 §6.2.2), which needs no
//! encoder state. Of the server's header blocks only the leading `:status` is decoded: from the
//! static table, or a literal whose value may be Huffman-coded digits (all a status holds).
//!
//! Every loop is bounded in count, and every socket operation in time.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// SETTINGS_MAX_FRAME_SIZE's initial value: what we may send before the server raises it.
const MAX_FRAME: usize = 16_384;

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const CANCEL: u32 = 0x8;

/// One frame: 9-byte header (24-bit length, type, flags, 31-bit stream id), then the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    assert!(len < 1 << 24, "frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings_frame(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, v) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

/// HPACK integer with an N-bit prefix (RFC 7541 §5.1); `flags` fills the bits above it.
fn hpack_int(out: &mut Vec<u8>, prefix: u32, flags: u8, mut v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header field without indexing, new name, neither string Huffman-coded.
pub fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, 0, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Decodes an HPACK integer at `*pos` with an N-bit prefix.
fn read_int(block: &[u8], pos: &mut usize, prefix: u32) -> Option<usize> {
    let max = (1usize << prefix) - 1;
    let mut v = usize::from(*block.get(*pos)?) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*pos)?;
        *pos += 1;
        v = v.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// Huffman-coded digits (RFC 7541 Appendix B: '0'-'2' are 5-bit codes 0x0-0x2, '3'-'9' 6-bit
/// codes 0x19-0x1f), then at most 7 bits of all-ones padding. Anything else is None.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let mut out = String::new();
    let (mut acc, mut n) = (0u32, 0u32);
    for byte in bytes {
        for i in (0..8).rev() {
            acc = acc << 1 | u32::from(byte >> i & 1);
            n += 1;
            if n == 5 && acc <= 2 {
                out.push(char::from(b'0' + acc as u8));
                (acc, n) = (0, 0);
            } else if n == 6 && (0x19..=0x1f).contains(&acc) {
                out.push(char::from(b'3' + (acc - 0x19) as u8));
                (acc, n) = (0, 0);
            } else if n >= 8 {
                return None;
            }
        }
    }
    (n == 0 || acc == (1 << n) - 1).then_some(out)
}

/// The `:status` a response header block starts with (pseudo-headers come first), if it is
/// the static table's or a literal with the static `:status` name (indices 8-14).
pub fn leading_status(block: &[u8]) -> Option<u16> {
    let mut pos = 0;
    // Dynamic table size updates (001xxxxx) may precede the first field.
    while block.get(pos)? & 0xe0 == 0x20 {
        read_int(block, &mut pos, 5)?;
    }
    let first = *block.get(pos)?;
    if first & 0x80 != 0 {
        return match read_int(block, &mut pos, 7)? {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    let prefix = if first & 0x40 != 0 { 6 } else { 4 };
    if !(8..=14).contains(&read_int(block, &mut pos, prefix)?) {
        return None;
    }
    let huffman = block.get(pos)? & 0x80 != 0;
    let len = read_int(block, &mut pos, 7)?;
    let raw = block.get(pos..pos.checked_add(len)?)?;
    let text = if huffman {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    pub error_code: u32,
    pub last_stream_id: u32,
}

/// What the server did, and what the probe sent; printed by the test (some fields are only
/// there to be printed).
#[derive(Debug, Default)]
#[allow(dead_code)]
pub struct Report {
    pub probe: &'static str,
    pub error: Option<String>,
    pub goaway: Option<GoAway>,
    pub closed: bool,
    pub write_error: Option<String>,
    /// RST_STREAM error code → streams reset with it.
    pub reset_codes: BTreeMap<u32, usize>,
    pub responses: usize,
    pub settings_acks: u64,
    pub pongs: u64,
    pub streams_sent: u64,
    pub frames_sent: u64,
    pub bytes_total: usize,
    pub bytes_sent: usize,
    pub backpressure: bool,
    pub limit: Option<u32>,
    pub extra_stream: Option<u32>,
    pub extra_reset: Option<u32>,
    pub big_status: Option<u16>,
    pub big_reset: Option<u32>,
    pub after_status: Option<u16>,
    pub seconds: f64,
}

impl Report {
    pub fn ended_connection(&self) -> bool {
        self.goaway.is_some() || self.closed
    }
}

/// A client connection: the preface and our SETTINGS are sent on connect; the server's
/// SETTINGS and PINGs are acknowledged as they are read, like any client library does.
pub struct Conn {
    sock: TcpStream,
    inbuf: Vec<u8>,
    authority: String,
    /// A HEADERS block waiting for its CONTINUATION frames: stream id and fragment so far.
    partial: Option<(u32, Vec<u8>)>,
    pub goaway: Option<GoAway>,
    pub closed: bool,
    pub write_error: Option<String>,
    pub resets: BTreeMap<u32, u32>,
    /// Stream → the response's status (None if it could not be decoded).
    pub responses: BTreeMap<u32, Option<u16>>,
    pub acks: u64,
    pub pongs: u64,
    /// The server's SETTINGS, merged in arrival order.
    pub server_settings: BTreeMap<u16, u32>,
    pub server_settings_seen: bool,
    started: Instant,
}

impl Conn {
    pub fn connect(addr: SocketAddr, authority: &str) -> std::io::Result<Conn> {
        let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = Conn {
            sock,
            inbuf: Vec::new(),
            authority: authority.to_string(),
            partial: None,
            goaway: None,
            closed: false,
            write_error: None,
            resets: BTreeMap::new(),
            responses: BTreeMap::new(),
            acks: 0,
            pongs: 0,
            server_settings: BTreeMap::new(),
            server_settings_seen: false,
            started: Instant::now(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(settings_frame(&[]));
        c.send(&hello);
        Ok(c)
    }

    /// A GET's header block: the pseudo-headers, then `extra`.
    pub fn request_block(&self, path: &str, extra: &[(String, String)]) -> Vec<u8> {
        let mut block = Vec::new();
        literal(&mut block, ":method", "GET");
        literal(&mut block, ":path", path);
        literal(&mut block, ":scheme", "http");
        literal(&mut block, ":authority", &self.authority);
        for (k, v) in extra {
            literal(&mut block, k, v);
        }
        block
    }

    /// HEADERS (END_STREAM) carrying `block`, split into CONTINUATION frames past 16 KiB.
    pub fn request_frames(&self, stream: u32, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let end_headers = if last { END_HEADERS } else { 0 };
            if i == 0 {
                out.extend(frame(HEADERS, END_STREAM | end_headers, stream, chunk));
            } else {
                out.extend(frame(CONTINUATION, end_headers, stream, chunk));
            }
        }
        out
    }

    pub fn get(&mut self, stream: u32, path: &str) {
        let frames = self.request_frames(stream, &self.request_block(path, &[]));
        self.send(&frames);
    }

    /// Writes everything (bounded by IO_TIMEOUT); a failure is recorded, not raised: the
    /// server closing or no longer reading is what the probes look for.
    pub fn send(&mut self, data: &[u8]) {
        if data.is_empty() || self.closed || self.write_error.is_some() {
            return;
        }
        if let Err(e) = self.sock.write_all(data) {
            self.write_error = Some(match e.kind() {
                // The server stopped reading: backpressure, not a failure of the probe.
                ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout".to_string(),
                k => format!("{k:?}"),
            });
        }
    }

    /// Reads and handles frames for up to `time`, until the server closes, or until
    /// `until(self)` holds.
    pub fn pump(&mut self, time: Duration, until: impl Fn(&Conn) -> bool) {
        let deadline = Instant::now() + time;
        let mut buf = vec![0u8; 65_536];
        while !self.closed {
            if until(self) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.clamp(Duration::from_millis(1), Duration::from_millis(200));
            if self.sock.set_read_timeout(Some(wait)).is_err() {
                self.closed = true;
                break;
            }
            match self.sock.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.parse_frames();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    fn parse_frames(&mut self) {
        let mut at = 0;
        while self.inbuf.len() - at >= 9 {
            let h = &self.inbuf[at..at + 9];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if self.inbuf.len() - at < 9 + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = self.inbuf[at + 9..at + 9 + len].to_vec();
            at += 9 + len;
            self.on_frame(kind, flags, stream, &payload);
        }
        self.inbuf.drain(..at);
    }

    fn on_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match kind {
            SETTINGS if flags & ACK != 0 => self.acks += 1,
            SETTINGS => {
                for entry in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    self.server_settings.insert(id, be32(&entry[2..]));
                }
                self.server_settings_seen = true;
                self.send(&frame(SETTINGS, ACK, 0, &[]));
            }
            PING if flags & ACK != 0 => self.pongs += 1,
            PING => self.send(&frame(PING, ACK, 0, payload)),
            GOAWAY if payload.len() >= 8 => {
                self.goaway = Some(GoAway {
                    last_stream_id: be32(payload) & 0x7fff_ffff,
                    error_code: be32(&payload[4..]),
                });
            }
            RST_STREAM if payload.len() >= 4 => {
                self.resets.insert(stream, be32(payload));
            }
            HEADERS => {
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 && !body.is_empty() {
                    pad = usize::from(body[0]);
                    body = &body[1..];
                }
                if flags & PRIORITY != 0 && body.len() >= 5 {
                    body = &body[5..];
                }
                let body = &body[..body.len().saturating_sub(pad)];
                if flags & END_HEADERS != 0 {
                    self.on_header_block(stream, body);
                } else {
                    self.partial = Some((stream, body.to_vec()));
                }
            }
            CONTINUATION => {
                if let Some((s, mut block)) = self.partial.take()
                    && s == stream
                {
                    block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        self.on_header_block(stream, &block);
                    } else {
                        self.partial = Some((s, block));
                    }
                }
            }
            // DATA, WINDOW_UPDATE, PRIORITY, unknown: nothing to record. The responses are a
            // few bytes, far inside the initial flow-control windows.
            _ => {}
        }
    }

    fn on_header_block(&mut self, stream: u32, block: &[u8]) {
        // The first block on a stream is the response head; a later one is trailers.
        self.responses
            .entry(stream)
            .or_insert_with(|| leading_status(block));
    }

    pub fn report(&self, probe: &'static str) -> Report {
        let mut reset_codes = BTreeMap::new();
        for code in self.resets.values() {
            *reset_codes.entry(*code).or_insert(0) += 1;
        }
        Report {
            probe,
            goaway: self.goaway,
            closed: self.closed,
            write_error: self.write_error.clone(),
            reset_codes,
            responses: self.responses.len(),
            settings_acks: self.acks,
            pongs: self.pongs,
            seconds: self.started.elapsed().as_secs_f64(),
            ..Report::default()
        }
    }
}

fn ended(c: &Conn) -> bool {
    c.goaway.is_some() || c.closed
}

pub fn rapid_reset(p: &mut Conn) -> Report {
    let block = p.request_block("/", &[]);
    let mut pending = Vec::new();
    let mut sent = 0;
    for i in 0..2000u32 {
        let sid = 1 + 2 * i;
        pending.extend(p.request_frames(sid, &block));
        pending.extend(frame(RST_STREAM, 0, sid, &CANCEL.to_be_bytes()));
        sent += 1;
        if i % 50 == 49 {
            p.send(&std::mem::take(&mut pending));
            p.pump(Duration::from_millis(1), ended);
            if ended(p) {
                break;
            }
        }
    }
    p.send(&pending);
    p.pump(Duration::from_secs(2), |c| c.goaway.is_some());
    Report {
        streams_sent: sent,
        ..p.report("rapid_reset")
    }
}

/// One HEADERS without END_HEADERS, then CONTINUATION frames that each carry one more
/// literal header and never END_HEADERS: the server must not buffer them all.
pub fn continuation_flood(p: &mut Conn) -> Report {
    let block = p.request_block("/", &[]);
    p.send(&frame(HEADERS, END_STREAM, 1, &block));
    let mut sent = 0;
    for i in 0..10_000u32 {
        let mut frag = Vec::new();
        literal(&mut frag, "x-flood", &format!("{i:016}"));
        p.send(&frame(CONTINUATION, 0, 1, &frag));
        if p.write_error.is_some() {
            break;
        }
        sent += 1;
        if i % 500 == 499 {
            p.pump(Duration::from_millis(1), ended);
            if ended(p) {
                break;
            }
        }
    }
    p.pump(Duration::from_secs(2), |c| c.goaway.is_some());
    Report {
        frames_sent: sent,
        ..p.report("continuation_flood")
    }
}

/// Sends `count` control frames, reading the answers as it goes.
fn flood(
    p: &mut Conn,
    probe: &'static str,
    one: impl Fn(u32) -> Vec<u8>,
    count: u32,
    answered: fn(&Conn) -> u64,
) -> Report {
    let mut pending = Vec::new();
    let mut sent = 0u64;
    for i in 0..count {
        pending.extend(one(i));
        sent += 1;
        if i % 500 == 499 {
            p.send(&std::mem::take(&mut pending));
            if p.write_error.is_some() || p.closed {
                break;
            }
            p.pump(Duration::from_micros(500), |_| false);
        }
    }
    p.send(&pending);
    p.pump(Duration::from_secs(5), |c| {
        c.goaway.is_some() || answered(c) >= sent
    });
    Report {
        frames_sent: sent,
        ..p.report(probe)
    }
}

pub fn settings_flood(p: &mut Conn) -> Report {
    flood(
        p,
        "settings_flood",
        |i| settings_frame(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 100 + i % 7)]),
        10_000,
        // The first ACK answers the preface SETTINGS.
        |c| c.acks.saturating_sub(1),
    )
}

pub fn ping_flood(p: &mut Conn) -> Report {
    flood(
        p,
        "ping_flood",
        |i| frame(PING, 0, 0, format!("{i:08}").as_bytes()),
        10_000,
        |c| c.pongs,
    )
}

/// Writes `count` copies of a control frame and never reads the answers, so they pile up:
/// past the kernel's socket buffers the server must stop reading (backpressure) or close,
/// rather than queue answers in memory. Stops once no byte has gone out for 0.5 s.
fn flood_noread(p: &mut Conn, probe: &'static str, one: &[u8], count: usize) -> Report {
    let payload = one.repeat(count);
    let mut offset = 0;
    let mut closed = false;
    let mut write_error = None;
    if let Err(e) = p.sock.set_nonblocking(true) {
        return Report {
            error: Some(format!("set_nonblocking: {e}")),
            ..p.report(probe)
        };
    }
    let mut last_progress = Instant::now();
    while offset < payload.len() {
        let end = payload.len().min(offset + 262_144);
        match p.sock.write(&payload[offset..end]) {
            Ok(n) => {
                offset += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if last_progress.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                closed = true;
                break;
            }
            Err(e) => {
                write_error = Some(format!("{:?}", e.kind()));
                break;
            }
        }
    }
    let _ = p.sock.set_nonblocking(false);
    p.closed |= closed;
    p.write_error = p.write_error.take().or(write_error);
    Report {
        bytes_total: payload.len(),
        bytes_sent: offset,
        backpressure: offset < payload.len() && !p.closed,
        ..p.report(probe)
    }
}

pub fn ping_flood_noread(p: &mut Conn) -> Report {
    // 34 MB of PINGs.
    flood_noread(
        p,
        "ping_flood_noread",
        &frame(PING, 0, 0, b"flooding"),
        2_000_000,
    )
}

pub fn settings_flood_noread(p: &mut Conn) -> Report {
    // 36 MB of empty SETTINGS.
    flood_noread(p, "settings_flood_noread", &settings_frame(&[]), 4_000_000)
}

/// Opens the advertised maximum of streams that stay open (the route delays them), then
/// one more, as a misbehaving client would.
pub fn max_streams(p: &mut Conn) -> Report {
    // The server's SETTINGS, and its ACK of ours.
    p.pump(Duration::from_secs(2), |c| {
        c.server_settings_seen && c.acks >= 1
    });
    let Some(&limit) = p
        .server_settings
        .get(&SETTINGS_MAX_CONCURRENT_STREAMS)
        .filter(|&&l| l <= 5000)
    else {
        return Report {
            error: Some(format!(
                "server advertises no usable limit: {:?}",
                p.server_settings
            )),
            ..p.report("max_streams")
        };
    };
    let block = p.request_block("/hold", &[]);
    let mut pending = Vec::new();
    for i in 0..limit {
        pending.extend(p.request_frames(1 + 2 * i, &block));
        if i % 100 == 99 {
            p.send(&std::mem::take(&mut pending));
        }
    }
    p.send(&pending);
    let extra = 1 + 2 * limit;
    let frames = p.request_frames(extra, &block);
    p.send(&frames);
    p.pump(Duration::from_secs(3), |c| {
        c.resets.contains_key(&extra) || c.goaway.is_some()
    });
    Report {
        limit: Some(limit),
        extra_stream: Some(extra),
        extra_reset: p.resets.get(&extra).copied(),
        ..p.report("max_streams")
    }
}

/// One header list over the proxy's 60 KiB limit, then a normal request on the same
/// connection (the connection should stay usable).
pub fn big_headers(p: &mut Conn) -> Report {
    // ~80 KiB
    let big: Vec<(String, String)> = (0..20)
        .map(|i| (format!("x-big-{i}"), "v".repeat(4000)))
        .collect();
    let frames = p.request_frames(1, &p.request_block("/", &big));
    p.send(&frames);
    p.pump(Duration::from_secs(2), |c| {
        c.responses.contains_key(&1) || c.resets.contains_key(&1) || c.goaway.is_some()
    });
    let big_status = p.responses.get(&1).copied().flatten();
    let big_reset = p.resets.get(&1).copied();
    let mut after_status = None;
    if !ended(p) {
        p.get(3, "/");
        p.pump(Duration::from_secs(3), |c| {
            c.responses.contains_key(&3) || c.resets.contains_key(&3)
        });
        after_status = p.responses.get(&3).copied().flatten();
    }
    Report {
        big_status,
        big_reset,
        after_status,
        ..p.report("big_headers")
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn hpack_integers_round_trip() {
        for (prefix, v) in [
            (7, 0),
            (7, 126),
            (7, 127),
            (7, 4000),
            (5, 31),
            (4, 1_000_000),
        ] {
            let mut out = Vec::new();
            hpack_int(&mut out, prefix, 0, v);
            let mut pos = 0;
            assert_eq!(read_int(&out, &mut pos, prefix), Some(v), "{prefix} {v}");
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn status_from_static_plain_and_huffman_literals() {
        assert_eq!(leading_status(&[0x88]), Some(200));
        assert_eq!(leading_status(&[0x20, 0x8d]), Some(404));
        // Literal with incremental indexing, name index 8, plain "431".
        assert_eq!(leading_status(&[0x48, 0x03, b'4', b'3', b'1']), Some(431));
        // "431" Huffman-coded: 011010 011001 00001 + 7 bits of padding = 0x69 0x90 0xff.
        assert_eq!(leading_status(&[0x48, 0x83, 0x69, 0x90, 0xff]), Some(431));
        assert_eq!(
            huffman_digits(&[0x69, 0x90, 0xff, 0xff]),
            None,
            "more than 7 padding bits"
        );
        assert_eq!(leading_status(&[0x41, 0x01, b'x']), None, "not :status");
    }
}
