//! One HTTP/2 connection: frames in, requests to the handler, responses out, in one task.
//!
//! Every stream's work (its handler's future, then its response body) sits in a slot of the
//! connection and is polled by the connection's own task when that slot's waker fires: no
//! task, channel or lock per stream, and the frames a poll produces are appended to one output
//! buffer that goes out in one write. The connection state (windows, settings, which streams
//! exist) is plain data owned by this task.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::body::{ConnShared, Feed, StreamError};
use super::frame::{self, Head, Reason};
use super::hpack::{Decoded, Decoder, Encoder};
use super::ids::{Recent, Skipped};
use super::request::{Fields, Refused};
use crate::downstream::Incoming;
use crate::downstream::server::{header_fields_too_large, request_timed_out};
use crate::wire::RecvBuf;

/// Our receive windows, per stream and for the connection: 1 MiB, as hyper's server had.
pub const WINDOW: i64 = 1024 * 1024;
/// Window given back to the client once this much was read (half the window, so a client
/// streaming a body never stalls on a round trip while the upstream keeps reading).
const WINDOW_UPDATE_AT: i64 = WINDOW / 2;
/// Output held before we stop reading frames and polling bodies until the client reads: the
/// push-back for a client that floods PINGs or SETTINGS and never reads the answers.
const OUT_HIGH: usize = 64 * 1024;
/// The largest header block (HEADERS plus CONTINUATION payloads) we gather before decoding
/// it, as a multiple of the header-list limit: HPACK rarely doubles a list's size.
const BLOCK_FACTOR: usize = 2;
/// CONTINUATION frames one block may have: a block within the limit needs a handful even at
/// the smallest frame size; 10,000 empty ones are an attack (CVE-2024-27316 and kin).
const MAX_CONTINUATIONS: u32 = 256;
/// Streams the client reset before their response ended, beyond which the connection goes
/// when they are also at least half of its streams (the HTTP/2 rapid reset attack,
/// CVE-2023-44487; Envoy's `premature_reset` check is of the same shape).
const PREMATURE_RESETS: u64 = 250;
/// Streams we reset for the client's protocol errors before the connection goes (h2's and
/// so hyper's `max_local_error_reset_streams`).
const MAX_LOCAL_RESETS: u64 = 1024;
/// Recently reset streams remembered (at least this many, and as many as the streams a
/// connection may have open), so that frames the client sent before it saw our RST_STREAM
/// are dropped rather than treated as errors.
const RESET_MEMORY: usize = 64;
/// How long a closing connection drains the client's unread input.
const LINGER: Duration = Duration::from_secs(1);

/// The connection's settings, from the server's limits.
pub struct Config {
    pub max_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE, enforced while decoding.
    pub list_limit: usize,
    pub request_timeout: Option<Duration>,
    pub limits: crate::downstream::server::Limits,
}

/// What one slot (one stream's work) is doing.
enum Task<F, B> {
    Free,
    Handling {
        handled: Pin<Box<F>>,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    Body {
        body: B,
        /// Bytes read from the body and waiting for window, and whether they end it.
        held: Option<(Bytes, bool)>,
    },
    /// The response went out whole.
    Sent,
}

struct Slot<F, B> {
    /// 0 while the slot is free.
    id: u32,
    task: Task<F, B>,
    /// The request body's feed, while the client may still send DATA and a reader exists.
    feed: Option<Feed>,
    /// The client has not ended its side yet.
    recv_open: bool,
    /// What the client may still send on this stream, and what was read (or dropped) since
    /// the last WINDOW_UPDATE.
    recv_window: i64,
    recv_released: i64,
    declared: Option<u64>,
    received: u64,
    /// What we may still send on this stream.
    send_window: i64,
    connect: bool,
    /// In `conn_blocked` already (a slot waits there once, however often it is polled).
    conn_waiting: bool,
}

impl<F, B> Slot<F, B> {
    fn holds_data(&self) -> bool {
        matches!(self.task, Task::Body { held: Some(_), .. })
    }
}

/// The waker of one slot: queues the slot for the connection's next poll.
struct SlotWaker {
    slot: u32,
    queued: AtomicBool,
    shared: Arc<ConnShared>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.queue_ready(self.slot);
        }
    }
}

/// Stream ids are unique small odd numbers: a multiplication spreads them over the hash's
/// high bits, which is all the table needs, at a fraction of SipHash's cost.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // The table takes its bucket from the low bits and a tag from the top seven: the
        // product's high half is folded into the low one, so ids that differ only in high
        // bits (1 + k * 4096) do not share a bucket.
        let h = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// A HEADERS frame whose block continues in CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: Vec<u8>,
    frames: u32,
}

/// A connection error: GOAWAY with this code, then close.
struct ConnError(Reason, &'static str);

type Step = Result<(), ConnError>;

pub struct Conn<S, M, F, B> {
    io: S,
    rb: RecvBuf,
    st: State<M, F, B>,
}

struct State<M, F, B> {
    make: M,
    config: Config,
    out: Vec<u8>,
    out_pos: usize,
    /// Everything was written; the transport's flush has not completed yet.
    flush_pending: bool,
    /// Once the connection ends: until when unread input is drained (see `poll_linger`).
    linger: Option<Pin<Box<Sleep>>>,
    decoder: Decoder,
    encoder: Encoder,
    preface_read: bool,
    got_settings: bool,
    peer_window: i64,
    peer_max_frame: usize,
    send_window: i64,
    recv_window: i64,
    /// Connection-level bytes read since the last WINDOW_UPDATE on stream 0.
    recv_released: i64,
    slots: Vec<Slot<F, B>>,
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    free: Vec<u32>,
    ids: HashMap<u32, u32, BuildHasherDefault<IdHasher>>,
    last_id: u32,
    partial: Option<Partial>,
    shared: Arc<ConnShared>,
    /// Slots to poll now (set by frames), and the swap space for the wakers' queue.
    ready: Vec<u32>,
    woken: Vec<u32>,
    released: Vec<(u32, usize)>,
    /// Slots with body bytes held for want of connection window, or of output room.
    conn_blocked: Vec<u32>,
    out_blocked: Vec<u32>,
    reset_by_us: Recent,
    reset_by_peer: Recent,
    skipped: Skipped,
    streams_total: u64,
    premature_resets: u64,
    local_resets: u64,
    /// GOAWAY sent: for a graceful close, streams past `last_id` are not served.
    goaway: Option<u32>,
    /// A connection error ends the connection once the GOAWAY is written.
    closing: bool,
    peer_goaway: bool,
    read_closed: bool,
}

impl<S, M, F, B> Conn<S, M, F, B>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: FnMut(Request<Incoming>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + From<Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    pub fn new(io: S, rb: RecvBuf, config: Config, make: M) -> Self {
        let mut out = Vec::with_capacity(128);
        frame::push_settings(
            &mut out,
            &[
                (frame::SETTINGS_MAX_CONCURRENT_STREAMS, config.max_streams),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, WINDOW as u32),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    u32::try_from(config.list_limit).unwrap_or(u32::MAX),
                ),
            ],
        );
        frame::push_window_update(&mut out, 0, (WINDOW - frame::DEFAULT_WINDOW) as u32);
        let memory = RESET_MEMORY.max(config.max_streams as usize);
        Conn {
            io,
            rb,
            st: State {
                make,
                config,
                out,
                out_pos: 0,
                flush_pending: false,
                linger: None,
                decoder: Decoder::new(4096),
                encoder: Encoder::new(),
                preface_read: false,
                got_settings: false,
                peer_window: frame::DEFAULT_WINDOW,
                peer_max_frame: frame::MIN_MAX_FRAME,
                send_window: frame::DEFAULT_WINDOW,
                recv_window: WINDOW,
                recv_released: 0,
                slots: Vec::new(),
                wakers: Vec::new(),
                free: Vec::new(),
                ids: HashMap::default(),
                last_id: 0,
                partial: None,
                shared: Arc::new(ConnShared::default()),
                ready: Vec::new(),
                woken: Vec::new(),
                released: Vec::new(),
                conn_blocked: Vec::new(),
                out_blocked: Vec::new(),
                reset_by_us: Recent::new(memory),
                reset_by_peer: Recent::new(memory),
                skipped: Skipped::default(),
                streams_total: 0,
                premature_resets: 0,
                local_resets: 0,
                goaway: None,
                closing: false,
                peer_goaway: false,
                read_closed: false,
            },
        }
    }

    /// Serves until the connection is done. `shutting_down` is read on every poll: when it
    /// turns true, GOAWAY goes out and the open streams are finished.
    pub fn poll_serve(
        &mut self,
        cx: &mut Context<'_>,
        shutting_down: bool,
    ) -> Poll<Result<(), String>> {
        let Conn { io, rb, st } = self;
        st.shared.waker.register(cx.waker());
        if shutting_down && st.goaway.is_none() {
            st.goaway = Some(st.last_id);
            frame::push_goaway(&mut st.out, st.last_id, Reason::NO_ERROR, b"");
        }
        if st.linger.is_some() {
            return st.poll_linger(io, rb, cx);
        }
        // Bounded, so that a future that wakes itself at once cannot keep this task from
        // yielding; it is polled again on the next turn.
        for _ in 0..64 {
            let mut progress = false;
            st.run_ready();
            st.give_back_windows();
            if !st.closing && !st.read_closed && st.backlog() < OUT_HIGH {
                match rb.poll_fill(io, cx) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        progress = true;
                        if let Err(ConnError(reason, why)) = st.read_frames(rb) {
                            st.fail(reason, why);
                        }
                    }
                    Poll::Ready(Ok(_)) => {
                        st.read_closed = true;
                        st.drop_streams();
                    }
                    Poll::Ready(Err(e)) => {
                        st.read_closed = true;
                        st.drop_streams();
                        return Poll::Ready(Err(format!("read failed: {e}")));
                    }
                    Poll::Pending => {}
                }
            }
            if !st.ready.is_empty() {
                continue;
            }
            if st.backlog() > 0 {
                match st.poll_write(io, cx) {
                    Poll::Ready(Ok(())) => {
                        progress = true;
                        let blocked = std::mem::take(&mut st.out_blocked);
                        st.ready.extend_from_slice(&blocked);
                        st.out_blocked = blocked;
                        st.out_blocked.clear();
                    }
                    Poll::Ready(Err(e)) => {
                        st.drop_streams();
                        return Poll::Ready(Err(format!("write failed: {e}")));
                    }
                    Poll::Pending => {}
                }
            }
            if st.backlog() == 0 && st.done() {
                let _ = Pin::new(&mut *io).poll_shutdown(cx);
                if st.read_closed {
                    return Poll::Ready(Ok(()));
                }
                st.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
                return st.poll_linger(io, rb, cx);
            }
            if !progress && st.ready.is_empty() && !st.shared.has_ready() {
                if st.backlog() == 0 && st.ids.is_empty() {
                    // Idle: no output buffer held between requests.
                    st.out = Vec::new();
                }
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<M, F, B> State<M, F, B>
where
    M: FnMut(Request<Incoming>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + From<Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    /// After our FIN: input is read and dropped until the client closes too, or for
    /// `LINGER`. Closing with unread input would make the kernel reset the connection, and a
    /// reset can destroy the GOAWAY and responses the client has not read yet.
    fn poll_linger<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        rb: &mut RecvBuf,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), String>> {
        loop {
            let avail = rb.avail();
            rb.consume(avail);
            match rb.poll_fill(io, cx) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
            let waiting = self
                .linger
                .as_mut()
                .is_some_and(|t| t.as_mut().poll(cx).is_pending());
            return if waiting {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        }
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.out_pos + usize::from(self.flush_pending)
    }

    fn done(&self) -> bool {
        if self.closing || self.read_closed {
            return true;
        }
        (self.goaway.is_some() || self.peer_goaway) && self.ids.is_empty()
    }

    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n =
                std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        self.flush_pending = true;
        std::task::ready!(Pin::new(&mut *io).poll_flush(cx))?;
        self.flush_pending = false;
        Poll::Ready(Ok(()))
    }

    /// A connection error: GOAWAY, every stream dropped, the connection closed once the
    /// GOAWAY is out.
    fn fail(&mut self, reason: Reason, why: &'static str) {
        tracing::debug!(%reason, why, "downstream HTTP/2 connection error");
        if !self.closing {
            frame::push_goaway(&mut self.out, self.last_id, reason, why.as_bytes());
            self.closing = true;
        }
        self.drop_streams();
    }

    fn drop_streams(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].id != 0 {
                if let Some(feed) = self.slots[i].feed.take() {
                    feed.fail(StreamError::ConnectionGone);
                }
                self.release_slot(i as u32);
            }
        }
    }

    /// Polls the slots whose wakers fired, and those frames made ready.
    fn run_ready(&mut self) {
        loop {
            self.shared.take_ready(&mut self.woken);
            if self.woken.is_empty() && self.ready.is_empty() {
                return;
            }
            let mut woken = std::mem::take(&mut self.woken);
            for &slot in &woken {
                if let Some((w, _)) = self.wakers.get(slot as usize) {
                    w.queued.store(false, Ordering::Release);
                }
            }
            woken.append(&mut self.ready);
            for &slot in &woken {
                self.poll_slot(slot);
            }
            woken.clear();
            self.woken = woken;
        }
    }

    fn poll_slot(&mut self, idx: u32) {
        let i = idx as usize;
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.id == 0 {
            return;
        }
        if let Task::Handling { handled, deadline } = &mut slot.task {
            let mut cx = Context::from_waker(&self.wakers[i].1);
            let resp = if let Poll::Ready(resp) = handled.as_mut().poll(&mut cx) {
                resp
            } else if let Some(d) = deadline
                && d.as_mut().poll(&mut cx).is_ready()
            {
                request_timed_out()
            } else {
                return;
            };
            // The handler's box goes before the response is sent.
            slot.task = Task::Sent;
            self.start_response(idx, resp);
        }
        self.poll_body(idx);
    }

    /// Sends a response's head; its body follows from `poll_body`.
    fn start_response(&mut self, idx: u32, resp: Response<B>) {
        let i = idx as usize;
        let (mut head, body) = resp.into_parts();
        strip_connection_headers(&mut head.headers);
        if !head.headers.contains_key(header::DATE) {
            head.headers
                .insert(header::DATE, crate::downstream::date::now());
        }
        let id = self.slots[i].id;
        if self.slots[i].connect && head.status.is_success() {
            // Tunnels over HTTP/2 are not served: the head, then the stream is cancelled.
            head.headers.remove(header::CONTENT_LENGTH);
            self.push_headers(id, Some(head.status), &head.headers, false);
            crate::recycle::give_back(head.headers);
            self.reset_stream(idx, Reason::CANCEL, false);
            return;
        }
        let end = body.is_end_stream();
        if !end
            && let Some(len) = body.size_hint().exact()
            && !head.headers.contains_key(header::CONTENT_LENGTH)
        {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        self.push_headers(id, Some(head.status), &head.headers, end);
        crate::recycle::give_back(head.headers);
        if end {
            self.sent(idx);
        } else {
            self.slots[i].task = Task::Body { body, held: None };
        }
    }

    /// Streams a response body within the client's windows, then its trailers.
    fn poll_body(&mut self, idx: u32) {
        let i = idx as usize;
        loop {
            if self.backlog() >= OUT_HIGH {
                self.out_blocked.push(idx);
                return;
            }
            let Some(slot) = self.slots.get_mut(i) else {
                return;
            };
            let Task::Body { body, held } = &mut slot.task else {
                return;
            };
            if let Some((mut data, end)) = held.take() {
                let room = slot.send_window.min(self.send_window);
                if room <= 0 && !data.is_empty() {
                    *held = Some((data, end));
                    if self.send_window <= 0 && !slot.conn_waiting {
                        slot.conn_waiting = true;
                        self.conn_blocked.push(idx);
                    }
                    return;
                }
                let n = data.len().min(usize::try_from(room).unwrap_or(0));
                let mut chunk = data.split_to(n);
                while chunk.len() > self.peer_max_frame {
                    let part = chunk.split_to(self.peer_max_frame);
                    frame::push_data(&mut self.out, slot.id, &part, false);
                }
                let last = data.is_empty();
                frame::push_data(&mut self.out, slot.id, &chunk, last && end);
                slot.send_window -= n as i64;
                self.send_window -= n as i64;
                if !last {
                    *held = Some((data, end));
                    continue;
                }
                if end {
                    self.sent(idx);
                    return;
                }
                continue;
            }
            let mut cx = Context::from_waker(&self.wakers[i].1);
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(None) => {
                    frame::push_data(&mut self.out, slot.id, &[], true);
                    self.sent(idx);
                    return;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "downstream HTTP/2 response body failed");
                    // A body cut short is never reset with NO_ERROR, which a client may take
                    // for a complete (if unterminated) response.
                    let reason = match reset_reason(&e) {
                        Reason::NO_ERROR => Reason::CANCEL,
                        r => r,
                    };
                    self.reset_stream(idx, reason, false);
                    return;
                }
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(data) => {
                        let end = body.is_end_stream();
                        if !data.is_empty() || end {
                            *held = Some((data, end));
                        }
                    }
                    Err(f) => {
                        if let Ok(trailers) = f.into_trailers() {
                            let id = slot.id;
                            self.push_headers(id, None, &trailers, true);
                            self.sent(idx);
                            return;
                        }
                    }
                },
            }
        }
    }

    /// Encodes a HEADERS frame (and CONTINUATION frames if the block is over the client's
    /// frame size) in place in the output.
    fn push_headers(
        &mut self,
        id: u32,
        status: Option<http::StatusCode>,
        headers: &HeaderMap,
        end: bool,
    ) {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; frame::HEAD_LEN]);
        self.encoder.begin(&mut self.out);
        if let Some(s) = status {
            self.encoder.status(s.as_u16(), &mut self.out);
        }
        for (name, value) in headers {
            self.encoder.field(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
                &mut self.out,
            );
        }
        let end_flag = if end { frame::END_STREAM } else { 0 };
        let len = self.out.len() - at - frame::HEAD_LEN;
        if len <= self.peer_max_frame {
            let head = frame::head_bytes(len, frame::HEADERS, frame::END_HEADERS | end_flag, id);
            self.out[at..at + frame::HEAD_LEN].copy_from_slice(&head);
            return;
        }
        let block = self.out.split_off(at + frame::HEAD_LEN);
        self.out.truncate(at);
        let mut chunks = block.chunks(self.peer_max_frame).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let kind = if first {
                frame::HEADERS
            } else {
                frame::CONTINUATION
            };
            let mut flags = if last { frame::END_HEADERS } else { 0 };
            if first {
                flags |= end_flag;
            }
            frame::push_head(&mut self.out, chunk.len(), kind, flags, id);
            self.out.extend_from_slice(chunk);
            first = false;
        }
    }

    /// The response is out whole: the stream ends unless the client is still sending, which
    /// it is told to stop.
    fn sent(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        slot.task = Task::Sent;
        if slot.recv_open {
            // The client is still sending: it is told to stop (RFC 9113 §8.1).
            self.reset_stream(idx, Reason::NO_ERROR, false);
        } else {
            self.release_slot(idx);
        }
    }

    /// Resets a stream of ours: RST_STREAM, its body told, its slot freed. `client_error`
    /// counts toward the limit on the client's protocol errors.
    fn reset_stream(&mut self, idx: u32, reason: Reason, client_error: bool) {
        let slot = &mut self.slots[idx as usize];
        let id = slot.id;
        if let Some(feed) = slot.feed.take() {
            feed.fail(StreamError::Malformed(reason));
        }
        frame::push_rst(&mut self.out, id, reason);
        self.reset_by_us.add(id);
        self.release_slot(idx);
        if client_error {
            self.count_local_reset();
        }
    }

    fn count_local_reset(&mut self) {
        self.local_resets += 1;
        if self.local_resets > MAX_LOCAL_RESETS {
            self.fail(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset for protocol errors",
            );
        }
    }

    /// A stream error on a stream that may not have a slot.
    fn reset_id(&mut self, id: u32, reason: Reason) {
        match self.ids.get(&id) {
            Some(&idx) => self.reset_stream(idx, reason, true),
            None => {
                frame::push_rst(&mut self.out, id, reason);
                self.reset_by_us.add(id);
                self.count_local_reset();
            }
        }
    }

    fn release_slot(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.id == 0 {
            return;
        }
        self.ids.remove(&slot.id);
        slot.id = 0;
        slot.task = Task::Free;
        slot.feed = None;
        self.free.push(idx);
    }

    /// WINDOW_UPDATEs for what the request bodies have read.
    fn give_back_windows(&mut self) {
        self.shared.take_released(&mut self.released);
        let released = std::mem::take(&mut self.released);
        for &(id, n) in &released {
            let n = n as i64;
            self.recv_released += n;
            if let Some(&idx) = self.ids.get(&id) {
                self.stream_released(idx, n);
            }
        }
        self.released = released;
        self.released.clear();
        self.connection_window();
    }

    /// Gives bytes back to the connection's window (DATA nobody will read, padding).
    fn discard(&mut self, n: usize) {
        self.recv_released += n as i64;
    }

    /// Gives bytes back to a stream's window, announced once half the window is due.
    fn stream_released(&mut self, idx: u32, n: i64) {
        let slot = &mut self.slots[idx as usize];
        slot.recv_released += n;
        if slot.recv_open && slot.recv_released >= WINDOW_UPDATE_AT {
            frame::push_window_update(&mut self.out, slot.id, slot.recv_released as u32);
            slot.recv_window += slot.recv_released;
            slot.recv_released = 0;
        }
    }

    fn connection_window(&mut self) {
        if self.recv_released >= WINDOW_UPDATE_AT {
            frame::push_window_update(&mut self.out, 0, self.recv_released as u32);
            self.recv_window += self.recv_released;
            self.recv_released = 0;
        }
    }

    fn read_frames(&mut self, rb: &mut RecvBuf) -> Step {
        if !self.preface_read {
            let got = rb.unread();
            let n = got.len().min(frame::PREFACE.len());
            if got[..n] != frame::PREFACE[..n] {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "invalid connection preface",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            rb.consume(n);
            self.preface_read = true;
        }
        while !self.closing {
            let Some(head) = Head::parse(rb.unread()) else {
                break;
            };
            if head.len > frame::MIN_MAX_FRAME {
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            let total = frame::HEAD_LEN + head.len;
            let Some(payload) = rb.unread().get(frame::HEAD_LEN..total) else {
                break;
            };
            self.on_frame(head, payload)?;
            rb.consume(total);
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, payload: &[u8]) -> Step {
        if let Some(p) = &self.partial
            && (head.kind != frame::CONTINUATION || head.stream != p.stream)
        {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "a frame other than CONTINUATION inside a header block",
            ));
        }
        if !self.got_settings {
            if head.kind != frame::SETTINGS || head.has(frame::ACK) {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "the connection preface must be followed by SETTINGS",
                ));
            }
            self.got_settings = true;
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::PRIORITY => self.on_priority(head, payload),
            frame::RST_STREAM => self.on_rst(head, payload),
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PUSH_PROMISE => Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            frame::PING => self.on_ping(head, payload),
            frame::GOAWAY => self.on_goaway(head, payload),
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Step {
        let id = head.stream;
        if id == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let len = head.len as i64;
        if len > self.recv_window {
            return Err(ConnError(
                Reason::FLOW_CONTROL_ERROR,
                "DATA past the connection's window",
            ));
        }
        self.recv_window -= len;
        let Some((from, to)) = frame::unpad(&head, payload) else {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "DATA padding past the payload",
            ));
        };
        let Some(&idx) = self.ids.get(&id) else {
            self.discard(head.len);
            return self.on_closed_stream(id, "DATA");
        };
        let slot = &mut self.slots[idx as usize];
        if !slot.recv_open {
            self.discard(head.len);
            self.reset_stream(idx, Reason::STREAM_CLOSED, true);
            return Ok(());
        }
        if len > slot.recv_window {
            self.discard(head.len);
            self.reset_stream(idx, Reason::FLOW_CONTROL_ERROR, true);
            return Ok(());
        }
        slot.recv_window -= len;
        let data = &payload[from..to];
        slot.received += data.len() as u64;
        let end = head.has(frame::END_STREAM);
        if let Some(declared) = slot.declared
            && (slot.received > declared || (end && slot.received != declared))
        {
            self.discard(head.len);
            self.reset_stream(idx, Reason::PROTOCOL_ERROR, true);
            return Ok(());
        }
        // Padding, and bytes with no reader, go back at once.
        let mut unread = head.len - data.len();
        if !data.is_empty() {
            let taken = slot.feed.as_ref().is_some_and(|f| f.push(data));
            if !taken {
                unread = head.len;
            }
        }
        if unread > 0 {
            self.discard(unread);
            self.stream_released(idx, unread as i64);
        }
        if end {
            self.end_request(idx, None);
        }
        Ok(())
    }

    /// The client ended its side of a stream.
    fn end_request(&mut self, idx: u32, trailers: Option<HeaderMap>) {
        let slot = &mut self.slots[idx as usize];
        slot.recv_open = false;
        if let Some(feed) = slot.feed.take() {
            feed.end(trailers);
        } else if let Some(t) = trailers {
            crate::recycle::give_back(t);
        }
        if matches!(slot.task, Task::Sent) {
            self.release_slot(idx);
        }
    }

    /// A frame on a stream that has no slot: idle (a protocol error), reset by us (dropped:
    /// the client sent it before our RST_STREAM arrived), reset by the client (any frame after
    /// its own RST_STREAM is a stream error, RFC 9113 §5.1), never opened because the client
    /// opened a higher id first (HEADERS there is PROTOCOL_ERROR, §5.1.1; DATA a stream error,
    /// §6.1), or ended: every other end of a stream is a reset we remember, so this one ended
    /// with the client's END_STREAM, and any frame after that is a connection error of type
    /// STREAM_CLOSED (§5.1), as nghttp2 (Envoy's codec) and h2spec 5.1 #11-13 have it.
    fn on_closed_stream(&mut self, id: u32, what: &'static str) -> Step {
        if id > self.last_id {
            return Err(ConnError(Reason::PROTOCOL_ERROR, frame_on_idle(what)));
        }
        if self.reset_by_us.has(id) || self.goaway.is_some_and(|last| id > last) {
            return Ok(());
        }
        let skipped = self.skipped.has(id);
        if what == "HEADERS" && skipped {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "HEADERS opening a stream below one already opened",
            ));
        }
        if skipped || self.reset_by_peer.has(id) {
            frame::push_rst(&mut self.out, id, Reason::STREAM_CLOSED);
            self.reset_by_us.add(id);
            return Ok(());
        }
        Err(ConnError(
            Reason::STREAM_CLOSED,
            if what == "DATA" {
                "DATA after the client ended the stream"
            } else {
                "HEADERS after the client ended the stream"
            },
        ))
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Step {
        let id = head.stream;
        if id == 0 || id.is_multiple_of(2) {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "HEADERS on stream 0 or on a server-initiated stream id",
            ));
        }
        let Some((from, to)) = frame::unpad(&head, payload) else {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "HEADERS padding past the payload",
            ));
        };
        let mut frag = &payload[from..to];
        let mut self_dependent = false;
        if head.has(frame::PRIORITY_FLAG) {
            let Some(dep) = frame::u32_at(frag, 0) else {
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            };
            self_dependent = dep & 0x7fff_ffff == id;
            frag = frag.get(5..).unwrap_or_default();
        }
        let end_stream = head.has(frame::END_STREAM);
        if head.has(frame::END_HEADERS) {
            return self.on_block(id, end_stream, self_dependent, frag);
        }
        if frag.len() > self.max_block() {
            return Err(ConnError(
                Reason::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        self.partial = Some(Partial {
            stream: id,
            end_stream,
            self_dependent,
            block: frag.to_vec(),
            frames: 0,
        });
        Ok(())
    }

    fn max_block(&self) -> usize {
        self.config.list_limit.saturating_mul(BLOCK_FACTOR)
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Step {
        let max = self.max_block();
        let Some(p) = self.partial.as_mut() else {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without a HEADERS before it",
            ));
        };
        p.frames += 1;
        if p.frames > MAX_CONTINUATIONS || p.block.len() + payload.len() > max {
            return Err(ConnError(
                Reason::ENHANCE_YOUR_CALM,
                "header block too large or in too many CONTINUATION frames",
            ));
        }
        p.block.extend_from_slice(payload);
        if !head.has(frame::END_HEADERS) {
            return Ok(());
        }
        let Some(p) = self.partial.take() else {
            return Ok(());
        };
        self.on_block(p.stream, p.end_stream, p.self_dependent, &p.block)
    }

    /// A complete header block: a new request, trailers, or a block on a stream that is gone
    /// (decoded all the same: the table must stay in step).
    fn on_block(&mut self, id: u32, end_stream: bool, self_dependent: bool, block: &[u8]) -> Step {
        if id > self.last_id {
            self.skipped.opened(self.last_id, id);
            self.last_id = id;
            return self.on_request(id, end_stream, self_dependent, block);
        }
        let Some(&idx) = self.ids.get(&id) else {
            self.skip_block(block)?;
            return self.on_closed_stream(id, "HEADERS");
        };
        if !self.slots[idx as usize].recv_open {
            self.skip_block(block)?;
            self.reset_stream(idx, Reason::STREAM_CLOSED, true);
            return Ok(());
        }
        let mut fields = Fields::trailers(self.config.list_limit);
        self.decode(block, &mut fields)?;
        if !end_stream || self_dependent {
            crate::recycle::give_back(fields.headers);
            self.reset_stream(idx, Reason::PROTOCOL_ERROR, true);
            return Ok(());
        }
        let slot = &self.slots[idx as usize];
        if slot.declared.is_some_and(|d| d != slot.received) {
            crate::recycle::give_back(fields.headers);
            self.reset_stream(idx, Reason::PROTOCOL_ERROR, true);
            return Ok(());
        }
        match fields.finish_trailers() {
            Ok(t) => self.end_request(idx, Some(t)),
            Err(_) => self.reset_stream(idx, Reason::PROTOCOL_ERROR, true),
        }
        Ok(())
    }

    fn decode(&mut self, block: &[u8], fields: &mut Fields) -> Step {
        match self
            .decoder
            .decode(block, |n, v, never| fields.field(n, v, never))
        {
            Ok(()) => Ok(()),
            Err(Decoded::Hpack(e)) => {
                tracing::debug!(error = %e, "downstream HTTP/2 header block not decodable");
                Err(ConnError(
                    Reason::COMPRESSION_ERROR,
                    "header block not decodable",
                ))
            }
            Err(Decoded::Stop(never)) => match never {},
        }
    }

    fn skip_block(&mut self, block: &[u8]) -> Step {
        match self
            .decoder
            .decode(block, |_, _, _| Ok::<(), std::convert::Infallible>(()))
        {
            Ok(()) => Ok(()),
            Err(Decoded::Hpack(_)) => Err(ConnError(
                Reason::COMPRESSION_ERROR,
                "header block not decodable",
            )),
            Err(Decoded::Stop(never)) => match never {},
        }
    }

    fn on_request(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Step {
        let mut fields = Fields::request(self.config.list_limit, 16);
        self.decode(block, &mut fields)?;
        if self.goaway.is_some() || self.peer_goaway {
            // Past our GOAWAY: not served, and the client knows to retry it elsewhere (frames
            // for it are dropped by id, see `on_closed_stream`).
            crate::recycle::give_back(fields.headers);
            return Ok(());
        }
        if self_dependent {
            crate::recycle::give_back(fields.headers);
            self.reset_id(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if self.ids.len() >= self.config.max_streams as usize {
            crate::recycle::give_back(fields.headers);
            frame::push_rst(&mut self.out, id, Reason::REFUSED_STREAM);
            self.reset_by_us.add(id);
            return Ok(());
        }
        let declared = fields.content_length;
        let req = match fields.finish_request() {
            Ok(req) => req,
            Err(Refused::Malformed(why)) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                self.reset_id(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Err(Refused::TooLarge) => {
                let idx = self.open_slot(id, end_stream, None, false);
                self.streams_total += 1;
                self.start_response(idx, header_fields_too_large(false));
                self.ready.push(idx);
                return Ok(());
            }
        };
        if end_stream && declared.is_some_and(|n| n != 0) {
            crate::recycle::give_back(req.into_parts().0.headers);
            self.reset_id(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let connect = req.method() == Method::CONNECT;
        if connect && declared.is_some_and(|n| n != 0) {
            // A CONNECT carries no body here: tunnels over HTTP/2 are not served.
            crate::recycle::give_back(req.into_parts().0.headers);
            frame::push_rst(&mut self.out, id, Reason::INTERNAL_ERROR);
            self.reset_by_us.add(id);
            return Ok(());
        }
        self.streams_total += 1;
        let idx = self.open_slot(id, end_stream, declared, connect);
        let body = if connect || end_stream {
            Incoming::Empty
        } else {
            let (feed, body) = Feed::new(id, self.shared.clone(), declared);
            self.slots[idx as usize].feed = Some(feed);
            Incoming::H2(body)
        };
        let req = req.map(|()| body);
        if let Some(refused) =
            crate::downstream::server::over_header_limit(&req, &self.config.limits)
        {
            self.start_response(idx, refused);
        } else {
            // Boxed per request: the request path's future is several KB, and the slot stays
            // small. Written into a box allocated first, so it is built in place rather than
            // copied whole from the stack.
            let handled = Box::into_pin(Box::write(Box::new_uninit(), (self.make)(req)));
            let deadline = self
                .config
                .request_timeout
                .map(|t| Box::pin(tokio::time::sleep(t)));
            self.slots[idx as usize].task = Task::Handling { handled, deadline };
        }
        self.ready.push(idx);
        Ok(())
    }

    fn open_slot(
        &mut self,
        id: u32,
        end_stream: bool,
        declared: Option<u64>,
        connect: bool,
    ) -> u32 {
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                let idx = self.slots.len() as u32;
                let waker = Arc::new(SlotWaker {
                    slot: idx,
                    queued: AtomicBool::new(false),
                    shared: self.shared.clone(),
                });
                self.wakers.push((waker.clone(), Waker::from(waker)));
                self.slots.push(Slot {
                    id: 0,
                    task: Task::Free,
                    feed: None,
                    recv_open: false,
                    recv_window: 0,
                    recv_released: 0,
                    declared: None,
                    received: 0,
                    send_window: 0,
                    connect: false,
                    conn_waiting: false,
                });
                idx
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.id = id;
        slot.task = Task::Sent;
        slot.feed = None;
        slot.recv_open = !end_stream;
        slot.recv_window = WINDOW;
        slot.recv_released = 0;
        slot.declared = declared;
        slot.received = 0;
        slot.send_window = self.peer_window;
        slot.connect = connect;
        slot.conn_waiting = false;
        self.ids.insert(id, idx);
        idx
    }

    fn on_priority(&mut self, head: Head, payload: &[u8]) -> Step {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if head.len != 5 {
            if head.stream > self.last_id {
                // No RST_STREAM on an idle stream (RFC 9113 §6.4).
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "PRIORITY not 5 bytes long",
                ));
            }
            self.reset_id(head.stream, Reason::FRAME_SIZE_ERROR);
            return Ok(());
        }
        if frame::u32_at(payload, 0).is_some_and(|dep| dep & 0x7fff_ffff == head.stream) {
            self.reset_id(head.stream, Reason::PROTOCOL_ERROR);
        }
        Ok(())
    }

    fn on_rst(&mut self, head: Head, payload: &[u8]) -> Step {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        let Some(code) = frame::u32_at(payload, 0).filter(|_| head.len == 4) else {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 bytes long",
            ));
        };
        let Some(&idx) = self.ids.get(&head.stream) else {
            if head.stream > self.last_id {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "RST_STREAM on an idle stream",
                ));
            }
            return Ok(());
        };
        let slot = &mut self.slots[idx as usize];
        if let Some(feed) = slot.feed.take() {
            if code == Reason::NO_ERROR.0 {
                // The client saying it is done sending (RFC 9113 §8.1): the body ends here.
                feed.end(None);
            } else {
                feed.fail(StreamError::Reset(Reason(code)));
            }
        }
        let premature = !matches!(slot.task, Task::Sent);
        self.reset_by_peer.add(head.stream);
        self.release_slot(idx);
        if premature {
            self.premature_resets += 1;
            if self.premature_resets >= PREMATURE_RESETS
                && self.premature_resets * 2 >= self.streams_total
            {
                return Err(ConnError(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset by the client before their response",
                ));
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Step {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(frame::ACK) {
            if head.len != 0 {
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS acknowledgement with a payload",
                ));
            }
            return Ok(());
        }
        if !head.len.is_multiple_of(6) {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS length not a multiple of 6",
            ));
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH | frame::SETTINGS_ENABLE_CONNECT_PROTOCOL
                    if value > 1 =>
                {
                    return Err(ConnError(
                        Reason::PROTOCOL_ERROR,
                        "a boolean SETTINGS value other than 0 or 1",
                    ));
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(ConnError(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_window;
                    self.peer_window = value;
                    for (i, slot) in self.slots.iter_mut().enumerate() {
                        if slot.id == 0 {
                            continue;
                        }
                        slot.send_window += delta;
                        if slot.send_window > frame::MAX_WINDOW {
                            return Err(ConnError(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window above 2^31-1",
                            ));
                        }
                        if delta > 0 && slot.holds_data() {
                            self.ready.push(i as u32);
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::MIN_MAX_FRAME as u32..=frame::MAX_MAX_FRAME).contains(&value) {
                        return Err(ConnError(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Our encoder never uses the dynamic table, we push nothing, and we open no
                // streams: the rest does not concern us.
                _ => {}
            }
        }
        frame::push_settings_ack(&mut self.out);
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Step {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        if head.len != 8 {
            return Err(ConnError(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes long"));
        }
        if !head.has(frame::ACK) {
            frame::push_ping_ack(&mut self.out, payload);
        }
        Ok(())
    }

    fn on_goaway(&mut self, head: Head, _payload: &[u8]) -> Step {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
        }
        if head.len < 8 {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "GOAWAY shorter than 8 bytes",
            ));
        }
        self.peer_goaway = true;
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Step {
        let Some(inc) = frame::u32_at(payload, 0).filter(|_| head.len == 4) else {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes long",
            ));
        };
        let inc = i64::from(inc & 0x7fff_ffff);
        if head.stream == 0 {
            if inc == 0 {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE of 0 on the connection",
                ));
            }
            self.send_window += inc;
            if self.send_window > frame::MAX_WINDOW {
                return Err(ConnError(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            for idx in self.conn_blocked.drain(..) {
                if let Some(slot) = self.slots.get_mut(idx as usize) {
                    slot.conn_waiting = false;
                }
                self.ready.push(idx);
            }
            return Ok(());
        }
        let Some(&idx) = self.ids.get(&head.stream) else {
            if head.stream > self.last_id {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream",
                ));
            }
            return Ok(());
        };
        if inc == 0 {
            self.reset_stream(idx, Reason::PROTOCOL_ERROR, true);
            return Ok(());
        }
        let slot = &mut self.slots[idx as usize];
        slot.send_window += inc;
        if slot.send_window > frame::MAX_WINDOW {
            self.reset_stream(idx, Reason::FLOW_CONTROL_ERROR, true);
            return Ok(());
        }
        // Only a body waiting for window is polled again: a handler still running is not.
        if slot.holds_data() {
            self.ready.push(idx);
        }
        Ok(())
    }
}

fn frame_on_idle(what: &'static str) -> &'static str {
    match what {
        "DATA" => "DATA on an idle stream",
        _ => "HEADERS on an idle stream",
    }
}

/// The reason to reset a stream whose response body failed: an HTTP/2 error's own if one
/// caused it (the upstream's, through `h2`, or the client's request body), else
/// INTERNAL_ERROR.
fn reset_reason(e: &(dyn std::error::Error + 'static)) -> Reason {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(reason) = err
            .downcast_ref::<::h2::Error>()
            .and_then(::h2::Error::reason)
        {
            return Reason(u32::from(reason));
        }
        if let Some(e) = err.downcast_ref::<StreamError>() {
            return e.reason();
        }
        cause = err.source();
    }
    Reason::INTERNAL_ERROR
}

/// Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2): they go from a
/// response, with any field `Connection` names.
fn strip_connection_headers(headers: &mut HeaderMap) {
    // One pass over the names first: a proxied response has none of them (the proxy strips
    // hop-by-hop fields), and six removals by name cost four times the scan.
    if !headers.keys().any(is_connection_field) {
        return;
    }
    const FIELDS: [HeaderName; 5] = [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ];
    for name in FIELDS {
        headers.remove(name);
    }
    if let Some(named) = headers.remove(header::CONNECTION)
        && let Ok(named) = named.to_str()
    {
        for name in named.split(',') {
            headers.remove(name.trim());
        }
    }
}

fn is_connection_field(name: &HeaderName) -> bool {
    name == header::TE || super::request::is_connection_specific(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_and_the_fields_they_name_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop, close"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        for name in ["proxy-connection", "upgrade", "te"] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_connection_headers(&mut h);
            assert!(h.is_empty(), "{name}");
        }
    }

    #[test]
    fn stream_ids_hash_apart_in_the_low_and_the_high_bits() {
        let hash = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish()
        };
        for ids in [
            (0..256).map(|i| 1 + 2 * i).collect::<Vec<u32>>(),
            (0..256).map(|i| 1 + 4096 * i).collect(),
        ] {
            let tags: std::collections::HashSet<u64> = ids.iter().map(|&i| hash(i) >> 57).collect();
            let buckets: std::collections::HashSet<u64> =
                ids.iter().map(|&i| hash(i) & 1023).collect();
            assert!(tags.len() > 64, "{} distinct tags", tags.len());
            assert!(buckets.len() > 128, "{} distinct buckets", buckets.len());
        }
    }
}
